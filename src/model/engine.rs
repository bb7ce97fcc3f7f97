//! The canonical transformer: one forward pass for every family, read and written only through named hook
//! points ([`super::hooks`]).
//!
//! Layout conventions (B = batch rows, T = padded sequence length, D = d_model, H = query heads,
//! K = key/value heads, dh = d_head, P = H + 2K attention input ports of one layer):
//! - residual-stream tensors are `[B, T, D]`;
//! - per-head tensors put the head first, `[H, B, T, ·]`, so per-head matmuls are one batched matmul;
//! - the attention ports of a layer are ordered: H query inputs, K key inputs, K value inputs.
use candle_core::{DType, Device, Tensor, D};

use super::hooks::{Activations, Clean, HookPoint, Hooks};
use super::ops::{matmul, matmul_input_grad, mm};
use super::weights::{Mlp, Norm, Weights};
use super::{Config, MlpKind, NormKind, Positional};
use crate::Result;

/// Tokens per work unit of [`Model::forward_prompts`]: large enough for efficient matmuls, small enough to
/// give every core a share of a typical batch.
pub const CHUNK_TOKENS: usize = 128;

/// A loaded model: canonical configuration and weights, on one device.
#[derive(Debug, Clone)]
pub struct Model {
    pub name: String,
    pub cfg: Config,
    pub weights: Weights,
    pub device: Device,
    /// The knowledge edits applied to it in memory after loading (`--edits`), recorded by every file that
    /// names the model so a run can be repeated.
    pub edits: Option<super::EditRecord>,
}

/// A batch of left-padded prompts, ready for the engine.
///
/// Left padding keeps the last position of every prompt at index `T-1`; positions are counted from each
/// prompt's first real token, and padded keys are masked, so a prompt gives the same logits alone or in a batch.
#[derive(Debug, Clone)]
pub struct Batch {
    /// `[B, T]` u32 token ids (pads are token 0).
    pub tokens: Tensor,
    /// `[B·T]` u32 position ids.
    pub positions: Tensor,
    /// `[B, T, T]` additive attention mask (0 or -inf).
    pub mask: Tensor,
    /// Rotary tables `(cos, sin)`, each `[B, T, dh]`, for rotary models.
    pub rotary: Option<(Tensor, Tensor)>,
    /// Real length of each prompt.
    pub lengths: Vec<usize>,
    /// Padded length T.
    pub seq_len: usize,
}

impl Batch {
    pub fn size(&self) -> usize {
        self.lengths.len()
    }

    /// The same batch tiled `k` times, copy-major: row `c·B + b` is copy `c` of row `b`.
    pub fn repeat(&self, k: usize) -> Result<Batch> {
        let tile = |t: &Tensor| -> candle_core::Result<Tensor> {
            let refs: Vec<&Tensor> = std::iter::repeat(t).take(k).collect();
            Tensor::cat(&refs, 0)
        };
        Ok(Batch {
            tokens: tile(&self.tokens)?,
            positions: tile(&self.positions)?,
            mask: tile(&self.mask)?,
            rotary: match &self.rotary {
                Some((c, s)) => Some((tile(c)?, tile(s)?)),
                None => None,
            },
            lengths: std::iter::repeat(self.lengths.iter().copied()).take(k).flatten().collect(),
            seq_len: self.seq_len,
        })
    }
}

/// Which logits a run returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    /// `[B, V]` at the last position only (what every metric needs).
    Last,
    /// `[B, T, V]` at every position.
    All,
    /// `[B, D]`: the last position's normalised final residual, not yet unembedded (see
    /// [`Model::target_logits`]: metrics that need only a few logits skip the vocabulary-wide matmul).
    Hidden,
}

