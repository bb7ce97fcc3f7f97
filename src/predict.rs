//! Next-token predictions: the model's top-k at the last prompt position.
use candle_core::DType;
use serde::Serialize;

use crate::model::Model;
use crate::tokenizer::Tokenizer;
use crate::Result;

/// One candidate next token.
#[derive(Debug, Clone, Serialize)]
pub struct Candidate {
    pub id: u32,
    pub token: String,
    pub logit: f32,
    pub prob: f32,
}

/// The prediction for one prompt, as `kcirc predict` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct Prediction {
    pub model: String,
    pub prompt: String,
    pub tokens: Vec<u32>,
    pub top: Vec<Candidate>,
}

/// Tokenises `prompts`, runs them as one left-padded batch and returns each prompt's top `k` tokens
/// (descending logit; ties broken by lower id).
pub fn predict(model: &Model, tok: &Tokenizer, prompts: &[String], k: usize) -> Result<Vec<Prediction>> {
    let ids: Vec<Vec<u32>> = prompts.iter().map(|p| tok.encode(p)).collect::<Result<_>>()?;
    if let Some(i) = ids.iter().position(|v| v.is_empty()) {
        return Err(crate::Error::input(format!("prompt {} ({:?}) tokenizes to nothing", i + 1, prompts[i])));
    }
    let logits = model.forward_prompts(&ids, crate::model::Logits::Last)?; // [B, V]
    let probs = candle_nn::ops::softmax_last_dim(&logits)?;
    let logits = logits.to_dtype(DType::F32)?.to_vec2::<f32>()?;
    let probs = probs.to_vec2::<f32>()?;
    Ok(prompts
        .iter()
        .zip(ids)
        .enumerate()
        .map(|(i, (p, ids))| {
            let top = top_k(&logits[i], k)
                .into_iter()
                .map(|id| Candidate { id: id as u32, token: tok.token_text(id as u32), logit: logits[i][id], prob: probs[i][id] })
                .collect();
            Prediction { model: model.name.clone(), prompt: p.clone(), tokens: ids, top }
        })
        .collect())
}

/// Indices of the `k` largest values, descending, ties by lower index.
pub fn top_k(values: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..values.len()).collect();
    let k = k.min(values.len());
    let cmp = |a: &usize, b: &usize| values[*b].total_cmp(&values[*a]).then(a.cmp(b));
    if k < idx.len() && k > 0 {
        idx.select_nth_unstable_by(k - 1, cmp);
        idx.truncate(k);
    }
    idx.sort_by(cmp);
    idx.truncate(k);
    idx
}
