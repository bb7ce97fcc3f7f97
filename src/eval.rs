//! Held-out evaluation (brief §5): a circuit against the full model, the empty circuit and random circuits of
//! the same size, on the facts it was not discovered from.
use serde::{Deserialize, Serialize};

use crate::data::Example;
use crate::model::{Logits, Model};
pub use crate::rank::{full_model_outcomes, outcomes, Metrics, Outcome};
use crate::Result;

/// How removed edges are filled in on held-out prompts, mirroring discovery.
#[derive(Debug, Clone)]
pub enum AblationSource {
    Zero,
    /// Per-position-from-end means over the reference prompts, one row per sender (embed and MLPs `[1, T_r, D]`,
    /// heads `[H, 1, T_r, D]`, from [`crate::intervene::reference_means`]). Held-out positions farther from the
    /// end than any reference prompt take the farthest mean.
    Mean(crate::model::Activations),
    /// Same-length corrupted prompts, one per held-out example.
    Resample(Vec<Vec<u32>>),
}

impl AblationSource {
    /// The ablated sender values of examples `rows` (indices into the examples this source was made for) as one
    /// batch padded to `t` positions; `None` for zero ablation.
    pub fn values(&self, model: &Model, rows: &[usize], t: usize) -> Result<Option<crate::model::Activations>> {
        Ok(match self {
            AblationSource::Zero => None,
            AblationSource::Mean(m) => Some(crate::intervene::broadcast_means(m, rows.len(), t)?),
            AblationSource::Resample(corrupt) => {
                let cp: Vec<Vec<u32>> = rows.iter().map(|&i| corrupt[i].clone()).collect();
                Some(model.run(&model.batch(&cp)?, &crate::intervene::RecordHeads, Logits::Hidden)?.0)
            }
        })
    }

    /// The per-position means of `reference`'s prompts (what mean ablation fills removed edges with).
    pub fn mean_of(model: &Model, reference: &[Example]) -> Result<AblationSource> {
        let prompts: Vec<Vec<u32>> = reference.iter().map(|e| e.tokens.clone()).collect();
        AblationSource::mean_of_prompts(model, &prompts)
    }

    /// [`AblationSource::mean_of`] token prompts (a circuit's are `RunInfo::mean_prompts`).
    pub fn mean_of_prompts(model: &Model, prompts: &[Vec<u32>]) -> Result<AblationSource> {
        Ok(AblationSource::Mean(crate::intervene::reference_means(model, prompts)?))
    }
}

/// Padded tokens per work unit of [`circuits_outcomes`]: a unit's memory (every sender's delta per copy, every
/// layer's activations) grows with prompts × padded length, so long prompts go fewer to a unit. Units depend only
/// on the inputs, never on the thread count.
const EVAL_TOKENS: usize = 64;

/// Consecutive runs of example indices whose count × longest prompt stays within [`EVAL_TOKENS`] (at least one
/// example each).
fn token_chunks(examples: &[Example]) -> Vec<Vec<usize>> {
    let mut chunks: Vec<Vec<usize>> = vec![];
    let mut longest = 0;
    for (i, e) in examples.iter().enumerate() {
        let len = e.tokens.len().max(1);
        match chunks.last_mut() {
            Some(c) if (c.len() + 1) * longest.max(len) <= EVAL_TOKENS => {
                c.push(i);
                longest = longest.max(len);
            }
            _ => {
                chunks.push(vec![i]);
                longest = len;
            }
        }
    }
    chunks
}

/// Outcomes of several circuits (each a removed-edge flag vector; `None` = the full model) on `examples`,
/// removed edges filled in by `ablation`. Returns one outcome list per circuit.
pub fn circuits_outcomes(
    model: &Model,
    graph: &crate::graph::Graph,
    circuits: &[&[bool]],
    examples: &[Example],
    ablation: &AblationSource,
) -> Result<Vec<Vec<Outcome>>> {
    use crate::intervene::EdgeInputs;
    let chunks = token_chunks(examples);
    let per_chunk = crate::parallel::map(&chunks, |c| -> Result<Vec<Vec<Outcome>>> {
        let prompts: Vec<Vec<u32>> = c.iter().map(|&i| examples[i].tokens.clone()).collect();
        let targets: Vec<u32> = c.iter().map(|&i| examples[i].target).collect();
        let batch = model.batch(&prompts)?;
        let ablated = ablation.values(model, c, batch.seq_len)?;
        let k = circuits.len();
        let hook = EdgeInputs::new(graph, circuits.to_vec(), ablated.as_ref(), prompts.len());
        let logits = model.run(&batch.repeat(k)?, &hook, Logits::Last)?.1; // [k·n, V]
        (0..k).map(|j| outcomes(&logits.narrow(0, j * prompts.len(), prompts.len())?, &targets)).collect()
    });
    let per_chunk = per_chunk.into_iter().collect::<Result<Vec<_>>>()?;
    Ok((0..circuits.len()).map(|j| per_chunk.iter().flat_map(|c| c[j].clone()).collect()).collect())
}