impl Model {
    /// Builds a left-padded batch from token-id sequences.
    pub fn batch(&self, prompts: &[Vec<u32>]) -> Result<Batch> {
        if prompts.is_empty() || prompts.iter().any(|p| p.is_empty()) {
            return Err(crate::Error::input("cannot run an empty prompt"));
        }
        let b = prompts.len();
        let t = prompts.iter().map(|p| p.len()).max().unwrap_or(0);
        if let Some(max_positions) = self.cfg.max_positions() {
            if t > max_positions {
                return Err(crate::Error::input(format!("prompt of {t} tokens exceeds the model's {max_positions} positions")));
            }
        }
        let mut tokens = vec![0u32; b * t];
        let mut positions = vec![0u32; b * t];
        let mut mask = vec![f32::NEG_INFINITY; b * t * t];
        for (i, p) in prompts.iter().enumerate() {
            let pad = t - p.len();
            for (j, &id) in p.iter().enumerate() {
                tokens[i * t + pad + j] = id;
                positions[i * t + pad + j] = j as u32;
            }
            for q in 0..t {
                for k in 0..=q {
                    // Real queries see real keys up to themselves; a pad query sees only itself, which keeps it finite.
                    if k >= pad || k == q {
                        mask[(i * t + q) * t + k] = 0.0;
                    }
                }
            }
        }
        let dev = &self.device;
        let rotary = match self.cfg.positional {
            Positional::Rotary { theta, .. } => Some(rotary_tables(&positions, b, t, self.cfg.d_head, theta, dev)?),
            Positional::Learned { .. } => None,
        };
        Ok(Batch {
            tokens: Tensor::from_vec(tokens, (b, t), dev)?,
            positions: Tensor::from_vec(positions, b * t, dev)?,
            mask: Tensor::from_vec(mask, (b, t, t), dev)?,
            rotary,
            lengths: prompts.iter().map(|p| p.len()).collect(),
            seq_len: t,
        })
    }

    /// Plain forward pass: logits `[B, V]` at the last position.
    pub fn forward(&self, batch: &Batch) -> Result<Tensor> {
        Ok(self.run(batch, &Clean, Logits::Last)?.1)
    }

    /// Plain forward pass over many prompts: `[B, V]` (or `[B, T, V]` for [`Logits::All`], T the longest
    /// prompt). Prompts run in chunks of about [`CHUNK_TOKENS`] tokens, spread over kcirc's threads; the
    /// chunking depends on the prompts only, so results do not depend on the thread count.
    pub fn forward_prompts(&self, prompts: &[Vec<u32>], which: Logits) -> Result<Tensor> {
        let t = prompts.iter().map(Vec::len).max().unwrap_or(1).max(1);
        let rows = (CHUNK_TOKENS / t).max(1);
        let chunks: Vec<&[Vec<u32>]> = prompts.chunks(rows).collect();
        let outs = crate::parallel::map(&chunks, |c| -> Result<Tensor> {
            let b = self.batch(c)?;
            let out = self.run(&b, &Clean, which)?.1;
            // Chunks are padded to their own longest prompt: pad every chunk's positions to T on the left.
            match which {
                Logits::Last | Logits::Hidden => Ok(out),
                Logits::All => {
                    let pad = t - b.seq_len;
                    if pad == 0 {
                        return Ok(out);
                    }
                    let (bb, _, v) = out.dims3()?;
                    let zeros = Tensor::zeros((bb, pad, v), out.dtype(), out.device())?;
                    Ok(Tensor::cat(&[&zeros, &out], 1)?)
                }
            }
        });
        let outs = outs.into_iter().collect::<Result<Vec<_>>>()?;
        Ok(Tensor::cat(&outs, 0)?)
    }

    /// The `input` sender's output, `[B, T, D]`.
    pub fn embed(&self, batch: &Batch) -> Result<Tensor> {
        let (b, t) = (batch.size(), batch.seq_len);
        let ids = batch.tokens.flatten_all()?;
        let mut x = self.weights.embed.index_select(&ids, 0)?;
        if let Some(pe) = &self.weights.pos_embed {
            x = (x + pe.index_select(&batch.positions, 0)?)?;
        }
        Ok(x.reshape((b, t, self.cfg.d_model))?)
    }

