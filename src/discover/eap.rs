//! Attribution (brief §4): every edge scored at once from gradients, `score(s→r) = Σ (ablated_s − out_s) ·
//! ∂m/∂input_r` over examples and positions. EAP takes the gradient at the clean input; EAP-IG averages it over
//! `steps` points on the straight path from the ablated to the clean input embedding.
//!
//! Gradients come from candle's autograd: a zero `Var` is added to every receiver's input (the engine's
//! receiver offsets). The differentiable run swaps the fused softmax for a composition, and uses custom ops with
//! hand-written backwards for the normalisation and the weight matmuls (input gradient only, no weight
//! gradients): the backward costs ~2.1× a forward, not 3.5×.
use candle_core::{Tensor, Var};
use indicatif::ProgressBar;
use petgraph::visit::{Dfs, EdgeFiltered, Reversed};

use super::{Circuit, Discovery, Task};
use crate::graph::{Graph, Wire};
use crate::metric::Metric;
use crate::model::{Activations, Logits, ReceiverInputs, Stage};
use crate::{Error, Result};

/// How many edges an attribution method keeps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Selection {
    /// The `n` edges with the largest |score|.
    TopN(usize),
    /// Every edge with |score| ≥ x.
    Threshold(f64),
    /// The top fraction of all edges by |score|.
    Fraction(f64),
}

/// Attribution scores of every edge (graph order) and the attribution that computed them.
#[derive(Debug, Clone, PartialEq)]
pub struct EdgeScores {
    /// `eap` or `eap-ig`.
    pub method: &'static str,
    /// EAP-IG interpolation steps (`None` for EAP).
    pub ig_steps: Option<usize>,
    pub scores: Vec<f64>,
}

/// EAP (`ig_steps = None`) or EAP-IG.
#[derive(Debug, Clone)]
pub struct Eap {
    pub ig_steps: Option<usize>,
    pub selection: Selection,
}

/// Zero-valued gradient probes on every receiver input.
pub struct Probes {
    attn: Vec<Var>,
    mlp: Vec<Var>,
    logits: Var,
}

impl ReceiverInputs for Probes {
    fn needs_heads(&self) -> bool {
        false // probes read no sender output: the gradients flow through the blocks' summed outputs
    }
    fn differentiable(&self) -> bool {
        true
    }
    fn attn(&self, layer: usize, _: &Activations) -> Result<Option<Tensor>> {
        Ok(Some(self.attn[layer].as_tensor().clone()))
    }
    fn mlp(&self, layer: usize, _: &Activations) -> Result<Option<Tensor>> {
        Ok(Some(self.mlp[layer].as_tensor().clone()))
    }
    fn logits(&self, _: &Activations) -> Result<Option<Tensor>> {
        Ok(Some(self.logits.as_tensor().clone()))
    }
}

/// The metric as a differentiable scalar, from the normalised last-position residual `[n, D]`.
fn metric_tensor(task: &Task, hidden: &Tensor) -> Result<Tensor> {
    let n = task.n_examples() as f64;
    let full = &task.full;
    let model = task.model;
    Ok(match task.metric {
        Metric::Logit => {
            let tl = model.target_logits(hidden, &full.targets)?;
            let base: f64 = full.target_logit.iter().sum();
            ((tl.sum_all()? * -1.0)? + base)?.affine(1.0 / n, 0.0)?
        }
        Metric::Nll => {
            let lp = candle_nn::ops::log_softmax(&model.logits_of_hidden(hidden)?, candle_core::D::Minus1)?;
            let idx = Tensor::new(full.targets.as_slice(), hidden.device())?.unsqueeze(1)?;
            let tl = lp.gather(&idx, 1)?;
            let base: f64 = full.target_logprob.iter().sum();
            ((tl.sum_all()? * -1.0)? + base)?.affine(1.0 / n, 0.0)?
        }
        Metric::Kl => {
            let lp = candle_nn::ops::log_softmax(&model.logits_of_hidden(hidden)?, candle_core::D::Minus1)?;
            let p = full.logprobs.exp()?;
            (p * (&full.logprobs - lp)?)?.sum_all()?.affine(1.0 / n, 0.0)?
        }
    })
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
        attn: (0..cfg.n_layers).map(|_| zeros(&[p, n, t, d])).collect::<candle_core::Result<_>>()?,
        mlp: (0..cfg.n_layers).map(|_| zeros(&[n, t, d])).collect::<candle_core::Result<_>>()?,
        logits: zeros(&[n, t, d])?,
    };
    let start = Activations::senders(embed.clone(), vec![], vec![]);
    let hidden = task.model.run(&task.batch, &probes, Some((Stage::Attn(0), start)), Logits::Hidden)?.1;
    let m = metric_tensor(task, &hidden)?;
    Ok((probes, m))
}

