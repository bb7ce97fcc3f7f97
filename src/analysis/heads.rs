//! Head roles (brief §10): per attention head, where its last position looks (subject, relation words,
//! demonstrations, other), what it writes (direct logit attribution, split by the source positions it reads,
//! and its top tokens through the unembedding), a role by the rules below, and the paper's check: ablating the
//! mover heads (then the relation heads) against as many random heads of the same layers.
//!
//! Under grouped-query attention each *query* head has its own pattern and is reported on its own; the values
//! it mixes come from the key/value head it shares with its group (`kv_head`).
//!
//! Role rules, on the means over facts of the last position's attention shares (the first position, an
//! attention sink in most models, counts as `other` unless it is a subject token; see [`super::sources`]):
//! - **mover**: subject share ≥ [`MIN_SHARE`], above the relation share, and a positive direct effect on the
//!   target (it writes the subject's attribute towards the answer);
//! - **relation**: relation share ≥ [`MIN_SHARE`], above the subject share, and it writes the relation's own
//!   words: one of its top [`RELATION_TOP`] tokens is a word of the facts' templates (≥ 4 letters, compared
//!   without case or leading space: " City" for "the city of"). Attention alone does not decide it: templates
//!   have many more tokens than subjects, so early heads that spread attention evenly lean to the relation.

//! - **mixed**: both shares ≥ [`MIN_MIXED_SHARE`] (and neither rule above);
//! - **other**: the rest.
use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use super::{dla, sources, Analysis, Context};
use crate::data::{Span, SplitMix64};
use crate::intervene::AblateHeads;
use crate::model::{HookPoint, Logits, NormKind};
use crate::progress::Progress;
use crate::rank::rank_in;
use crate::{Error, Result};

/// The attention share a mover or relation head gives its span.
pub const MIN_SHARE: f64 = 0.3;
/// The share a mixed head gives both spans.
pub const MIN_MIXED_SHARE: f64 = 0.15;
/// How far down a head's top tokens a relation word may be for the relation role.
pub const RELATION_TOP: usize = 20;
/// Tokens listed per head and per ablation effect.
pub const TOP_TOKENS: usize = 8;

/// A head's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Mover,
    Relation,
    Mixed,
    Other,
}

/// Per-span values (attention shares, attribution parts).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct BySpan {
    pub subject: f64,
    pub relation: f64,
    pub demonstration: f64,
    pub other: f64,
}

impl BySpan {
    fn add(&mut self, s: Span, v: f64) {
        match s {
            Span::Subject => self.subject += v,
            Span::Relation => self.relation += v,
            Span::Demonstration => self.demonstration += v,
            Span::Other => self.other += v,
        }
    }
    fn merge(&mut self, o: &BySpan) {
        self.subject += o.subject;
        self.relation += o.relation;
        self.demonstration += o.demonstration;
        self.other += o.other;
    }
    fn scale(&mut self, k: f64) {
        self.subject *= k;
        self.relation *= k;
        self.demonstration *= k;
        self.other *= k;
    }
    pub fn total(&self) -> f64 {
        self.subject + self.relation + self.demonstration + self.other
    }
}

/// A token and a value (a logit contribution, a probability change).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenValue {
    pub token: String,
    pub value: f64,
}

/// One head, averaged over the facts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeadReport {
    pub name: String,
    pub layer: usize,
    pub head: usize,
    /// The key/value head whose values it reads (its own index without grouped-query attention).
    pub kv_head: usize,
    pub role: Role,
    /// Mean attention of the last position to each span (sums to 1).
    pub attention: BySpan,
    /// Mean direct logit attribution to the target, split by the source positions it attends to (the parts sum
    /// to `dla`).
    pub dla: f64,
    pub dla_by_source: BySpan,
    /// The tokens its output (last position, mean over facts) promotes most through the final norm and the
    /// unembedding: its direct logit contribution to each token, top first.
    pub top_tokens: Vec<TokenValue>,
    /// Relation words among its top [`RELATION_TOP`] tokens.
    pub relation_words: Vec<String>,
}

/// What ablating a set of heads does, over the facts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Effect {
    pub mean_rank: f64,
    /// Fraction of facts with the target top-1.
    pub hit_at_1: f64,
    pub mean_target_prob: f64,
    /// Mean change of the target's log-probability against the full model (0 for the full model).
    pub mean_delta_log_prob: f64,
    /// The tokens whose mean probability rises most against the full model.
    pub rising: Vec<TokenValue>,
}