    /// Runs the model with `hooks` reading and writing at the [`HookPoint`]s they declare. Returns the
    /// activations and the logits (`[B, V]`, `[B, T, V]` or `[B, D]`, see [`Logits`]).
    pub fn run(&self, batch: &Batch, hooks: &dyn Hooks, logits: Logits) -> Result<(Activations, Tensor)> {
        let mut acts = Activations::senders(self.embed(batch)?, vec![], vec![]);
        acts.embed = hook(hooks, HookPoint::Embed, acts.embed.clone(), &mut acts)?;
        let n_layers = self.cfg.n_layers;
        let diff = hooks.differentiable();
        for l in 0..n_layers {
            let layer = &self.weights.layers[l];
            let resid = match l {
                0 => acts.embed.clone(),
                _ => (&acts.resid_mid[l - 1] + &acts.mlps[l - 1])?,
            };
            let resid = hook(hooks, HookPoint::ResidPre(l), resid, &mut acts)?;
            let mid = self.attention(l, &resid, hooks, &mut acts, batch, diff)?;
            let resid_mid = hook(hooks, HookPoint::ResidMid(l), (&resid + mid)?, &mut acts)?;
            acts.resid_mid.push(resid_mid);
            acts.resid_pre.push(resid);
            let x = hook(hooks, HookPoint::MlpIn(l), acts.resid_mid[l].clone(), &mut acts)?;
            let x = norm_with(&x, &layer.ln2, &self.cfg, diff)?;
            let out = self.mlp(l, &x, hooks, &mut acts, diff)?;
            acts.mlps.push(out);
        }
        let last = n_layers - 1;
        let resid = (&acts.resid_mid[last] + &acts.mlps[last])?;
        let resid = hook(hooks, HookPoint::ResidFinal, resid, &mut acts)?;
        acts.resid_final = Some(resid.clone());
        let x = hook(hooks, HookPoint::LogitsIn, resid, &mut acts)?;
        let out = self.unembed_with(&x, logits, diff)?;
        Ok((acts, out))
    }

    /// Final norm and unembedding of the `logits` receiver's input `[B, T, D]`: `[B, V]` or `[B, T, V]`.
    pub fn unembed(&self, x: &Tensor, which: Logits) -> Result<Tensor> {
        self.unembed_with(x, which, false)
    }

    fn unembed_with(&self, x: &Tensor, which: Logits, diff: bool) -> Result<Tensor> {
        let (b, t, d) = x.dims3()?;
        let x = match which {
            Logits::Last | Logits::Hidden => x.narrow(1, t - 1, 1)?.reshape((b, d))?,
            Logits::All => x.reshape((b * t, d))?,
        };
        let x = norm_with(&x, &self.weights.ln_final, &self.cfg, diff)?;
        if which == Logits::Hidden {
            return Ok(x);
        }
        let mut y = matmul(&x, &self.weights.unembed)?;
        if let Some(bias) = &self.weights.b_unembed {
            y = y.broadcast_add(bias)?;
        }
        Ok(match which {
            Logits::All => y.reshape((b, t, ()))?,
            _ => y,
        })
    }

    /// Logits `[B, V]` from [`Logits::Hidden`] output `[B, D]`.
    pub fn logits_of_hidden(&self, hidden: &Tensor) -> Result<Tensor> {
        let y = matmul(hidden, &self.weights.unembed)?;
        Ok(match &self.weights.b_unembed {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        })
    }

    /// The logit of one token per row, `[B]`, from [`Logits::Hidden`] output `[B, D]`: `tokens[b % len]` for
    /// row `b` (rows are copy-major repeats of the token list). Only the needed unembedding columns are read.
    pub fn target_logits(&self, hidden: &Tensor, tokens: &[u32]) -> Result<Tensor> {
        let (b, _) = hidden.dims2()?;
        let idx: Vec<u32> = (0..b).map(|r| tokens[r % tokens.len()]).collect();
        let idx = Tensor::new(idx.as_slice(), hidden.device())?;
        let cols = self.weights.unembed.index_select(&idx, 1)?.t()?; // [B, D]
        let y = (hidden * cols)?.sum(1)?;
        Ok(match &self.weights.b_unembed {
            Some(bias) => (y + bias.index_select(&idx, 0)?)?,
            None => y,
        })
    }

