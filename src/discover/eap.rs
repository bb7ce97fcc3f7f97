//! Attribution (brief §4): every edge scored at once from gradients, `score(s→r) = Σ (ablated_s − out_s) ·
//! ∂m/∂input_r` over examples and positions. EAP takes the gradient at the clean input; EAP-IG averages it over
//! `steps` points on the straight path from the ablated to the clean input embedding.
//!
//! Gradients come from candle's autograd: a zero `Var` is added at every MLP and `logits` input and at every
//! attention port's `dh`-wide projection ([`Probes`]); the ports' `D`-wide input gradients are rebuilt from
//! those by the chain rule ([`crate::model::Model::attn_in_gradient`]) instead of autograd through a copy of
//! the residual per port. Large tasks run in chunks of examples ([`CHUNK_INPUT_FLOATS`]). The differentiable run swaps the fused softmax for a composition, and uses custom ops with
//! hand-written backwards for the normalisation and the weight matmuls (input gradient only, no weight
//! gradients): the backward costs ~2.1× a forward, not 3.5×.
use candle_core::{Tensor, Var};

use super::{ChosenSize, Circuit, Discovery, EdgeScores, Task};
use crate::graph::Selection;
use crate::model::ops::mm;
use crate::model::{Activations, HookPoint, Hooks, Logits};
use crate::progress::Progress;
use crate::Result;

/// EAP (`ig_steps = None`) or EAP-IG.
#[derive(Debug, Clone)]
pub struct Eap {
    pub ig_steps: Option<usize>,
    pub selection: Selection,
}

/// Where the differentiable run reads the attention ports' gradients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortProbes {
    /// At the ports' projections ([`HookPoint::Qkv`], `[P, n, T, dh]`), turned into port-input gradients by
    /// [`crate::model::Model::attn_in_gradient`]: what attribution runs.
    Projections,
    /// At the ports' inputs ([`HookPoint::AttnIn`], `[P, n, T, D]`): every port normalises its own copy of the
    /// residual inside autograd. The naive reference the fast path is tested against; `P·n·T·D` floats several
    /// times over per layer (14 GB for 20 prompts on a GPT-2-medium shape).
    Inputs,
}

/// The differentiable run of attribution: the input embedding replaced by `embed` (a point on EAP-IG's path),
/// and a zero-valued gradient probe (a `Var`) added to every receiver input — for attention ports, at their
/// projections or their inputs ([`PortProbes`]).
pub struct Probes {
    embed: Tensor,
    at: PortProbes,
    attn: Vec<Var>,
    mlp: Vec<Var>,
    logits: Var,
}

impl Hooks for Probes {
    fn writes(&self, point: HookPoint) -> bool {
        match point {
            HookPoint::Qkv(_) => self.at == PortProbes::Projections,
            HookPoint::AttnIn(_) => self.at == PortProbes::Inputs,
            _ => matches!(point, HookPoint::Embed | HookPoint::MlpIn(_) | HookPoint::LogitsIn),
        }
    }
    fn write(&self, point: HookPoint, value: &Tensor, _: &Activations) -> Result<Option<Tensor>> {
        Ok(Some(match point {
            HookPoint::Embed => self.embed.clone(),
            // Probes read no sender output: gradients flow through the blocks' summed outputs.
            HookPoint::AttnIn(l) | HookPoint::Qkv(l) => (self.attn[l].as_tensor() + value)?,
            HookPoint::MlpIn(l) => (value + self.mlp[l].as_tensor())?,
            HookPoint::LogitsIn => (value + self.logits.as_tensor())?,
            _ => return Ok(None),
        }))
    }
    fn differentiable(&self) -> bool {
        true
    }
}

