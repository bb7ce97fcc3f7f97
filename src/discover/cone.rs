//! ACDC's forward-cone evaluator: scores candidate circuits that differ from the current one only in edges into
//! one receiver by recomputing only what those edges can change.
//!
//! A receiver reads `input_r = Σ_kept out_s + Σ_removed ablated_s + constants`. While receiver `r` is tested,
//! the candidates differ from the current circuit only in edges into `r`, so only `r`'s node (the head(s)
//! behind a port, or the MLP) changes, then only the nodes reachable from it through kept edges (a removed edge
//! carries a constant). The evaluator holds the current circuit's value of every sender output and receiver
//! input and, per candidate, updates `r`'s input by `Σ_{newly removed s} (ablated_s − out_s)`, recomputes `r`'s
//! node, and for each later receiver with a kept edge from a changed node adds `Σ (new out_s − current out_s)`
//! and recomputes its node, up to `logits`.
//!
//! Positions: the metric reads the last position only. A node is needed at every position only when a kept path
//! leads from it to a key or value port; otherwise at the last position only ([`Need`]). Needs only shrink as
//! edges are removed, so the positions of a last-only node that are not recomputed (and go stale once a copy
//! is accepted) are never read again.
//!
//! The node math is the engine's own ([`crate::model::engine`]: norm, per-head projection, rotary, pattern,
//! mix, MLP); tests/discover.rs checks the scores against the naive one-full-forward-per-edge reference.
use std::collections::BTreeMap;

use candle_core::Tensor;

use super::Task;
use crate::graph::{Node, Port};
use crate::intervene::EdgeInputs;
use crate::model::engine::{attention_mix, attention_pattern, fit_rows, norm, project, rotate};
use crate::model::ops::mm;
use crate::model::{Activations, HookPoint, Hooks, Logits};
use crate::Result;

/// Candidate circuits evaluated together (the unit spread over threads; fixed, so results do not depend on
/// the thread count).
const GROUP_COPIES: usize = 8;

/// At which positions a node's output is needed under the current circuit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Need {
    /// Nowhere: no kept path to `logits`.
    None,
    /// At the last position only (what the metric reads).
    Last,
    /// At every position (a kept path reaches a key or value port).
    All,
}

/// Per sender, where its output is needed under the circuit `removed` (see [`Need`]).
pub fn needs(task: &Task, removed: &[bool]) -> Vec<Need> {
    let g = &task.graph;
    let mut need = vec![Need::None; g.n_senders()];
    for s in (0..g.n_senders()).rev() {
        need[s] = g.edges_from[s]
            .iter()
            .filter(|&&e| !removed[e])
            .map(|&e| required(task, &need, g.edges[e].receiver))
            .max()
            .unwrap_or(Need::None);
    }
    need
}

/// Positions at which receiver `rcv`'s input is needed, given its node's need: every position for a key or
/// value port of a needed head.
fn required(task: &Task, need: &[Need], rcv: usize) -> Need {
    let g = &task.graph;
    match g.receiver(rcv) {
        Node::HeadInput { layer, port: Port::Q, index } => need[g.head_sender(layer, index)],
        Node::HeadInput { layer, index, .. } => {
            let group = g.n_heads / g.n_kv_heads;
            match (index * group..(index + 1) * group).any(|h| need[g.head_sender(layer, h)] != Need::None) {
                true => Need::All,
                false => Need::None,
            }
        }
        Node::Mlp { layer } => need[g.mlp_sender(layer)],
        _ => Need::Last,
    }
}

/// Records every receiver input (and head output) of an edge-intervened run.
struct RecordInputs<'a>(EdgeInputs<'a>);

impl Hooks for RecordInputs<'_> {
    fn reads(&self, point: HookPoint) -> bool {
        matches!(point, HookPoint::HeadOut(_) | HookPoint::AttnIn(_) | HookPoint::MlpIn(_) | HookPoint::LogitsIn)
    }
    fn writes(&self, point: HookPoint) -> bool {
        self.0.writes(point)
    }
    fn write(&self, point: HookPoint, value: &Tensor, acts: &Activations) -> Result<Option<Tensor>> {
        self.0.write(point, value, acts)
    }
}

/// New values of one group of candidate circuits (copies), rows copy-major, positions as their node needs
/// (`T` or the last one).
pub struct Values {
    /// `(sender, output [copies·n, T', D])`.
    outs: Vec<(usize, Tensor)>,
    /// `(receiver, input [copies·n, T', D])`.
    inputs: Vec<(usize, Tensor)>,
}

