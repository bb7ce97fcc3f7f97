//! Edge interventions: every receiver reads its kept senders' live outputs and its removed senders' ablated
//! values (brief §1): `input_r = Σ_s kept·out_s + removed·ablated_s + constants`.
//!
//! The engine hands receivers the plain residual stream, which already sums every live sender, so a hook only
//! adds `Σ_{s removed} (ablated_s − out_s)`. [`EdgeInputs`] does that with one small matmul per sender block
//! (masks × sender deltas) and evaluates several candidate circuits ("copies") in one batch; [`NaiveInputs`]
//! rebuilds every input from scratch, the reference the fast path is tested against.
use std::cell::RefCell;

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use crate::graph::{Block, Graph};
use crate::model::ops::mm;
use crate::model::{Activations, HookPoint, Hooks, Model};
use crate::Result;

/// What a removed edge carries instead of the sender's live output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ablation {
    /// Nothing (the paper's setting).
    Zero,
    /// The sender's mean output over the reference prompts (the discovery prompts and the relation's other
    /// facts outside the held-out split, see `split::Prepared::reference`), per position from the end of the prompt.
    Mean,
    /// The sender's output on a corrupted prompt (same template, another subject of the same token length).
    Resample,
}

impl std::fmt::Display for Ablation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Ablation::Zero => "zero",
            Ablation::Mean => "mean",
            Ablation::Resample => "resample",
        })
    }
}

impl Ablation {
    pub const ALL: [Ablation; 3] = [Ablation::Zero, Ablation::Mean, Ablation::Resample];
}

impl std::str::FromStr for Ablation {
    type Err = crate::Error;
    fn from_str(s: &str) -> Result<Ablation> {
        Ablation::ALL
            .into_iter()
            .find(|a| a.to_string() == s)
            .ok_or_else(|| crate::Error::input(format!("unknown ablation `{s}` (zero, mean, resample)")))
    }
}

/// Records every head's output (what edge interventions and ablated values need); changes nothing.
pub struct RecordHeads;
impl Hooks for RecordHeads {
    fn reads(&self, point: HookPoint) -> bool {
        matches!(point, HookPoint::HeadOut(_))
    }
}

/// Node ablation of attention heads: the chosen heads' outputs (every edge out of them) replaced by their ablated
/// values, zero without any. What the head-ablation check of `kcirc heads` runs.
pub struct AblateHeads<'a> {
    /// `(layer, head)` pairs.
    pub heads: &'a [(usize, usize)],
    /// Ablated sender values with the batch's rows (`None`: zero).
    pub ablated: Option<&'a Activations>,
}

impl Hooks for AblateHeads<'_> {
    fn writes(&self, point: HookPoint) -> bool {
        matches!(point, HookPoint::HeadOut(l) if self.heads.iter().any(|&(hl, _)| hl == l))
    }
    fn write(&self, point: HookPoint, value: &Tensor, _: &Activations) -> Result<Option<Tensor>> {
        let HookPoint::HeadOut(l) = point else { return Ok(None) };
        let n = value.dim(0)?;
        let mask: Vec<u8> = (0..n).map(|h| self.heads.contains(&(l, h)) as u8).collect();
        let mask = Tensor::from_vec(mask, (n, 1, 1, 1), value.device())?.broadcast_as(value.shape())?;
        let replacement = match self.ablated {
            Some(a) => a.heads(l)?,
            None => value.zeros_like()?,
        };
        Ok(Some(mask.where_cond(&replacement, value)?))
    }
}

/// Reference prompts run together when [`reference_means`] accumulates its sums: bounds the memory of the
/// recorded head outputs whatever the size of the reference set.
const MEAN_CHUNK: usize = 16;