/// The paper's ablation check for one set of heads (a role's, or one given).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AblationCheck {
    /// `mover`, `relation`, or the name of a given set.
    pub set: String,
    pub heads: Vec<String>,
    pub ablated: Effect,
    /// Mean over `random_draws` sets of as many random heads of the same layers (none of the role's heads).
    pub random: Effect,
    pub random_draws: usize,
}

/// The `heads` report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub model: String,
    pub n_facts: usize,
    /// How removed heads are filled in for the ablation check (the circuit's ablation).
    pub ablation: String,
    pub rules: Rules,
    pub heads: Vec<HeadReport>,
    pub full: Effect,
    pub checks: Vec<AblationCheck>,
}

/// The thresholds the roles were given by.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Rules {
    pub min_share: f64,
    pub min_mixed_share: f64,
    pub relation_top: usize,
}

/// The head analysis: which heads, and how many random sets the check draws.
pub struct Heads {
    /// `(layer, head)` pairs to report, in order.
    pub heads: Vec<(usize, usize)>,
    /// Further head sets to check against random heads, by name (the heads that join an in-context circuit).
    pub sets: Vec<(String, Vec<(usize, usize)>)>,
    pub random_draws: usize,
    pub seed: u64,
}

/// The heads with a kept outgoing edge in a circuit (its senders among the heads), in forward order.
pub fn circuit_heads(view: &super::CircuitView) -> Vec<(usize, usize)> {
    let g = &view.graph;
    let mut out = vec![];
    for l in 0..g.n_layers {
        for h in 0..g.n_heads {
            if g.edges_from[g.head_sender(l, h)].iter().any(|&e| !view.removed[e]) {
                out.push((l, h));
            }
        }
    }
    out
}

/// A head's role by the module's rules; `writes_relation_words`: whether a relation word is among its top
/// [`RELATION_TOP`] tokens.
pub fn role(attention: &BySpan, dla: f64, writes_relation_words: bool) -> Role {
    let (s, r) = (attention.subject, attention.relation);
    if s >= MIN_SHARE && s > r && dla > 0.0 {
        Role::Mover
    } else if r >= MIN_SHARE && r > s && writes_relation_words {
        Role::Relation
    } else if s >= MIN_MIXED_SHARE && r >= MIN_MIXED_SHARE {
        Role::Mixed
    } else {
        Role::Other
    }
}

/// One fact's per-head numbers: attention shares and source-split attribution `[L][H]`, and every head's
/// gain-scaled centred output at the last position `[L·H, D]` (its per-token contributions before `W_U`).
struct FactHeads {
    attention: Vec<Vec<BySpan>>,
    dla: Vec<Vec<BySpan>>,
    scaled: Tensor,
}

fn fact_heads(ctx: &Context, i: usize, tr: &super::Trace) -> Result<FactHeads> {
    let model = ctx.model;
    let fact = &ctx.facts[i];
    let src = sources(fact);
    let (_, dir) = dla::attribute(model, tr, fact.target)?;
    let t = fact.tokens.len();
    let mut attention = vec![];
    let mut dla_parts = vec![];
    let mut scaled = vec![];
    for l in 0..model.cfg.n_layers {
        let pattern = tr.acts.expect(HookPoint::Pattern(l))?; // [H, 1, T, T]
        let row = pattern.narrow(2, t - 1, 1)?.squeeze(2)?.squeeze(1)?.to_vec2::<f32>()?; // [H, T]
        let per_pos = dla::head_sources(model, tr, &dir, l)?.to_vec2::<f32>()?;
        let split = |rows: &Vec<Vec<f32>>| -> Vec<BySpan> {
            rows.iter()
                .map(|r| {
                    let mut b = BySpan::default();
                    for (j, &v) in r.iter().enumerate() {
                        b.add(src[j], v as f64);
                    }
                    b
                })
                .collect()
        };
        attention.push(split(&row));
        dla_parts.push(split(&per_pos));
        let out = tr.heads[l].narrow(1, t - 1, 1)?.squeeze(1)?; // [H, D]
        let out = match model.cfg.norm {
            NormKind::LayerNorm => out.broadcast_sub(&out.mean_keepdim(1)?)?,
            NormKind::RmsNorm => out,
        };
        scaled.push(out.broadcast_mul(&dir.gain)?);
    }
    Ok(FactHeads { attention, dla: dla_parts, scaled: Tensor::cat(&scaled, 0)? })
}

