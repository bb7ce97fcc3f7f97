//! Knowledge erasure by pruning (brief §11, after Bayazit et al.'s knowledge-critical subnetworks): remove the
//! smallest part of a relation's circuit — its edges, or its nodes (every edge out of a head or MLP), ranked by
//! effect, largest |effect| first — whose removal from the full model drops the relation's held-out Hit@k to
//! near zero, and measure what that costs other relations against removing as many random edges (nodes).
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

/// What is removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Unit {
    /// The circuit's edges, one at a time.
    #[default]
    Edges,
    /// The circuit's sender nodes (heads and MLPs; not the input, whose removal removes the prompt itself), each
    /// with every edge out of it in the whole graph. A node's effect is the sum of its circuit edges' |effect|.
    Nodes,
}

/// Erasure settings.
#[derive(Debug, Clone)]
pub struct EraseOptions {
    pub ranking: Ranking,
    pub unit: Unit,
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
    pub unit: Unit,
    pub k: usize,
    pub target_hit: f64,
    /// Candidate edges or nodes (the circuit's, or under `specific` ranking those more specific to the relation
    /// than to any other).
    pub n_candidates: usize,
    /// Edges or nodes removed (the first candidates), and whether that reached the target.
    pub n_removed: usize,
    /// Graph edges that removes (= `n_removed` for edges; every edge out of the removed nodes).
    pub n_removed_edges: usize,
    pub reached: bool,
    /// The sizes tried, as `[edges or nodes removed, held-out Hit@k]`.
    pub searched: Vec<(usize, f64)>,
    /// The relation itself (held-out facts) and every other relation.
    pub target: Cost,
    pub others: Vec<Cost>,
    /// The removed edges' or nodes' names.
    pub removed: Vec<String>,
}