/// Mean of every sender's output over `prompts` (the reference set of mean ablation), per position counted
/// from the end of each prompt, over the prompts long enough to have that position. Returns one row: embed
/// `[1, T, D]`, per layer heads `[H, 1, T, D]`, MLPs `[1, T, D]`, `T` the longest prompt; position `T − 1 − p`
/// holds the mean over the prompts longer than `p`.
///
/// The prompts run in left-padded chunks of `MEAN_CHUNK` (spread over kcirc's threads); each chunk's sums over
/// its real positions are added in chunk order and divided once at the end, so the result does not depend on
/// the thread count.
pub fn reference_means(model: &Model, prompts: &[Vec<u32>]) -> Result<Activations> {
    if prompts.is_empty() || prompts.iter().any(|p| p.is_empty()) {
        return Err(crate::Error::input("mean ablation needs at least one non-empty reference prompt"));
    }
    let t = prompts.iter().map(|p| p.len()).max().unwrap_or(1);
    let chunks: Vec<&[Vec<u32>]> = prompts.chunks(MEAN_CHUNK).collect();
    // Per chunk: every sender's sum over the chunk's rows at real positions, left-padded with zeros to `t`.
    let sums = crate::parallel::map(&chunks, |c| -> Result<Activations> {
        let batch = model.batch(c)?;
        let acts = model.run(&batch, &RecordHeads, crate::model::Logits::Hidden)?.0;
        let tc = batch.seq_len;
        let mut w = vec![0f32; c.len() * tc];
        for (b, len) in batch.lengths.iter().enumerate() {
            for pos in tc - len..tc {
                w[b * tc + pos] = 1.0;
            }
        }
        let w = Tensor::from_vec(w, (c.len(), tc, 1), acts.embed.device())?;
        // x [.., n, Tc, D] -> Σ_rows w·x, [.., 1, t, D].
        let sum = |x: &Tensor, batch_dim: usize| -> Result<Tensor> {
            let s = x.broadcast_mul(&w)?.sum_keepdim(batch_dim)?;
            Ok(s.pad_with_zeros(batch_dim + 1, t - tc, 0)?)
        };
        Ok(Activations::senders(
            sum(&acts.embed, 0)?,
            (0..acts.mlps.len()).map(|l| sum(&acts.heads(l)?, 1)).collect::<Result<_>>()?,
            acts.mlps.iter().map(|m| sum(m, 0)).collect::<Result<_>>()?,
        ))
    });
    let mut total: Option<Activations> = None;
    for s in sums {
        let s = s?;
        total = Some(match total {
            None => s,
            Some(a) => Activations::senders(
                (&a.embed + &s.embed)?,
                (0..a.mlps.len()).map(|l| Ok((a.heads(l)? + s.heads(l)?)?)).collect::<Result<_>>()?,
                a.mlps.iter().zip(&s.mlps).map(|(x, y)| Ok((x + y)?)).collect::<Result<_>>()?,
            ),
        });
    }
    let total = total.ok_or_else(|| crate::Error::bug("no reference chunk"))?;
    // 1 / (prompts long enough to have position `pos`), [1, t, 1].
    let inv: Vec<f32> = (0..t).map(|pos| 1.0 / prompts.iter().filter(|p| t - p.len() <= pos).count() as f32).collect();
    let inv = Tensor::from_vec(inv, (1, t, 1), total.embed.device())?;
    Ok(Activations::senders(
        total.embed.broadcast_mul(&inv)?,
        (0..total.mlps.len()).map(|l| Ok(total.heads(l)?.broadcast_mul(&inv)?)).collect::<Result<_>>()?,
        total.mlps.iter().map(|m| Ok(m.broadcast_mul(&inv)?)).collect::<Result<_>>()?,
    ))
}