/// The differentiable forward from `embed` (`[n, T, D]`): zero gradient probes on every receiver input (attention
/// ports probed `at`), the metric as a scalar tensor whose backward reaches them, and the run's activations.
pub fn probed_forward(task: &Task, embed: &Tensor, at: PortProbes) -> Result<(Probes, Tensor, Activations)> {
    let cfg = &task.model.cfg;
    let (n, t, d) = embed.dims3()?;
    let p = cfg.n_heads + 2 * cfg.n_kv_heads;
    let dev = embed.device();
    let zeros = |shape: &[usize]| Var::zeros(shape, candle_core::DType::F32, dev);
    let port = match at {
        PortProbes::Projections => cfg.d_head,
        PortProbes::Inputs => d,
    };
    let probes = Probes {
        embed: embed.clone(),
        at,
        attn: (0..cfg.n_layers).map(|_| zeros(&[p, n, t, port])).collect::<candle_core::Result<_>>()?,
        mlp: (0..cfg.n_layers).map(|_| zeros(&[n, t, d])).collect::<candle_core::Result<_>>()?,
        logits: zeros(&[n, t, d])?,
    };
    let (acts, hidden) = task.model.run(&task.batch, &probes, Logits::Hidden)?;
    let m = task.full.loss(task.metric, task.model, &hidden)?;
    Ok((probes, m, acts))
}

/// Gradients of the metric with respect to every receiver input, for a run starting from `embed` (`[n, T, D]`):
/// per layer `[P, n, T, D]` (attention ports), per layer `[n, T, D]` (MLP), and `[n, T, D]` (logits). A
/// receiver the metric does not depend on has no gradient (`None`), not a tensor of zeros.
pub fn receiver_gradients(task: &Task, embed: &Tensor) -> Result<ReceiverGradients> {
    receiver_gradients_at(task, embed, PortProbes::Projections)
}

/// [`receiver_gradients`] with the attention ports probed `at` (the same gradients up to rounding).
pub fn receiver_gradients_at(task: &Task, embed: &Tensor, at: PortProbes) -> Result<ReceiverGradients> {
    let (probes, m, acts) = probed_forward(task, embed, at)?;
    // The residual each layer's ports read, cut from the graph: nothing holds the forward graph past the backward.
    let resid: Vec<Tensor> = acts.resid_pre.iter().map(Tensor::detach).collect();
    drop(acts);
    let grads = m.backward()?;
    drop(m);
    let grad = |v: &Var| grads.get(v.as_tensor()).cloned();
    let attn = match at {
        PortProbes::Inputs => probes.attn.iter().map(grad).collect(),
        PortProbes::Projections => (probes.attn.iter().enumerate())
            .map(|(l, v)| grad(v).map(|g| task.model.attn_in_gradient(l, &resid[l], &g)).transpose())
            .collect::<Result<_>>()?,
    };
    Ok(ReceiverGradients { attn, mlp: probes.mlp.iter().map(grad).collect(), logits: grad(&probes.logits) })
}

/// The metric's gradient with respect to every receiver input (see [`receiver_gradients`]).
pub struct ReceiverGradients {
    /// Per layer `[P, n, T, D]`.
    pub attn: Vec<Option<Tensor>>,
    /// Per layer `[n, T, D]`.
    pub mlp: Vec<Option<Tensor>>,
    /// `[n, T, D]`.
    pub logits: Option<Tensor>,
}

impl ReceiverGradients {
    /// Adds `other` in place (absent gradients count as zero).
    fn add(&mut self, other: ReceiverGradients) -> Result<()> {
        fn sum(a: &mut Option<Tensor>, b: Option<Tensor>) -> Result<()> {
            *a = match (a.take(), b) {
                (Some(x), Some(y)) => Some((x + y)?),
                (x, y) => x.or(y),
            };
            Ok(())
        }
        for (a, b) in self.attn.iter_mut().zip(other.attn) {
            sum(a, b)?;
        }
        for (a, b) in self.mlp.iter_mut().zip(other.mlp) {
            sum(a, b)?;
        }
        sum(&mut self.logits, other.logits)
    }
}