/// Mean and standard deviation of the random-circuit baselines.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RandomBaseline {
    pub runs: usize,
    pub mean: Metrics,
    pub sd: Metrics,
}

/// Version of the report layout (its `format` field; reports without one are version 1).
pub const REPORT_FORMAT: u32 = 1;

fn report_format() -> u32 {
    1
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// The held-out report of one circuit (`kcirc eval`, and `eval` inside a circuit file).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    #[serde(default = "report_format")]
    pub format: u32,
    pub model: String,
    pub relation: String,
    pub k: usize,
    pub n_triples: usize,
    /// Triples skipped because the circuit was discovered on them.
    pub n_skipped_discovery: usize,
    /// Triples skipped because mean ablation's means were taken over them (only when this evaluation's `k`
    /// counts as known a reference fact the discovery run did not).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub n_skipped_reference: usize,
    /// Mean ablation: prompts the means were taken over (the discovery prompts and the circuit's reference
    /// facts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_reference: Option<usize>,
    /// Held-out triples dropped because the full model does not know them (rank ≥ k).
    pub n_dropped_unknown: usize,
    /// Held-out triples dropped under resample ablation because no other fact has a prompt of their token
    /// length to corrupt them with.
    #[serde(default)]
    pub n_dropped_no_partner: usize,
    /// Distinct target tokens among all the relation's facts. At most `k` of them and Hit@k cannot tell a
    /// circuit from chance: any output that keeps the relation's answers ranks them all in the top k.
    #[serde(default)]
    pub n_distinct_targets: usize,
    pub full: Metrics,
    pub circuit: Metrics,
    pub random: RandomBaseline,
    /// The circuit with every edge removed.
    pub empty: Metrics,
    /// `(circuit − empty) / (full − empty)` of the mean target logit.
    pub faithfulness: f64,
    pub n_edges: usize,
    pub n_edges_total: usize,
    pub n_nodes: usize,
    /// The edits applied to the model in memory before scoring (`--edits`), when there were any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edits: Option<crate::model::EditRecord>,
}

/// Evaluation options.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    pub k: usize,
    pub random: usize,
    pub seed: u64,
    pub filter_known: bool,
    /// Demonstrations prepended to every held-out prompt, taken from the circuit's discovery facts.
    pub demonstrations: usize,
}

