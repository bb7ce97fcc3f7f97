//! Fine-tuning one layer's MLP output projection (brief §11): **FT-M** minimises the teacher-forced
//! cross-entropy of the new object's tokens after the edit prompt (the prompt itself masked); **FT-L** the same
//! loss at the last prompt position only (the new object's first token). Adam, every weight clamped to an L∞
//! ball of radius `clamp` around its original value, stopping early once the loss is below [`EARLY_STOP`].
use super::{check_layer, Adam, Editor, Forced, Prepared, Update};
use crate::model::{Logits, Model};
use crate::progress::Progress;
use crate::tokenizer::Tokenizer;
use crate::Result;

/// The loss below which fine-tuning stops.
pub const EARLY_STOP: f64 = 1e-2;

/// Fine-tuning settings.
#[derive(Debug, Clone)]
pub struct FineTune {
    pub layer: usize,
    /// FT-L: only the last prompt position's prediction (the new object's first token).
    pub last_position_only: bool,
    pub steps: usize,
    pub lr: f64,
    /// L∞ radius around the original weights.
    pub clamp: f64,
}

impl FineTune {
    /// FT-M (or FT-L with `last_position_only`) on `layer`: 25 Adam steps of lr 5e-4, clamp 5e-3.
    pub fn new(model: &Model, layer: usize, last_position_only: bool) -> Result<FineTune> {
        check_layer(layer, &model.cfg)?;
        Ok(FineTune { layer, last_position_only, steps: 25, lr: 5e-4, clamp: 5e-3 })
    }
}

impl Editor for FineTune {
    fn name(&self) -> &'static str {
        if self.last_position_only {
            "ft-l"
        } else {
            "ft-m"
        }
    }
    fn layer(&self) -> usize {
        self.layer
    }
    fn max_steps(&self) -> usize {
        self.steps
    }
    fn clamp(&self) -> Option<f64> {
        Some(self.clamp)
    }
    fn edit(&self, model: &Model, _tok: &Tokenizer, req: &Prepared, progress: &dyn Progress) -> Result<Update> {
        let forced = Forced::new(model, std::slice::from_ref(&req.prompt.tokens), &req.new_tokens, self.last_position_only)?;
        let w0 = model.mlp_out_weight(self.layer).clone();
        let (lo, hi) = ((&w0 - self.clamp)?, (&w0 + self.clamp)?);
        let mut w = w0.clone();
        let mut adam = Adam::new(&w, self.lr)?;
        let (mut steps, mut loss) = (0, f64::NAN);
        progress.start(self.steps as u64);
        for _ in 0..self.steps {
            let current = model.with_mlp_out_weight(self.layer, w.clone())?;
            let (value, g) = crate::gradient::mlp_out_gradient(&current, &forced.batch, self.layer, Logits::All, |l| forced.nll(l))?;
            loss = value;
            if value < EARLY_STOP {
                break;
            }
            w = adam.step(&w, &g)?.maximum(&lo)?.minimum(&hi)?;
            steps += 1;
            progress.advance(1);
        }
        Ok(Update { layer: self.layer, weight: w, steps, loss })
    }
}