/// Sender values for a batch of `n` prompts left-padded to `t` positions, from the one-row means of
/// [`reference_means`] (embed `[1, T_r, D]`, heads `[H, 1, T_r, D]`, MLPs `[1, T_r, D]`): embed and MLPs
/// `[n, t, D]`, heads `[H, n, t, D]`, every row the same. Position `p` from the end reads the mean of position
/// `p` from the end; positions farther from the end than the longest reference prompt read the farthest mean.
pub fn broadcast_means(means: &Activations, n: usize, t: usize) -> Result<Activations> {
    let fit = |x: &Tensor, batch_dim: usize| -> Result<Tensor> {
        let x = x.narrow(batch_dim, 0, 1)?.contiguous()?;
        let tr = x.dim(batch_dim + 1)?;
        let idx: Vec<u32> = (0..t).map(|q| (tr - 1 - (t - 1 - q).min(tr - 1)) as u32).collect();
        let idx = Tensor::new(idx.as_slice(), x.device())?;
        let x = x.index_select(&idx, batch_dim + 1)?;
        let mut shape = x.dims().to_vec();
        shape[batch_dim] = n;
        Ok(x.broadcast_as(shape)?.contiguous()?)
    };
    Ok(Activations::senders(
        fit(&means.embed, 0)?,
        (0..means.mlps.len()).map(|l| fit(&means.heads(l)?, 1)).collect::<Result<_>>()?,
        means.mlps.iter().map(|m| fit(m, 0)).collect::<Result<_>>()?,
    ))
}

/// `Σ_s x[s]` of `x [S, R, T, D]`, `[R, T, D]`: slice by slice (candle's reduction over a leading dimension
/// is a strided loop several times slower than vector adds).
fn sum_senders(x: &Tensor) -> Result<Tensor> {
    let mut sum = x.get(0)?;
    for s in 1..x.dim(0)? {
        sum = (sum + x.get(s)?)?;
    }
    Ok(sum)
}

/// The fast edge intervention: `copies` circuits at once, batch rows copy-major (`rows` rows per copy).
pub struct EdgeInputs<'a> {
    pub graph: &'a Graph,
    /// Per copy, the removed flag of every edge.
    pub removed: Vec<&'a [bool]>,
    /// Ablated sender values (`rows` rows each), `None` for zero ablation.
    pub ablated: Option<&'a Activations>,
    /// Rows per copy.
    pub rows: usize,
    /// `ablated − out` per block, computed once per run (`None` until first needed).
    deltas: RefCell<Vec<Option<Tensor>>>,
    /// With several copies, every block's deltas in one sender-major buffer `[S, copies·rows, T, D]` (zeros
    /// for blocks not computed yet): the copies' masks differ (eval's unrelated circuits), and blocks in a
    /// contiguous sender range take one batched matmul instead of one matmul and one accumulator pass each.
    stacked: RefCell<Option<Tensor>>,
    /// Running sums of every delta over blocks `0..=i`, `[copies·rows, T, D]`.
    cumulative: RefCell<Vec<Option<Tensor>>>,
}

impl<'a> EdgeInputs<'a> {
    pub fn new(graph: &'a Graph, removed: Vec<&'a [bool]>, ablated: Option<&'a Activations>, rows: usize) -> Self {
        let blocks = graph.n_blocks();
        EdgeInputs {
            graph,
            removed,
            ablated,
            rows,
            deltas: RefCell::new(vec![None; blocks]),
            stacked: RefCell::new(None),
            cumulative: RefCell::new(vec![None; blocks]),
        }
    }

    /// `[S_b, R, T, D]` sender deltas of a block: `ablated − out` (for zero ablation just `out`, the sign
    /// going into the mask).
    fn delta(&self, b: Block, acts: &Activations) -> Result<Tensor> {
        if let Some(d) = &self.deltas.borrow()[b.id()] {
            return Ok(d.clone());
        }
        let out = b.outputs(acts)?;
        let d = match self.ablated {
            None => out,
            Some(abl) => {
                let a = b.outputs(abl)?; // [S_b, n, T, D]
                let (s, r, t, d) = out.dims4()?;
                let k = r / self.rows;
                let a = a.unsqueeze(1)?; // [S_b, 1, n, T, D]
                a.broadcast_sub(&out.reshape((s, k, self.rows, t, d))?)?.reshape((s, r, t, d))?
            }
        };
        // Several unrelated circuits: every block's mask will differ between copies, so its deltas live in
        // `stacked` from the start (a view, no second copy).
        let d = match self.removed.len() > 1 {
            true => self.stack(b, d.contiguous()?)?,
            false => d,
        };
        self.deltas.borrow_mut()[b.id()] = Some(d.clone());
        Ok(d)
    }

