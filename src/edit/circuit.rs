//! What an edit does to the circuit (the paper's section 5): the logit lens of the old and the new object on
//! the edit prompt before and after the edit (where the new object's rank moves: at the edited layer, or later
//! through a mover head). The circuit rediscovered on the edited model is `pipeline::rediscover`.
use serde::{Deserialize, Serialize};

use super::Prepared;
use crate::analysis::lens::{Lens, Point};
use crate::analysis::{Analysis, Context, FactOptions, Facts};
use crate::model::Model;
use crate::progress::Silent;
use crate::tokenizer::Tokenizer;
use crate::Result;

/// One lens point before and after the edit: the new and the old object's ranks at the last position.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LensStep {
    pub point: String,
    pub new_before: usize,
    pub new_after: usize,
    pub old_before: usize,
    pub old_after: usize,
}

/// The lens of one edit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EditLens {
    pub subject: String,
    pub points: Vec<LensStep>,
    /// The first point where the edit has done at least half of what it does to the new object's log-rank by the
    /// end (`ln(1 + rank)` before minus after): where the edit takes effect.
    pub takes_effect_at: Option<String>,
    /// The first point from which the new object stays top-1 after the edit.
    pub new_top1_from: Option<String>,
}

fn readings(model: &Model, tok: &Tokenizer, req: &Prepared) -> Result<Vec<Point>> {
    let r = &req.request;
    let facts = Facts::Prompt { prompt: r.triple().prompt_text()?, subject: r.subject.clone(), object: r.new_object.clone() };
    let opts = FactOptions { known_only: false, k: 10, max_facts: 1, demonstrations: 0, seed: 0 };
    let ctx = Context::new(model, tok, facts, opts, None)?;
    let lens = Lens { compare: vec![Some(req.old_token)], compare_predicted: false };
    Ok(lens.analyse(&ctx, &Silent)?.facts.remove(0).full.points)
}

/// The lens of `req` on `before` and `after` (the unedited and the edited model).
pub fn lens(before: &Model, after: &Model, tok: &Tokenizer, req: &Prepared) -> Result<EditLens> {
    let (b, a) = (readings(before, tok, req)?, readings(after, tok, req)?);
    let points: Vec<LensStep> = b
        .iter()
        .zip(&a)
        .map(|(x, y)| LensStep {
            point: x.point.clone(),
            new_before: x.rank,
            new_after: y.rank,
            old_before: x.compare_rank.unwrap_or(0),
            old_after: y.compare_rank.unwrap_or(0),
        })
        .collect();
    let gain = |s: &LensStep| ((1 + s.new_before) as f64).ln() - ((1 + s.new_after) as f64).ln();
    let total = points.last().map(gain).unwrap_or(0.0);
    let takes_effect_at = (total > 0.0).then(|| points.iter().find(|s| gain(s) >= total / 2.0).map(|s| s.point.clone())).flatten();
    let n = points.iter().rev().take_while(|s| s.new_after == 0).count();
    let new_top1_from = (n > 0).then(|| points[points.len() - n].point.clone());
    Ok(EditLens { subject: req.request.subject.clone(), points, takes_effect_at, new_top1_from })
}
