//! What an edit did (EasyEdit's names): **reliability** (the edit prompt now gives the new object),
//! **generalization** (the relation's other templates give it too), **locality** (other facts keep their
//! answers: other subjects of the same relation, and facts of other relations — the fraction whose top-1 is
//! unchanged and the mean KL of their next-token distributions from the unedited model's).
//!
//! Requests are applied one after another (sequential editing: each is measured right after its edit, and
//! every one again on the final model) or each alone on the unedited model (independent editing).
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Editor, Prepared, Request};
use crate::data::{Example, Relation, Triple};
use crate::model::{Logits, Model};
use crate::progress::Progress;
use crate::rank::rank_in;
use crate::tokenizer::Tokenizer;
use crate::Result;

/// The old and new answers on one prompt.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Probe {
    pub new_rank: usize,
    pub new_prob: f64,
    pub old_rank: usize,
    pub old_prob: f64,
}

impl Probe {
    pub fn new_top1(&self) -> bool {
        self.new_rank == 0
    }
}

/// The relation's other templates (or the `--paraphrases` that apply) with the edited subject.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Generalization {
    /// Prompts asked (the edit prompt itself left out).
    pub n_templates: usize,
    /// Fraction of them whose top-1 is the new object.
    pub new_top1: f64,
    pub mean_new_rank: f64,
}

/// Other facts after the edit, against the unedited model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Locality {
    pub n_facts: usize,
    /// Fraction whose top-1 token did not change.
    pub unchanged: f64,
    /// Mean KL(unedited ‖ edited) of the next-token distributions, nats.
    pub mean_kl: f64,
}

/// One request's measurements.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measured {
    pub reliability: Probe,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generalization: Option<Generalization>,
    /// Other subjects of the request's relation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locality_relation: Option<Locality>,
    /// Facts of the other relations.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locality_other: Option<Locality>,
}

/// One request: before, right after its edit, and on the final model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestReport {
    pub request: Request,
    /// Why nothing was edited, when nothing was (the new object is the current one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    pub steps: usize,
    pub loss: f64,
    pub before: Probe,
    pub after: Measured,
    #[serde(rename = "final")]
    pub at_end: Measured,
}

/// Means over requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Fraction of edit prompts whose top-1 is the new object.
    pub reliability: f64,
    pub generalization: Option<f64>,
    pub locality_relation: Option<f64>,
    pub locality_other: Option<f64>,
    pub mean_kl_relation: Option<f64>,
    pub mean_kl_other: Option<f64>,
}

/// The `kcirc edit` report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub model: String,
    pub method: String,
    pub layer: usize,
    /// Sequential (each edit on top of the earlier ones) or independent (each on the unedited model).
    #[serde(default)]
    pub mode: Mode,
    pub requests: Vec<RequestReport>,
    /// Means of each request measured right after its edit.
    pub after_each: Summary,
    /// Means of every request measured on the final model.
    #[serde(rename = "final")]
    pub at_end: Summary,
    /// Per request, the lens of the new and old object before and after all edits (`kcirc edit --lens`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lens: Option<Vec<super::circuit::EditLens>>,
    /// The relation's circuit before and after (`kcirc edit --circuit`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub circuit: Option<serde_json::Value>,
}

/// One line of a `--paraphrases` file: a template (`{}` for the subject) or a full prompt (which must contain
/// `subject`) that should give a request's new object too. A line applies to every request of its `subject`
/// and `relation` where it names them, to every request where it does not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Paraphrase {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relation: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
}

impl Paraphrase {
    fn applies(&self, r: &Request) -> bool {
        self.subject.as_ref().map_or(true, |s| s.trim() == r.subject.trim()) && self.relation.as_ref().map_or(true, |x| *x == r.relation)
    }

    /// The fact `r` asked through this paraphrase.
    fn triple(&self, r: &Request) -> Triple {
        match (&self.template, &self.prompt) {
            (Some(t), _) => Triple { template: t.clone(), ..r.triple() },
            (None, p) => Triple { prompt: p.clone(), ..r.triple() },
        }
    }
}