    /// Copies a block's deltas `d [S_b, R, T, D]` (contiguous) into `stacked` (allocating it on first use) and
    /// returns the view of them there.
    fn stack(&self, b: Block, d: Tensor) -> Result<Tensor> {
        let mut stacked = self.stacked.borrow_mut();
        let buf = match stacked.as_mut() {
            Some(s) => s,
            None => {
                let (_, r, t, dm) = d.dims4()?;
                stacked.insert(Tensor::zeros((self.graph.n_senders(), r, t, dm), d.dtype(), d.device())?)
            }
        };
        let senders = b.senders(self.graph);
        buf.slice_set(&d, 0, senders.start)?;
        Ok(buf.narrow(0, senders.start, senders.len())?)
    }

    /// `[w, copies·rows, T, D]`: the deltas of senders `lo..lo + w` from `stacked`, once those of `blocks` (the
    /// blocks in that range with edges to add) are computed.
    fn stacked_range(&self, blocks: &[Block], lo: usize, w: usize, acts: &Activations) -> Result<Tensor> {
        for &b in blocks {
            self.delta(b, acts)?;
        }
        let stacked = self.stacked.borrow();
        let buf = stacked.as_ref().ok_or_else(|| crate::Error::bug("stacked deltas of a single copy"))?;
        Ok(buf.narrow(0, lo, w)?)
    }

    /// `[copies·rows, T, D]`: the sum of every sender delta of blocks `0..=last` (global block order). Cached:
    /// blocks of a run only ever grow.
    fn cumulative(&self, blocks: &[Block], acts: &Activations) -> Result<Tensor> {
        let last = blocks.last().expect("at least the embedding").id();
        if let Some(c) = &self.cumulative.borrow()[last] {
            return Ok(c.clone());
        }
        let (&b, earlier) = blocks.split_last().expect("at least the embedding");
        let d = sum_senders(&self.delta(b, acts)?)?; // [R, T, D]
        let sum = if earlier.is_empty() { d } else { (self.cumulative(earlier, acts)? + d)? };
        self.cumulative.borrow_mut()[last] = Some(sum.clone());
        Ok(sum)
    }

    /// Offsets `[P, copies·rows, T, D]` for the receivers `receivers` (P of them).
    ///
    /// `Σ_{s removed} δ_s` (δ = ablated − out). When most edges into these receivers are removed — the usual case
    /// once a circuit is small — it is computed as `Σ_all δ_s − Σ_{s kept} δ_s`, the first term a cached running
    /// sum, so the cost follows the kept edges.
    fn offsets(&self, receivers: &[usize], blocks: &[Block], acts: &Activations) -> Result<Option<Tensor>> {
        let g = self.graph;
        let sign = if self.ablated.is_none() { -1f32 } else { 1f32 };
        let (mut removed_n, mut total_n) = (0usize, 0usize);
        for removed in &self.removed {
            for &r in receivers {
                let into = &g.edges_into[r][..g.block_start(blocks.len())];
                removed_n += into.iter().filter(|&&e| removed[e]).count();
                total_n += into.len();
            }
        }
        if removed_n == 0 {
            return Ok(None);
        }
        if removed_n * 2 <= total_n {
            return self.masked_sum(receivers, blocks, acts, true, sign);
        }
        let all = (self.cumulative(blocks, acts)? * sign as f64)?; // [k·n, T, D]
        let p = receivers.len();
        let (rows, t, d) = all.dims3()?;
        let base = all.unsqueeze(0)?.broadcast_as((p, rows, t, d))?;
        Ok(Some(match self.masked_sum(receivers, blocks, acts, false, -sign)? {
            Some(kept) => (kept + base)?,
            None => base.contiguous()?,
        }))
    }

