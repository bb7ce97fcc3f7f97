//! Knowledge erasure by pruning (brief §11, after Bayazit et al.'s knowledge-critical subnetworks): remove the
//! smallest part of a relation's circuit — its edges ranked by effect, largest |effect| first — whose removal
//! from the full model drops the relation's held-out Hit@k to near zero, and measure what that costs other
//! relations against removing as many random edges.
use serde::Serialize;

use crate::circuit::CircuitFile;
use crate::data::{Example, Relation};
use crate::eval::{circuits_outcomes, AblationSource, EvalOptions, HeldOut, Metrics};
use crate::graph::Graph;
use crate::intervene::Ablation;
use crate::model::Model;
use crate::progress::Progress;
use crate::tokenizer::Tokenizer;
use crate::{Error, Result};

/// How the circuit's edges are ordered for removal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Ranking {
    /// Largest |effect| in the circuit file first.
    Effect,
    /// Largest |effect| first, but an edge is kept whenever removing it (with those removed before) drops
    /// any other relation's Hit@k on [`GUARD_FACTS`] of its facts by more than `tolerance`: the smallest part of
    /// the circuit found that way whose removal erases the relation and spares the others.
    Greedy,
    /// Most specific to the relation first: the edge's share of the relation's total |EAP-IG score| minus its
    /// largest share among the other relations (scored on their known facts); edges that matter more to another
    /// relation than to this one are never removed.
    Specific,
}

/// Erasure settings.
#[derive(Debug, Clone)]
pub struct EraseOptions {
    pub ranking: Ranking,
    /// Greedy ranking: the largest drop of another relation's guard Hit@k an accepted edge may cause.
    pub tolerance: f64,
    /// Hit@k of the relation's held-out facts counted as erased at or below this.
    pub target_hit: f64,
    pub k: usize,
    /// Random edge sets of the same size for the baseline.
    pub random: usize,
    pub seed: u64,
    /// Facts per other relation (known to the full model, file order).
    pub max_facts: usize,
}

/// One relation's Hit@k before and after.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cost {
    pub relation: String,
    pub n_facts: usize,
    pub hit_before: f64,
    pub hit_erased: f64,
    /// Mean over the random edge sets of the same size.
    pub hit_random: f64,
}

/// The erasure report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub model: String,
    pub relation: String,
    pub ranking: Ranking,
    pub k: usize,
    pub target_hit: f64,
    /// Candidate edges (the circuit's, or under `specific` ranking those more specific to the relation than to
    /// any other).
    pub n_circuit_edges: usize,
    /// Edges removed (the first candidates), and whether that reached the target.
    pub n_removed: usize,
    pub reached: bool,
    /// The sizes tried, as `[edges removed, held-out Hit@k]`.
    pub searched: Vec<(usize, f64)>,
    /// The relation itself (held-out facts) and every other relation.
    pub target: Cost,
    pub others: Vec<Cost>,
    pub removed: Vec<String>,
}

/// Known facts per other relation that guard the greedy search.
pub const GUARD_FACTS: usize = 8;

/// What a removed edge carries on `examples`: the senders' means over these prompts (zero under zero ablation).
fn own_means(model: &Model, ablation: Ablation, examples: &[Example]) -> Result<AblationSource> {
    Ok(match ablation {
        Ablation::Zero => AblationSource::Zero,
        _ => AblationSource::mean_of(model, examples)?,
    })
}

/// Hit@k of `examples` under each removed-edge set.
fn hits(model: &Model, graph: &Graph, sets: &[Vec<bool>], examples: &[Example], source: &AblationSource, k: usize) -> Result<Vec<f64>> {
    let refs: Vec<&[bool]> = sets.iter().map(|s| s.as_slice()).collect();
    let out = circuits_outcomes(model, graph, &refs, examples, source)?;
    Ok(out.iter().map(|o| Metrics::new(o, k).hit_at_k).collect())
}