fn mean_sd(ms: &[Metrics]) -> (Metrics, Metrics) {
    let n = ms.len().max(1) as f64;
    let f = |g: &dyn Fn(&Metrics) -> f64| {
        let m = ms.iter().map(g).sum::<f64>() / n;
        let v = ms.iter().map(|x| (g(x) - m).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
        (m, v.sqrt())
    };
    let (h1, h1s) = f(&|x| x.hit_at_1);
    let (hk, hks) = f(&|x| x.hit_at_k);
    let (mr, mrs) = f(&|x| x.mrr);
    let (tl, tls) = f(&|x| x.target_logit);
    let (tp, tps) = f(&|x| x.target_prob);
    (
        Metrics { hit_at_1: h1, hit_at_k: hk, mrr: mr, target_logit: tl, target_prob: tp },
        Metrics { hit_at_1: h1s, hit_at_k: hks, mrr: mrs, target_logit: tls, target_prob: tps },
    )
}

/// `count` distinct edge ids out of `total`, uniformly at random (seeded).
pub fn random_edges(total: usize, count: usize, seed: u64) -> Vec<usize> {
    let mut ids = crate::data::shuffled(total, seed);
    ids.truncate(count.min(total));
    ids.sort_unstable();
    ids
}

/// The held-out facts of a relation for a circuit discovered on `discovery`, and how removed edges are filled in
/// on them: what every held-out score (a report, a faithfulness curve) is computed on.
pub struct HeldOut {
    pub test: Vec<Example>,
    pub ablation: AblationSource,
    /// Facts skipped because the circuit was discovered on them.
    pub n_skipped: usize,
    /// Facts skipped because mean ablation's means were taken over them (reference facts the model knows under
    /// this evaluation's `k`, though not under the discovery run's).
    pub n_skipped_reference: usize,
    /// Mean ablation: prompts the means were taken over (discovery and reference); 0 otherwise.
    pub n_reference: usize,
    /// Facts the full model does not know (rank ≥ k), dropped.
    pub n_dropped_unknown: usize,
    /// Facts without a same-length partner under resample ablation, dropped.
    pub n_dropped_no_partner: usize,
    /// Distinct answer tokens among all the relation's facts.
    pub n_distinct_targets: usize,
}

impl HeldOut {
    /// Every fact of `relation` not among `discovery` nor `reference`, known to the full model (when
    /// `filter_known`, decided without demonstrations), with `opts.demonstrations` demonstrations from the
    /// discovery facts, and its ablated values: the means over the discovery and `reference` prompts as
    /// `mean_over` says (mean ablation's reference set, never a held-out fact), corrupted partners (seeded by
    /// `seed`), or zero.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        model: &Model,
        tok: &crate::tokenizer::Tokenizer,
        discovery: &[Example],
        reference: &[Example],
        relation: &crate::data::Relation,
        all: Vec<Example>,
        ablation: crate::intervene::Ablation,
        mean_over: crate::split::MeanOver,
        opts: &EvalOptions,
        seed: u64,
    ) -> Result<HeldOut> {
        use crate::Error;
        let seen = |e: &Example| discovery.iter().any(|d| d.triple == e.triple);
        let held: Vec<Example> = all.iter().filter(|e| !seen(e)).cloned().collect();
        let n_skipped = all.len() - held.len();
        let test: Vec<Example> = if opts.filter_known {
            let o = full_model_outcomes(model, &held)?;
            held.into_iter().zip(o).filter(|(_, o)| o.rank < opts.k).map(|(e, _)| e).collect()
        } else {
            held
        };
        let in_reference = |e: &Example| reference.iter().any(|r| r.triple == e.triple);
        let before = test.len();
        let test: Vec<Example> = test.into_iter().filter(|e| !in_reference(e)).collect();
        let n_skipped_reference = before - test.len();
        let n_dropped_unknown = all.len() - n_skipped - before;
        if test.is_empty() {
            return Err(Error::input(format!("relation `{}`: no held-out triples to evaluate on", relation.name)));
        }
        let pool: Vec<crate::data::Triple> = discovery.iter().map(|e| e.triple.clone()).collect();
        let mut test = crate::data::in_context(test, &pool, opts.demonstrations, seed, tok)?;
        let mut n_dropped_no_partner = 0;
        let mean_prompts = crate::discover::mean_prompts(discovery, reference, mean_over);
        let n_reference = match ablation {
            crate::intervene::Ablation::Mean => mean_prompts.len(),
            _ => 0,
        };
        let ablation = match ablation {
            crate::intervene::Ablation::Zero => AblationSource::Zero,
            crate::intervene::Ablation::Mean => AblationSource::mean_of_prompts(model, &mean_prompts)?,
            crate::intervene::Ablation::Resample => {
                // A fact no other fact can corrupt (no same-length prompt) is dropped and counted.
                let partners = crate::split::partners(&test, &all, seed);
                let (kept, corrupt): (Vec<Example>, Vec<Vec<u32>>) =
                    test.iter().zip(partners).filter_map(|(e, p)| p.map(|p| (e.clone(), p.tokens.clone()))).unzip();
                n_dropped_no_partner = test.len() - kept.len();
                if kept.is_empty() {
                    return Err(Error::input(format!(
                        "relation `{}`: none of the {} held-out triples has a same-length partner for resample ablation",
                        relation.name,
                        test.len()
                    )));
                }
                test = kept;
                AblationSource::Resample(corrupt)
            }
        };
        let n_distinct_targets = all.iter().map(|e| e.target).collect::<std::collections::BTreeSet<_>>().len();
        Ok(HeldOut {
            test,
            ablation,
            n_skipped,
            n_skipped_reference,
            n_reference,
            n_dropped_unknown,
            n_dropped_no_partner,
            n_distinct_targets,
        })
    }

    /// The held-out facts of the run that made `circuit`: its discovery facts left out, its means (the
    /// reference prompts as discovery saw them, with their demonstrations), its seed.
    pub fn of_circuit(
        model: &Model,
        tok: &crate::tokenizer::Tokenizer,
        circuit: &crate::circuit::CircuitFile,
        relation: &crate::data::Relation,
        opts: &EvalOptions,
    ) -> Result<HeldOut> {
        let run = &circuit.run;
        let (discovery, reference) = (run.discovery_examples(tok)?, run.reference_examples(tok)?);
        let all = relation.examples(tok)?;
        HeldOut::new(model, tok, &discovery, &reference, relation, all, run.ablation, run.mean_over(), opts, run.seed)
    }

    /// Keeps the first `n` held-out facts (they are in the relation's file order): a curve over hundreds of facts
    /// costs as many forward passes per size.
    pub fn truncate(&mut self, n: usize) {
        self.test.truncate(n);
        if let AblationSource::Resample(c) = &mut self.ablation {
            c.truncate(n);
        }
    }

    /// Metrics of each circuit (removed-edge flags) on the held-out facts.
    pub fn metrics(&self, model: &Model, graph: &crate::graph::Graph, circuits: &[&[bool]], k: usize) -> Result<Vec<Metrics>> {
        let out = circuits_outcomes(model, graph, circuits, &self.test, &self.ablation)?;
        Ok(out.iter().map(|o| Metrics::new(o, k)).collect())
    }
}

