//! Faithfulness curves (brief §9, the MIB convention): a circuit cut from one ranking of the edges at several
//! sizes, each measured on the discovery facts (faithfulness in target-logit and KL form) and on the held-out
//! facts (Hit@1, Hit@k, MRR, target-logit faithfulness), beside random circuits of the same edge count, with
//! the areas CPR (under f) and CMD (under |1 − f|) by the trapezoid rule over the size axis.
use serde::{Deserialize, Serialize};

use crate::discover::eap::faithfulness;
use crate::discover::Task;
use crate::eval::{logit_faithfulness, mean_and_sd, random_circuits, HeldOut, Metrics};
use crate::graph::Selection;
use crate::metric::Metric;
use crate::progress::Progress;
use crate::{Error, Result};

/// MIB's sizes (fractions of all edges), and the whole graph.
pub const DEFAULT_SIZES: [f64; 10] = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0];

/// Version of the curve layout.
pub const CURVE_FORMAT: u32 = 1;

/// Fails unless `sizes` is a non-empty, strictly increasing list of fractions in (0, 1].
pub fn check_sizes(sizes: &[f64]) -> Result<()> {
    if sizes.is_empty() {
        return Err(Error::input("sizes: the list is empty"));
    }
    if let Some(x) = sizes.iter().find(|x| !(**x > 0.0 && **x <= 1.0)) {
        return Err(Error::input(format!("sizes: {x} is not a fraction of the edges in (0, 1]")));
    }
    if let Some(w) = sizes.windows(2).find(|w| w[1] <= w[0]) {
        return Err(Error::input(format!("sizes must increase: {} then {}", w[0], w[1])));
    }
    Ok(())
}

/// The areas of a curve.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Areas {
    /// Area under f: higher is better.
    pub cpr: f64,
    /// Area under |1 − f|: 0 is best.
    pub cmd: f64,
}

/// CPR and CMD of `points` (`(size, f)`, sizes ascending) by the trapezoid rule.
pub fn areas(points: &[(f64, f64)]) -> Areas {
    let trapezoid = |g: &dyn Fn(f64) -> f64| points.windows(2).map(|w| (w[1].0 - w[0].0) * (g(w[0].1) + g(w[1].1)) / 2.0).sum::<f64>();
    Areas { cpr: trapezoid(&|f| f), cmd: trapezoid(&|f| (1.0 - f).abs()) }
}

/// Faithfulness in both forms: target-logit drop and KL divergence, `1 − m(C)/m(∅)` each.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Faithfulness {
    pub logit: f64,
    pub kl: f64,
}

/// Held-out numbers of a circuit: its metrics and target-logit faithfulness.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HeldOutPoint {
    #[serde(flatten)]
    pub metrics: Metrics,
    pub faithfulness: f64,
}

/// Random circuits of one size: mean and standard deviation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RandomPoint {
    pub faithfulness_mean: Faithfulness,
    pub faithfulness_sd: Faithfulness,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_out_mean: Option<Metrics>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_out_sd: Option<Metrics>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_out_faithfulness_mean: Option<f64>,
}

/// One size of the curve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// Fraction of all edges selected by |score| (0: the empty circuit).
    pub size: f64,
    /// Edges kept once unconnected ones were dropped (random circuits have exactly as many).
    pub n_edges: usize,
    /// On the discovery facts.
    pub faithfulness: Faithfulness,
    /// Hit@1, Hit@k, MRR of the circuit on the discovery facts: beside `held_out`, how much of what the circuit
    /// keeps on the facts it was found on carries over to facts it never saw (absent in files before it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovery: Option<Metrics>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_out: Option<HeldOutPoint>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub random: Option<RandomPoint>,
}

/// The curve's areas: of the circuit and of random circuits, on discovery (both forms) and held-out facts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CurveAreas {
    pub logit: Areas,
    pub kl: Areas,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_out: Option<Areas>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub random_logit: Option<Areas>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub random_kl: Option<Areas>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub random_held_out: Option<Areas>,
}

/// A whole curve, as `kcirc curve` prints it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Curve {
    pub format: u32,
    pub model: String,
    pub relation: String,
    /// The attribution that ranked the edges (`eap`, `eap-ig`).
    pub method: String,
    pub ablation: crate::intervene::Ablation,
    pub seed: u64,
    pub k: usize,
    pub n_examples: usize,
    /// Mean ablation: prompts the means were taken over (discovery and reference facts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_reference: Option<usize>,
    pub n_held_out: usize,
    pub n_edges_total: usize,
    pub random_runs: usize,
    /// The knowledge edits applied to the model in memory first (`--edits`), when there were any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edits: Option<crate::model::EditRecord>,
    /// Size 0 (the empty circuit) first, then the sizes asked for.
    pub points: Vec<Point>,
    pub areas: CurveAreas,
}

