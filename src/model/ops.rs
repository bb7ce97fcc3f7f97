//! Numerics helpers shared by the engine.
use candle_core::{Tensor, D};

use crate::Result;

/// Longest reduction a single matmul call accumulates. candle's CPU gemm accumulates the reduction dimension in
/// one running sum per output, so its error grows linearly with K (2.5× PyTorch's at K = 1536, enough to miss
/// a 1e-4 logit tolerance on a 30-layer model). Splitting K into chunks and adding the partial products keeps
/// every running sum short.
const MAX_CHUNK: usize = 288;
const MIN_CHUNK: usize = 32;

/// The chunk size for a reduction of length `k`: the largest divisor of `k` in `MIN_CHUNK..=MAX_CHUNK`, or `k`
/// itself (one chunk) when `k` is short or has no such divisor.
fn chunk_for(k: usize) -> usize {
    if k <= MAX_CHUNK {
        return k;
    }
    (MIN_CHUNK..=MAX_CHUNK).rev().find(|c| k % c == 0).unwrap_or(k)
}

/// `x [..., M, K] @ w [..., K, N] -> [..., M, N]` with the K reduction accumulated chunk by chunk.
/// Leading dimensions of `w` broadcast against those of `x` (as `broadcast_matmul`).
pub fn matmul(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let k = x.dim(D::Minus1)?;
    let c = chunk_for(k);
    if c == k {
        return Ok(x.broadcast_matmul(w)?);
    }
    // Partial products over K-chunks, added as they come: views of x and w, no copies of the operands.
    let kd = x.rank() - 1;
    let wd = w.rank() - 2;
    let mut out = x.narrow(kd, 0, c)?.broadcast_matmul(&w.narrow(wd, 0, c)?)?;
    for i in 1..k / c {
        let part = x.narrow(kd, i * c, c)?.broadcast_matmul(&w.narrow(wd, i * c, c)?)?;
        out = (out + part)?;
    }
    Ok(out)
}

/// Row normalisation over the last dimension, statistics accumulated in f64: `(x - mean) / sqrt(var + eps)`
/// (LayerNorm, `center`) or `x / sqrt(mean(x²) + eps)` (RMSNorm). Real models carry massive residual
/// activations; f32 running sums over them were a visible share of the error against PyTorch.
struct Normalize {
    eps: f64,
    center: bool,
}

impl Normalize {
    fn row<T: Copy + Into<f64>>(&self, src: &[T], dst: &mut [T], from: impl Fn(f64) -> T) {
        let n = src.len() as f64;
        let mean = if self.center { src.iter().map(|&v| v.into()).sum::<f64>() / n } else { 0.0 };
        let var = src.iter().map(|&v| (v.into() - mean).powi(2)).sum::<f64>() / n;
        let inv = 1.0 / (var + self.eps).sqrt();
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = from((s.into() - mean) * inv);
        }
    }
}

impl candle_core::CustomOp1 for Normalize {
    fn name(&self) -> &'static str {
        "kcirc-normalize"
    }

    fn cpu_fwd(
        &self,
        storage: &candle_core::CpuStorage,
        layout: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        use candle_core::CpuStorage;
        use rayon::prelude::*;
        let (start, end) = layout
            .contiguous_offsets()
            .ok_or_else(|| candle_core::Error::Msg("normalize: input must be contiguous".into()))?;
        let dim = *layout.dims().last().unwrap_or(&1);
        let out = match storage {
            CpuStorage::F32(v) => {
                let src = &v[start..end];
                let mut dst = vec![0f32; src.len()];
                dst.par_chunks_mut(dim).zip(src.par_chunks(dim)).for_each(|(d, s)| self.row(s, d, |x| x as f32));
                CpuStorage::F32(dst)
            }
            CpuStorage::F64(v) => {
                let src = &v[start..end];
                let mut dst = vec![0f64; src.len()];
                dst.par_chunks_mut(dim).zip(src.par_chunks(dim)).for_each(|(d, s)| self.row(s, d, |x| x));
                CpuStorage::F64(dst)
            }
            _ => candle_core::bail!("normalize: only f32 and f64 are supported"),
        };
        Ok((out, layout.shape().clone()))
    }
}

/// Normalises `x [..., D]` over its last dimension (no gain or bias; see [`Normalize`]).
pub fn normalize(x: &Tensor, eps: f64, center: bool) -> Result<Tensor> {
    let x = x.contiguous()?;
    if x.device().is_cpu() {
        return Ok(x.apply_op1_no_bwd(&Normalize { eps, center })?);
    }
    // Other devices: the same arithmetic from basic ops.
    let x64 = x.to_dtype(candle_core::DType::F64)?;
    let c = if center { x64.broadcast_sub(&x64.mean_keepdim(D::Minus1)?)? } else { x64 };
    let inv = (c.sqr()?.mean_keepdim(D::Minus1)? + eps)?.sqrt()?.recip()?;
    Ok(c.broadcast_mul(&inv)?.to_dtype(x.dtype())?)
}