/// Reads a `--paraphrases` file (JSON Lines of [`Paraphrase`]: exactly one of `template` and `prompt` per line,
/// a template with `{}`, a prompt with its `subject` in it); an error names the line.
pub fn parse_paraphrases(text: &str, label: &str) -> Result<Vec<Paraphrase>> {
    let mut out = vec![];
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |why: String| crate::Error::input(format!("{label}: line {}: {why}", i + 1));
        let p: Paraphrase = serde_json::from_str(line).map_err(|e| bad(e.to_string()))?;
        match (&p.template, &p.prompt, &p.subject) {
            (Some(_), Some(_), _) | (None, None, _) => return Err(bad("give exactly one of `template` and `prompt`".into())),
            (Some(t), None, _) if !t.contains("{}") => return Err(bad(format!("template {t:?} has no `{{}}` for the subject"))),
            (None, Some(_), None) => return Err(bad("a `prompt` needs the `subject` it asks about".into())),
            (None, Some(q), Some(s)) if s.trim().is_empty() || !q.contains(s.trim()) => {
                return Err(bad(format!("subject {s:?} not found in the prompt {q:?}")))
            }
            _ => out.push(p),
        }
    }
    if out.is_empty() {
        return Err(crate::Error::input(format!("{label}: no paraphrases")));
    }
    Ok(out)
}

/// What the requests are measured on.
pub struct Probes {
    /// Per relation name, its templates (for generalization).
    pub templates: BTreeMap<String, Vec<String>>,
    /// Paraphrases for generalization instead of the templates (`--paraphrases`).
    pub paraphrases: Option<Vec<Paraphrase>>,
    /// Facts for locality (the requests' own subjects are left out per request).
    pub facts: Vec<Example>,
    /// The unedited model's next-token distributions of `facts`, `[N, V]` probabilities, and top-1 tokens.
    probs: Vec<Vec<f32>>,
    top: Vec<usize>,
}

impl Probes {
    /// Locality facts: at most `per_relation` facts of each relation (file order), measured on `model` (the
    /// unedited one); `templates` per relation name for generalization.
    pub fn new(
        model: &Model,
        tok: &Tokenizer,
        relations: &[Relation],
        templates: BTreeMap<String, Vec<String>>,
        per_relation: usize,
    ) -> Result<Probes> {
        let mut facts = vec![];
        for r in relations {
            let mut ex = r.examples(tok)?;
            ex.truncate(per_relation);
            facts.extend(ex);
        }
        let (probs, top) = distributions(model, &facts)?;
        Ok(Probes { templates, paraphrases: None, facts, probs, top })
    }

    fn locality(&self, model: &Model, idx: &[usize]) -> Result<Option<Locality>> {
        if idx.is_empty() {
            return Ok(None);
        }
        let ex: Vec<Example> = idx.iter().map(|&i| self.facts[i].clone()).collect();
        let (probs, top) = distributions(model, &ex)?;
        let unchanged = idx.iter().zip(&top).filter(|(&i, &t)| self.top[i] == t).count();
        let kl: f64 = idx.iter().zip(&probs).map(|(&i, q)| kl(&self.probs[i], q)).sum();
        let n = idx.len() as f64;
        Ok(Some(Locality { n_facts: idx.len(), unchanged: unchanged as f64 / n, mean_kl: kl / n }))
    }

    /// Every measurement of `req` on `model`.
    pub fn measure(&self, model: &Model, tok: &Tokenizer, req: &Prepared) -> Result<Measured> {
        let reliability = probe(model, req, &req.prompt.tokens)?;
        // The relation's other templates, or the paraphrases that apply; never the edit prompt itself.
        let asked: Vec<Triple> = match &self.paraphrases {
            Some(ps) => ps.iter().filter(|p| p.applies(&req.request)).map(|p| p.triple(&req.request)).collect(),
            None => self
                .templates
                .get(&req.request.relation)
                .into_iter()
                .flatten()
                .map(|t| Triple { template: t.to_string(), ..req.request.triple() })
                .collect(),
        };
        let mut ranks = vec![];
        for tr in &asked {
            let e = crate::data::example(tr, tok)?;
            if e.tokens != req.prompt.tokens {
                ranks.push(probe(model, req, &e.tokens)?.new_rank);
            }
        }
        let generalization = (!ranks.is_empty()).then(|| Generalization {
            n_templates: ranks.len(),
            new_top1: ranks.iter().filter(|r| **r == 0).count() as f64 / ranks.len() as f64,
            mean_new_rank: ranks.iter().sum::<usize>() as f64 / ranks.len() as f64,
        });
        let other_subject = |e: &Example| e.triple.subject != req.request.subject;
        let same: Vec<usize> = (0..self.facts.len())
            .filter(|&i| self.facts[i].triple.relation == req.request.relation && other_subject(&self.facts[i]))
            .collect();
        let other: Vec<usize> = (0..self.facts.len()).filter(|&i| self.facts[i].triple.relation != req.request.relation).collect();
        Ok(Measured {
            reliability,
            generalization,
            locality_relation: self.locality(model, &same)?,
            locality_other: self.locality(model, &other)?,
        })
    }
}