/// Measures the curve of `scores` (one per edge of `task`'s graph) at `sizes` (checked by [`check_sizes`]),
/// Hit@`k` on the discovery facts and, when given, the `held_out` facts, with `random` random circuits per size
/// seeded from `seed`. Returns the points (size 0 first) and areas.
#[allow(clippy::too_many_arguments)]
pub fn measure(
    task: &Task,
    scores: &[f64],
    sizes: &[f64],
    k: usize,
    held_out: Option<&HeldOut>,
    random: usize,
    seed: u64,
    progress: &dyn Progress,
) -> Result<(Vec<Point>, CurveAreas)> {
    check_sizes(sizes)?;
    let g = &task.graph;
    let total = g.edges.len();
    let metrics = [Metric::Logit, Metric::Kl];
    let empty = vec![true; total];
    let (m_empty, empty_outcomes) = task.scores_and_outcomes(std::slice::from_ref(&empty), &metrics)?.remove(0);
    let faith = |m: &[f64]| Faithfulness { logit: faithfulness(m[0], m_empty[0]), kl: faithfulness(m[1], m_empty[1]) };
    let (full_ho, empty_ho) = match held_out {
        Some(h) => {
            let none = vec![false; total];
            let ms = h.metrics(task.model, g, &[&none, &empty], k)?;
            (Some(ms[0]), Some(ms[1]))
        }
        None => (None, None),
    };
    let held =
        |m: Metrics| HeldOutPoint { metrics: m, faithfulness: logit_faithfulness(&full_ho.unwrap_or(m), &m, &empty_ho.unwrap_or(m)) };
    let mut points = vec![Point {
        size: 0.0,
        n_edges: 0,
        faithfulness: Faithfulness { logit: 0.0, kl: 0.0 },
        discovery: Some(Metrics::new(&empty_outcomes, k)),
        held_out: empty_ho.map(held),
        random: (random > 0).then(|| RandomPoint {
            faithfulness_mean: Faithfulness { logit: 0.0, kl: 0.0 },
            faithfulness_sd: Faithfulness { logit: 0.0, kl: 0.0 },
            held_out_mean: empty_ho,
            held_out_sd: empty_ho.map(|_| zero_metrics()),
            held_out_faithfulness_mean: empty_ho.map(|_| 0.0),
        }),
    }];
    progress.start(sizes.len() as u64);
    for (i, &size) in sizes.iter().enumerate() {
        progress.message(&format!("size {size}"));
        let n = ((size * total as f64).round() as usize).clamp(1, total);
        let removed = g.select(scores, Selection::TopN(n))?;
        let kept = removed.iter().filter(|r| !**r).count();
        let randoms = random_circuits(total, kept, random, seed.wrapping_add(1000 * (i as u64 + 1)));
        let mut circuits = vec![removed];
        circuits.extend(randoms);
        // Every circuit's metrics; the ranks of the circuit itself (not the random ones) on the discovery facts.
        let mut measured = task.scores_and_outcomes(&circuits, &metrics)?;
        let discovery = Metrics::new(&measured[0].1, k);
        let ms: Vec<Vec<f64>> = measured.drain(..).map(|(m, _)| m).collect();
        let fs: Vec<Faithfulness> = ms.iter().map(|m| faith(m)).collect();
        let ho: Option<Vec<Metrics>> = match held_out {
            Some(h) => Some(h.metrics(task.model, g, &circuits.iter().map(|c| c.as_slice()).collect::<Vec<_>>(), k)?),
            None => None,
        };
        let random_point = (random > 0).then(|| {
            let (lm, ls) = mean_sd_of(fs[1..].iter().map(|f| f.logit));
            let (km, ks) = mean_sd_of(fs[1..].iter().map(|f| f.kl));
            let (hm, hs) = match &ho {
                Some(h) => {
                    let (m, s) = mean_and_sd(&h[1..]);
                    (Some(m), Some(s))
                }
                None => (None, None),
            };
            let hf = ho.as_ref().map(|h| h[1..].iter().map(|m| held(*m).faithfulness).sum::<f64>() / random as f64);
            RandomPoint {
                faithfulness_mean: Faithfulness { logit: lm, kl: km },
                faithfulness_sd: Faithfulness { logit: ls, kl: ks },
                held_out_mean: hm,
                held_out_sd: hs,
                held_out_faithfulness_mean: hf,
            }
        });
        points.push(Point {
            size,
            n_edges: kept,
            faithfulness: fs[0],
            discovery: Some(discovery),
            held_out: ho.as_ref().map(|h| held(h[0])),
            random: random_point,
        });
        progress.advance(1);
    }
    let area = |f: &dyn Fn(&Point) -> Option<f64>| -> Option<Areas> {
        let pts: Option<Vec<(f64, f64)>> = points.iter().map(|p| f(p).map(|v| (p.size, v))).collect();
        pts.map(|p| areas(&p))
    };
    let curve_areas = CurveAreas {
        logit: area(&|p| Some(p.faithfulness.logit)).unwrap_or(Areas { cpr: 0.0, cmd: 0.0 }),
        kl: area(&|p| Some(p.faithfulness.kl)).unwrap_or(Areas { cpr: 0.0, cmd: 0.0 }),
        held_out: area(&|p| p.held_out.map(|h| h.faithfulness)),
        random_logit: area(&|p| p.random.as_ref().map(|r| r.faithfulness_mean.logit)),
        random_kl: area(&|p| p.random.as_ref().map(|r| r.faithfulness_mean.kl)),
        random_held_out: area(&|p| p.random.as_ref().and_then(|r| r.held_out_faithfulness_mean)),
    };
    Ok((points, curve_areas))
}

fn zero_metrics() -> Metrics {
    Metrics { hit_at_1: 0.0, hit_at_k: 0.0, mrr: 0.0, target_logit: 0.0, target_prob: 0.0 }
}

/// Mean and sample standard deviation.
fn mean_sd_of(xs: impl Iterator<Item = f64>) -> (f64, f64) {
    let v: Vec<f64> = xs.collect();
    let n = v.len().max(1) as f64;
    let m = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    (m, var.sqrt())
}