    /// One attention block on the residual `resid [B, T, D]`, hooked at [`HookPoint::AttnIn`], `V`, `Pattern`, `Z`,
    /// `HeadOut` and `AttnOut` of layer `l`. Returns the block's output `[B, T, D]` (every head plus the output
    /// bias), which the residual stream adds.
    fn attention(&self, l: usize, resid: &Tensor, hooks: &dyn Hooks, acts: &mut Activations, batch: &Batch, diff: bool) -> Result<Tensor> {
        let cfg = &self.cfg;
        let layer = &self.weights.layers[l];
        let a = &layer.attn;
        let (b, t, d) = resid.dims3()?;
        let (h, kv, dh) = (cfg.n_heads, cfg.n_kv_heads, cfg.d_head);
        let ports = h + 2 * kv;
        // Every port reads `resid` unless a client gives the ports inputs of their own.
        let point = HookPoint::AttnIn(l);
        let port_inputs = match hooks.writes(point) || hooks.reads(point) {
            false => None,
            true => {
                let shared = resid.unsqueeze(0)?.broadcast_as((ports, b, t, d))?;
                let written = match hooks.writes(point) {
                    true => hooks.write(point, &shared, acts)?,
                    false => None,
                };
                if hooks.reads(point) {
                    acts.cache.insert(point, written.clone().unwrap_or(shared));
                }
                written
            }
        };
        let (q, k, v) = match port_inputs {
            None => {
                // Fast path: one fused projection of the shared residual.
                let x = norm_with(&resid.reshape((b * t, d))?, &layer.ln1, cfg, diff)?;
                let qkv = linear(&x, &a.w_qkv, diff)?.broadcast_add(&a.b_qkv)?; // [B·T, P·dh]
                let qkv = qkv.reshape((b * t, ports, dh))?.transpose(0, 1)?.contiguous()?; // [P, B·T, dh]
                (qkv.narrow(0, 0, h)?, qkv.narrow(0, h, kv)?, qkv.narrow(0, h + kv, kv)?)
            }
            Some(x) => {
                // Every port reads its own input: batched per-head projections (same FLOPs as the fused one).
                let x = norm_with(&x, &layer.ln1, cfg, diff)?.reshape((ports, b * t, d))?;
                let q = project(&x.narrow(0, 0, h)?, &a.w_q, Some(&a.b_q), diff)?;
                let k = project(&x.narrow(0, h, kv)?, &a.w_k, Some(&a.b_k), diff)?;
                let v = project(&x.narrow(0, h + kv, kv)?, &a.w_v, None, diff)?;
                (q, k, v)
            }
        };
        // Every port's projection at one point (`[P, B, T, dh]`), when a client reads or writes it.
        let point = HookPoint::Qkv(l);
        let (q, k, v) = match hooks.reads(point) || hooks.writes(point) {
            false => (q, k, v),
            true => {
                let qkv = Tensor::cat(&[&q, &k, &v], 0)?.reshape((ports, b, t, dh))?;
                let qkv = hook(hooks, point, qkv, acts)?.reshape((ports, b * t, dh))?;
                (qkv.narrow(0, 0, h)?, qkv.narrow(0, h, kv)?, qkv.narrow(0, h + kv, kv)?)
            }
        };
        let q = q.reshape((h, b, t, dh))?;
        let k = k.reshape((kv, b, t, dh))?;
        let v = hook(hooks, HookPoint::V(l), v.reshape((kv, b, t, dh))?, acts)?;
        let (q, k) = match &batch.rotary {
            Some((cos, sin)) => (rotate(&q, cos, sin)?, rotate(&k, cos, sin)?),
            None => (q, k),
        };
        // Grouped-query attention: query head i reads key/value head i / group.
        let group = cfg.group_size();
        let expand = |x: Tensor| -> candle_core::Result<Tensor> {
            if group == 1 {
                return Ok(x);
            }
            x.unsqueeze(1)?.broadcast_as((kv, group, b, t, dh))?.reshape((h, b, t, dh))
        };
        let (k, v) = (expand(k)?, expand(v)?);
        let pattern = attention_pattern(&q, &k, &batch.mask, diff)?;
        let pattern = hook(hooks, HookPoint::Pattern(l), pattern, acts)?; // [H, B, T, T]
        let z = attention_mix(&pattern, &v)?;
        let z = hook(hooks, HookPoint::Z(l), z, acts)?.reshape((h, b * t, dh))?;
        let point = HookPoint::HeadOut(l);
        let mid = match hooks.reads(point) || hooks.writes(point) {
            false => None,
            true => {
                let heads = mm(&z, &a.w_o)?.reshape((h, b, t, d))?; // [H, B, T, D]
                let written = match hooks.writes(point) {
                    true => hooks.write(point, &heads, acts)?,
                    false => None,
                };
                // Written head outputs make the block's output: their sum plus the bias.
                let mid = match &written {
                    Some(w) => Some(w.sum(0)?.broadcast_add(&a.b_o)?),
                    None => None,
                };
                if hooks.reads(point) {
                    acts.cache.insert(point, written.unwrap_or(heads));
                }
                mid
            }
        };
        let mid = match mid {
            Some(m) => m,
            // The block's output as one matmul over all heads: one accumulation chain, like the reference.
            None => {
                let z_all = z.transpose(0, 1)?.reshape((b * t, h * dh))?;
                linear(&z_all, &a.w_o.reshape((h * dh, d))?, diff)?.broadcast_add(&a.b_o)?.reshape((b, t, d))?
            }
        };
        hook(hooks, HookPoint::AttnOut(l), mid, acts)
    }

