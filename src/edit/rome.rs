//! ROME (Meng et al. 2022; brief §11): a rank-one update of one MLP's output projection that maps the subject's
//! key to a value vector that makes the model give the new object.
//!
//! - Key `k*`: the MLP's hidden activation (input of the output projection, [`HookPoint::MlpHidden`]) at the
//!   subject's last token, averaged over the prompt alone and after a few context prefixes the model writes itself.
//! - Value `v* = k*·W + b + δ`: `δ` is added to the MLP's output at the subject's last token of every context
//!   prompt (and of a "{subject} is a" prompt) and optimised with Adam on the new object's negative
//!   log-likelihood (all its tokens, teacher-forced) + `kl_factor` · KL of the "is a" prompt's next-token
//!   distribution from the original + `weight_decay` · |δ|² / |k*W + b|², `|δ|` clamped to `clamp_factor` ·
//!   |k*W + b|, stopping early once the likelihood loss is below [`EARLY_STOP`]. (ROME starts from the first
//!   prompt's output instead of the mean `k*W + b` of the contexts'; with the mean, a δ of zero is no edit.)
//! - Update: `W ← W + u ⊗ (v* − b − k*·W) / (u·k*)` with `u = C⁻¹k*`; `C = I` by default (EasyEdit's and so the
//!   paper's `mom2_adjustment: false`), or the keys' second moment over a text.
use std::cell::Cell;

use candle_core::{DType, Tensor, D};

use super::{check_layer, subject_last, Adam, Editor, Forced, Prepared, Update};
use crate::data::{SplitMix64, Triple};
use crate::model::hooks::Record;
use crate::model::ops::mm;
use crate::model::{HookPoint, Logits, Model};
use crate::progress::Progress;
use crate::tokenizer::Tokenizer;
use crate::{Error, Result};

/// The likelihood loss below which the value optimisation stops.
pub const EARLY_STOP: f64 = 0.05;

/// ROME's settings.
#[derive(Debug, Clone)]
pub struct Rome {
    pub layer: usize,
    pub steps: usize,
    pub lr: f64,
    pub weight_decay: f64,
    pub kl_factor: f64,
    pub clamp_factor: f64,
    /// Context prefixes (each ends in ". "), the empty one first.
    pub contexts: Vec<String>,
    /// `C⁻¹` as a `[d_mlp, d_mlp]` matrix, or `None` for `C = I`.
    pub inverse_covariance: Option<Tensor>,
}

impl Rome {
    /// ROME on `layer` with ROME's defaults (20 steps, lr 0.5, weight decay 0.5, KL factor 0.0625, clamp 4) and
    /// five 8-token context prefixes the model writes from `seed`.
    pub fn new(model: &Model, tok: &Tokenizer, layer: usize, seed: u64) -> Result<Rome> {
        check_layer(layer, &model.cfg)?;
        let mut contexts = vec![String::new()];
        contexts.extend(generate_contexts(model, tok, 5, 8, seed)?);
        Ok(Rome { layer, steps: 20, lr: 0.5, weight_decay: 0.5, kl_factor: 0.0625, clamp_factor: 4.0, contexts, inverse_covariance: None })
    }

    /// `C⁻¹` from the second moment of layer `layer`'s keys over `text` (every token position, chunks of 64
    /// tokens), with a small ridge (1e-3 of the mean diagonal) so that `C` is invertible.
    pub fn with_covariance_from(mut self, model: &Model, tok: &Tokenizer, text: &str) -> Result<Rome> {
        let ids = tok.encode_plain(text)?;
        if ids.len() < 16 {
            return Err(Error::input("the covariance text must have at least 16 tokens"));
        }
        let record = Record(|p| matches!(p, HookPoint::MlpHidden(_)));
        let f = model.cfg.d_mlp;
        let mut c = Tensor::zeros((f, f), DType::F64, &model.device)?;
        let mut n = 0usize;
        for chunk in ids.chunks(64) {
            let batch = model.batch(&[chunk.to_vec()])?;
            let acts = model.run(&batch, &record, Logits::Hidden)?.0;
            let k = acts.expect(HookPoint::MlpHidden(self.layer))?.reshape((chunk.len(), f))?.to_dtype(DType::F64)?;
            c = (c + mm(&k.t()?, &k)?)?;
            n += chunk.len();
        }
        let c = (c / n as f64)?;
        let ridge = c.to_vec2::<f64>()?.iter().enumerate().map(|(i, r)| r[i]).sum::<f64>() / f as f64 * 1e-3;
        let c = (c + (Tensor::eye(f, DType::F64, &model.device)? * ridge)?)?;
        self.inverse_covariance = Some(invert(&c)?.to_dtype(DType::F32)?);
        Ok(self)
    }