/// A token's text as a word: trimmed and lower-case.
fn word(token: &str) -> String {
    token.trim().to_lowercase()
}

/// The words of the facts' templates (relation positions) with at least four letters.
fn relation_words(ctx: &Context) -> std::collections::BTreeSet<String> {
    ctx.facts
        .iter()
        .flat_map(|f| f.positions(Span::Relation).into_iter().map(|p| word(&ctx.tok.token_text(f.tokens[p]))))
        .filter(|w| w.chars().filter(|c| c.is_alphabetic()).count() >= 4)
        .collect()
}

/// Top `n` entries of `v` with their token texts.
fn top_tokens(ctx: &Context, v: &[f32], n: usize) -> Vec<TokenValue> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[b].total_cmp(&v[a]).then(a.cmp(&b)));
    idx.into_iter().take(n).map(|j| TokenValue { token: ctx.tok.token_text(j as u32), value: v[j] as f64 }).collect()
}

/// Logits `[B, V]` of every fact with `heads` ablated (none: the full model), in chunks of a few hundred tokens.
fn ablated_logits(ctx: &Context, heads: &[(usize, usize)]) -> Result<Vec<Vec<f32>>> {
    let model = ctx.model;
    let view = ctx.circuit.as_ref().ok_or_else(|| Error::bug("the head-ablation check needs the circuit's ablation"))?;
    let idx: Vec<usize> = (0..ctx.facts.len()).collect();
    let mut out = vec![];
    for chunk in idx.chunks(16) {
        let prompts: Vec<Vec<u32>> = chunk.iter().map(|&i| ctx.facts[i].tokens.clone()).collect();
        let batch = model.batch(&prompts)?;
        let ablated = match heads.is_empty() {
            true => None,
            false => view.values.values(model, chunk, batch.seq_len)?,
        };
        let hook = AblateHeads { heads, ablated: ablated.as_ref() };
        let logits = model.run(&batch, &hook, Logits::Last)?.1;
        out.extend(logits.to_vec2::<f32>()?);
    }
    Ok(out)
}

/// Summary of logits per fact against the full model's probabilities; `rising` from the mean probability change.
fn effect(ctx: &Context, logits: &[Vec<f32>], full: &[Vec<f64>]) -> (Effect, Vec<f64>) {
    let n = logits.len().max(1) as f64;
    let v = logits.first().map_or(0, |r| r.len());
    let mut shift = vec![0f64; v];
    let (mut rank, mut hit, mut prob, mut dlp) = (0.0, 0.0, 0.0, 0.0);
    for (i, row) in logits.iter().enumerate() {
        let t = ctx.facts[i].target as usize;
        let p = crate::rank::softmax(row);
        let r = rank_in(row, t);
        rank += r as f64;
        hit += (r == 0) as u8 as f64;
        prob += p[t];
        dlp += p[t].max(1e-300).ln() - full[i][t].max(1e-300).ln();
        for (s, (a, b)) in shift.iter_mut().zip(p.iter().zip(&full[i])) {
            *s += (a - b) / n;
        }
    }
    let e = Effect { mean_rank: rank / n, hit_at_1: hit / n, mean_target_prob: prob / n, mean_delta_log_prob: dlp / n, rising: vec![] };
    (e, shift)
}

fn with_rising(ctx: &Context, mut e: Effect, shift: &[f64]) -> Effect {
    let v: Vec<f32> = shift.iter().map(|&x| x as f32).collect();
    e.rising = top_tokens(ctx, &v, TOP_TOKENS);
    e
}

/// Parses head names (`a3.h1`) of a model with `n_layers` layers of `n_heads` heads.
pub fn parse_heads(names: &[String], n_layers: usize, n_heads: usize) -> Result<Vec<(usize, usize)>> {
    names
        .iter()
        .map(|n| {
            let parsed =
                n.trim().strip_prefix('a').and_then(|r| r.split_once(".h")).and_then(|(l, h)| Some((l.parse().ok()?, h.parse().ok()?)));
            match parsed {
                Some((l, h)) if l < n_layers && h < n_heads => Ok((l, h)),
                _ => Err(Error::input(format!("`{n}` is not a head of this model (a0.h0 … a{}.h{})", n_layers - 1, n_heads - 1))),
            }
        })
        .collect()
}