    /// MLP `l` on its normalised input `x [B, T, D]` with no hooks: `[B, T, D]`, output bias included. What the
    /// cone evaluator of exact discovery recomputes (the same code as every forward pass).
    pub(crate) fn mlp_plain(&self, l: usize, x: &Tensor) -> Result<Tensor> {
        let mut scratch = Activations::senders(x.clone(), vec![], vec![]);
        self.mlp(l, x, &super::hooks::Clean, &mut scratch, false)
    }

    /// MLP `l` on its normalised input `x [B, T, D]`, hooked at [`HookPoint::MlpHidden`] and `MlpOut`; returns
    /// `[B, T, D]` (output bias included).
    fn mlp(&self, l: usize, x: &Tensor, hooks: &dyn Hooks, acts: &mut Activations, diff: bool) -> Result<Tensor> {
        let (b, t, d) = x.dims3()?;
        let x = x.reshape((b * t, d))?;
        let f = self.cfg.d_mlp;
        let mlp = &self.weights.layers[l].mlp;
        let hidden = match mlp {
            Mlp::GeluTanh { w_in, b_in, .. } => linear(&x, w_in, diff)?.broadcast_add(b_in)?.gelu()?,
            Mlp::SwiGlu { w_gate_up, .. } => {
                let gu = linear(&x, w_gate_up, diff)?;
                (candle_nn::ops::silu(&gu.narrow(1, 0, f)?)? * gu.narrow(1, f, f)?)?
            }
        };
        let point = HookPoint::MlpHidden(l);
        let hidden = match hooks.reads(point) || hooks.writes(point) {
            false => hidden,
            true => hook(hooks, point, hidden.reshape((b, t, f))?, acts)?.reshape((b * t, f))?,
        };
        let y = match mlp {
            Mlp::GeluTanh { w_out, b_out, .. } => linear(&hidden, w_out, diff)?.broadcast_add(b_out)?,
            Mlp::SwiGlu { w_down, .. } => linear(&hidden, w_down, diff)?,
        };
        debug_assert!(matches!((mlp, self.cfg.mlp), (Mlp::GeluTanh { .. }, MlpKind::GeluTanh) | (Mlp::SwiGlu { .. }, MlpKind::SwiGlu)));
        hook(hooks, HookPoint::MlpOut(l), y.reshape((b, t, d))?, acts)
    }

    /// The gradient with respect to every attention input port of layer `l` (`[P, B, T, D]`, the
    /// [`HookPoint::AttnIn`] layout), from the gradient `g [P, B, T, dh]` with respect to the ports' projections
    /// ([`HookPoint::Qkv`]) of a run whose ports all read `resid [B, T, D]` (that layer's `ResidPre`): port `p`
    /// reaches the model only through `norm(x_p) · W_p` (+ bias), so its gradient is `Jᵀ(γ ⊙ g_p W_pᵀ)` with `J`
    /// the normalisation's Jacobian at `resid`. Exact: the chain rule written out instead of autograd through
    /// `P` copies of the residual and their normalisations (`P·B·T·D` floats several times over per layer).
    pub fn attn_in_gradient(&self, l: usize, resid: &Tensor, g: &Tensor) -> Result<Tensor> {
        let cfg = &self.cfg;
        let layer = &self.weights.layers[l];
        let a = &layer.attn;
        let (p, b, t, dh) = g.dims4()?;
        let (h, kv, d) = (cfg.n_heads, cfg.n_kv_heads, cfg.d_model);
        if p != h + 2 * kv || resid.dims() != [b, t, d] {
            return Err(crate::Error::bug(format!("attn_in_gradient: g {:?} and resid {:?} do not fit layer {l}", g.dims(), resid.dims())));
        }
        let g = g.reshape((p, b * t, dh))?;
        let back = |from: usize, n: usize, w: &Tensor| mm(&g.narrow(0, from, n)?, &w.t()?); // [n, B·T, D]
        let u = Tensor::cat(&[back(0, h, &a.w_q)?, back(h, kv, &a.w_k)?, back(h + kv, kv, &a.w_v)?], 0)?;
        let u = u.broadcast_mul(&layer.ln1.weight)?.reshape((p, b, t, d))?;
        let (eps, center) = norm_params(cfg);
        let resid = resid.detach();
        let y = super::ops::normalize(&resid, eps, center)?;
        Ok(super::ops::normalize_backward(&resid, &y, &u, eps, center)?)
    }