/// The current circuit's activations and the candidate scorer (see the module doc).
pub struct Cone<'t> {
    task: &'t Task<'t>,
    /// Per sender, its output under the current circuit, `[n, T, D]` (valid where it is needed).
    outs: Vec<Tensor>,
    /// Per receiver, its input under the current circuit, `[n, T, D]` (valid where its node is needed).
    inputs: Vec<Tensor>,
}

impl<'t> Cone<'t> {
    /// The activations of the circuit `initial`, from one intervened forward pass, and that circuit's metric from
    /// the same pass: the run [`Task::score`] makes (recording changes no value), so the same bits.
    pub fn new(task: &'t Task<'t>, initial: &[bool]) -> Result<(Self, f64)> {
        let g = &task.graph;
        let n = task.n_examples();
        let hook = RecordInputs(EdgeInputs::new(g, vec![initial], task.ablated.as_ref(), n));
        let (acts, hidden) = task.model.run(&task.batch, &hook, Logits::Hidden)?;
        let metric = task.full.score(task.metric, task.model, &hidden)?[0];
        let outs = (0..g.n_senders()).map(|s| g.sender_output(&acts, s)).collect::<Result<Vec<_>>>()?;
        let mut inputs = Vec::with_capacity(g.n_receivers());
        for l in 0..g.n_layers {
            let ports = acts.expect(HookPoint::AttnIn(l))?; // [P, n, T, D]
            for p in 0..g.ports_per_layer() {
                inputs.push(ports.get(p)?.contiguous()?);
            }
            inputs.push(acts.expect(HookPoint::MlpIn(l))?);
        }
        inputs.push(acts.expect(HookPoint::LogitsIn)?);
        Ok((Cone { task, outs, inputs }, metric))
    }

    /// Metric of every circuit in `copies` (each differing from `current` only in edges into `r`), with the
    /// new values of each group of `GROUP_COPIES` copies (copy `j` is row block `j % GROUP_COPIES` of group
    /// `j / GROUP_COPIES`). `need` from [`needs`] of `current` (or of any circuit with more edges).
    pub fn scores(&self, r: usize, copies: &[Vec<bool>], current: &[bool], need: &[Need]) -> Result<(Vec<f64>, Vec<Values>)> {
        let groups: Vec<&[Vec<bool>]> = copies.chunks(GROUP_COPIES).collect();
        let out = crate::parallel::map(&groups, |g| self.group(r, g, current, need));
        let mut scores = Vec::with_capacity(copies.len());
        let mut values = Vec::with_capacity(groups.len());
        for o in out {
            let (s, v) = o?;
            scores.extend(s);
            values.push(v);
        }
        Ok((scores, values))
    }

    /// Makes copy `j` of the last [`Cone::scores`] call (its `values`) the current circuit.
    pub fn accept(&mut self, values: &[Values], j: usize) -> Result<()> {
        let n = self.task.n_examples();
        let (v, c) = (&values[j / GROUP_COPIES], j % GROUP_COPIES);
        for (s, x) in &v.outs {
            self.outs[*s] = splice(&self.outs[*s], &x.narrow(0, c * n, n)?)?;
        }
        for (r, x) in &v.inputs {
            self.inputs[*r] = splice(&self.inputs[*r], &x.narrow(0, c * n, n)?)?;
        }
        Ok(())
    }

    /// Scores and new values of one group of copies.
    fn group(&self, r: usize, copies: &[Vec<bool>], current: &[bool], need: &[Need]) -> Result<(Vec<f64>, Values)> {
        let g = &self.task.graph;
        let mut pass = Pass {
            cone: self,
            current,
            need,
            rows: copies.len() * self.task.n_examples(),
            inputs: BTreeMap::new(),
            outs: BTreeMap::new(),
            pending: vec![],
            blocks: vec![],
        };
        pass.tested_input(r, copies)?;
        let first_layer = match g.receiver(r) {
            Node::HeadInput { layer, .. } | Node::Mlp { layer } => layer,
            _ => g.n_layers,
        };
        for l in first_layer..g.n_layers {
            for gi in 0..g.n_kv_heads {
                pass.heads(l, gi)?;
            }
            pass.mlp(l)?;
        }
        pass.finish()
    }
}

/// `x [.., T, ..]` (or already `[.., 1, ..]`) at the positions of `need` (dimension 1).
fn at(x: &Tensor, need: Need) -> Result<Tensor> {
    Ok(match need {
        Need::All => x.clone(),
        _ => x.narrow(1, x.dim(1)? - 1, 1)?,
    })
}

