//! Regression gates on a held-out report, the way a CI job uses `kcirc eval`: absolute floors and ceilings, and
//! "no worse than the report we accepted" against a baseline. Every gate is checked; every failure is named.
use crate::eval::Report;
use crate::{Error, Result};

/// One check of a report.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Gate {
    /// The circuit's Hit@k at least this.
    MinHitK(f64),
    /// The circuit's Hit@1 at least this.
    MinHit1(f64),
    /// Faithfulness at least this.
    MinFaithfulness(f64),
    /// The circuit's Hit@k divided by the full model's at least this.
    MinRatio(f64),
    /// The random circuits' mean Hit@k at most this (the circuit must beat chance by its size alone).
    MaxRandomHitK(f64),
}

/// A gate that failed: what was measured, its value, and the bound it broke.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure(pub String);

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks `gates` on `report`; `flag` names each gate's flag in the message (`--min-hit10`).
pub fn check(report: &Report, gates: &[(Gate, &str)]) -> Vec<Failure> {
    let k = report.k;
    let ratio = if report.full.hit_at_k > 0.0 { report.circuit.hit_at_k / report.full.hit_at_k } else { 0.0 };
    gates
        .iter()
        .filter_map(|&(gate, flag)| {
            let (what, value, bound, ok) = match gate {
                Gate::MinHitK(x) => (format!("circuit Hit@{k}"), report.circuit.hit_at_k, x, report.circuit.hit_at_k >= x),
                Gate::MinHit1(x) => ("circuit Hit@1".to_string(), report.circuit.hit_at_1, x, report.circuit.hit_at_1 >= x),
                Gate::MinFaithfulness(x) => ("faithfulness".to_string(), report.faithfulness, x, report.faithfulness >= x),
                Gate::MinRatio(x) => (format!("circuit/full Hit@{k}"), ratio, x, ratio >= x),
                Gate::MaxRandomHitK(x) => (format!("random Hit@{k}"), report.random.mean.hit_at_k, x, report.random.mean.hit_at_k <= x),
            };
            let op = if matches!(gate, Gate::MaxRandomHitK(_)) { ">" } else { "<" };
            (!ok).then(|| Failure(format!("{what} {value:.3} {op} {flag} {bound}")))
        })
        .collect()
}

/// The metrics a baseline comparison watches, by name and value.
fn watched(r: &Report) -> [(String, f64); 4] {
    [
        (format!("circuit Hit@{}", r.k), r.circuit.hit_at_k),
        ("circuit Hit@1".into(), r.circuit.hit_at_1),
        ("circuit MRR".into(), r.circuit.mrr),
        ("faithfulness".into(), r.faithfulness),
    ]
}

/// Compares `report` with an accepted `baseline`: circuit Hit@k, Hit@1, MRR and faithfulness may each fall by
/// at most `max_drop`. Refuses a baseline of another relation or another k.
pub fn against_baseline(report: &Report, baseline: &Report, max_drop: f64) -> Result<Vec<Failure>> {
    if baseline.relation != report.relation {
        return Err(Error::input(format!("baseline is a report on `{}`, this one is on `{}`", baseline.relation, report.relation)));
    }
    if baseline.k != report.k {
        return Err(Error::input(format!("baseline measured Hit@{}, this report Hit@{}: give --k {}", baseline.k, report.k, baseline.k)));
    }
    Ok(watched(baseline)
        .into_iter()
        .zip(watched(report))
        .filter(|((_, old), (_, new))| old - new > max_drop)
        .map(|((name, old), (_, new))| {
            Failure(format!("{name} fell from {old:.3} to {new:.3} (by {:.3} > --max-drop {max_drop})", old - new))
        })
        .collect())
}

/// A baseline from a file's JSON: an eval report, or a circuit file with its `eval` report inside.
pub fn baseline_report(value: serde_json::Value, label: &str) -> Result<Report> {
    let report = match value.get("eval") {
        Some(e) if value.get("edges").is_some() => e.clone(),
        _ => value,
    };
    if report.get("circuit").is_none() {
        return Err(Error::input(format!("{label}: neither an eval report nor a circuit file with one (no `circuit` metrics)")));
    }
    if let Some(v) = report.get("format").and_then(serde_json::Value::as_u64) {
        if v > crate::eval::REPORT_FORMAT as u64 {
            return Err(Error::input(format!(
                "{label}: report format {v} is newer than this kcirc reads ({})",
                crate::eval::REPORT_FORMAT
            )));
        }
    }
    serde_json::from_value(report).map_err(|e| Error::input(format!("{label}: not an eval report: {e}")))
}