    /// Layer `l`'s MLP output projection `[d_mlp, D]` (GPT-2 `mlp.c_proj`, Llama `down_proj`, canonical
    /// `[in, out]` layout): the matrix ROME and fine-tuning edit.
    pub fn mlp_out_weight(&self, l: usize) -> &Tensor {
        match &self.weights.layers[l].mlp {
            Mlp::GeluTanh { w_out, .. } => w_out,
            Mlp::SwiGlu { w_down, .. } => w_down,
        }
    }

    /// This model with layer `l`'s MLP output projection replaced by `w` (`[d_mlp, D]`): an edited matrix, or
    /// a `candle_core::Var` whose gradient a differentiable run then yields. Every other weight is shared.
    pub fn with_mlp_out_weight(&self, l: usize, w: Tensor) -> Result<Model> {
        let want = self.mlp_out_weight(l).dims().to_vec();
        if w.dims() != want.as_slice() {
            return Err(crate::Error::bug(format!("MLP {l} output projection must be {want:?}, got {:?}", w.dims())));
        }
        let mut m = self.clone();
        match &mut m.weights.layers[l].mlp {
            Mlp::GeluTanh { w_out, .. } => *w_out = w,
            Mlp::SwiGlu { w_down, .. } => *w_down = w,
        }
        Ok(m)
    }
}

/// `value` at `point` after `hooks`' write (when they write there), recorded in `acts` when they read there.
fn hook(hooks: &dyn Hooks, point: HookPoint, value: Tensor, acts: &mut Activations) -> Result<Tensor> {
    let value = match hooks.writes(point) {
        true => hooks.write(point, &value, acts)?.unwrap_or(value),
        false => value,
    };
    let fixed =
        matches!(point, HookPoint::Embed | HookPoint::ResidPre(_) | HookPoint::ResidMid(_) | HookPoint::MlpOut(_) | HookPoint::ResidFinal);
    if !fixed && hooks.reads(point) {
        acts.cache.insert(point, value.clone());
    }
    Ok(value)
}

/// `x @ w` (shapes as [`matmul`]); in a differentiable run, one whose backward forms no weight gradient unless
/// `w` is a variable (a weight whose gradient is asked for).
fn linear(x: &Tensor, w: &Tensor, diff: bool) -> Result<Tensor> {
    match diff && !w.is_variable() {
        true => matmul_input_grad(x, w),
        false => matmul(x, w),
    }
}

/// Per-head projection of normalised port inputs `x [N, M, d]` (N ports of one kind, M = B·T rows) by
/// `w [N, D, dh]` plus `bias [N, 1, dh]` (none for values, whose bias is folded into `b_O`): `[N, M, dh]`.
pub(crate) fn project(x: &Tensor, w: &Tensor, bias: Option<&Tensor>, diff: bool) -> Result<Tensor> {
    let y = linear(x, w, diff)?;
    Ok(match bias {
        Some(b) => y.broadcast_add(b)?,
        None => y,
    })
}

