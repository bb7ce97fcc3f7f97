//! The logit lens (brief §10): the final norm and the unembedding applied to the residual stream after the
//! embedding and after every attention block and MLP, following the target's rank and probability layer by
//! layer at the last position and its best rank over the subject's positions.
//!
//! Under a circuit the "residual stream" is what the `logits` receiver reads, accumulated block by block:
//! kept senders' live outputs, removed senders' ablated values. Its last point is the circuit's own logits.
use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use super::{dla, sources, Analysis, Context, Trace};
use crate::data::Span;
use crate::model::Logits;
use crate::progress::Progress;
use crate::rank::rank_in;
use crate::Result;

/// The lens over a context's facts, optionally following a second answer per fact.
pub struct Lens {
    /// Per fact (indexed like the context's facts), another answer token to follow beside the target: a wrong
    /// answer the model prefers (hallucination), or any rival.
    pub compare: Vec<Option<u32>>,
    /// For facts without an answer to compare whose top-1 answer is wrong, follow that answer.
    pub compare_predicted: bool,
}

/// One lens point of one fact.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Point {
    /// `embed`, `a{l}` (after attention `l`), `m{l}` (after MLP `l`).
    pub point: String,
    /// The target's rank at the last position (0 = top-1).
    pub rank: usize,
    pub prob: f64,
    /// The target's best rank over the subject's positions (`None` when the prompt has no subject tokens).
    pub subject_rank: Option<usize>,
    /// The top-1 token at the last position.
    pub top: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compare_rank: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compare_prob: Option<f64>,
}

/// The lens of one fact in one model (the full model or a circuit).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reading {
    pub points: Vec<Point>,
    /// The first point from which the target stays top-1 to the end, if it ends top-1.
    pub emerges_at: Option<String>,
    /// The first point from which the compared answer stays ahead of the target to the end, if it ends ahead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compare_overtakes_at: Option<String>,
    /// The first point from which the compared answer stays top-1 to the end, if it ends top-1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compare_emerges_at: Option<String>,
    /// Direct logit attribution of the target: per layer (attention, MLP), embedding and constants.
    pub dla: LayerAttribution,
    /// The [`TOP_HEADS`] heads with the largest direct effect on the target.
    pub top_heads: Vec<HeadEffect>,
    /// With a compared answer: the [`TOP_HEADS`] heads that favour it over the target most (largest
    /// `compare − target` direct effect), e.g. a mover head that moved the wrong entity.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rival_heads: Option<Vec<HeadEffect>>,
}

/// Heads listed per reading.
pub const TOP_HEADS: usize = 5;

/// One head's direct effect on the target's logit (and on the compared answer's).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeadEffect {
    pub head: String,
    pub target: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compare: Option<f64>,
}

/// The target's direct logit attribution by layer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LayerAttribution {
    pub embed: f64,
    /// Per layer: the attention block (heads plus bias) and the MLP.
    pub layers: Vec<(f64, f64)>,
    /// Final norm bias and unembedding bias.
    pub constant: f64,
    /// The target's logit (= embed + Σ layers + constant, up to rounding).
    pub logit: f64,
}

/// One fact's lens.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FactLens {
    pub subject: String,
    pub prompt: String,
    pub object: String,
    pub target: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compare: Option<String>,
    /// Token positions of the subject in the prompt.
    pub subject_positions: Vec<usize>,
    pub full: Reading,
    /// The same under the circuit's ablation, when a circuit was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub circuit: Option<Reading>,
}

/// Lens report over facts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub model: String,
    pub n_facts: usize,
    /// Per fact.
    pub facts: Vec<FactLens>,
    /// Over facts, per point: mean rank, fraction top-1, of the full model (and the circuit).
    pub summary: Vec<SummaryPoint>,
    /// How many facts' answers emerge (become and stay top-1) at each point, in forward order; `never` counts
    /// the facts whose answer does not end top-1.
    pub emergence: Vec<(String, usize)>,
    /// The same under the circuit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub circuit_emergence: Option<Vec<(String, usize)>>,
}