/// The new and old answers' ranks and probabilities after `tokens`.
fn probe(model: &Model, req: &Prepared, tokens: &[u32]) -> Result<Probe> {
    let logits = model.forward(&model.batch(&[tokens.to_vec()])?)?.get(0)?.to_vec1::<f32>()?;
    let p = crate::rank::softmax(&logits);
    let (n, o) = (req.new_token() as usize, req.old_token as usize);
    Ok(Probe { new_rank: rank_in(&logits, n), new_prob: p[n], old_rank: rank_in(&logits, o), old_prob: p[o] })
}

/// Next-token probabilities and top-1 of each example.
fn distributions(model: &Model, ex: &[Example]) -> Result<(Vec<Vec<f32>>, Vec<usize>)> {
    if ex.is_empty() {
        return Ok((vec![], vec![]));
    }
    let prompts: Vec<Vec<u32>> = ex.iter().map(|e| e.tokens.clone()).collect();
    let logits = model.forward_prompts(&prompts, Logits::Last)?.to_vec2::<f32>()?;
    let top = logits.iter().map(|l| crate::predict::top_k(l, 1)[0]).collect();
    Ok((logits.iter().map(|l| crate::rank::softmax(l).into_iter().map(|p| p as f32).collect()).collect(), top))
}

fn kl(p: &[f32], q: &[f32]) -> f64 {
    p.iter().zip(q).filter(|(a, _)| **a > 0.0).map(|(&a, &b)| a as f64 * ((a as f64).ln() - (b.max(1e-30) as f64).ln())).sum()
}

fn summary(ms: &[&Measured]) -> Summary {
    let n = ms.len().max(1) as f64;
    let mean_of = |f: &dyn Fn(&Measured) -> Option<f64>| -> Option<f64> {
        let v: Vec<f64> = ms.iter().filter_map(|m| f(m)).collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    };
    Summary {
        reliability: ms.iter().filter(|m| m.reliability.new_top1()).count() as f64 / n,
        generalization: mean_of(&|m| m.generalization.as_ref().map(|g| g.new_top1)),
        locality_relation: mean_of(&|m| m.locality_relation.as_ref().map(|l| l.unchanged)),
        locality_other: mean_of(&|m| m.locality_other.as_ref().map(|l| l.unchanged)),
        mean_kl_relation: mean_of(&|m| m.locality_relation.as_ref().map(|l| l.mean_kl)),
        mean_kl_other: mean_of(&|m| m.locality_other.as_ref().map(|l| l.mean_kl)),
    }
}

/// How several requests are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// One after another: each edit on the model that holds the earlier ones (the default).
    #[default]
    Sequential,
    /// Each edit on the unedited model and measured alone (EasyEdit's per-edit numbers).
    Independent,
}