/// One removal candidate: an edge, or a node with every edge out of it.
struct Candidate {
    edges: Vec<usize>,
    name: String,
    score: f64,
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
    // Per edge of the graph: its |effect| in the circuit (-1: not in it, or no effect recorded).
    let mut effect = vec![-1.0; graph.edges.len()];
    for e in &circuit.edges {
        if let Some(id) = graph.edge_id(&e.name) {
            effect[id] = e.effect.map_or(-1.0, f64::abs);
        }
    }
    let in_circuit = |id: usize| !kept[id];
    // Under `specific` ranking: per edge, its share of this relation's |EAP-IG scores| and of each other's.
    let shares: Option<(Vec<f64>, Vec<Vec<f64>>)> = match opts.ranking {
        Ranking::Effect | Ranking::Greedy => None,
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
            Some((own, theirs))
        }
    };
    // A candidate's score: its share less its largest share elsewhere (specific), else its |effect| (a node's:
    // its circuit edges' summed).
    let score = |edges: &[usize]| -> f64 {
        match (&shares, opts.unit) {
            (Some((own, theirs)), _) => {
                let sum = |v: &[f64]| edges.iter().map(|&id| v[id]).sum::<f64>();
                sum(own) - theirs.iter().map(|t| sum(t)).fold(0.0, f64::max)
            }
            (None, Unit::Edges) => effect[edges[0]],
            (None, Unit::Nodes) => edges.iter().filter(|&&id| in_circuit(id)).map(|&id| effect[id].max(0.0)).sum(),
        }
    };
    let mut ranked: Vec<Candidate> = match opts.unit {
        Unit::Edges => (0..graph.edges.len())
            .filter(|&id| in_circuit(id))
            .map(|id| Candidate { edges: vec![id], name: graph.edges[id].name.clone(), score: score(&[id]) })
            .collect(),
        Unit::Nodes => (1..graph.n_senders())
            .filter(|&s| graph.edges_from[s].iter().any(|&id| in_circuit(id)))
            .map(|s| Candidate { edges: graph.edges_from[s].clone(), name: graph.sender_name(s), score: score(&graph.edges_from[s]) })
            .collect(),
    };
    if shares.is_some() {
        // Edges (nodes) that matter more to another relation than to this one are never removed.
        ranked.retain(|c| c.score > 0.0);
    }
    // Removal order: largest score first, ties in graph order.
    ranked.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.edges[0].cmp(&b.edges[0])));
    let n = ranked.len();
    if n == 0 {
        return Err(Error::input("the circuit has nothing to remove (nothing more specific to the relation than to the others)"));
    }
    let eval_opts = EvalOptions {
        k: opts.k,
        random: 0,
        seed: opts.seed,
        filter_known: circuit.run.filter_known,
        demonstrations: circuit.run.demonstrations.unwrap_or(0),
    };
    let held = HeldOut::of_circuit(model, tok, circuit, relation, &eval_opts)?;
    // Resample ablation was refused above: the held-out set's values are the circuit's means (or zero).
    let source = &held.ablation;
    let removing = |m: usize| -> Vec<bool> {
        let mut r = vec![false; graph.edges.len()];
        for c in &ranked[..m] {
            for &id in &c.edges {
                r[id] = true;
            }
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
            for (i, c) in ranked.iter().enumerate() {
                progress.advance(1);
                // Candidates never share an edge: setting and clearing one leaves the others as they were.
                let set = |removed: &mut Vec<bool>, to: bool| c.edges.iter().for_each(|&id| removed[id] = to);
                set(&mut removed, true);
                let mut spared = true;
                for (probe, own, before) in &guard {
                    if hits(model, &graph, std::slice::from_ref(&removed), probe, own, opts.k)?[0] < before - opts.tolerance {
                        spared = false;
                        break;
                    }
                }
                if !spared {
                    set(&mut removed, false);
                    continue;
                }
                chosen.push(i);
                let h = hits(model, &graph, std::slice::from_ref(&removed), &held.test, source, opts.k)?[0];
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
                let h = hits(model, &graph, &[removing(m)], &held.test, source, opts.k)?[0];
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
            (0..hi.unwrap_or(n)).collect()
        }
    };
    searched.sort_unstable_by_key(|s| s.0);
    searched.dedup_by_key(|s| s.0);
    let n_removed = chosen.len();
    let mut erased = vec![false; graph.edges.len()];
    for &i in &chosen {
        for &id in &ranked[i].edges {
            erased[id] = true;
        }
    }
    let n_removed_edges = erased.iter().filter(|r| **r).count();
    let reached = searched.iter().any(|&(m, h)| m == n_removed && h <= opts.target_hit);
    // As many random edges, or as many random nodes (heads and MLPs) with every edge out of them.
    let randoms: Vec<Vec<bool>> = match opts.unit {
        Unit::Edges => crate::eval::random_circuits(graph.edges.len(), n_removed, opts.random, opts.seed)
            .into_iter()
            .map(|keep| keep.iter().map(|r| !r).collect())
            .collect(),
        Unit::Nodes => crate::eval::random_circuits(graph.n_senders() - 1, n_removed, opts.random, opts.seed)
            .into_iter()
            .map(|keep| {
                let mut r = vec![false; graph.edges.len()];
                for (i, _) in keep.iter().enumerate().filter(|(_, k)| !**k) {
                    for &id in &graph.edges_from[i + 1] {
                        r[id] = true;
                    }
                }
                r
            })
            .collect(),
    };
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
    let target = cost(&relation.name, &held.test, source)?;
    let mut costs = vec![];
    for (name, known) in others_known.iter().filter(|(_, e)| !e.is_empty()) {
        costs.push(cost(name, known, &own_means(model, circuit.run.ablation, known)?)?);
    }
    Ok(Report {
        model: model.name.clone(),
        relation: relation.name.clone(),
        ranking: opts.ranking,
        unit: opts.unit,
        k: opts.k,
        target_hit: opts.target_hit,
        n_candidates: n,
        n_removed,
        n_removed_edges,
        reached,
        searched,
        target,
        others: costs,
        removed: chosen.iter().map(|&i| ranked[i].name.clone()).collect(),
    })
}

impl Report {
    /// Text: the erased part, then Hit@k before / erased / random per relation.
    pub fn table(&self) -> String {
        let unit = match self.unit {
            Unit::Edges => "edges".to_string(),
            Unit::Nodes => format!("nodes ({} edges)", self.n_removed_edges),
        };
        let mut out = format!(
            "{}: removing {} of the circuit's {} candidate {unit} ({} first) {} held-out Hit@{} ≤ {}\n",
            self.relation,
            self.n_removed,
            self.n_candidates,
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