    /// The key `k*` `[d_mlp]` and the subject positions of the context prompts.
    fn key(&self, model: &Model, tok: &Tokenizer, req: &Prepared) -> Result<(Tensor, Vec<crate::data::Example>)> {
        let prompt = req.request.triple().prompt_text()?;
        let examples = self
            .contexts
            .iter()
            .map(|c| {
                let t = Triple { prompt: Some(format!("{c}{prompt}")), ..req.request.triple() };
                crate::data::example(&t, tok)
            })
            .collect::<Result<Vec<_>>>()?;
        let prompts: Vec<Vec<u32>> = examples.iter().map(|e| e.tokens.clone()).collect();
        let batch = model.batch(&prompts)?;
        let record = Record(|p| matches!(p, HookPoint::MlpHidden(_)));
        let acts = model.run(&batch, &record, Logits::Hidden)?.0;
        let hidden = acts.expect(HookPoint::MlpHidden(self.layer))?; // [B, T, d_mlp]
        let t = batch.seq_len;
        let mut keys = vec![];
        for (r, e) in examples.iter().enumerate() {
            let pos = t - e.tokens.len() + subject_last(e)?;
            keys.push(hidden.get(r)?.get(pos)?);
        }
        Ok((Tensor::stack(&keys, 0)?.mean(0)?, examples))
    }

    /// The MLP's output for key `k` `[d_mlp]`: `k·W + b`, `[D]`.
    pub fn output(&self, model: &Model, k: &Tensor) -> Result<Tensor> {
        let w = model.mlp_out_weight(self.layer);
        let y = mm(&k.unsqueeze(0)?, w)?.squeeze(0)?;
        Ok(match &model.weights.layers[self.layer].mlp {
            crate::model::weights::Mlp::GeluTanh { b_out, .. } => (y + b_out)?,
            crate::model::weights::Mlp::SwiGlu { .. } => y,
        })
    }