    /// `Σ value·δ_s` over the senders `s` whose edge into each receiver is removed (`removed = true`) or kept
    /// (`false`): `[P, copies·rows, T, D]`, `None` when no edge qualifies.
    ///
    /// Per sender block, `mask [P, S_b] @ delta [S_b, ·]`. Blocks whose mask is the same in every copy need one
    /// matmul over all rows; only blocks whose masks differ between copies are done copy by copy (in one
    /// batched matmul over their sender range).
    fn masked_sum(
        &self,
        receivers: &[usize],
        blocks: &[Block],
        acts: &Activations,
        removed_edges: bool,
        value: f32,
    ) -> Result<Option<Tensor>> {
        let g = self.graph;
        let k = self.removed.len();
        let p = receivers.len();
        let n = self.rows;
        // Sum over the blocks whose mask every copy shares, all rows: `[P, k·n·T·D]`.
        let mut full: Option<Tensor> = None;
        let add = |acc: &mut Option<Tensor>, x: Tensor| -> Result<()> {
            *acc = Some(match acc.take() {
                None => x,
                Some(a) => (a + x)?,
            });
            Ok(())
        };
        let mut dims = None;
        // Blocks whose masks differ between copies: (block, mask [k, P, S_b]).
        let mut varied: Vec<(Block, Vec<f32>)> = vec![];
        for &b in blocks {
            let senders = b.senders(g);
            let sb = senders.len();
            // mask[c][i][j] = value where the edge sender j -> receiver i qualifies in copy c
            let mut mask = vec![0f32; k * p * sb];
            let mut any = false;
            for (c, removed) in self.removed.iter().enumerate() {
                for (i, &r) in receivers.iter().enumerate() {
                    let into = &g.edges_into[r];
                    for (j, s) in senders.clone().enumerate() {
                        // Edges into a receiver are listed in sender order, one per sender before it.
                        if removed[into[s]] == removed_edges {
                            mask[(c * p + i) * sb + j] = value;
                            any = true;
                        }
                    }
                }
            }
            if !any {
                continue;
            }
            let uniform = (1..k).all(|c| mask[c * p * sb..(c + 1) * p * sb] == mask[..p * sb]);
            let delta = self.delta(b, acts)?; // [S_b, R, T, D]
            let (_, r, t, d) = delta.dims4()?;
            dims = Some((t, d));
            let dev = delta.device();
            let flat = delta.reshape((sb, r * t * d))?;
            if uniform {
                mask.truncate(p * sb);
                let m = Tensor::from_vec(mask, (p, sb), dev)?;
                add(&mut full, mm(&m, &flat)?)?;
            } else {
                // Copy-specific: gathered, done in one matmul below.
                varied.push((b, mask));
            }
        }
        let Some((t, d)) = dims else { return Ok(None) };
        let ntd = n * t * d;
        // The blocks whose masks differ, copy by copy in one batched matmul: `[k, P, n·T·D]`.
        let per_copy = if let (Some(&(b_lo, _)), Some(&(b_hi, _))) = (varied.first(), varied.last()) {
            // mask [k, P, w] over the senders of the first to the last such block, zero for the senders between
            // them handled above.
            let (lo, hi) = (b_lo.senders(g).start, b_hi.senders(g).end);
            let w = hi - lo;
            let mut mask = vec![0f32; k * p * w];
            for (b, m) in &varied {
                let range = b.senders(g);
                let sb = range.len();
                for ci in 0..k * p {
                    mask[ci * w + range.start - lo..][..sb].copy_from_slice(&m[ci * sb..(ci + 1) * sb]);
                }
            }
            let deltas = match varied.len() {
                1 => self.delta(b_lo, acts)?,
                _ => self.stacked_range(&varied.iter().map(|m| m.0).collect::<Vec<_>>(), lo, w, acts)?,
            };
            // [w, k·n, T, D] -> [k, w, n·T·D], a strided view (batch stride n·T·D, row stride k·n·T·D)
            let dl = deltas.reshape((w, k, ntd))?.transpose(0, 1)?;
            let m = Tensor::from_vec(mask, (k, p, w), deltas.device())?;
            Some(mm(&m, &dl)?)
        } else {
            None
        };
        let mut total = full.map(|f| f.reshape((p, k, ntd))).transpose()?;
        if let Some(pc) = per_copy {
            add(&mut total, pc.transpose(0, 1)?)?;
        }
        let total = total.expect("some block contributed");
        Ok(Some(total.contiguous()?.reshape((p, k * n, t, d))?))
    }
}