/// Facts per emergence point, in the points' order, then `never`.
fn emergence(points: &[Point], readings: &[&Reading]) -> Vec<(String, usize)> {
    let mut out: Vec<(String, usize)> = points
        .iter()
        .map(|p| (p.point.clone(), readings.iter().filter(|r| r.emerges_at.as_deref() == Some(p.point.as_str())).count()))
        .filter(|(_, n)| *n > 0)
        .collect();
    let never = readings.iter().filter(|r| r.emerges_at.is_none()).count();
    if never > 0 {
        out.push(("never".into(), never));
    }
    out
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SummaryPoint {
    pub point: String,
    pub mean_rank: f64,
    pub top1: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub circuit_mean_rank: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub circuit_top1: Option<f64>,
}

/// Logits `[N, V]` of the lens at the given points and positions: `xs` are `[T, D]` accumulated residuals.
pub fn lens_logits(ctx: &Context, xs: &[Tensor], positions: &[usize]) -> Result<Tensor> {
    let idx = Tensor::new(positions.iter().map(|&p| p as u32).collect::<Vec<_>>().as_slice(), &ctx.model.device)?;
    let rows: Vec<Tensor> = xs.iter().map(|x| x.index_select(&idx, 0)).collect::<candle_core::Result<_>>()?;
    let stacked = Tensor::cat(&rows, 0)?.unsqueeze(0)?; // [1, N, D]
    Ok(ctx.model.unembed(&stacked, Logits::All)?.squeeze(0)?)
}

/// The lens of one trace of fact `i`.
pub fn read(ctx: &Context, i: usize, trace: &Trace, compare: Option<u32>) -> Result<Reading> {
    let fact = &ctx.facts[i];
    let target = fact.target as usize;
    let t = fact.tokens.len();
    let subject: Vec<usize> = sources(fact).iter().enumerate().filter(|(_, s)| **s == Span::Subject).map(|(p, _)| p).collect();
    let mut positions = subject.clone();
    positions.push(t - 1);
    let cum = trace.cumulative()?;
    let xs: Vec<Tensor> = cum.iter().map(|(_, x)| x.clone()).collect();
    let logits = lens_logits(ctx, &xs, &positions)?.to_vec2::<f32>()?;
    let per = positions.len();
    let mut points = vec![];
    for (k, (name, _)) in cum.iter().enumerate() {
        let rows = &logits[k * per..(k + 1) * per];
        let last = &rows[per - 1];
        let lse = crate::rank::log_sum_exp(last);
        let prob = |tok: usize| ((last[tok] as f64) - lse).exp();
        let top = crate::predict::top_k(last, 1)[0];
        points.push(Point {
            point: name.clone(),
            rank: rank_in(last, target),
            prob: prob(target),
            subject_rank: rows[..per - 1].iter().map(|r| rank_in(r, target)).min(),
            top: ctx.tok.token_text(top as u32),
            compare_rank: compare.map(|c| rank_in(last, c as usize)),
            compare_prob: compare.map(|c| prob(c as usize)),
        });
    }
    let emerges_at = stays_from(&points, |p| p.rank == 0);
    let compare_overtakes_at = compare.and_then(|_| stays_from(&points, |p| p.compare_rank.is_some_and(|c| c < p.rank)));
    let compare_emerges_at = compare.and_then(|_| stays_from(&points, |p| p.compare_rank == Some(0)));
    let (a, _) = dla::attribute(ctx.model, trace, fact.target)?;
    let rival = compare.map(|c| dla::attribute(ctx.model, trace, c)).transpose()?.map(|(r, _)| r);
    let heads: Vec<HeadEffect> = a
        .heads
        .iter()
        .enumerate()
        .flat_map(|(l, hs)| hs.iter().enumerate().map(move |(h, &v)| (l, h, v)))
        .map(|(l, h, v)| HeadEffect { head: format!("a{l}.h{h}"), target: v, compare: rival.as_ref().map(|r| r.heads[l][h]) })
        .collect();
    let top = |key: &dyn Fn(&HeadEffect) -> f64| -> Vec<HeadEffect> {
        let mut v: Vec<&HeadEffect> = heads.iter().collect();
        v.sort_by(|x, y| key(y).total_cmp(&key(x)));
        v.into_iter().take(TOP_HEADS).cloned().collect()
    };
    let top_heads = top(&|x| x.target);
    let rival_heads = rival.as_ref().map(|_| top(&|x| x.compare.unwrap_or(0.0) - x.target));
    let dla = LayerAttribution { embed: a.embed, layers: a.per_layer(), constant: a.constant, logit: a.logit };
    Ok(Reading { points, emerges_at, compare_overtakes_at, compare_emerges_at, dla, top_heads, rival_heads })
}

/// The first point from which `holds` is true to the end.
fn stays_from(points: &[Point], holds: impl Fn(&Point) -> bool) -> Option<String> {
    let n = points.iter().rev().take_while(|p| holds(p)).count();
    (n > 0).then(|| points[points.len() - n].point.clone())
}

impl Analysis for Lens {
    type Report = Report;
    fn name(&self) -> &'static str {
        "lens"
    }
    fn analyse(&self, ctx: &Context, progress: &dyn Progress) -> Result<Report> {
        progress.start(ctx.facts.len() as u64 * if ctx.circuit.is_some() { 2 } else { 1 });
        let given = |i: usize| self.compare.get(i).copied().flatten();
        let full = super::traces_map(ctx, false, progress, |i, tr| {
            let top = crate::predict::top_k(&tr.logits, 1)[0] as u32;
            let wrong = (self.compare_predicted && top != ctx.facts[i].target).then_some(top);
            let c = given(i).or(wrong);
            Ok((read(ctx, i, tr, c)?, c))
        })?;
        let (full, compares): (Vec<Reading>, Vec<Option<u32>>) = full.into_iter().unzip();
        let compare = |i: usize| compares[i];
        let circuit = match ctx.circuit {
            Some(_) => Some(super::traces_map(ctx, true, progress, |i, tr| read(ctx, i, tr, compare(i)))?),
            None => None,
        };
        let mut facts = vec![];
        for (i, full) in full.into_iter().enumerate() {
            let f = &ctx.facts[i];
            facts.push(FactLens {
                subject: f.triple.subject.clone(),
                prompt: f.triple.prompt_text()?,
                object: f.triple.object.clone(),
                target: ctx.tok.token_text(f.target),
                compare: compare(i).map(|c| ctx.tok.token_text(c)),
                subject_positions: f.positions(Span::Subject),
                full,
                circuit: circuit.as_ref().map(|c| c[i].clone()),
            });
        }
        let n = facts.len().max(1) as f64;
        let summary = (0..facts.first().map_or(0, |f| f.full.points.len()))
            .map(|k| {
                let mean = |r: &dyn Fn(&FactLens) -> Option<&Reading>| -> Option<(f64, f64)> {
                    let pts: Vec<&Point> = facts.iter().filter_map(|f| r(f).map(|x| &x.points[k])).collect();
                    (!pts.is_empty()).then(|| {
                        (pts.iter().map(|p| p.rank as f64).sum::<f64>() / n, pts.iter().filter(|p| p.rank == 0).count() as f64 / n)
                    })
                };
                let (mean_rank, top1) = mean(&|f| Some(&f.full)).unwrap_or((0.0, 0.0));
                let c = mean(&|f| f.circuit.as_ref());
                SummaryPoint {
                    point: facts[0].full.points[k].point.clone(),
                    mean_rank,
                    top1,
                    circuit_mean_rank: c.map(|c| c.0),
                    circuit_top1: c.map(|c| c.1),
                }
            })
            .collect();
        let points = facts.first().map(|f| f.full.points.clone()).unwrap_or_default();
        let full_readings: Vec<&Reading> = facts.iter().map(|f| &f.full).collect();
        let circuit_readings: Vec<&Reading> = facts.iter().filter_map(|f| f.circuit.as_ref()).collect();
        let emergence_full = emergence(&points, &full_readings);
        let circuit_emergence = ctx.circuit.as_ref().map(|_| emergence(&points, &circuit_readings));
        Ok(Report { model: ctx.model.name.clone(), n_facts: facts.len(), facts, summary, emergence: emergence_full, circuit_emergence })
    }
}