    /// The optimised `δ` `[D]`, the steps taken and the last loss.
    fn value_delta(
        &self,
        model: &Model,
        tok: &Tokenizer,
        req: &Prepared,
        contexts: &[crate::data::Example],
        base: &Tensor,
        progress: &dyn Progress,
    ) -> Result<(Tensor, usize, f64)> {
        let is_a =
            crate::data::example(&Triple { prompt: Some(format!("{} is a", req.request.subject.trim())), ..req.request.triple() }, tok)?;
        let mut prompts: Vec<Vec<u32>> = contexts.iter().map(|e| e.tokens.clone()).collect();
        prompts.push(is_a.tokens.clone());
        let forced = Forced::new(model, &prompts, &req.new_tokens, false)?;
        let n_ctx = contexts.len();
        let (b, t, d) = (prompts.len(), forced.batch.seq_len, model.cfg.d_model);
        // The subject's last token of every row, where δ is added.
        let mut mask = vec![0f32; b * t];
        for (r, e) in contexts.iter().chain(std::iter::once(&is_a)).enumerate() {
            let row_len = e.tokens.len() + req.new_tokens.len() - 1;
            mask[r * t + (t - row_len) + subject_last(e)?] = 1.0;
        }
        let mask = Tensor::from_vec(mask, (b, t, 1), &model.device)?;
        // The "is a" prompt's original next-token distribution (at its last prompt position).
        let clean = model.run(&forced.batch, &crate::model::Clean, Logits::All)?.1;
        let last_kl = forced.last[n_ctx];
        let p0 = candle_nn::ops::log_softmax(&clean.get(n_ctx)?.get(last_kl)?, D::Minus1)?;
        // The NLL is over the context rows only.
        let ctx_positions: Vec<u32> = forced.positions.to_vec1::<u32>()?;
        let per_row = req.new_tokens.len();
        let idx = Tensor::from_vec(ctx_positions[..n_ctx * per_row].to_vec(), n_ctx * per_row, &model.device)?;
        let targets = forced.targets.narrow(0, 0, n_ctx * per_row)?;
        let base_norm2 = base.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
        let max_norm = self.clamp_factor * base_norm2.sqrt();
        let mut delta = Tensor::zeros(d, DType::F32, &model.device)?;
        let mut adam = Adam::new(&delta, self.lr)?;
        let (mut steps, mut last_loss) = (0, f64::NAN);
        progress.start(self.steps as u64);
        for _ in 0..self.steps {
            let nll_value = Cell::new(0.0);
            let full = mask.broadcast_mul(&delta.reshape((1, 1, d))?)?;
            let loss = |logits: &Tensor| -> Result<Tensor> {
                let (bb, tt, v) = logits.dims3()?;
                let flat = logits.reshape((bb * tt, v))?;
                let lp = candle_nn::ops::log_softmax(&flat.index_select(&idx, 0)?, D::Minus1)?;
                let nll = lp.gather(&targets, 1)?.mean_all()?.neg()?;
                nll_value.set(nll.to_scalar::<f32>()? as f64);
                let lq = candle_nn::ops::log_softmax(&logits.get(n_ctx)?.get(last_kl)?, D::Minus1)?;
                let kl = (p0.exp()? * (&p0 - lq)?)?.sum_all()?;
                Ok((nll + (kl * self.kl_factor)?)?)
            };
            let (value, g) =
                crate::gradient::delta_gradient(model, &forced.batch, HookPoint::MlpOut(self.layer), &full, Logits::All, loss)?;
            let wd = self.weight_decay * delta.sqr()?.sum_all()?.to_scalar::<f32>()? as f64 / base_norm2;
            last_loss = value + wd;
            if nll_value.get() < EARLY_STOP {
                break;
            }
            let g = (g.broadcast_mul(&mask)?.sum((0, 1))? + (&delta * (2.0 * self.weight_decay / base_norm2))?)?;
            delta = adam.step(&delta, &g)?;
            let norm = delta.sqr()?.sum_all()?.to_scalar::<f32>()?.sqrt() as f64;
            if norm > max_norm {
                delta = (delta * (max_norm / norm))?;
            }
            steps += 1;
            progress.advance(1);
        }
        Ok((delta, steps, last_loss))
    }

    /// The rank-one update mapping key `k` `[d_mlp]` to output `v` `[D]` on `w` `[d_mlp, D]` (`b` the output
    /// bias, if any): `w + u ⊗ (v − b − k·w) / (u·k)`, `u = C⁻¹k`.
    pub fn rank_one(&self, w: &Tensor, k: &Tensor, residual: &Tensor) -> Result<Tensor> {
        let u = match &self.inverse_covariance {
            Some(ci) => mm(ci, &k.unsqueeze(1)?)?.squeeze(1)?,
            None => k.clone(),
        };
        let denom = (&u * k)?.sum_all()?.to_scalar::<f32>()? as f64;
        if denom.abs() < 1e-12 {
            return Err(Error::bug("ROME key has zero norm"));
        }
        let outer = mm(&u.unsqueeze(1)?, &residual.unsqueeze(0)?)?; // [d_mlp, D]
        Ok((w + (outer / denom)?)?)
    }

    /// The key, the value `v*` and the update for `req` (what the tests check: `k*·W' + b = v*`).
    pub fn compute(&self, model: &Model, tok: &Tokenizer, req: &Prepared, progress: &dyn Progress) -> Result<(Tensor, Tensor, Update)> {
        let (k, contexts) = self.key(model, tok, req)?;
        let base = self.output(model, &k)?;
        let (delta, steps, loss) = self.value_delta(model, tok, req, &contexts, &base, progress)?;
        let v = (&base + &delta)?;
        let weight = self.rank_one(model.mlp_out_weight(self.layer), &k, &delta)?;
        Ok((k, v, Update { layer: self.layer, weight, steps, loss }))
    }
}