/// Receiver-input floats one attribution pass may cover: examples × padded length × d_model × receivers (every
/// attention port, MLP and `logits` input). A step holds a few tensors of that size (gradients, their sum
/// over steps, the sender deltas it is scored against), so tasks above it run in chunks of examples. Fixed by
/// the data, never by the machine or `--threads`: the scores do not depend on either. 20 SmolLM2 facts
/// (≈55 M floats) are one chunk; 20 facts on a GPT-2-medium shape (≈220 M) are four of five.
pub const CHUNK_INPUT_FLOATS: usize = 1 << 26;

/// How many examples of `task` one attribution chunk takes under a budget of `budget` receiver-input floats:
/// as few chunks as the budget allows, of sizes as even as possible (20 examples at 19 a chunk run as 10 + 10,
/// not 19 + 1); at least one example.
pub fn chunk_rows(task: &Task, budget: usize) -> usize {
    let per_row = task.batch.seq_len * task.model.cfg.d_model * task.graph.n_receivers();
    let most = (budget / per_row.max(1)).max(1);
    let n = task.n_examples();
    n.div_ceil(n.div_ceil(most))
}

/// Attribution score of every edge (graph order): EAP, or EAP-IG with `ig_steps` interpolation points. Tasks
/// above [`CHUNK_INPUT_FLOATS`] run in chunks of examples ([`edge_scores_chunked`]).
pub fn edge_scores(task: &Task, ig_steps: Option<usize>, progress: &dyn Progress) -> Result<Vec<f64>> {
    edge_scores_chunked(task, ig_steps, chunk_rows(task, CHUNK_INPUT_FLOATS), progress)
}

/// [`edge_scores`] over chunks of `rows` examples. Every score is a sum over examples and the metric a mean,
/// so the whole task's score is each chunk's weighted by its share of the examples, added in chunk order:
/// exact up to summation order. `rows ≥ n` is the single pass.
///
/// Work units are (chunk, integration step) pairs, chunk-major, run in rounds of one per worker (as many as fit
/// in memory, [`step_workers`]); each chunk's step gradients are added in step order and the chunk is scored
/// once its last step is in, so every score is the same bits for any thread count, and a round can span two
/// chunks (5 steps on 2 workers waste no half round per chunk).
pub fn edge_scores_chunked(task: &Task, ig_steps: Option<usize>, rows: usize, progress: &dyn Progress) -> Result<Vec<f64>> {
    let n = task.n_examples();
    let alphas: Vec<f64> = match ig_steps {
        None => vec![1.0],
        Some(k) => (1..=k).map(|i| i as f64 / k as f64).collect(),
    };
    let rows = rows.clamp(1, n);
    let owned: Vec<Task> = match rows >= n {
        true => vec![],
        false => (0..n).step_by(rows).map(|start| task.rows(start, rows.min(n - start))).collect::<Result<_>>()?,
    };
    let tasks: Vec<&Task> = if owned.is_empty() { vec![task] } else { owned.iter().collect() };
    progress.start((alphas.len() * tasks.len()) as u64);
    let paths = crate::parallel::map(&tasks, |t| IgPath::new(t));
    let paths = paths.into_iter().collect::<Result<Vec<_>>>()?;
    let items: Vec<(usize, f64)> = (0..tasks.len()).flat_map(|c| alphas.iter().map(move |&a| (c, a))).collect();
    let workers = step_workers(tasks[0], crate::parallel::threads(), crate::parallel::memory_available());
    let mut sums: Vec<Option<ReceiverGradients>> = (0..tasks.len()).map(|_| None).collect();
    let mut added = vec![0usize; tasks.len()];
    let mut total = vec![0f64; task.graph.edges.len()];
    for round in items.chunks(workers) {
        let grads = crate::parallel::map(round, |&(c, a)| receiver_gradients(tasks[c], &paths[c].point(a)?));
        for (&(c, _), g) in round.iter().zip(grads) {
            let g = g?;
            match &mut sums[c] {
                None => sums[c] = Some(g),
                Some(s) => s.add(g)?,
            }
            added[c] += 1;
            progress.advance(1);
            if added[c] < alphas.len() {
                continue;
            }
            let sum = sums[c].take().ok_or_else(|| crate::Error::bug("attribution with no integration step"))?;
            let part = score_edges(tasks[c], &paths[c].deltas, &sum, 1.0 / alphas.len() as f64)?;
            if tasks.len() == 1 {
                return Ok(part);
            }
            let w = tasks[c].n_examples() as f64 / n as f64;
            for (t, p) in total.iter_mut().zip(part) {
                *t += w * p;
            }
        }
    }
    Ok(total)
}