/// Erases `circuit`'s relation (`relation`, its facts) and measures the cost on `others`.
pub fn erase(
    model: &Model,
    tok: &Tokenizer,
    circuit: &CircuitFile,
    relation: &Relation,
    others: &[Relation],
    opts: &EraseOptions,
    progress: &dyn Progress,
) -> Result<Report> {
    if circuit.run.ablation == Ablation::Resample {
        return Err(Error::input(
            "erasure needs a mean- or zero-ablated circuit: resample ablation has no values for other relations' prompts",
        ));
    }
    let graph = Graph::new(&model.cfg);
    let kept = circuit.removed(&graph, &model.cfg)?;
    let discovery = circuit.run.discovery_examples(tok)?;
    let known_of = |r: &Relation| -> Result<Vec<Example>> {
        let mut known = crate::rank::known(model, r.examples(tok)?, opts.k)?;
        known.truncate(opts.max_facts);
        Ok(known)
    };
    let others_known: Vec<(String, Vec<Example>)> = others.iter().map(|r| Ok((r.name.clone(), known_of(r)?))).collect::<Result<_>>()?;
    for (name, ex) in &others_known {
        if ex.is_empty() {
            progress.warn(&format!("{name}: the model knows none of its facts; left out"));
        }
    }
    // The circuit's edges in removal order (ties and edges without an effect in graph order).
    let mut ranked: Vec<(usize, f64)> = match opts.ranking {
        Ranking::Effect | Ranking::Greedy => {
            circuit.edges.iter().filter_map(|e| graph.edge_id(&e.name).map(|id| (id, e.effect.map_or(-1.0, f64::abs)))).collect()
        }
        Ranking::Specific => {
            let ig = Some(circuit.run.ig_steps.unwrap_or(5));
            let share = |examples: Vec<Example>| -> Result<Vec<f64>> {
                let task = crate::discover::Task::new(model, examples, circuit.run.ablation, None, circuit.run.metric)?;
                let s = crate::discover::eap::edge_scores(&task, ig, &crate::progress::Silent)?;
                let total: f64 = s.iter().map(|x| x.abs()).sum::<f64>().max(1e-30);
                Ok(s.iter().map(|x| x.abs() / total).collect())
            };
            progress.message("scoring the edges on every relation");
            let own = share(discovery.clone())?;
            let theirs: Vec<Vec<f64>> =
                others_known.iter().filter(|(_, e)| !e.is_empty()).map(|(_, e)| share(e.clone())).collect::<Result<_>>()?;
            circuit
                .edges
                .iter()
                .filter_map(|e| graph.edge_id(&e.name))
                .map(|id| (id, own[id] - theirs.iter().map(|t| t[id]).fold(0.0, f64::max)))
                .filter(|(_, s)| *s > 0.0)
                .collect()
        }
    };
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    debug_assert!(ranked.iter().all(|(id, _)| !kept[*id]));
    let n = ranked.len();
    if n == 0 {
        return Err(Error::input("the circuit has no edges to remove (none more specific to the relation than to the others)"));
    }
    let eval_opts = EvalOptions {
        k: opts.k,
        random: 0,
        seed: opts.seed,
        filter_known: circuit.run.filter_known,
        demonstrations: circuit.run.demonstrations.unwrap_or(0),
    };
    let held = HeldOut::new(model, tok, &discovery, relation, relation.examples(tok)?, circuit.run.ablation, &eval_opts, circuit.run.seed)?;
    let source = match circuit.run.ablation {
        Ablation::Zero => AblationSource::Zero,
        _ => AblationSource::mean_of(model, &discovery)?,
    };
    let removing = |m: usize| -> Vec<bool> {
        let mut r = vec![false; graph.edges.len()];
        for &(id, _) in &ranked[..m] {
            r[id] = true;
        }
        r
    };
    let mut searched = vec![];
    let chosen: Vec<usize> = match opts.ranking {
        Ranking::Greedy => {
            // Per other relation, a few known facts and the means of its own prompts: the locality guard.
            let guard: Vec<(Vec<Example>, AblationSource, f64)> = others_known
                .iter()
                .filter(|(_, e)| !e.is_empty())
                .map(|(_, e)| {
                    let probe: Vec<Example> = e.iter().take(GUARD_FACTS).cloned().collect();
                    let own = own_means(model, circuit.run.ablation, e)?;
                    let before = hits(model, &graph, &[vec![false; graph.edges.len()]], &probe, &own, opts.k)?[0];
                    Ok((probe, own, before))
                })
                .collect::<Result<_>>()?;
            progress.message("greedy search: removing edges that spare the other relations");
            progress.start(n as u64);
            let mut removed = vec![false; graph.edges.len()];
            let mut chosen = vec![];
            for &(id, _) in &ranked {
                progress.advance(1);
                removed[id] = true;
                let mut spared = true;
                for (probe, own, before) in &guard {
                    if hits(model, &graph, std::slice::from_ref(&removed), probe, own, opts.k)?[0] < before - opts.tolerance {
                        spared = false;
                        break;
                    }
                }
                if !spared {
                    removed[id] = false;
                    continue;
                }
                chosen.push(id);
                let h = hits(model, &graph, std::slice::from_ref(&removed), &held.test, &source, opts.k)?[0];
                searched.push((chosen.len(), h));
                if h <= opts.target_hit {
                    break;
                }
            }
            chosen
        }
        _ => {
            // Doubling, then bisection, over prefixes of the ranking, on the held-out facts.
            progress.message("searching the smallest erasing part of the circuit");
            let mut hit_of = |m: usize| -> Result<f64> {
                let h = hits(model, &graph, &[removing(m)], &held.test, &source, opts.k)?[0];
                searched.push((m, h));
                progress.advance(1);
                Ok(h)
            };
            let (mut lo, mut hi) = (0usize, None);
            let mut m = 1;
            loop {
                let m_now = m.min(n);
                if hit_of(m_now)? <= opts.target_hit {
                    hi = Some(m_now);
                    break;
                }
                lo = m_now;
                if m_now == n {
                    break;
                }
                m *= 2;
            }
            if let Some(mut h) = hi {
                while h - lo > 1 {
                    let mid = (lo + h) / 2;
                    if hit_of(mid)? <= opts.target_hit {
                        h = mid;
                    } else {
                        lo = mid;
                    }
                }
                hi = Some(h);
            }
            ranked[..hi.unwrap_or(n)].iter().map(|&(id, _)| id).collect()
        }
    };
    searched.sort_unstable_by_key(|s| s.0);
    searched.dedup_by_key(|s| s.0);
    let n_removed = chosen.len();
    let mut erased = vec![false; graph.edges.len()];
    for &id in &chosen {
        erased[id] = true;
    }
    let reached = searched.iter().any(|&(m, h)| m == n_removed && h <= opts.target_hit);
    let randoms: Vec<Vec<bool>> = crate::eval::random_circuits(graph.edges.len(), n_removed, opts.random, opts.seed)
        .into_iter()
        .map(|keep| keep.iter().map(|r| !r).collect())
        .collect();
    let mut sets = vec![vec![false; graph.edges.len()], erased.clone()];
    sets.extend(randoms);
    // A removed edge carries the sender's mean over the prompts of the relation measured (its own template):
    // the relation's discovery prompts for itself, each other relation's own known facts for it.
    let cost = |name: &str, ex: &[Example], source: &AblationSource| -> Result<Cost> {
        let h = hits(model, &graph, &sets, ex, source, opts.k)?;
        let random = if h.len() > 2 { h[2..].iter().sum::<f64>() / (h.len() - 2) as f64 } else { f64::NAN };
        Ok(Cost { relation: name.to_string(), n_facts: ex.len(), hit_before: h[0], hit_erased: h[1], hit_random: random })
    };
    progress.message("measuring the cost on the other relations");
    let target = cost(&relation.name, &held.test, &source)?;
    let mut costs = vec![];
    for (name, known) in others_known.iter().filter(|(_, e)| !e.is_empty()) {
        costs.push(cost(name, known, &own_means(model, circuit.run.ablation, known)?)?);
    }
    Ok(Report {
        model: model.name.clone(),
        relation: relation.name.clone(),
        ranking: opts.ranking,
        k: opts.k,
        target_hit: opts.target_hit,
        n_circuit_edges: n,
        n_removed,
        reached,
        searched,
        target,
        others: costs,
        removed: chosen.iter().map(|&id| graph.edges[id].name.clone()).collect(),
    })
}

impl Report {
    /// Text: the erased part, then Hit@k before / erased / random per relation.
    pub fn table(&self) -> String {
        let mut out = format!(
            "{}: removing {} of the circuit's {} candidate edges ({} first) {} held-out Hit@{} ≤ {}\n",
            self.relation,
            self.n_removed,
            self.n_circuit_edges,
            match self.ranking {
                Ranking::Effect => "largest |effect|",
                Ranking::Specific => "most relation-specific",
                Ranking::Greedy => "largest |effect| sparing the other relations",
            },
            if self.reached { "brings" } else { "does NOT bring" },
            self.k,
            self.target_hit
        );
        out.push_str(&format!("{:<28} {:>6} {:>9} {:>9} {:>9}\n", "relation", "facts", "before", "erased", "random"));
        for c in std::iter::once(&self.target).chain(&self.others) {
            out.push_str(&format!(
                "{:<28} {:>6} {:>9.3} {:>9.3} {:>9.3}\n",
                c.relation, c.n_facts, c.hit_before, c.hit_erased, c.hit_random
            ));
        }
        out
    }
}