/// `count` random circuits of exactly `n_kept` of `total` edges (removed-edge flags), seeded `seed + 1`, `+ 2`, ….
pub fn random_circuits(total: usize, n_kept: usize, count: usize, seed: u64) -> Vec<Vec<bool>> {
    (0..count)
        .map(|i| {
            let mut r = vec![true; total];
            for e in random_edges(total, n_kept, seed.wrapping_add(1 + i as u64)) {
                r[e] = false;
            }
            r
        })
        .collect()
}

/// `(circuit − empty) / (full − empty)` of the mean target logit; 0 when full and empty do not differ.
pub fn logit_faithfulness(full: &Metrics, circuit: &Metrics, empty: &Metrics) -> f64 {
    let denom = full.target_logit - empty.target_logit;
    if denom.abs() > 1e-12 {
        (circuit.target_logit - empty.target_logit) / denom
    } else {
        0.0
    }
}

/// Mean and sample standard deviation of several metric sets.
pub fn mean_and_sd(ms: &[Metrics]) -> (Metrics, Metrics) {
    mean_sd(ms)
}

/// Scores `circuit` on the facts of `relation` it was not discovered from, beside the full model, the empty
/// circuit and `opts.random` random circuits with as many edges.
pub fn evaluate(
    model: &Model,
    tok: &crate::tokenizer::Tokenizer,
    circuit: &crate::circuit::CircuitFile,
    relation: &crate::data::Relation,
    opts: &EvalOptions,
) -> Result<Report> {
    let graph = crate::graph::Graph::new(&model.cfg);
    let removed = circuit.removed(&graph, &model.cfg)?;
    if opts.demonstrations > 0 && circuit.run.ablation == crate::intervene::Ablation::Resample {
        return Err(crate::Error::input("demonstrations with resample ablation are not supported (use mean or zero ablation)"));
    }
    let held = HeldOut::of_circuit(model, tok, circuit, relation, opts)?;
    let n_kept = removed.iter().filter(|r| !**r).count();
    let none = vec![false; removed.len()];
    let empty = vec![true; removed.len()];
    let randoms = random_circuits(removed.len(), n_kept, opts.random, opts.seed);
    let mut circuits: Vec<&[bool]> = vec![&none, &removed, &empty];
    circuits.extend(randoms.iter().map(|r| r.as_slice()));
    let ms = held.metrics(model, &graph, &circuits, opts.k)?;
    let (mean, sd) = mean_sd(&ms[3..]);
    let (full, circ, emp) = (ms[0], ms[1], ms[2]);
    Ok(Report {
        format: REPORT_FORMAT,
        model: model.name.clone(),
        relation: relation.name.clone(),
        k: opts.k,
        n_triples: held.test.len(),
        n_skipped_discovery: held.n_skipped,
        n_skipped_reference: held.n_skipped_reference,
        n_reference: (circuit.run.ablation == crate::intervene::Ablation::Mean).then_some(held.n_reference),
        n_dropped_unknown: held.n_dropped_unknown,
        n_dropped_no_partner: held.n_dropped_no_partner,
        n_distinct_targets: held.n_distinct_targets,
        full,
        circuit: circ,
        random: RandomBaseline { runs: opts.random, mean, sd },
        empty: emp,
        faithfulness: logit_faithfulness(&full, &circ, &emp),
        n_edges: n_kept,
        n_edges_total: removed.len(),
        n_nodes: circuit.nodes.len(),
        edits: model.edits.clone(),
    })
}