/// What the integration steps of one task share: every sender's ablated − clean output, and the two ends of
/// the embedding path.
struct IgPath {
    /// `[S, n·T·D]`.
    deltas: Tensor,
    /// `[n, T, D]`.
    clean_embed: Tensor,
    /// `[n, T, D]`: the ablated input embedding (zeros for zero ablation).
    abl_embed: Tensor,
}

impl IgPath {
    fn new(task: &Task) -> Result<IgPath> {
        let g = &task.graph;
        // Clean sender outputs and their ablated values.
        let clean = task.model.run(&task.batch, &crate::intervene::RecordHeads, Logits::Hidden)?.0;
        let deltas: Vec<Tensor> = (0..g.n_senders())
            .map(|s| -> Result<Tensor> {
                let out = g.sender_output(&clean, s)?;
                Ok(match &task.ablated {
                    None => out.neg()?,
                    Some(abl) => (g.sender_output(abl, s)? - out)?,
                }
                .flatten_all()?)
            })
            .collect::<Result<_>>()?;
        let deltas = Tensor::stack(&deltas, 0)?;
        // The deltas hold what the scores need: the activations are freed before the backward passes.
        let clean_embed = clean.embed.clone();
        let abl_embed = match &task.ablated {
            None => clean_embed.zeros_like()?,
            Some(a) => a.embed.clone(),
        };
        Ok(IgPath { deltas, clean_embed, abl_embed })
    }

    /// The point `alpha` of the way from the ablated to the clean embedding, `[n, T, D]`.
    fn point(&self, alpha: f64) -> Result<Tensor> {
        Ok((&self.abl_embed + ((&self.clean_embed - &self.abl_embed)? * alpha)?)?)
    }
}

/// Every edge's score (graph order) from the summed receiver gradients of a task's steps times `scale`, and
/// its sender deltas `[S, n·T·D]`: `score[r, s] = grad_r · delta_s` for the senders before `r`; a receiver
/// without a gradient scores 0. One product per layer's ports, MLP and `logits`, spread over the workers (each
/// the same bits on any of them).
fn score_edges(task: &Task, deltas: &Tensor, grads: &ReceiverGradients, scale: f64) -> Result<Vec<f64>> {
    let g = &task.graph;
    let mut groups: Vec<(Vec<usize>, &Option<Tensor>)> = vec![];
    for l in 0..g.n_layers {
        groups.push(((0..g.ports_per_layer()).map(|p| g.attn_receiver(l, p)).collect(), &grads.attn[l]));
        groups.push((vec![g.mlp_receiver(l)], &grads.mlp[l]));
    }
    groups.push((vec![g.logits_receiver()], &grads.logits));
    let products = crate::parallel::map(&groups, |(receivers, grads)| -> Result<Option<Vec<Vec<f64>>>> {
        let Some(grads) = grads else { return Ok(None) };
        let s_max = g.edges_into[receivers[0]].len();
        let gr = (grads.reshape((receivers.len(), ()))? * scale)?; // [R, n·T·D]
        let sc = mm(&gr, &deltas.narrow(0, 0, s_max)?.t()?)?; // [R, S]
        Ok(Some(sc.to_dtype(candle_core::DType::F64)?.to_vec2::<f64>()?))
    });
    let mut scores = vec![0f64; g.edges.len()];
    for ((receivers, _), sc) in groups.iter().zip(products) {
        let Some(sc) = sc? else { continue };
        for (i, &r) in receivers.iter().enumerate() {
            for (s, &e) in g.edges_into[r].iter().enumerate() {
                scores[e] = sc[i][s];
            }
        }
    }
    Ok(scores)
}