impl Editor for Rome {
    fn name(&self) -> &'static str {
        "rome"
    }
    fn layer(&self) -> usize {
        self.layer
    }
    fn edit(&self, model: &Model, tok: &Tokenizer, req: &Prepared, progress: &dyn Progress) -> Result<Update> {
        Ok(self.compute(model, tok, req, progress)?.2)
    }
    fn max_steps(&self) -> usize {
        self.steps
    }
}

/// `n` texts of `len` tokens the model writes after a few fixed opening words (top-5 sampling, seeded), each
/// ended with ". " and stripped of newlines and braces.
pub fn generate_contexts(model: &Model, tok: &Tokenizer, n: usize, len: usize, seed: u64) -> Result<Vec<String>> {
    const OPENINGS: [&str; 5] = ["The", "Therefore", "Because", "I", "You"];
    let mut rng = SplitMix64(seed ^ 0xC0_47E7);
    let mut rows: Vec<Vec<u32>> = (0..n).map(|i| tok.encode(OPENINGS[i % OPENINGS.len()])).collect::<Result<_>>()?;
    let starts: Vec<usize> = rows.iter().map(Vec::len).collect();
    for _ in 0..len {
        let logits = model.forward_prompts(&rows, Logits::Last)?.to_vec2::<f32>()?;
        for (row, l) in rows.iter_mut().zip(&logits) {
            let top = crate::predict::top_k(l, 5);
            let m = l[top[0]] as f64;
            let w: Vec<f64> = top.iter().map(|&i| ((l[i] as f64) - m).exp()).collect();
            let total: f64 = w.iter().sum();
            let mut x = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * total;
            let mut pick = top[top.len() - 1];
            for (&i, &wi) in top.iter().zip(&w) {
                if x < wi {
                    pick = i;
                    break;
                }
                x -= wi;
            }
            row.push(pick as u32);
        }
    }
    Ok(rows
        .iter()
        .zip(&starts)
        .enumerate()
        .map(|(i, (r, &s))| {
            let text: String = r[s..].iter().map(|&t| tok.token_text(t)).collect();
            let text = format!("{}{}", OPENINGS[i % OPENINGS.len()], text).replace(['\n', '{', '}'], " ");
            format!("{}. ", text.trim())
        })
        .collect())
}

/// The inverse of a symmetric positive-definite matrix (f64), by Cholesky.
fn invert(c: &Tensor) -> Result<Tensor> {
    let n = c.dim(0)?;
    let a = c.to_vec2::<f64>()?;
    let mut l = vec![vec![0f64; n]; n];
    for i in 0..n {
        for j in 0..=i {
            let s: f64 = (0..j).map(|k| l[i][k] * l[j][k]).sum();
            if i == j {
                let d = a[i][i] - s;
                if d <= 0.0 {
                    return Err(Error::input("the keys' covariance is not positive definite (text too short?)"));
                }
                l[i][i] = d.sqrt();
            } else {
                l[i][j] = (a[i][j] - s) / l[j][j];
            }
        }
    }
    // inv = L⁻ᵀ L⁻¹: solve column by column.
    let mut inv = vec![0f64; n * n];
    for col in 0..n {
        let mut y = vec![0f64; n];
        for i in 0..n {
            let s: f64 = (0..i).map(|k| l[i][k] * y[k]).sum();
            y[i] = ((i == col) as u8 as f64 - s) / l[i][i];
        }
        let mut x = vec![0f64; n];
        for i in (0..n).rev() {
            let s: f64 = (i + 1..n).map(|k| l[k][i] * x[k]).sum();
            x[i] = (y[i] - s) / l[i][i];
        }
        for i in 0..n {
            inv[i * n + col] = x[i];
        }
    }
    Ok(Tensor::from_vec(inv, (n, n), c.device())?)
}