impl Report {
    /// The 95% Wilson interval of `m`'s Hit@k over this report's `n_triples` facts.
    pub fn hit_at_k_interval(&self, m: &Metrics) -> (f64, f64) {
        crate::rank::wilson_interval((m.hit_at_k * self.n_triples as f64).round() as usize, self.n_triples)
    }

    /// "full [a, b], circuit [c, d], empty [e, f]": the 95% intervals of Hit@k, two decimals.
    pub fn intervals_text(&self) -> String {
        let iv = |m: &Metrics| {
            let (lo, hi) = self.hit_at_k_interval(m);
            format!("[{lo:.2}, {hi:.2}]")
        };
        format!("full {}, circuit {}, empty {}", iv(&self.full), iv(&self.circuit), iv(&self.empty))
    }

    /// A short human-readable table (what `discover` and `eval` print on stderr).
    pub fn table(&self) -> String {
        let row = |name: &str, m: &Metrics| {
            format!("  {name:<10} {:>7.3} {:>7.3} {:>7.3} {:>9.3} {:>8.4}\n", m.hit_at_1, m.hit_at_k, m.mrr, m.target_logit, m.target_prob)
        };
        let no_partner = match self.n_dropped_no_partner {
            0 => String::new(),
            n => format!(", {n} without a same-length partner for resample ablation dropped"),
        };
        let reference = match self.n_skipped_reference {
            0 => String::new(),
            n => format!(", {n} in mean ablation's reference set skipped"),
        };
        let unknown = match self.n_dropped_unknown {
            0 => String::new(),
            n => format!(", {n} unknown to the model dropped"),
        };
        let mut s = format!(
            "held-out: {} triples of {} ({} used for discovery{reference}{unknown}{no_partner})\n  {:<10} {:>7} {:>7} {:>7} {:>9} {:>8}\n",
            self.n_triples,
            self.relation,
            self.n_skipped_discovery,
            "",
            "Hit@1",
            format!("Hit@{}", self.k),
            "MRR",
            "logit",
            "prob"
        );
        s += &row("full", &self.full);
        s += &row("circuit", &self.circuit);
        s += &row(&format!("random×{}", self.random.runs), &self.random.mean);
        s += &row("empty", &self.empty);
        s += &format!("  Hit@{}, 95% interval over {} facts (Wilson): {}\n", self.k, self.n_triples, self.intervals_text());
        s += &format!(
            "  circuit: {} of {} edges ({:.2}%), {} nodes, faithfulness {:.3}\n",
            self.n_edges,
            self.n_edges_total,
            100.0 * self.n_edges as f64 / self.n_edges_total.max(1) as f64,
            self.n_nodes,
            self.faithfulness
        );
        s
    }

    /// Tab-separated values with a header line: one row per model variant (`full`, `circuit`, `random`, `random_sd`,
    /// `empty`), the run's counts repeated on each, for `cut` and `awk`.
    pub fn tsv(&self) -> String {
        let mut s = String::from(
            "relation\tk\tn_triples\tvariant\thit_at_1\thit_at_k\tmrr\ttarget_logit\ttarget_prob\tfaithfulness\tn_edges\tn_edges_total\n",
        );
        let rows = [
            ("full", &self.full),
            ("circuit", &self.circuit),
            ("random", &self.random.mean),
            ("random_sd", &self.random.sd),
            ("empty", &self.empty),
        ];
        for (name, m) in rows {
            s += &format!(
                "{}\t{}\t{}\t{name}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\n",
                self.relation,
                self.k,
                self.n_triples,
                m.hit_at_1,
                m.hit_at_k,
                m.mrr,
                m.target_logit,
                m.target_prob,
                self.faithfulness,
                self.n_edges,
                self.n_edges_total
            );
        }
        s
    }

