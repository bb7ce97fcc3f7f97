//! Attribution (brief §4): every edge scored at once from gradients, `score(s→r) = Σ (ablated_s − out_s) ·
//! ∂m/∂input_r` over examples and positions. EAP takes the gradient at the clean input; EAP-IG averages it over
//! `steps` points on the straight path from the ablated to the clean input embedding.
//!
//! Gradients come from candle's autograd: a zero `Var` is added at every receiver-input hook point
//! ([`Probes`]). The differentiable run swaps the fused softmax for a composition, and uses custom ops with
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

/// The differentiable run of attribution: the input embedding replaced by `embed` (a point on EAP-IG's path),
/// and a zero-valued gradient probe (a `Var`) added to every receiver input.
pub struct Probes {
    embed: Tensor,
    attn: Vec<Var>,
    mlp: Vec<Var>,
    logits: Var,
}

impl Hooks for Probes {
    fn writes(&self, point: HookPoint) -> bool {
        matches!(point, HookPoint::Embed | HookPoint::AttnIn(_) | HookPoint::MlpIn(_) | HookPoint::LogitsIn)
    }
    fn write(&self, point: HookPoint, value: &Tensor, _: &Activations) -> Result<Option<Tensor>> {
        Ok(Some(match point {
            HookPoint::Embed => self.embed.clone(),
            // Probes read no sender output: gradients flow through the blocks' summed outputs.
            HookPoint::AttnIn(l) => (self.attn[l].as_tensor() + value)?,
            HookPoint::MlpIn(l) => (value + self.mlp[l].as_tensor())?,
            HookPoint::LogitsIn => (value + self.logits.as_tensor())?,
            _ => return Ok(None),
        }))
    }
    fn differentiable(&self) -> bool {
        true
    }
}

/// The differentiable forward from `embed` (`[n, T, D]`): zero gradient probes on every receiver input and the
/// metric as a scalar tensor whose backward reaches them.
pub fn probed_forward(task: &Task, embed: &Tensor) -> Result<(Probes, Tensor)> {
    let cfg = &task.model.cfg;
    let (n, t, d) = embed.dims3()?;
    let p = cfg.n_heads + 2 * cfg.n_kv_heads;
    let dev = embed.device();
    let zeros = |shape: &[usize]| Var::zeros(shape, candle_core::DType::F32, dev);
    let probes = Probes {
        embed: embed.clone(),
        attn: (0..cfg.n_layers).map(|_| zeros(&[p, n, t, d])).collect::<candle_core::Result<_>>()?,
        mlp: (0..cfg.n_layers).map(|_| zeros(&[n, t, d])).collect::<candle_core::Result<_>>()?,
        logits: zeros(&[n, t, d])?,
    };
    let hidden = task.model.run(&task.batch, &probes, None, Logits::Hidden)?.1;
    let m = task.full.loss(task.metric, task.model, &hidden)?;
    Ok((probes, m))
}

/// Gradients of the metric with respect to every receiver input, for a run starting from `embed` (`[n, T, D]`):
/// per layer `[P, n, T, D]` (attention ports), per layer `[n, T, D]` (MLP), and `[n, T, D]` (logits). A
/// receiver the metric does not depend on has no gradient (`None`), not a tensor of zeros.
pub fn receiver_gradients(task: &Task, embed: &Tensor) -> Result<ReceiverGradients> {
    let (probes, m) = probed_forward(task, embed)?;
    let grads = m.backward()?;
    let grad = |v: &Var| grads.get(v.as_tensor()).cloned();
    Ok(ReceiverGradients {
        attn: probes.attn.iter().map(grad).collect(),
        mlp: probes.mlp.iter().map(grad).collect(),
        logits: grad(&probes.logits),
    })
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

/// Attribution score of every edge (graph order): EAP, or EAP-IG with `ig_steps` interpolation points.
pub fn edge_scores(task: &Task, ig_steps: Option<usize>, progress: &dyn Progress) -> Result<Vec<f64>> {
    let g = &task.graph;
    let model = task.model;
    // Clean sender outputs and their ablated values.
    let clean = model.run(&task.batch, &crate::intervene::RecordHeads, None, Logits::Hidden)?.0;
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
    let deltas = Tensor::stack(&deltas, 0)?; // [S, n·T·D]
                                             // Gradients at the clean input (EAP) or averaged along the ablated → clean embedding path (EAP-IG).
    let clean_embed = clean.embed.clone();
    drop(clean); // the deltas hold what is needed; free the activations before the backward passes
    let abl_embed = match &task.ablated {
        None => clean_embed.zeros_like()?,
        Some(a) => a.embed.clone(),
    };
    let alphas: Vec<f64> = match ig_steps {
        None => vec![1.0],
        Some(k) => (1..=k).map(|i| i as f64 / k as f64).collect(),
    };
    progress.start(alphas.len() as u64);
    // The steps are independent: each round runs one per worker, and their gradients are added in step order
    // whatever the rounds were, so the sum (and every score) is the same bits for any thread count. Rounds of
    // `workers` steps keep at most that many steps' gradients alive.
    let mut sum: Option<ReceiverGradients> = None;
    let workers = step_workers(task, crate::parallel::threads(), crate::parallel::memory_available());
    for round in alphas.chunks(workers) {
        let grads = crate::parallel::map(round, |&a| -> Result<ReceiverGradients> {
            let embed = (&abl_embed + ((&clean_embed - &abl_embed)? * a)?)?;
            receiver_gradients(task, &embed)
        });
        for g in grads {
            let g = g?;
            match &mut sum {
                None => sum = Some(g),
                Some(s) => s.add(g)?,
            }
            progress.advance(1);
        }
    }
    let grads = sum.ok_or_else(|| crate::Error::bug("attribution with no integration step"))?;
    let scale = 1.0 / alphas.len() as f64;
    // score[r, s] = grad_r · delta_s for the senders before r; a receiver without a gradient scores 0.
    let mut scores = vec![0f64; g.edges.len()];
    let mut fill = |receivers: &[usize], grads: &Option<Tensor>| -> Result<()> {
        let Some(grads) = grads else { return Ok(()) };
        let s_max = g.edges_into[receivers[0]].len();
        let gr = (grads.reshape((receivers.len(), ()))? * scale)?; // [R, n·T·D]
        let sc = mm(&gr, &deltas.narrow(0, 0, s_max)?.t()?)?; // [R, S]
        let sc = sc.to_dtype(candle_core::DType::F64)?.to_vec2::<f64>()?;
        for (i, &r) in receivers.iter().enumerate() {
            for (s, &e) in g.edges_into[r].iter().enumerate() {
                scores[e] = sc[i][s];
            }
        }
        Ok(())
    };
    for l in 0..g.n_layers {
        let ports: Vec<usize> = (0..g.ports_per_layer()).map(|p| g.attn_receiver(l, p)).collect();
        fill(&ports, &grads.attn[l])?;
        fill(&[g.mlp_receiver(l)], &grads.mlp[l])?;
    }
    fill(&[g.logits_receiver()], &grads.logits)?;
    Ok(scores)
}

/// Bytes one differentiable step holds at its peak per float of its receiver inputs (every attention port, MLP
/// and `logits` input over the batch): about 30 on SmolLM2 (20 adj_antonym facts: a second concurrent step adds
/// 1.35 GB of peak RSS). A GPT-2-medium-shaped model with 20 facts peaks at 14.3 GB with one step.
const STEP_BYTES_PER_INPUT_FLOAT: usize = 32;

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