/// Bytes one differentiable step holds at its peak per float of its receiver inputs (every attention port, MLP
/// and `logits` input over the chunk): about 19 measured on a GPT-2-medium shape (20 facts in one pass:
/// 6.1 GB peak RSS against 1.9 GB after loading, 217 M receiver-input floats): its gradients, their sum over
/// steps, the port gradients being rebuilt, the forward graph.
const STEP_BYTES_PER_INPUT_FLOAT: usize = 20;

/// How many integration steps run at once: one per worker, but only as many as fit in half the memory the
/// system has available (`None`: unknown, no limit), at least one. Only speed depends on it, never a score.
pub fn step_workers(task: &Task, threads: usize, available: Option<u64>) -> usize {
    let cfg = &task.model.cfg;
    let inputs = task.batch.size() * task.batch.seq_len * cfg.d_model * (cfg.n_layers * (cfg.n_heads + 2 * cfg.n_kv_heads + 1) + 1);
    let step = (inputs * STEP_BYTES_PER_INPUT_FLOAT) as u64;
    let fit = match available {
        Some(bytes) => (bytes / 2 / step.max(1)) as usize,
        None => usize::MAX,
    };
    threads.min(fit).max(1)
}

/// Graphs with at most this many edges are searched size by size; larger ones on a geometric grid, then
/// edge by edge within the last step.
pub const EXHAUSTIVE_EDGES: usize = 2048;

/// Sizes [`choose_size`] measures per round (the value two workers used to get).
const SIZES_PER_ROUND: usize = 4;

/// Faithfulness of a circuit with metric `m` when the empty circuit has `m_empty` (the full model has 0, every
/// metric being a loss against it): `1 − m / m_empty`, 0 when the empty circuit loses nothing.
pub fn faithfulness(m: f64, m_empty: f64) -> f64 {
    if m_empty.abs() > 1e-12 {
        1.0 - m / m_empty
    } else {
        0.0
    }
}

/// The smallest top-n by |score| whose faithfulness on `task` reaches `target`. Up to [`EXHAUSTIVE_EDGES`]
/// edges every n is tried in order (the exact smallest); above, a geometric grid of sizes (each ~15% above the
/// last) is tried in order and the first step that reaches the target is bisected, assuming faithfulness grows
/// with size within that step. All edges always reach 1.
pub fn choose_size(task: &Task, scores: &[f64], target: f64) -> Result<ChosenSize> {
    choose_size_with(task, scores, target, EXHAUSTIVE_EDGES)
}