    /// Lines the user must read with the numbers: facts dropped for want of a resample partner, and a relation
    /// with so few answers that Hit@k cannot separate a circuit from chance.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = vec![];
        if self.n_dropped_no_partner > 0 {
            w.push(format!(
                "{}: {} without a same-length partner for resample ablation dropped from the held-out facts",
                self.relation, self.n_dropped_no_partner
            ));
        }
        if self.n_distinct_targets <= self.k {
            w.push(format!(
                "{} has only {} distinct answers (≤ k = {}): Hit@{} cannot separate the circuit from chance; read Hit@1, MRR and faithfulness",
                self.relation, self.n_distinct_targets, self.k, self.k
            ));
        } else if self.full.hit_at_k > 0.0 && self.empty.hit_at_k >= 0.5 * self.full.hit_at_k {
            // Many answers, but a few dominate: the ablated values alone (the relation's average prompt under
            // mean ablation) already rank them, so Hit@k measures the template's prior as much as the circuit,
            // and random circuits cannot score below the empty one (docs/results.md, sessions 8 and 10).
            w.push(format!(
                "{}: the empty circuit (every edge ablated) already has Hit@{} {:.3}, at least half the full model's {:.3}: \
                 the relation's common answers rank high without any edge, so Hit@{} says little about the circuit; read Hit@1, MRR and faithfulness",
                self.relation, self.k, self.empty.hit_at_k, self.full.hit_at_k, self.k
            ));
        }
        w
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Triple;

    fn ex(len: usize) -> Example {
        let triple =
            Triple { subject: String::new(), relation: String::new(), object: String::new(), template: String::new(), prompt: None };
        Example { triple, tokens: vec![1; len], spans: vec![], target: 0 }
    }

    fn report(n_distinct_targets: usize, full_hit: f64, empty_hit: f64) -> Report {
        let m = |hit_at_k: f64| Metrics { hit_at_1: 0.0, hit_at_k, mrr: 0.0, target_logit: 0.0, target_prob: 0.0 };
        Report {
            format: report_format(),
            model: "m".into(),
            relation: "r".into(),
            k: 10,
            n_triples: 20,
            n_skipped_discovery: 0,
            n_skipped_reference: 0,
            n_reference: None,
            n_dropped_unknown: 0,
            n_dropped_no_partner: 0,
            n_distinct_targets,
            full: m(full_hit),
            circuit: m(full_hit),
            random: RandomBaseline { runs: 1, mean: m(empty_hit), sd: m(0.0) },
            empty: m(empty_hit),
            faithfulness: 1.0,
            n_edges: 1,
            n_edges_total: 2,
            n_nodes: 2,
            edits: None,
        }
    }

    /// Hit@k is flagged when it cannot tell the circuit from chance (few answers) or from the template's prior
    /// (the empty circuit already scores half the full model's); one reason at a time.
    #[test]
    fn warnings_say_when_hit_at_k_measures_the_prior() {
        assert!(report(24, 1.0, 0.0).warnings().is_empty());
        assert!(report(24, 1.0, 0.49).warnings().is_empty());
        let w = report(24, 1.0, 0.5).warnings();
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("the empty circuit (every edge ablated) already has Hit@10 0.500"), "{}", w[0]);
        let w = report(24, 0.8, 0.4).warnings();
        assert!(w.len() == 1 && w[0].contains("full model's 0.800"), "{w:?}");
        let w = report(6, 1.0, 1.0).warnings();
        assert!(w.len() == 1 && w[0].contains("only 6 distinct answers"), "{w:?}");
        assert!(report(24, 0.0, 0.0).warnings().is_empty());
    }

    /// Units keep count × longest prompt within the token budget, in order, every example exactly once.
    #[test]
    fn token_chunks_respect_the_budget() {
        let lens = [10, 10, 30, 5, 64, 100, 3, 3];
        let examples: Vec<Example> = lens.iter().map(|&l| ex(l)).collect();
        assert_eq!(token_chunks(&examples), vec![vec![0, 1], vec![2, 3], vec![4], vec![5], vec![6, 7]]);
        let short: Vec<Example> = (0..30).map(|_| ex(3)).collect();
        let c = token_chunks(&short);
        assert_eq!(c.iter().map(|c| c.len()).collect::<Vec<_>>(), vec![21, 9]);
        assert_eq!(c.concat(), (0..30).collect::<Vec<_>>());
    }
}
