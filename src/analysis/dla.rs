//! Direct logit attribution (brief §10): how much each node's output, read straight through the final norm and
//! the unembedding, adds to the target's logit at the last position.
//!
//! The final norm is linear once its scale is frozen at the actual final residual `x`: LayerNorm gives
//! `logit_t(x) = Σ_i (x_i − mean x) w_i u_i / σ + b·u + b_U[t]`, RMSNorm the same without centring. So
//! `logit_t = x · dir + constant` with `dir = w ⊙ u / σ` (centred for LayerNorm), and since `x` is the sum of
//! what the blocks write, the node terms plus the constants add up to the logit exactly.
use candle_core::Tensor;
use serde::Serialize;

use super::Trace;
use crate::model::ops::{bmm, mm};
use crate::model::{Model, NormKind};
use crate::Result;

/// The target's direct-logit direction at one position.
pub struct Direction {
    /// `[D]`: a residual vector's contribution to the target's logit is `v · dir`.
    pub dir: Tensor,
    /// `w / σ` of the frozen final norm, `[D]`: a vector's per-token contributions are `center(v) ⊙ gain @ W_U`.
    pub gain: Tensor,
    /// The final norm's bias times the target's unembedding, plus the unembedding bias.
    pub constant: f64,
}

/// The direction of `target` for the final residual `x [D]`.
pub fn direction(model: &Model, x: &Tensor, target: u32) -> Result<Direction> {
    let w = &model.weights.ln_final;
    let center = model.cfg.norm == NormKind::LayerNorm;
    let c = if center { x.broadcast_sub(&x.mean_keepdim(0)?)? } else { x.clone() };
    let eps = model.cfg.norm_eps as f32 as f64;
    let sigma = ((c.sqr()?.mean_all()?.to_scalar::<f32>()? as f64) + eps).sqrt();
    let u = model.weights.unembed.narrow(1, target as usize, 1)?.squeeze(1)?; // [D]
    let gain = (&w.weight / sigma)?;
    let mut dir = (&gain * &u)?;
    if center {
        dir = dir.broadcast_sub(&dir.mean_keepdim(0)?)?;
    }
    let mut constant = 0.0;
    if let Some(b) = &w.bias {
        constant += (b * &u)?.sum_all()?.to_scalar::<f32>()? as f64;
    }
    if let Some(b) = &model.weights.b_unembed {
        constant += b.get(target as usize)?.to_scalar::<f32>()? as f64;
    }
    Ok(Direction { dir, gain, constant })
}

impl Direction {
    /// `v · dir` over the last dimension of `v [..., D]`: `[...]`.
    pub fn project(&self, v: &Tensor) -> Result<Tensor> {
        Ok(v.broadcast_mul(&self.dir)?.sum(candle_core::D::Minus1)?)
    }

    fn scalar(&self, v: &Tensor) -> Result<f64> {
        Ok(self.project(v)?.to_scalar::<f32>()? as f64)
    }
}

/// Every node's direct contribution to the target's logit at the last position of one trace.
#[derive(Debug, Clone, Serialize)]
pub struct Attribution {
    /// The `input` node.
    pub embed: f64,
    /// Per layer, per head.
    pub heads: Vec<Vec<f64>>,
    /// Per layer, the attention block's constant `b_O` (output bias and every head's folded value bias).
    pub attn_bias: Vec<f64>,
    /// Per layer, the MLP (its output bias included: it is part of the node).
    pub mlps: Vec<f64>,
    /// The final norm's bias and the unembedding bias.
    pub constant: f64,
    /// The target's logit itself, from the model's own final norm and unembedding.
    pub logit: f64,
}

impl Attribution {
    /// Σ nodes + constants: equals [`Attribution::logit`] up to rounding.
    pub fn total(&self) -> f64 {
        self.embed
            + self.heads.iter().flatten().sum::<f64>()
            + self.attn_bias.iter().sum::<f64>()
            + self.mlps.iter().sum::<f64>()
            + self.constant
    }

    /// Per layer: (attention heads + bias, MLP).
    pub fn per_layer(&self) -> Vec<(f64, f64)> {
        (0..self.mlps.len()).map(|l| (self.heads[l].iter().sum::<f64>() + self.attn_bias[l], self.mlps[l])).collect()
    }
}

/// The direct logit attribution of `target` in `trace` (the logits receiver's view: under a circuit, removed
/// nodes contribute their ablated values).
pub fn attribute(model: &Model, trace: &Trace, target: u32) -> Result<(Attribution, Direction)> {
    let last = trace.embed.dim(0)? - 1;
    let dir = direction(model, &trace.final_last()?, target)?;
    let mut heads = vec![];
    let mut attn_bias = vec![];
    let mut mlps = vec![];
    for l in 0..trace.heads.len() {
        let h = dir.project(&trace.heads[l].narrow(1, last, 1)?.squeeze(1)?)?; // [H]
        heads.push(h.to_vec1::<f32>()?.into_iter().map(f64::from).collect());
        attn_bias.push(dir.scalar(&model.weights.layers[l].attn.b_o)?);
        mlps.push(dir.scalar(&trace.mlps[l].get(last)?)?);
    }
    let a = Attribution {
        embed: dir.scalar(&trace.embed.get(last)?)?,
        heads,
        attn_bias,
        mlps,
        constant: dir.constant,
        logit: trace.logits[target as usize] as f64,
    };
    Ok((a, dir))
}

/// Per head of layer `l`, its direct logit attribution split by source position: `[H, T]`, entry `(h, j)` the
/// part of head `h`'s output at the last position that its attention to position `j` carries
/// (`pattern[h, last, j] · v_j W_O[h] · dir`). A row sums to the head's attribution. Needs the live head
/// (the trace's own pattern and values, i.e. a trace of the full model).
pub fn head_sources(model: &Model, trace: &Trace, dir: &Direction, l: usize) -> Result<Tensor> {
    use crate::model::HookPoint;
    let cfg = &model.cfg;
    let pattern = trace.acts.expect(HookPoint::Pattern(l))?; // [H, 1, T, T]
    let t = pattern.dim(2)?;
    let row = pattern.narrow(2, t - 1, 1)?.squeeze(2)?.squeeze(1)?; // [H, T]
    let v = trace.acts.expect(HookPoint::V(l))?.squeeze(1)?; // [K, T, dh]
    let group = cfg.group_size();
    let idx: Vec<u32> = (0..cfg.n_heads).map(|h| (h / group) as u32).collect();
    let v = v.index_select(&Tensor::new(idx.as_slice(), v.device())?, 0)?; // [H, T, dh]
    let w_o = &model.weights.layers[l].attn.w_o; // [H, dh, D]
    let wo_dir = bmm(w_o, &dir.dir.reshape((1, cfg.d_model, 1))?)?; // [H, dh, 1]
    let per_pos = mm(&v, &wo_dir)?.squeeze(2)?; // [H, T]
    Ok((per_pos * row)?)
}