/// `draws` sets of heads drawn like `set`: per layer as many heads, none of `set`'s, seeded.
pub fn random_like(set: &[(usize, usize)], n_heads: usize, draws: usize, seed: u64) -> Vec<Vec<(usize, usize)>> {
    let mut rng = SplitMix64(seed ^ 0x4EAD_5EED);
    (0..draws)
        .map(|_| {
            let mut out = vec![];
            let mut layers: Vec<usize> = set.iter().map(|&(l, _)| l).collect();
            layers.dedup();
            for l in layers {
                let want = set.iter().filter(|&&(hl, _)| hl == l).count();
                let mut pool: Vec<usize> = (0..n_heads).filter(|h| !set.contains(&(l, *h))).collect();
                rng.shuffle(&mut pool);
                out.extend(pool.into_iter().take(want).map(|h| (l, h)));
            }
            out.sort_unstable();
            out
        })
        .collect()
}

impl Analysis for Heads {
    type Report = Report;
    fn name(&self) -> &'static str {
        "heads"
    }
    fn analyse(&self, ctx: &Context, progress: &dyn Progress) -> Result<Report> {
        let model = ctx.model;
        let cfg = &model.cfg;
        if ctx.facts.is_empty() {
            return Err(Error::input("no facts to analyse"));
        }
        progress.message("head statistics");
        progress.start(ctx.facts.len() as u64);
        let per_fact = super::traces_map(ctx, false, progress, |i, tr| fact_heads(ctx, i, tr))?;
        let n = per_fact.len() as f64;
        let (nl, nh) = (cfg.n_layers, cfg.n_heads);
        let mut attention = vec![vec![BySpan::default(); nh]; nl];
        let mut dla_parts = vec![vec![BySpan::default(); nh]; nl];
        let mut scaled = per_fact[0].scaled.zeros_like()?;
        for f in &per_fact {
            for l in 0..nl {
                for h in 0..nh {
                    attention[l][h].merge(&f.attention[l][h]);
                    dla_parts[l][h].merge(&f.dla[l][h]);
                }
            }
            scaled = (scaled + &f.scaled)?;
        }
        // The selected heads' mean per-token contributions, one matmul: [n_sel, D] @ [D, V].
        let rows: Vec<u32> = self.heads.iter().map(|&(l, h)| (l * nh + h) as u32).collect();
        let top = match rows.is_empty() {
            true => vec![],
            false => {
                let sel = (scaled.index_select(&Tensor::new(rows.as_slice(), &model.device)?, 0)? / n)?;
                crate::model::ops::matmul(&sel, &model.weights.unembed)?.to_vec2::<f32>()?
            }
        };
        let words = relation_words(ctx);
        let mut heads = vec![];
        for (k, &(l, h)) in self.heads.iter().enumerate() {
            let top_k = top_tokens(ctx, &top[k], RELATION_TOP.max(TOP_TOKENS));
            let written: Vec<String> =
                top_k.iter().take(RELATION_TOP).filter(|t| words.contains(&word(&t.token))).map(|t| t.token.clone()).collect();
            let mut a = attention[l][h];
            a.scale(1.0 / n);
            let mut d = dla_parts[l][h];
            d.scale(1.0 / n);
            heads.push(HeadReport {
                name: format!("a{l}.h{h}"),
                layer: l,
                head: h,
                kv_head: h / cfg.group_size(),
                role: role(&a, d.total(), !written.is_empty()),
                attention: a,
                dla: d.total(),
                dla_by_source: d,
                top_tokens: top_k.into_iter().take(TOP_TOKENS).collect(),
                relation_words: written,
            });
        }
        // The ablation check, per role: the role's heads, then as many random heads of the same layers.
        progress.message("ablation check");
        let full_logits = ablated_logits(ctx, &[])?;
        let full_probs: Vec<Vec<f64>> = full_logits.iter().map(|r| crate::rank::softmax(r)).collect();
        let (full, _) = effect(ctx, &full_logits, &full_probs);
        let mut checks = vec![];
        let mut sets: Vec<(String, Vec<(usize, usize)>)> = [Role::Mover, Role::Relation]
            .into_iter()
            .map(|r| (format!("{r:?}").to_lowercase(), heads.iter().filter(|x| x.role == r).map(|x| (x.layer, x.head)).collect()))
            .collect();
        sets.extend(self.sets.iter().cloned());
        for (i, (name, mut set)) in sets.into_iter().enumerate() {
            set.sort_unstable();
            set.dedup();
            if set.is_empty() {
                continue;
            }
            let randoms = random_like(&set, nh, self.random_draws, self.seed.wrapping_add(i as u64));
            progress.start(1 + randoms.len() as u64);
            let (e, shift) = effect(ctx, &ablated_logits(ctx, &set)?, &full_probs);
            progress.advance(1);
            let ablated = with_rising(ctx, e, &shift);
            // The random sets' mean effect and mean probability shift.
            let mut random = Effect { mean_rank: 0.0, hit_at_1: 0.0, mean_target_prob: 0.0, mean_delta_log_prob: 0.0, rising: vec![] };
            let mut shift = vec![0f64; full_probs[0].len()];
            let k = randoms.len().max(1) as f64;
            for rs in &randoms {
                let (e, s) = effect(ctx, &ablated_logits(ctx, rs)?, &full_probs);
                progress.advance(1);
                random.mean_rank += e.mean_rank / k;
                random.hit_at_1 += e.hit_at_1 / k;
                random.mean_target_prob += e.mean_target_prob / k;
                random.mean_delta_log_prob += e.mean_delta_log_prob / k;
                shift.iter_mut().zip(&s).for_each(|(x, y)| *x += y / k);
            }
            checks.push(AblationCheck {
                set: name,
                heads: set.iter().map(|&(l, h)| format!("a{l}.h{h}")).collect(),
                ablated,
                random: with_rising(ctx, random, &shift),
                random_draws: randoms.len(),
            });
        }
        let ablation = ctx.circuit.as_ref().map_or("zero".to_string(), |c| c.ablation.to_string());
        Ok(Report {
            model: model.name.clone(),
            n_facts: ctx.facts.len(),
            ablation,
            rules: Rules { min_share: MIN_SHARE, min_mixed_share: MIN_MIXED_SHARE, relation_top: RELATION_TOP },
            heads,
            full,
            checks,
        })
    }
}