/// Attention weights `[N, B, Tq, T]` of (rotated) queries `q [N, B, Tq, dh]` over keys `k [N, B, T, dh]` with
/// the additive mask `mask [B, Tq, T]`: softmax of the scaled scores over the keys. `Tq` may be the last
/// position alone (`mask` narrowed to it).
pub(crate) fn attention_pattern(q: &Tensor, k: &Tensor, mask: &Tensor, diff: bool) -> Result<Tensor> {
    let (n, b, tq, dh) = q.dims4()?;
    let t = k.dim(2)?;
    let q = q.reshape((n * b, tq, dh))?.contiguous()?;
    let k = k.reshape((n * b, t, dh))?.contiguous()?;
    let scores = (mm(&q, &k.t()?)? * (1.0 / (dh as f64).sqrt()))?;
    let scores = scores.reshape((n, b, tq, t))?.broadcast_add(&mask.unsqueeze(0)?)?;
    Ok(if diff { candle_nn::ops::softmax(&scores, D::Minus1)? } else { candle_nn::ops::softmax_last_dim(&scores)? })
}

/// Pattern-weighted values `z [N, B, Tq, dh]` of `pattern [N, B, Tq, T]` and values `v [N, B, T, dh]`.
pub(crate) fn attention_mix(pattern: &Tensor, v: &Tensor) -> Result<Tensor> {
    let (n, b, tq, t) = pattern.dims4()?;
    let dh = v.dim(3)?;
    let v = v.reshape((n * b, t, dh))?.contiguous()?;
    Ok(mm(&pattern.reshape((n * b, tq, t))?, &v)?.reshape((n, b, tq, dh))?)
}

/// `t` (`[n, ...]`) tiled copy-major to `rows` rows (a multiple of n); `t` itself when it has them already.
pub(crate) fn fit_rows(t: &Tensor, rows: usize) -> Result<Tensor> {
    let n = t.dim(0)?;
    if n == rows {
        return Ok(t.clone());
    }
    let refs: Vec<&Tensor> = std::iter::repeat(t).take(rows / n).collect();
    Ok(Tensor::cat(&refs, 0)?)
}

/// Normalises over the last dimension of `x` (any leading shape) and applies gain and bias.
pub fn norm(x: &Tensor, n: &Norm, cfg: &Config) -> Result<Tensor> {
    norm_with(x, n, cfg, false)
}

/// [`norm`], from basic (differentiable) ops when `diff`.
fn norm_with(x: &Tensor, n: &Norm, cfg: &Config, diff: bool) -> Result<Tensor> {
    let (eps, center) = norm_params(cfg);
    let normed = if diff { super::ops::normalize_differentiable(x, eps, center)? } else { super::ops::normalize(x, eps, center)? };
    let y = normed.broadcast_mul(&n.weight)?;
    Ok(match &n.bias {
        Some(b) => y.broadcast_add(b)?,
        None => y,
    })
}

/// The normalisation's `eps` and whether it centres (LayerNorm) or not (RMSNorm). The checkpoint's eps is an
/// f32 (GGUF stores it so, PyTorch adds it in f32).
fn norm_params(cfg: &Config) -> (f64, bool) {
    (cfg.norm_eps as f32 as f64, cfg.norm == NormKind::LayerNorm)
}

/// Rotary embedding, half-split convention: `x·cos + rotate_half(x)·sin`. `x [N, B, T, dh]`, tables `[B, T, dh]`.
pub(crate) fn rotate(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let half = x.dim(D::Minus1)? / 2;
    let x1 = x.narrow(D::Minus1, 0, half)?;
    let x2 = x.narrow(D::Minus1, half, half)?;
    let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
    let cos = cos.unsqueeze(0)?;
    let sin = sin.unsqueeze(0)?;
    Ok((x.broadcast_mul(&cos)? + rotated.broadcast_mul(&sin)?)?)
}

/// Cos and sin tables `[B, T, dh]` for the given position ids (`[B·T]`).
fn rotary_tables(positions: &[u32], b: usize, t: usize, dh: usize, theta: f64, dev: &Device) -> Result<(Tensor, Tensor)> {
    let half = dh / 2;
    let inv_freq: Vec<f32> = (0..half).map(|i| (1.0 / theta.powf((2 * i) as f64 / dh as f64)) as f32).collect();
    let mut cos = Vec::with_capacity(b * t * dh);
    let mut sin = Vec::with_capacity(b * t * dh);
    for &p in positions {
        for _half in 0..2 {
            for f in &inv_freq {
                let angle = p as f32 * f;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
    }
    Ok((Tensor::from_vec(cos, (b, t, dh), dev)?.to_dtype(DType::F32)?, Tensor::from_vec(sin, (b, t, dh), dev)?.to_dtype(DType::F32)?))
}