/// Writes every receiver input of the circuits: the attention ports, the MLP inputs and `logits`.
impl Hooks for EdgeInputs<'_> {
    fn reads(&self, point: HookPoint) -> bool {
        matches!(point, HookPoint::HeadOut(_))
    }
    fn writes(&self, point: HookPoint) -> bool {
        matches!(point, HookPoint::AttnIn(_) | HookPoint::MlpIn(_) | HookPoint::LogitsIn)
    }
    fn write(&self, point: HookPoint, value: &Tensor, acts: &Activations) -> Result<Option<Tensor>> {
        let g = self.graph;
        let offset = match point {
            HookPoint::AttnIn(layer) => {
                let receivers: Vec<usize> = (0..g.ports_per_layer()).map(|p| g.attn_receiver(layer, p)).collect();
                self.offsets(&receivers, &Block::before(layer, false), acts)?
            }
            HookPoint::MlpIn(layer) => {
                self.offsets(&[g.mlp_receiver(layer)], &Block::before(layer, true), acts)?.map(|t| t.squeeze(0)).transpose()?
            }
            HookPoint::LogitsIn => {
                let blocks = Block::before(g.n_layers, false);
                self.offsets(&[g.logits_receiver()], &blocks, acts)?.map(|t| t.squeeze(0)).transpose()?
            }
            _ => None,
        };
        Ok(match offset {
            Some(off) => Some((off + value)?),
            None => None,
        })
    }
}

/// The reference intervention: every receiver input rebuilt from scratch as
/// `constants + Σ_s (kept ? out_s : ablated_s)`, one copy, no batching, no caching.
pub struct NaiveInputs<'a> {
    pub model: &'a Model,
    pub graph: &'a Graph,
    pub removed: &'a [bool],
    pub ablated: Option<&'a Activations>,
}

impl NaiveInputs<'_> {
    /// The input of receiver `r`, `[B, T, D]`, given the senders before it.
    fn input(&self, r: usize, n_senders: usize, n_bias_layers: usize, acts: &Activations) -> Result<Tensor> {
        let g = self.graph;
        let mut x = acts.embed.zeros_like()?;
        for l in 0..n_bias_layers {
            x = x.broadcast_add(&self.model.weights.layers[l].attn.b_o)?;
        }
        for s in 0..n_senders {
            let e = g.edges_into[r][s];
            let v = if !self.removed[e] {
                g.sender_output(acts, s)?
            } else {
                match self.ablated {
                    None => continue,
                    Some(a) => g.sender_output(a, s)?,
                }
            };
            x = (x + v)?;
        }
        Ok(x)
    }
}

/// Rebuilds every receiver input from scratch (see `NaiveInputs::input`).
impl Hooks for NaiveInputs<'_> {
    fn reads(&self, point: HookPoint) -> bool {
        matches!(point, HookPoint::HeadOut(_))
    }
    fn writes(&self, point: HookPoint) -> bool {
        matches!(point, HookPoint::AttnIn(_) | HookPoint::MlpIn(_) | HookPoint::LogitsIn)
    }
    fn write(&self, point: HookPoint, _value: &Tensor, acts: &Activations) -> Result<Option<Tensor>> {
        let g = self.graph;
        Ok(Some(match point {
            HookPoint::AttnIn(layer) => {
                let n = g.senders_before_layer(layer);
                let inputs =
                    (0..g.ports_per_layer()).map(|p| self.input(g.attn_receiver(layer, p), n, layer, acts)).collect::<Result<Vec<_>>>()?;
                Tensor::stack(&inputs, 0)?
            }
            HookPoint::MlpIn(layer) => self.input(g.mlp_receiver(layer), g.senders_before_layer(layer) + g.n_heads, layer + 1, acts)?,
            HookPoint::LogitsIn => self.input(g.logits_receiver(), g.n_senders(), g.n_layers, acts)?,
            _ => return Ok(None),
        }))
    }
}