/// One group's evaluation in forward order: the copies' new values so far.
struct Pass<'c, 't> {
    cone: &'c Cone<'t>,
    current: &'c [bool],
    need: &'c [Need],
    /// Rows of the group, copies · n.
    rows: usize,
    /// New receiver inputs, `[rows, T', D]`.
    inputs: BTreeMap<usize, Tensor>,
    /// New sender outputs, `[rows, T', D]`.
    outs: BTreeMap<usize, Tensor>,
    /// Changed senders' `new − current` outputs `[rows, T', D]` not yet in `blocks`.
    pending: Vec<(usize, Tensor)>,
    /// Every earlier changed sender's `new − current` output, stacked for the masked sums of receiver inputs.
    blocks: Vec<DeltaBlock>,
}

/// A block's senders and changes at the positions of `need` (`None`: no sender of it is needed at every
/// position when `need` asks for every position).
fn b_class(b: &DeltaBlock, need: Need) -> Option<(&[usize], &Tensor)> {
    match (need, &b.all) {
        (Need::All, Some((senders, deltas))) => Some((senders, deltas)),
        (Need::All, None) => None,
        _ => Some((&b.senders, &b.last)),
    }
}

/// Changed senders' `new − current` outputs, stacked so that a receiver's input change is one masked matmul
/// per block (`mask [1, S] @ deltas [S, ·]`) instead of one add per sender.
struct DeltaBlock {
    /// The block's senders.
    senders: Vec<usize>,
    /// `[S, rows·D]`: every sender's change at the last position.
    last: Tensor,
    /// The senders needed at every position and `[S_all, rows·T·D]`: their change there.
    all: Option<(Vec<usize>, Tensor)>,
    /// `[1, rows·D]`: the sum of `last` over this block and every earlier one.
    cum_last: Tensor,
    /// `[1, rows·T·D]`: the sum of `all` over this block and every earlier one (`None` while there is none).
    cum_all: Option<Tensor>,
}

impl Pass<'_, '_> {
    /// The current circuit's `x [n, T, D]` at the positions of `need`, tiled to every copy: `[rows, T', D]`.
    fn tiled(&self, x: &Tensor, need: Need) -> Result<Tensor> {
        fit_rows(&at(x, need)?, self.rows)
    }

    /// The tested receiver `r`'s input: its current one plus, per copy, `ablated − out` of every edge the copy
    /// removes on top of the current circuit.
    fn tested_input(&mut self, r: usize, copies: &[Vec<bool>]) -> Result<()> {
        let task = self.cone.task;
        let g = &task.graph;
        let need = required(task, self.need, r);
        if need == Need::None {
            return Ok(());
        }
        let base = at(&self.cone.inputs[r], need)?;
        let mut xs = Vec::with_capacity(copies.len());
        for c in copies {
            let mut x = base.clone();
            for (s, &e) in g.edges_into[r].iter().enumerate() {
                if c[e] && !self.current[e] {
                    let out = at(&self.cone.outs[s], need)?;
                    x = match &task.ablated {
                        Some(a) => ((x + at(&g.sender_output(a, s)?, need)?)? - out)?,
                        None => (x - out)?,
                    };
                }
            }
            xs.push(x);
        }
        self.inputs.insert(r, Tensor::cat(&xs, 0)?);
        Ok(())
    }

    /// The new input `[rows, T', D]` of receiver `rcv` at the positions of `need` (the tested receiver's from
    /// [`Pass::tested_input`]), `None` when no kept edge into it comes from a changed sender.
    fn new_input(&mut self, rcv: usize, need: Need) -> Result<Option<Tensor>> {
        if let Some(x) = self.inputs.get(&rcv) {
            return Ok(Some(x.clone()));
        }
        if need == Need::None {
            return Ok(None);
        }
        self.flush()?;
        let into = &self.cone.task.graph.edges_into[rcv];
        let kept = |s: usize| !self.current[into[s]];
        // Blocks run in forward order, each one node's outputs: those before the receiver are a prefix.
        let before = &self.blocks[..self.blocks.iter().take_while(|b| b.senders[0] < into.len()).count()];
        let class = |b| b_class(b, need);
        let (mut n_kept, mut n_removed) = (0, 0);
        for b in before {
            if need == Need::All && b.senders.iter().any(|&s| kept(s) && self.need[s] != Need::All) {
                return Err(crate::Error::bug("a receiver needed at every position reads a sender needed at the last only"));
            }
            if let Some((senders, _)) = class(b) {
                let k = senders.iter().filter(|&&s| kept(s)).count();
                n_kept += k;
                n_removed += senders.len() - k;
            }
        }
        if n_kept == 0 {
            return Ok(None);
        }
        // `Σ_kept Δ_s` directly, or as the running sum of every change less the removed edges' when fewer.
        let complement = n_removed < n_kept;
        let mut sum: Option<Tensor> = match complement {
            true => {
                let last = before.last().expect("a kept sender");
                Some(match need {
                    Need::All => last.cum_all.clone().ok_or_else(|| crate::Error::bug("no running sum"))?,
                    _ => last.cum_last.clone(),
                })
            }
            false => None,
        };
        for b in before {
            let Some((senders, deltas)) = class(b) else { continue };
            let mask: Vec<f32> = senders.iter().map(|&s| if kept(s) != complement { 1.0 } else { 0.0 }).collect();
            if mask.iter().all(|&m| m == 0.0) {
                continue;
            }
            let mask = Tensor::from_vec(mask, (1, senders.len()), deltas.device())?;
            let y = mm(&mask, deltas)?; // [1, rows·T'·D]
            sum = Some(match (sum, complement) {
                (Some(x), true) => (x - y)?,
                (Some(x), false) => (x + y)?,
                (None, _) => y,
            });
        }
        let Some(sum) = sum else { return Ok(None) };
        let base = self.tiled(&self.cone.inputs[rcv], need)?; // [rows, T', D]
        let sum = sum.reshape(base.shape())?;
        Ok(Some((base + sum)?))
    }

