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

/// `x [..., M, K] @ w [..., K, N] -> [..., M, N]` with the K reduction accumulated chunk by chunk on CPU.
/// Leading dimensions of `w` broadcast against those of `x` (as `broadcast_matmul`). Off CPU one product
/// ([`bmm`]): cuBLAS sums K in blocks, not in one running sum, and cannot read a K-chunk view of `x` (its rows are
/// not contiguous).
pub fn matmul(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    if !x.device().is_cpu() {
        return Ok(bmm(x, w)?);
    }
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

/// `a [..., M, K] @ b [..., K, N] -> [..., M, N]` with equal leading dimensions: candle's `matmul` on CPU;
/// elsewhere with the operands in a layout cuBLAS reads (see `gemm_ready`).
pub fn mm(a: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    if a.device().is_cpu() {
        return a.matmul(b);
    }
    gemm_mm(a, b, &|x, y| x.matmul(y))
}

/// `a [..., M, K] @ b [..., K, N] -> [..., M, N]` with the leading dimensions broadcast: candle's
/// `broadcast_matmul` on CPU; elsewhere `gemm_bmm`.
pub fn bmm(a: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    if a.device().is_cpu() {
        return a.broadcast_matmul(b);
    }
    gemm_bmm(a, b, &|x, y| x.matmul(y))
}

/// The product `gemm` (candle's `matmul`) takes two operands of equal leading dimensions.
type Gemm<'a> = &'a dyn Fn(&Tensor, &Tensor) -> candle_core::Result<Tensor>;

/// [`mm`] off CPU: `gemm` on cuBLAS-ready operands.
fn gemm_mm(a: &Tensor, b: &Tensor, gemm: Gemm) -> candle_core::Result<Tensor> {
    gemm(&gemm_ready(a)?, &gemm_ready(b)?)
}

/// [`bmm`] off CPU. A rank-2 `b` is one product over all of `a`'s rows (`[rows, K] @ [K, N]`); any other
/// broadcast is materialised first: cuBLAS takes a batch as one stride, which a broadcast over some leading
/// dimensions but not others does not have.
fn gemm_bmm(a: &Tensor, b: &Tensor, gemm: Gemm) -> candle_core::Result<Tensor> {
    if b.rank() == 2 && a.rank() > 2 {
        let k = a.dim(D::Minus1)?;
        let mut dims = a.dims().to_vec();
        *dims.last_mut().unwrap_or(&mut 0) = b.dim(1)?;
        let rows = a.contiguous()?.reshape((a.elem_count() / k.max(1), k))?;
        return gemm_mm(&rows, b, gemm)?.reshape(dims);
    }
    if a.dims()[..a.rank().saturating_sub(2)] == b.dims()[..b.rank().saturating_sub(2)] {
        return gemm_mm(a, b, gemm);
    }
    let (ar, br) = (a.rank().max(2), b.rank().max(2));
    let lead = candle_core::Shape::from(&a.dims()[..ar - 2])
        .broadcast_shape_binary_op(&candle_core::Shape::from(&b.dims()[..br - 2]), "broadcast_matmul")?;
    let (la, lb) = ([lead.dims(), &a.dims()[ar - 2..]].concat(), [lead.dims(), &b.dims()[br - 2..]].concat());
    gemm(&a.broadcast_as(la)?.contiguous()?, &b.broadcast_as(lb)?.contiguous()?)
}

/// `t [..., R, C]` as it is when cuBLAS can read it — contiguous, or the transpose of a contiguous tensor (its
/// last two dimensions swapped) — else a contiguous copy. candle's CUDA matmul rejects any other layout
/// (`MatMulNonContiguous`), while its CPU gemm takes arbitrary strides; views such as a head's slice of a
/// projection are common in kcirc.
fn gemm_ready(t: &Tensor) -> candle_core::Result<Tensor> {
    if t.is_contiguous() || (t.rank() >= 2 && t.t()?.is_contiguous()) {
        return Ok(t.clone());
    }
    t.contiguous()
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
        let (start, end) =
            layout.contiguous_offsets().ok_or_else(|| candle_core::Error::Msg("normalize: input must be contiguous".into()))?;
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

    /// `dx = (g − mean(g) − y·mean(g·y)) / σ` (LayerNorm) or `(g − y·mean(g·y)) / σ` (RMSNorm), with `y` the
    /// output and `σ` the row's `sqrt(var + eps)`, recomputed from `x`: nothing beyond the output is kept
    /// from the forward pass.
    fn bwd(&self, x: &Tensor, y: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        normalize_backward(x, y, g, self.eps, self.center).map(Some)
    }
}

/// The vector-Jacobian product of [`normalize`] at `x [..., D]` (its output `y`, same shape) for the output
/// gradient `g [L..., ..., D]`: `dx = (g − mean(g) − y·mean(g·y)) / σ` (LayerNorm, `center`) or
/// `(g − y·mean(g·y)) / σ` (RMSNorm), `σ` the row's `sqrt(var + eps)` recomputed from `x`. `x` and `y` broadcast
/// over `g`'s extra leading dimensions `L` (many gradients through one normalisation); returns `g`'s shape.
pub fn normalize_backward(x: &Tensor, y: &Tensor, g: &Tensor, eps: f64, center: bool) -> candle_core::Result<Tensor> {
    let (_, sigma) = centered_and_scale(x, eps, center)?;
    let gy = g.broadcast_mul(y)?.mean_keepdim(D::Minus1)?;
    let mut dx = g.broadcast_sub(&y.broadcast_mul(&gy)?)?;
    if center {
        dx = dx.broadcast_sub(&g.mean_keepdim(D::Minus1)?)?;
    }
    dx.broadcast_div(&sigma)
}

/// Rows of `x [..., D]` centred (LayerNorm) or as they are (RMSNorm), and their scale `sqrt(mean(c²) + eps)`
/// `[..., 1]`, from basic ops: the normalisation off CPU and in its backward.
fn centered_and_scale(x: &Tensor, eps: f64, center: bool) -> candle_core::Result<(Tensor, Tensor)> {
    let c = if center { x.broadcast_sub(&x.mean_keepdim(D::Minus1)?)? } else { x.clone() };
    let scale = (c.sqr()?.mean_keepdim(D::Minus1)? + eps)?.sqrt()?;
    Ok((c, scale))
}

/// [`normalize`] of `x [..., D]` for the differentiable run: on CPU the same kernel with a hand-written backward
/// instead of autograd through a composition of basic ops (which keeps several `[..., D]` intermediates per call
/// alive until the backward pass); elsewhere that composition.
pub fn normalize_differentiable(x: &Tensor, eps: f64, center: bool) -> Result<Tensor> {
    let x = x.contiguous()?;
    if !x.device().is_cpu() {
        let (c, scale) = centered_and_scale(&x, eps, center)?;
        return Ok(c.broadcast_div(&scale)?);
    }
    Ok(x.apply_op1(Normalize { eps, center })?)
}

/// Normalises `x [..., D]` over its last dimension (no gain or bias; see `Normalize`).
pub fn normalize(x: &Tensor, eps: f64, center: bool) -> Result<Tensor> {
    let x = x.contiguous()?;
    if x.device().is_cpu() {
        return Ok(x.apply_op1_no_bwd(&Normalize { eps, center })?);
    }
    // Other devices: the same arithmetic from basic ops.
    let (c, scale) = centered_and_scale(&x.to_dtype(candle_core::DType::F64)?, eps, center)?;
    Ok(c.broadcast_mul(&scale.recip()?)?.to_dtype(x.dtype())?)
}

/// The identity on a precomputed product `y = x @ w` whose backward passes the gradient to `x` only
/// (`grad @ wᵀ`). candle's own matmul backward also forms the weight gradient `xᵀ @ grad` (as many FLOPs again,
/// plus its accumulation), which attribution never reads.
struct InputGradOnly {
    /// `[..., K, N]`, the weight (not tracked).
    w: Tensor,
    /// `[..., M, N]`, contiguous from offset 0: the product computed without tracking.
    y: Tensor,
}

impl InputGradOnly {
    fn product<S: candle_core::backend::BackendStorage>(
        &self,
        pick: impl Fn(&candle_core::Storage) -> Option<&S>,
    ) -> candle_core::Result<(S, candle_core::Shape)> {
        let (storage, layout) = self.y.storage_and_layout();
        let s = pick(&storage).ok_or_else(|| candle_core::Error::Msg("input-grad matmul: device mismatch".into()))?;
        Ok((s.try_clone(layout)?, layout.shape().clone()))
    }
}

impl candle_core::CustomOp1 for InputGradOnly {
    fn name(&self) -> &'static str {
        "kcirc-input-grad-matmul"
    }

    fn cpu_fwd(
        &self,
        _: &candle_core::CpuStorage,
        _: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        self.product(|s| match s {
            candle_core::Storage::Cpu(c) => Some(c),
            _ => None,
        })
    }

    fn cuda_fwd(
        &self,
        _: &candle_core::CudaStorage,
        _: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, candle_core::Shape)> {
        self.product(|s| match s {
            candle_core::Storage::Cuda(c) => Some(c),
            _ => None,
        })
    }

    fn bwd(&self, _x: &Tensor, _y: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(bmm(grad, &self.w.t()?)?))
    }
}