impl Report {
    /// A text table: one line per head, then the ablation checks.
    pub fn table(&self) -> String {
        let mut out = format!(
            "{} facts · roles: mover/relation need attention share ≥ {} (mover also DLA > 0, relation a relation word among its top {} tokens), mixed ≥ {} on both\n",
            self.n_facts, self.rules.min_share, self.rules.relation_top, self.rules.min_mixed_share
        );
        out.push_str(&format!(
            "{:<9} {:<8} {:>6} {:>6} {:>6} {:>6}  {:>8} {:>8} {:>8}  top tokens\n",
            "head", "role", "subj", "rel", "demo", "other", "DLA", "DLA subj", "DLA rel"
        ));
        for h in &self.heads {
            let toks: Vec<String> = h.top_tokens.iter().take(5).map(|t| format!("{:?}", t.token)).collect();
            out.push_str(&format!(
                "{:<9} {:<8} {:>6.3} {:>6.3} {:>6.3} {:>6.3}  {:>8.3} {:>8.3} {:>8.3}  {}\n",
                h.name,
                format!("{:?}", h.role).to_lowercase(),
                h.attention.subject,
                h.attention.relation,
                h.attention.demonstration,
                h.attention.other,
                h.dla,
                h.dla_by_source.subject,
                h.dla_by_source.relation,
                toks.join(" ")
            ));
        }
        let line = |name: &str, e: &Effect| {
            let rising: Vec<String> = e.rising.iter().take(5).map(|t| format!("{:?} {:+.3}", t.token, t.value)).collect();
            format!(
                "  {:<28} mean rank {:>8.2}  Hit@1 {:.3}  p(target) {:.3}  Δlog p {:+.3}  rising: {}\n",
                name,
                e.mean_rank,
                e.hit_at_1,
                e.mean_target_prob,
                e.mean_delta_log_prob,
                rising.join(", ")
            )
        };
        out.push_str(&format!("\nablation check ({} ablation):\n", self.ablation));
        out.push_str(&line("full model", &self.full));
        for c in &self.checks {
            out.push_str(&line(&format!("{} heads ({})", c.set, c.heads.len()), &c.ablated));
            out.push_str(&line(&format!("random heads ({} draws)", c.random_draws), &c.random));
        }
        out
    }
}