/// [`choose_size`] with graphs above `exhaustive` edges searched on the grid (tests force the grid with 0).
pub fn choose_size_with(task: &Task, scores: &[f64], target: f64, exhaustive: usize) -> Result<ChosenSize> {
    if !(target > 0.0 && target <= 1.0) {
        return Err(crate::Error::input(format!("target faithfulness must be in (0, 1], got {target}")));
    }
    let g = &task.graph;
    let total = g.edges.len();
    let m_empty = task.score(&vec![true; total])?;
    if m_empty.abs() <= 1e-12 {
        // Faithfulness is then 0 at every size (see `faithfulness`): the input leaves nothing to explain.
        return Err(crate::Error::input(format!(
            "the empty circuit loses nothing on the discovery facts (metric {m_empty}), so no circuit size reaches a \
             faithfulness target: ablated senders carry what they carry on these prompts (mean ablation over one \
             prompt, or prompts all alike?); use more or other facts, another ablation, or --top-n"
        )));
    }
    let mut searched: Vec<(usize, f64)> = vec![];
    let mut measure = |ns: &[usize]| -> Result<Vec<f64>> {
        let circuits: Vec<Vec<bool>> = ns.iter().map(|&n| g.select(scores, Selection::TopN(n))).collect::<Result<_>>()?;
        let ms = task.scores_of(&circuits, &[task.metric])?;
        let fs: Vec<f64> = ms.iter().map(|m| faithfulness(m[0], m_empty)).collect();
        searched.extend(ns.iter().copied().zip(fs.iter().copied()));
        Ok(fs)
    };
    let grid: Vec<usize> = if total <= exhaustive {
        (1..=total).collect()
    } else {
        let mut v = vec![];
        let mut x = 1.0f64;
        while (x.ceil() as usize) < total {
            let n = x.ceil() as usize;
            if v.last() != Some(&n) {
                v.push(n);
            }
            x *= 1.15;
        }
        v.push(total);
        v
    };
    // Ascending, a few sizes at a time (spread over the workers), stopping at the first that reaches the target.
    // A fixed number per round, not one per worker: the sizes measured (`searched`, in the file) must not
    // depend on --threads.
    let batch = SIZES_PER_ROUND;
    let mut hit: Option<(usize, usize, f64)> = None; // (grid index, n, faithfulness)
    'scan: for (c, chunk) in grid.chunks(batch).enumerate() {
        let fs = measure(chunk)?;
        for (i, (&n, &f)) in chunk.iter().zip(&fs).enumerate() {
            if f >= target {
                hit = Some((c * batch + i, n, f));
                break 'scan;
            }
        }
    }
    let (idx, mut n, mut f) = hit.ok_or_else(|| crate::Error::bug("every edge kept must reach faithfulness 1"))?;
    if total > exhaustive && idx > 0 {
        // Bisect (grid[idx − 1], n]: the smallest n there whose faithfulness reaches the target.
        let mut lo = grid[idx - 1];
        while n - lo > 1 {
            let mid = lo + (n - lo) / 2;
            let fm = measure(&[mid])?[0];
            if fm >= target {
                (n, f) = (mid, fm);
            } else {
                lo = mid;
            }
        }
    }
    searched.sort_by_key(|&(n, _)| n);
    Ok(ChosenSize { target, top_n: n, faithfulness: f, searched })
}

/// The circuit an attribution run keeps: `selection` over `scores` (unconnected edges pruned; a faithfulness
/// target first turned into a top-n on `task`), every edge's score as its effect, and its metric measured on
/// `task`. `kcirc select` rebuilds discovery's circuit with it.
pub fn selected_circuit(task: &Task, scores: &[f64], selection: Selection) -> Result<Circuit> {
    let (selection, chosen) = match selection {
        Selection::TargetFaithfulness(t) => {
            let c = choose_size(task, scores, t)?;
            (Selection::TopN(c.top_n), Some(c))
        }
        other => (other, None),
    };
    let removed = task.graph.select(scores, selection)?;
    let metric = task.score(&removed)?;
    Ok(Circuit { removed, effect: scores.iter().copied().map(Some).collect(), metric, chosen })
}

impl Discovery for Eap {
    fn name(&self) -> &'static str {
        if self.ig_steps.is_some() {
            "eap-ig"
        } else {
            "eap"
        }
    }

    fn discover(&self, task: &Task, progress: &dyn Progress) -> Result<Circuit> {
        Ok(self.discover_scored(task, progress)?.0)
    }

    fn discover_scored(&self, task: &Task, progress: &dyn Progress) -> Result<(Circuit, Option<EdgeScores>)> {
        let scores = edge_scores(task, self.ig_steps, progress)?;
        let circuit = selected_circuit(task, &scores, self.selection)?;
        Ok((circuit, Some(EdgeScores { method: self.name(), ig_steps: self.ig_steps, scores })))
    }
}