/// Applies `requests` with `editor` — one after another ([`Mode::Sequential`]: each measured right after its
/// edit and all again on the final model), or each on the unedited `model` ([`Mode::Independent`]: "final" is
/// the same as "after") — and reports. Returns the edited models (sequential: the final one; independent: one
/// per request) and the report. A request whose new object is its current answer is skipped.
pub fn run(
    model: &Model,
    tok: &Tokenizer,
    editor: &dyn Editor,
    requests: &[Prepared],
    probes: &Probes,
    mode: Mode,
    progress: &dyn Progress,
) -> Result<(Vec<Model>, Report)> {
    let mut current = model.clone();
    let mut edited = vec![];
    let mut partial = vec![];
    for (i, req) in requests.iter().enumerate() {
        progress.message(&format!("edit {}/{}: {} → {}", i + 1, requests.len(), req.request.subject, req.request.new_object));
        if mode == Mode::Independent {
            current = model.clone();
        }
        let before = probe(&current, req, &req.prompt.tokens)?;
        let (next, skipped, steps, loss) = super::apply_one(&current, tok, editor, req, progress)?;
        current = next;
        let after = probes.measure(&current, tok, req)?;
        partial.push((req, skipped, steps, loss, before, after));
        if mode == Mode::Independent {
            edited.push(current.clone());
        }
    }
    if mode == Mode::Sequential {
        edited.push(current.clone());
    }
    let mut reports = vec![];
    for (req, skipped, steps, loss, before, after) in partial {
        let at_end = match mode {
            Mode::Sequential => probes.measure(&current, tok, req)?,
            Mode::Independent => after.clone(),
        };
        reports.push(RequestReport { request: req.request.clone(), skipped, steps, loss, before, after, at_end });
    }
    let after_each = summary(&reports.iter().map(|r| &r.after).collect::<Vec<_>>());
    let at_end = summary(&reports.iter().map(|r| &r.at_end).collect::<Vec<_>>());
    let report = Report {
        model: model.name.clone(),
        method: editor.name().into(),
        layer: editor.layer(),
        mode,
        requests: reports,
        after_each,
        at_end,
        lens: None,
        circuit: None,
    };
    Ok((edited, report))
}

/// Every relation's templates (see [`Relation::templates`]), keyed by relation name.
pub fn templates_of(relations: &[Relation]) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in relations {
        let e = out.entry(r.name.clone()).or_default();
        for t in &r.templates {
            if !e.contains(t) {
                e.push(t.clone());
            }
        }
    }
    out
}

impl Report {
    /// Text: one line per request (new object's rank before → after its edit → at the end; generalization;
    /// locality), then the means.
    pub fn table(&self) -> String {
        let how = match self.mode {
            Mode::Sequential => "applied in order",
            Mode::Independent => "each on the unedited model",
        };
        let mut out = format!("{} · layer {} · {} request(s), {how}\n", self.method, self.layer, self.requests.len());
        out.push_str(&format!(
            "{:<28} {:>18}  {:>6} {:>6} {:>6}  {:>6}  {:>8} {:>8}\n",
            "edit", "new rank b/a/end", "steps", "gen", "old", "loc.rel", "loc.oth", "KL oth"
        ));
        let opt = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.3}"));
        for r in &self.requests {
            let name = format!("{} → {}", r.request.subject, r.request.new_object);
            out.push_str(&format!(
                "{:<28} {:>18}  {:>6} {:>6} {:>6}  {:>6}  {:>8} {:>8}{}\n",
                name.chars().take(28).collect::<String>(),
                format!("{}/{}/{}", r.before.new_rank, r.after.reliability.new_rank, r.at_end.reliability.new_rank),
                r.steps,
                opt(r.after.generalization.as_ref().map(|g| g.new_top1)),
                r.after.reliability.old_rank,
                opt(r.after.locality_relation.as_ref().map(|l| l.unchanged)),
                opt(r.after.locality_other.as_ref().map(|l| l.unchanged)),
                opt(r.after.locality_other.as_ref().map(|l| l.mean_kl)),
                r.skipped.as_ref().map_or(String::new(), |s| format!("  (skipped: {s})")),
            ));
        }
        for l in self.lens.iter().flatten() {
            let never = || "never".to_string();
            out.push_str(&format!(
                "lens {}: the edit takes effect at {}; the new object is top-1 from {}\n",
                l.subject,
                l.takes_effect_at.clone().unwrap_or_else(never),
                l.new_top1_from.clone().unwrap_or_else(never)
            ));
        }
        if let Some(c) = &self.circuit {
            out.push_str(&format!("circuit before/after: {c}\n"));
        }
        for (name, s) in [("after each edit", &self.after_each), ("at the end", &self.at_end)] {
            out.push_str(&format!(
                "{name}: reliability {:.3}  generalization {}  locality same relation {} (KL {})  other relations {} (KL {})\n",
                s.reliability,
                opt(s.generalization),
                opt(s.locality_relation),
                opt(s.mean_kl_relation),
                opt(s.locality_other),
                opt(s.mean_kl_other)
            ));
        }
        out
    }
}