impl Report {
    /// A text table per fact: point, target rank and probability, best subject-position rank, top-1 token,
    /// (compared answer's rank), (circuit's rank).
    pub fn table(&self) -> String {
        let mut out = String::new();
        for f in &self.facts {
            out.push_str(&format!("{} → {:?} (target {:?})\n", f.prompt, f.object, f.target));
            let cmp = f.compare.is_some();
            let circ = f.circuit.is_some();
            out.push_str(&format!("{:>6}  {:>7}  {:>8}  {:>8}  {:<16}", "point", "rank", "prob", "subj.rank", "top-1"));
            if cmp {
                out.push_str(&format!("  {:>12}", format!("rank {:?}", f.compare.as_deref().unwrap_or(""))));
            }
            if circ {
                out.push_str(&format!("  {:>12}", "circuit rank"));
            }
            out.push('\n');
            for (k, p) in f.full.points.iter().enumerate() {
                let subj = p.subject_rank.map_or("-".into(), |r| r.to_string());
                out.push_str(&format!("{:>6}  {:>7}  {:>8.4}  {:>8}  {:<16}", p.point, p.rank, p.prob, subj, format!("{:?}", p.top)));
                if cmp {
                    out.push_str(&format!("  {:>12}", p.compare_rank.map_or("-".into(), |r| r.to_string())));
                }
                if let Some(c) = &f.circuit {
                    out.push_str(&format!("  {:>12}", c.points[k].rank));
                }
                out.push('\n');
            }
            let at = |r: &Reading| r.emerges_at.clone().unwrap_or_else(|| "never".into());
            out.push_str(&format!("target top-1 from: {}", at(&f.full)));
            if let Some(c) = &f.circuit {
                out.push_str(&format!(" (circuit: {})", at(c)));
            }
            if cmp {
                let never = || "never".to_string();
                out.push_str(&format!(
                    "; compared answer ahead from: {}, top-1 from: {}",
                    f.full.compare_overtakes_at.clone().unwrap_or_else(never),
                    f.full.compare_emerges_at.clone().unwrap_or_else(never)
                ));
            }
            out.push('\n');
            let heads: Vec<String> = f.full.top_heads.iter().map(|h| format!("{} {:+.3}", h.head, h.target)).collect();
            out.push_str(&format!("heads writing the target most: {}\n", heads.join(", ")));
            if let Some(r) = &f.full.rival_heads {
                let heads: Vec<String> =
                    r.iter().map(|h| format!("{} {:+.3} vs {:+.3}", h.head, h.compare.unwrap_or(0.0), h.target)).collect();
                out.push_str(&format!("heads favouring the compared answer (its DLA vs the target's): {}\n", heads.join(", ")));
            }
            out.push('\n');
        }
        if self.facts.len() > 1 {
            let show = |e: &[(String, usize)]| e.iter().map(|(p, n)| format!("{p}: {n}")).collect::<Vec<_>>().join(", ");
            out.push_str(&format!("{} facts: the answer becomes and stays top-1 at {}\n", self.n_facts, show(&self.emergence)));
            if let Some(c) = &self.circuit_emergence {
                out.push_str(&format!("under the circuit: {}\n", show(c)));
            }
        }
        out
    }
}