/// Gradients of the metric with respect to every receiver input, for a run starting from `embed` (`[n, T, D]`):
/// per layer `[P, n, T, D]` (attention ports), per layer `[n, T, D]` (MLP), and `[n, T, D]` (logits).
pub fn receiver_gradients(task: &Task, embed: &Tensor) -> Result<(Vec<Tensor>, Vec<Tensor>, Tensor)> {
    let (probes, m) = probed_forward(task, embed)?;
    let grads = m.backward()?;
    let grad = |v: &Var| -> Result<Tensor> {
        Ok(grads.get(v.as_tensor()).cloned().unwrap_or(v.as_tensor().zeros_like()?))
    };
    Ok((
        probes.attn.iter().map(grad).collect::<Result<_>>()?,
        probes.mlp.iter().map(grad).collect::<Result<_>>()?,
        grad(&probes.logits)?,
    ))
}

/// Attribution score of every edge (graph order): EAP, or EAP-IG with `ig_steps` interpolation points.
pub fn edge_scores(task: &Task, ig_steps: Option<usize>, progress: &ProgressBar) -> Result<Vec<f64>> {
    let g = &task.graph;
    let model = task.model;
    // Clean sender outputs and their ablated values.
    let clean = model.run(&task.batch, &crate::intervene::RecordHeads, None, Logits::Hidden)?.0;
    let deltas: Vec<Tensor> = (0..g.n_senders())
        .map(|s| -> Result<Tensor> {
            let out = clean.sender(g, s)?;
            Ok(match &task.ablated {
                None => out.neg()?,
                Some(abl) => (abl.sender(g, s)? - out)?,
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
    progress.set_length(alphas.len() as u64);
    let mut sum: Option<(Vec<Tensor>, Vec<Tensor>, Tensor)> = None;
    for &a in &alphas {
        let embed = (&abl_embed + ((&clean_embed - &abl_embed)? * a)?)?;
        let (ga, gm, gl) = receiver_gradients(task, &embed)?;
        sum = Some(match sum {
            None => (ga, gm, gl),
            Some((sa, sm, sl)) => (
                sa.iter().zip(&ga).map(|(x, y)| x + y).collect::<candle_core::Result<_>>()?,
                sm.iter().zip(&gm).map(|(x, y)| x + y).collect::<candle_core::Result<_>>()?,
                (sl + gl)?,
            ),
        });
        progress.inc(1);
    }
    let (ga, gm, gl) = sum.expect("at least one step");
    let scale = 1.0 / alphas.len() as f64;
    // score[r, s] = grad_r · delta_s for the senders before r.
    let mut scores = vec![0f64; g.edges.len()];
    let mut fill = |receivers: &[usize], grads: &Tensor| -> Result<()> {
        let s_max = g.edges_into[receivers[0]].len();
        let gr = (grads.reshape((receivers.len(), ()))? * scale)?; // [R, n·T·D]
        let sc = gr.matmul(&deltas.narrow(0, 0, s_max)?.t()?)?; // [R, S]
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
        fill(&ports, &ga[l])?;
        fill(&[g.mlp_receiver(l)], &gm[l])?;
    }
    fill(&[g.logits_receiver()], &gl)?;
    Ok(scores)
}

/// Keeps an edge only if its sender is reachable from `input` and its receiver still reaches `logits`
/// through kept edges (petgraph walks over the kept subgraph, internal head wires included).
pub fn prune_unconnected(g: &Graph, removed: &mut [bool]) {
    let kept = EdgeFiltered::from_fn(&g.dag, |e| match *e.weight() {
        Wire::Edge(id) => !removed[id],
        Wire::Internal => true,
    });
    let input = g.sender_nodes[0];
    let logits = g.receiver_nodes[g.logits_receiver()];
    let mut from_input = vec![false; g.dag.node_count()];
    let mut dfs = Dfs::new(&kept, input);
    while let Some(n) = dfs.next(&kept) {
        from_input[n.index()] = true;
    }
    let mut to_logits = vec![false; g.dag.node_count()];
    let rev = Reversed(&kept);
    let mut dfs = Dfs::new(rev, logits);
    while let Some(n) = dfs.next(rev) {
        to_logits[n.index()] = true;
    }
    for (id, e) in g.edges.iter().enumerate() {
        let (s, r) = (g.sender_nodes[e.sender], g.receiver_nodes[e.receiver]);
        if !removed[id] && !(from_input[s.index()] && to_logits[r.index()]) {
            removed[id] = true;
        }
    }
}

/// The removed-edge flags of a selection over `scores`, unconnected edges pruned.
pub fn select(g: &Graph, scores: &[f64], selection: Selection) -> Result<Vec<bool>> {
    if let Selection::TopN(0) = selection {
        return Err(Error::input("--top-n must be at least 1"));
    }
    let mut removed = vec![true; scores.len()];
    let selection = match selection {
        Selection::Fraction(f) => Selection::TopN((f * scores.len() as f64).round() as usize),
        other => other,
    };
    match selection {
        Selection::Fraction(_) => unreachable!("turned into TopN above"),
        Selection::TopN(n) => {
            let mut idx: Vec<usize> = (0..scores.len()).collect();
            // Largest |score| first; ties by edge order, so the choice is deterministic.
            idx.sort_by(|&a, &b| scores[b].abs().total_cmp(&scores[a].abs()).then(a.cmp(&b)));
            for &e in idx.iter().take(n) {
                removed[e] = false;
            }
        }
        Selection::Threshold(x) => {
            if !x.is_finite() || x < 0.0 {
                return Err(Error::input(format!("--score-threshold must be a finite number ≥ 0, got {x}")));
            }
            for (e, s) in scores.iter().enumerate() {
                if s.abs() >= x {
                    removed[e] = false;
                }
            }
        }
    }
    prune_unconnected(g, &mut removed);
    Ok(removed)
}

/// The circuit an attribution run keeps: `selection` over `scores` (unconnected edges pruned), every edge's
/// score as its effect, and its metric measured on `task`. `kcirc select` rebuilds discovery's circuit with it.
pub fn selected_circuit(task: &Task, scores: &[f64], selection: Selection) -> Result<Circuit> {
    let removed = select(&task.graph, scores, selection)?;
    let metric = task.score(&removed)?;
    Ok(Circuit { removed, effect: scores.iter().copied().map(Some).collect(), metric })
}

impl Discovery for Eap {
    fn name(&self) -> &'static str {
        if self.ig_steps.is_some() { "eap-ig" } else { "eap" }
    }

    fn discover(&self, task: &Task, progress: &ProgressBar) -> Result<Circuit> {
        Ok(self.discover_scored(task, progress)?.0)
    }

    fn discover_scored(&self, task: &Task, progress: &ProgressBar) -> Result<(Circuit, Option<EdgeScores>)> {
        let scores = edge_scores(task, self.ig_steps, progress)?;
        let circuit = selected_circuit(task, &scores, self.selection)?;
        Ok((circuit, Some(EdgeScores { method: self.name(), ig_steps: self.ig_steps, scores })))
    }
}