    /// Stacks the pending sender changes into a [`DeltaBlock`].
    fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let pending = std::mem::take(&mut self.pending);
        let senders: Vec<usize> = pending.iter().map(|p| p.0).collect();
        let flat = |x: Tensor| -> Result<Tensor> { Ok(x.flatten_all()?) };
        let last = Tensor::stack(&pending.iter().map(|(_, d)| flat(at(d, Need::Last)?)).collect::<Result<Vec<_>>>()?, 0)?;
        let all: Vec<&(usize, Tensor)> = pending.iter().filter(|(s, _)| self.need[*s] == Need::All).collect();
        let all = match all.is_empty() {
            true => None,
            false => Some((
                all.iter().map(|p| p.0).collect(),
                Tensor::stack(&all.iter().map(|(_, d)| flat(d.clone())).collect::<Result<Vec<_>>>()?, 0)?,
            )),
        };
        let prev = self.blocks.last();
        let add = |prev: Option<Tensor>, x: &Tensor| -> Result<Tensor> {
            let x = x.sum_keepdim(0)?;
            Ok(match prev {
                Some(p) => (p + x)?,
                None => x,
            })
        };
        let cum_last = add(prev.map(|p| p.cum_last.clone()), &last)?;
        let cum_all = match &all {
            Some((_, d)) => Some(add(prev.and_then(|p| p.cum_all.clone()), d)?),
            None => prev.and_then(|p| p.cum_all.clone()),
        };
        self.blocks.push(DeltaBlock { senders, last, all, cum_last, cum_all });
        Ok(())
    }

    /// Records sender `s`'s new output `out [rows, T', D]` and its change.
    fn set_output(&mut self, s: usize, out: Tensor) -> Result<()> {
        let need = self.need[s];
        self.pending.push((s, (&out - self.tiled(&self.cone.outs[s], need)?)?));
        self.outs.insert(s, out);
        Ok(())
    }

    /// Recomputes the needed heads of key/value group `gi` of layer `l` whose query, key or value input changed.
    fn heads(&mut self, l: usize, gi: usize) -> Result<()> {
        let task = self.cone.task;
        let (g, model) = (&task.graph, task.model);
        let (h, kv) = (g.n_heads, g.n_kv_heads);
        let group = h / kv;
        let t = task.batch.seq_len;
        let rows = self.rows;
        let heads: Vec<usize> = (gi * group..(gi + 1) * group).filter(|&hh| self.need[g.head_sender(l, hh)] != Need::None).collect();
        if heads.is_empty() {
            return Ok(());
        }
        let (kr, vr) = (g.attn_receiver(l, h + gi), g.attn_receiver(l, h + kv + gi));
        let kx = self.new_input(kr, Need::All)?;
        let vx = self.new_input(vr, Need::All)?;
        let mut qxs = vec![];
        for &hh in &heads {
            let qr = g.attn_receiver(l, hh);
            qxs.push((hh, qr, self.new_input(qr, self.need[g.head_sender(l, hh)])?));
        }
        let kv_changed = kx.is_some() || vx.is_some();
        if !kv_changed && qxs.iter().all(|q| q.2.is_none()) {
            return Ok(());
        }
        let layer = &model.weights.layers[l];
        let a = &layer.attn;
        // Keys and values of the group at every position, `[1, rows, T, dh]` (from the current inputs' n rows
        // when unchanged).
        let kv_of = |x: &Option<Tensor>, rcv: usize, w: &Tensor, bias: Option<&Tensor>| -> Result<Tensor> {
            let x = x.clone().unwrap_or_else(|| self.cone.inputs[rcv].clone()); // [rows or n, T, D]
            let m = x.dim(0)?;
            let y = project(&norm(&x, &layer.ln1, &model.cfg)?.reshape((1, m * t, ()))?, &w.narrow(0, gi, 1)?, bias, false)?;
            Ok(y.reshape((1, m, t, ()))?)
        };
        let mut k = kv_of(&kx, kr, &a.w_k, Some(&a.b_k.narrow(0, gi, 1)?))?;
        if let Some((cos, sin)) = &task.batch.rotary {
            let m = k.dim(1)?;
            k = rotate(&k, &fit_rows(cos, m)?, &fit_rows(sin, m)?)?;
        }
        let k = fit_rows(&k.squeeze(0)?, rows)?.unsqueeze(0)?;
        let v = fit_rows(&kv_of(&vx, vr, &a.w_v, None)?.squeeze(0)?, rows)?.unsqueeze(0)?;
        for (rcv, x) in [(kr, kx), (vr, vx)] {
            if let Some(x) = x {
                self.inputs.insert(rcv, x);
            }
        }
        for (hh, qr, qx) in qxs {
            if qx.is_none() && !kv_changed {
                continue;
            }
            let s = g.head_sender(l, hh);
            let need = self.need[s];
            let tq = if need == Need::All { t } else { 1 };
            let qx = match qx {
                Some(x) => {
                    self.inputs.insert(qr, x.clone());
                    x
                }
                None => self.tiled(&self.cone.inputs[qr], need)?,
            };
            let q = project(
                &norm(&qx, &layer.ln1, &model.cfg)?.reshape((1, rows * tq, ()))?,
                &a.w_q.narrow(0, hh, 1)?,
                Some(&a.b_q.narrow(0, hh, 1)?),
                false,
            )?
            .reshape((1, rows, tq, ()))?;
            let q = match &task.batch.rotary {
                Some((cos, sin)) => rotate(&q, &self.tiled(cos, need)?, &self.tiled(sin, need)?)?,
                None => q,
            };
            let mask = self.tiled(&task.batch.mask, need)?; // [rows, Tq, T]
            let z = attention_mix(&attention_pattern(&q, &k, &mask, false)?, &v)?; // [1, rows, Tq, dh]
            let out = mm(&z.reshape((1, rows * tq, ()))?, &a.w_o.narrow(0, hh, 1)?)?.reshape((rows, tq, ()))?;
            self.set_output(s, out)?;
        }
        Ok(())
    }

    /// Recomputes MLP `l` when it is needed and its input changed.
    fn mlp(&mut self, l: usize) -> Result<()> {
        let task = self.cone.task;
        let (g, model) = (&task.graph, task.model);
        let (m, mr) = (g.mlp_sender(l), g.mlp_receiver(l));
        if let Some(x) = self.new_input(mr, self.need[m])? {
            if self.need[m] != Need::None {
                let out = model.mlp_plain(l, &norm(&x, &model.weights.layers[l].ln2, &model.cfg)?)?;
                self.set_output(m, out)?;
            }
            self.inputs.insert(mr, x);
        }
        Ok(())
    }

    /// Every copy's metric from the `logits` receiver's input at the last position, and the new values.
    fn finish(mut self) -> Result<(Vec<f64>, Values)> {
        let task = self.cone.task;
        let lr = task.graph.logits_receiver();
        let x = match self.new_input(lr, Need::Last)? {
            Some(x) => {
                self.inputs.insert(lr, x.clone());
                x
            }
            None => self.tiled(&self.cone.inputs[lr], Need::Last)?,
        };
        let hidden = task.model.unembed(&x, Logits::Hidden)?; // [rows, D]
        let scores = task.full.score(task.metric, task.model, &hidden)?;
        Ok((scores, Values { outs: self.outs.into_iter().collect(), inputs: self.inputs.into_iter().collect() }))
    }
}

/// `old [n, T, D]` with its last `T'` positions replaced by `new [n, T', D]`.
fn splice(old: &Tensor, new: &Tensor) -> Result<Tensor> {
    let (t, tn) = (old.dim(1)?, new.dim(1)?);
    Ok(match tn == t {
        true => new.contiguous()?,
        false => Tensor::cat(&[&old.narrow(1, 0, t - tn)?, new], 1)?,
    })
}