/// `x [..., M, K] @ w [..., K, N] -> [..., M, N]` as [`matmul`], for the differentiable run: backpropagation
/// through it yields the gradient of `x` only (see `InputGradOnly`).
pub fn matmul_input_grad(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let y = matmul(&x.detach(), w)?;
    let y = match y.layout().is_contiguous() && y.layout().start_offset() == 0 {
        true => y,
        false => (y.zeros_like()? + &y)?, // a fresh contiguous buffer
    };
    Ok(x.apply_op1(InputGradOnly { w: w.clone(), y })?)
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor, Var};

    /// Whether candle's CUDA matmul (`gemm_config` in candle-core 0.11's cuda_backend) accepts these operands
    /// rather than failing with `MatMulNonContiguous`: each operand's last two dimensions plain or transposed
    /// contiguous, its batch dimensions one stride.
    fn cublas_accepts(a: &Tensor, b: &Tensor) -> bool {
        let (m, k, n) = (a.dim(a.rank() - 2).unwrap(), a.dim(a.rank() - 1).unwrap(), b.dim(b.rank() - 1).unwrap());
        let reads = |t: &Tensor, rows: usize, cols: usize| {
            let s = t.stride();
            let (m1, m2) = (s[s.len() - 1], s[s.len() - 2]);
            let plain = (m1 == 1 || cols == 1) && (m2 == cols || rows == 1);
            let transposed = (m1 == rows || cols == 1) && (m2 == 1 || rows == 1);
            let d = t.dims();
            let batch = match s[..s.len() - 2] {
                [s1, st] => s1 == st * d[1] || d[0] == 1 || d[1] == 1,
                [_] | [] => true,
                _ => false,
            };
            (plain || transposed) && batch
        };
        reads(a, m, k) && reads(b, k, n)
    }

    /// The off-CPU matmuls hand cuBLAS only layouts it accepts and compute what candle's CPU matmul does, for the
    /// views kcirc multiplies: a K-chunk of the columns, a transpose, a head's narrow of a batch, a broadcast
    /// rank-2 weight, a broadcast over some leading dimensions only.
    #[test]
    fn off_cpu_matmul_layouts_are_cublas_ready_and_equal_candle() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let t = |dims: &[usize], seed: f64| -> candle_core::Result<Tensor> {
            let n = dims.iter().product::<usize>();
            Tensor::arange(0f32, n as f32, &dev)?.affine(0.37, seed)?.sin()?.reshape(dims)
        };
        let strict = |x: &Tensor, y: &Tensor| {
            assert!(cublas_accepts(x, y), "cuBLAS would reject {:?} @ {:?}", x.layout(), y.layout());
            x.matmul(y)
        };
        let x = t(&[2, 5, 12], 0.1)?;
        let cases = [
            (x.narrow(2, 4, 6)?, t(&[6, 3], 0.2)?),                                  // K-chunk view, rank-2 weight
            (t(&[2, 3, 5], 0.3)?.transpose(1, 2)?, t(&[2, 3, 4], 0.4)?),             // transposed lhs
            (x.clone(), t(&[2, 7, 12], 0.5)?.transpose(1, 2)?),                      // transposed rhs
            (t(&[4, 5, 12], 0.6)?.narrow(0, 1, 2)?, t(&[2, 12, 3], 0.7)?),           // a narrow of the batch
            (t(&[2, 5, 12], 0.8)?.narrow(1, 1, 3)?, t(&[2, 12, 4], 0.9)?),           // rows of a batch
            (t(&[3, 1, 5, 6], 1.0)?, t(&[1, 2, 6, 4], 1.1)?),                        // broadcast over both leading dims
            (t(&[3, 2, 5, 6], 1.2)?.permute((1, 0, 2, 3))?, t(&[2, 3, 6, 4], 1.3)?), // batch dims permuted
        ];
        for (a, b) in &cases {
            let want = a.contiguous()?.broadcast_matmul(&b.contiguous()?)?.flatten_all()?.to_vec1::<f32>()?;
            let got = super::gemm_bmm(a, b, &strict)?.flatten_all()?.to_vec1::<f32>()?;
            assert_eq!(want.len(), got.len());
            for (w, g) in want.iter().zip(&got) {
                assert!((w - g).abs() <= 1e-5, "{w} vs {g} for {:?} @ {:?}", a.dims(), b.dims());
            }
            if a.rank() == b.rank() && a.dims()[..a.rank() - 2] == b.dims()[..b.rank() - 2] {
                let got = super::gemm_mm(a, b, &strict)?.flatten_all()?.to_vec1::<f32>()?;
                assert!(want.iter().zip(&got).all(|(w, g)| (w - g).abs() <= 1e-5));
            }
        }
        // And the checker itself rejects what candle rejects: a K-chunk view as it is.
        assert!(!cublas_accepts(&x.narrow(2, 4, 6)?, &t(&[2, 6, 3], 0.2)?));
        Ok(())
    }

    /// The fast path's value and input gradient equal candle's own matmul backward, for plain `[M, K] @ [K, N]`
    /// (K long enough to be chunked) and per-head batched `[H, M, K] @ [H, K, N]` weights.
    #[test]
    fn input_grad_matmul_equals_autograd() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        for (xs, ws) in [(vec![6, 576], vec![576, 7]), (vec![3, 5, 8], vec![3, 8, 4])] {
            let n = xs.iter().product::<usize>();
            let x = Var::from_tensor(&Tensor::arange(0f32, n as f32, &dev)?.affine(0.37, -1.0)?.sin()?.reshape(xs)?)?;
            let m = ws.iter().product::<usize>();
            let w = Tensor::arange(0f32, m as f32, &dev)?.affine(0.11, 0.5)?.cos()?.reshape(ws)?;
            // A non-linear read-out so the incoming gradient differs per element.
            let loss = |y: &Tensor| y.sqr()?.sum_all();
            let naive = super::matmul(x.as_tensor(), &w).unwrap();
            let fast = super::matmul_input_grad(x.as_tensor(), &w).unwrap();
            assert_eq!(naive.flatten_all()?.to_vec1::<f32>()?, fast.flatten_all()?.to_vec1::<f32>()?);
            let g_naive = loss(&naive)?.backward()?.get(x.as_tensor()).unwrap().flatten_all()?.to_vec1::<f32>()?;
            let g_fast = loss(&fast)?.backward()?.get(x.as_tensor()).unwrap().flatten_all()?.to_vec1::<f32>()?;
            for (a, b) in g_naive.iter().zip(&g_fast) {
                assert!((a - b).abs() <= 1e-4 * a.abs().max(1.0), "{a} vs {b}");
            }
        }
        Ok(())
    }
}
