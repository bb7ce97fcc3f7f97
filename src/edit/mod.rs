//! Knowledge editing (brief §11): change one fact's answer by rewriting one MLP's output projection — ROME's
//! rank-one update ([`rome`]) or fine-tuning that one matrix ([`ft`], FT-M and FT-L) — and measure what the
//! edit did ([`measure`]: reliability, generalization, locality). Every editor is one module behind [`Editor`];
//! all read and write the model through hook points and `Model::with_mlp_out_weight`.
pub mod circuit;
pub mod ft;
pub mod measure;
pub mod rome;

use candle_core::{DType, Device, Tensor, D};
use serde::{Deserialize, Serialize};

use crate::data::{answer_token, Example, Source, Span, Triple};
use crate::model::{Batch, Config, EditRecord, Model};
use crate::progress::Progress;
use crate::tokenizer::Tokenizer;
use crate::{Error, Result};

/// One edit request: the fact `template` filled with `subject`, whose answer is `object` now and should become
/// `new_object`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub subject: String,
    pub template: String,
    pub object: String,
    pub new_object: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub relation: String,
}

impl Request {
    /// The request as a fact with its current answer.
    pub fn triple(&self) -> Triple {
        Triple {
            subject: self.subject.clone(),
            relation: self.relation.clone(),
            object: self.object.clone(),
            template: self.template.clone(),
            prompt: None,
        }
    }
}

/// Edit requests, each with the line it was read from.
pub type NumberedRequests = Vec<(usize, Request)>;

/// Reads edit requests from JSON Lines, each with its line number; an error names the line.
pub fn parse_requests(text: &str, label: &str) -> Result<NumberedRequests> {
    let mut out = vec![];
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let r: Request = serde_json::from_str(line).map_err(|e| Error::input(format!("{label}: line {}: {e}", i + 1)))?;
        if !r.template.contains("{}") {
            return Err(Error::input(format!("{label}: line {}: template {:?} has no `{{}}` for the subject", i + 1, r.template)));
        }
        out.push((i + 1, r));
    }
    if out.is_empty() {
        return Err(Error::input(format!("{label}: no edit requests")));
    }
    Ok(out)
}

/// Tokenises requests read by [`parse_requests`] from `label` (`None`: given on the command line); an error
/// (an object or new object that tokenizes to nothing, an empty subject) names the file and the line.
pub fn prepare_requests(requests: &[(usize, Request)], label: Option<&str>, tok: &Tokenizer) -> Result<Vec<Prepared>> {
    requests
        .iter()
        .map(|(line, r)| {
            Prepared::new(r, tok).map_err(|e| match label {
                Some(l) if !e.is_bug() => Error::input(format!("{l}: line {line}: {e}")),
                _ => e,
            })
        })
        .collect()
}

/// A request ready for the model: the prompt (with its spans), the old and new answers' tokens.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub request: Request,
    /// The edit prompt with the current object as its target.
    pub prompt: Example,
    /// Tokens of `" " + new_object` (at least one).
    pub new_tokens: Vec<u32>,
    /// First token of the current object.
    pub old_token: u32,
}

impl Prepared {
    /// Tokenises `r`; fails on an object or new object that tokenizes to nothing, a subject not in the prompt,
    /// or an empty subject.
    pub fn new(r: &Request, tok: &Tokenizer) -> Result<Prepared> {
        let prompt = crate::data::example(&r.triple(), tok)?;
        answer_token(tok, &r.new_object)?;
        let new_tokens = tok.encode_plain(&format!(" {}", r.new_object.trim_start()))?;
        Ok(Prepared { request: r.clone(), old_token: prompt.target, prompt, new_tokens })
    }

    /// The first token of the new object (what reliability is scored by).
    pub fn new_token(&self) -> u32 {
        self.new_tokens[0]
    }

    /// Whether the request asks for the answer the fact already has (the same answer token): nothing to edit.
    pub fn is_noop(&self) -> bool {
        self.new_token() == self.old_token
    }
}

/// The position of the subject's last token in `e`.
pub fn subject_last(e: &Example) -> Result<usize> {
    e.positions(Span::Subject).last().copied().ok_or_else(|| Error::input(format!("no subject tokens in {:?}", e.triple.subject)))
}

/// What an editor changed: layer `layer`'s MLP output projection, now `weight` (`[d_mlp, D]`).
#[derive(Debug, Clone)]
pub struct Update {
    pub layer: usize,
    pub weight: Tensor,
    /// Optimisation steps taken and the last loss.
    pub steps: usize,
    pub loss: f64,
}

impl Update {
    /// The model with the update applied.
    pub fn apply(&self, model: &Model) -> Result<Model> {
        model.with_mlp_out_weight(self.layer, self.weight.clone())
    }
}

/// A knowledge editor.
pub trait Editor {
    /// `rome`, `ft-m`, `ft-l`.
    fn name(&self) -> &'static str;
    /// The layer whose MLP output projection it rewrites.
    fn layer(&self) -> usize;
    /// The update that makes `model` answer `request.new_object`.
    fn edit(&self, model: &Model, tok: &Tokenizer, request: &Prepared, progress: &dyn Progress) -> Result<Update>;
    /// Optimisation steps at most.
    fn max_steps(&self) -> usize;
    /// Fine-tuning's L∞ radius (none for ROME).
    fn clamp(&self) -> Option<f64> {
        None
    }
}

/// Which editor, and its settings (`kcirc edit`'s flags; `None`: the editor's default).
#[derive(Debug, Clone, Default)]
pub struct EditorOptions {
    /// `rome`, `ft-m` or `ft-l`.
    pub method: String,
    pub layer: Option<usize>,
    pub steps: Option<usize>,
    /// FT: the L∞ radius.
    pub clamp: Option<f64>,
    /// ROME: the context prefixes' seed.
    pub seed: u64,
    /// ROME: a text to estimate the keys' covariance from (`C = I` without).
    pub cov_text: Option<String>,
}

impl EditorOptions {
    /// Checks what can be checked without a model: the method and the clamp.
    pub fn check(&self) -> Result<()> {
        if !METHODS.contains(&self.method.as_str()) {
            return Err(Error::input(format!("unknown edit method `{}` (available: {})", self.method, METHODS.join(", "))));
        }
        if self.clamp.is_some_and(|c| !(c > 0.0 && c.is_finite())) {
            return Err(Error::input("the FT clamp must be a positive number"));
        }
        if self.steps == Some(0) {
            return Err(Error::input("the editor needs at least 1 step"));
        }
        Ok(())
    }

    /// The editor these options describe, on `model` (the layer defaults to [`default_layer`]).
    pub fn editor(&self, model: &Model, tok: &Tokenizer) -> Result<Box<dyn Editor>> {
        self.check()?;
        let layer = self.layer.unwrap_or_else(|| default_layer(&model.cfg));
        check_layer(layer, &model.cfg)?;
        Ok(match self.method.as_str() {
            "rome" => {
                let mut r = rome::Rome::new(model, tok, layer, self.seed)?;
                if let Some(s) = self.steps {
                    r.steps = s;
                }
                if let Some(text) = &self.cov_text {
                    r = r.with_covariance_from(model, tok, text)?;
                }
                Box::new(r)
            }
            m => {
                let mut f = ft::FineTune::new(model, layer, m == "ft-l")?;
                if let Some(s) = self.steps {
                    f.steps = s;
                }
                if let Some(c) = self.clamp {
                    f.clamp = c;
                }
                Box::new(f)
            }
        })
    }
}

/// Edits to apply in memory to a loaded model (`--edits` on discover, eval, lens, heads, curve): the requests,
/// the file they came from, and the editor.
#[derive(Debug, Clone)]
pub struct EditSpec {
    /// The requests with their line numbers.
    pub requests: NumberedRequests,
    pub source: Source,
    pub options: EditorOptions,
}

impl EditSpec {
    /// The requests in `text` (JSON Lines, read from `path`) applied with `options` (no covariance text: the
    /// record could not bring it back).
    pub fn new(text: &str, path: &str, options: EditorOptions) -> Result<EditSpec> {
        options.check()?;
        if options.cov_text.is_some() {
            return Err(Error::input("edits applied in memory use C = I (no covariance text)"));
        }
        Ok(EditSpec { requests: parse_requests(text, path)?, source: Source::new(path, text.as_bytes()), options })
    }

    /// The edits a file records, with the requests read again from `text` (at `path`, where the file is now);
    /// fails when the requests changed since.
    pub fn from_record(record: &EditRecord, text: &str, path: &str) -> Result<EditSpec> {
        let now = Source::new(path, text.as_bytes());
        if now.digest != record.requests.digest {
            return Err(Error::input(format!(
                "{path}: the edit requests have changed since they were recorded ({} then, {} now)",
                record.requests.digest, now.digest
            )));
        }
        let options = EditorOptions {
            method: record.method.clone(),
            layer: Some(record.layer),
            steps: Some(record.steps),
            clamp: record.clamp,
            seed: record.seed,
            cov_text: None,
        };
        EditSpec::new(text, path, options)
    }
}

/// Applies `request` to `model` with `editor`: the edited model, why nothing was edited (a request for the
/// current answer), the steps taken and the last loss.
pub fn apply_one(
    model: &Model,
    tok: &Tokenizer,
    editor: &dyn Editor,
    request: &Prepared,
    progress: &dyn Progress,
) -> Result<(Model, Option<String>, usize, f64)> {
    if request.is_noop() {
        return Ok((model.clone(), Some("the new object is the current answer".to_string()), 0, 0.0));
    }
    let u = editor.edit(model, tok, request, progress)?;
    Ok((u.apply(model)?, None, u.steps, u.loss))
}

/// `model` with `spec`'s requests applied one after another (as `kcirc edit` leaves it), recording them in
/// [`Model::edits`].
pub fn apply(model: &Model, tok: &Tokenizer, spec: &EditSpec, progress: &dyn Progress) -> Result<Model> {
    let editor = spec.options.editor(model, tok)?;
    let prepared = prepare_requests(&spec.requests, Some(&spec.source.path), tok)?;
    let mut current = model.clone();
    for (i, req) in prepared.iter().enumerate() {
        progress.message(&format!("edit {}/{}: {} → {}", i + 1, prepared.len(), req.request.subject, req.request.new_object));
        current = apply_one(&current, tok, editor.as_ref(), req, progress)?.0;
    }
    progress.info(&format!(
        "applied {} edit(s) from {} in memory ({}, layer {})",
        prepared.len(),
        spec.source.path,
        editor.name(),
        editor.layer()
    ));
    current.edits = Some(EditRecord {
        requests: spec.source.clone(),
        n_requests: prepared.len(),
        method: editor.name().to_string(),
        layer: editor.layer(),
        steps: editor.max_steps(),
        seed: spec.options.seed,
        clamp: editor.clamp(),
    });
    Ok(current)
}

/// Why a circuit discovered on a model with edits `circuit` does not describe a model with edits `model`
/// (`None` when both have the same edits: the same requests by digest, method and settings; paths may differ).
pub fn edits_differ(circuit: Option<&EditRecord>, model: Option<&EditRecord>) -> Option<String> {
    let key = |r: &EditRecord| (r.requests.digest.clone(), r.method.clone(), r.layer, r.steps, r.seed, r.clamp.map(f64::to_bits));
    let describe = |r: Option<&EditRecord>| match r {
        Some(r) => format!("with {} edit(s) from {} ({}, layer {})", r.n_requests, r.requests.path, r.method, r.layer),
        None => "without edits".to_string(),
    };
    (circuit.map(key) != model.map(key))
        .then(|| format!("the circuit was discovered on the model {}, but this model is {}", describe(circuit), describe(model)))
}

/// Loads `name` onto `device` and applies `edits` to it, if any: the one way every command gets its model.
pub fn load(name: &str, device: &Device, edits: Option<&EditSpec>, progress: &dyn Progress) -> Result<(Model, Tokenizer)> {
    let (model, tok) = crate::model::load(name, device)?;
    let model = match edits {
        Some(spec) => apply(&model, &tok, spec, progress)?,
        None => model,
    };
    Ok((model, tok))
}

/// The editors, as `--method` names them.
pub const METHODS: [&str; 3] = ["rome", "ft-m", "ft-l"];

/// The default layer to edit: a third of the depth for GPT-2 (ROME's GPT-2-medium 8 of 24, -large 12 of 36),
/// 5/32 of it for Llama and Qwen2 (EasyEdit's Llama-7B layer 5 of 32: SmolLM2-135M layer 5 of 30, Qwen2.5-0.5B 4 of 24).
pub fn default_layer(cfg: &Config) -> usize {
    let l = match cfg.family.as_str() {
        "llama" | "qwen2" => (cfg.n_layers * 5 + 16) / 32,
        _ => cfg.n_layers / 3,
    };
    l.min(cfg.n_layers - 1)
}

/// Checks a layer against the model.
pub fn check_layer(layer: usize, cfg: &Config) -> Result<()> {
    if layer >= cfg.n_layers {
        return Err(Error::input(format!("layer {layer} is out of range: the model has layers 0 to {}", cfg.n_layers - 1)));
    }
    Ok(())
}

/// Adam on one tensor.
pub(crate) struct Adam {
    lr: f64,
    m: Tensor,
    v: Tensor,
    t: i32,
}

impl Adam {
    pub(crate) fn new(param: &Tensor, lr: f64) -> Result<Adam> {
        Ok(Adam { lr, m: param.zeros_like()?, v: param.zeros_like()?, t: 0 })
    }

    /// `param` after one step against `grad`.
    pub(crate) fn step(&mut self, param: &Tensor, grad: &Tensor) -> Result<Tensor> {
        let (b1, b2, eps) = (0.9, 0.999, 1e-8);
        self.t += 1;
        self.m = ((&self.m * b1)? + (grad * (1.0 - b1))?)?;
        self.v = ((&self.v * b2)? + (grad.sqr()? * (1.0 - b2))?)?;
        let m_hat = (&self.m / (1.0 - b1.powi(self.t)))?;
        let v_hat = (&self.v / (1.0 - b2.powi(self.t)))?;
        let update = (m_hat / (v_hat.sqrt()? + eps)?)?;
        Ok((param - (update * self.lr)?)?)
    }
}

/// Prompts scored on answer tokens by teacher forcing: each row is a prompt followed by all but the last answer
/// token; `positions` (flat indices into the padded batch's `[B·T]`) predict `targets`.
pub(crate) struct Forced {
    pub batch: Batch,
    pub positions: Tensor,
    pub targets: Tensor,
    /// Per row, the padded index of the prompt's last token.
    pub last: Vec<usize>,
}

impl Forced {
    /// `prompts` followed by `answer` (all its tokens, or only the first with `first_only`).
    pub(crate) fn new(model: &Model, prompts: &[Vec<u32>], answer: &[u32], first_only: bool) -> Result<Forced> {
        let answer = if first_only { &answer[..1] } else { answer };
        let rows: Vec<Vec<u32>> = prompts.iter().map(|p| [p.as_slice(), &answer[..answer.len() - 1]].concat()).collect();
        let batch = model.batch(&rows)?;
        let t = batch.seq_len;
        let (mut positions, mut targets, mut last) = (vec![], vec![], vec![]);
        for (r, p) in prompts.iter().enumerate() {
            let pad = t - rows[r].len();
            last.push(pad + p.len() - 1);
            for (j, &a) in answer.iter().enumerate() {
                positions.push((r * t + pad + p.len() - 1 + j) as u32);
                targets.push(a);
            }
        }
        let dev = &model.device;
        let n = positions.len();
        Ok(Forced { batch, positions: Tensor::from_vec(positions, n, dev)?, targets: Tensor::from_vec(targets, (n, 1), dev)?, last })
    }

    /// Mean negative log-likelihood of the answer tokens from all-position logits `[B, T, V]` (differentiable).
    pub(crate) fn nll(&self, logits: &Tensor) -> Result<Tensor> {
        let (b, t, v) = logits.dims3()?;
        let rows = logits.reshape((b * t, v))?.index_select(&self.positions, 0)?;
        let lp = candle_nn::ops::log_softmax(&rows.to_dtype(DType::F32)?, D::Minus1)?;
        Ok(lp.gather(&self.targets, 1)?.mean_all()?.neg()?)
    }
}

/// Counterfactual edit requests drawn from relations: facts whose answer is the model's top-1 (so an edit has
/// something to change), each given another answer of its relation (a different first token), seeded; the
/// relations take turns.
pub fn counterfactuals(
    model: &Model,
    tok: &Tokenizer,
    relations: &[crate::data::Relation],
    count: usize,
    seed: u64,
) -> Result<Vec<Request>> {
    if count == 0 {
        return Err(Error::input("--count must be at least 1 (counterfactual requests to draw)"));
    }
    let mut pools = vec![];
    for rel in relations {
        let ex = rel.examples(tok)?;
        let o = crate::rank::full_model_outcomes(model, &ex)?;
        let known: Vec<&Example> = ex.iter().zip(&o).filter(|(_, o)| o.rank == 0).map(|(e, _)| e).collect();
        let mut order = crate::data::shuffled(known.len(), seed ^ (pools.len() as u64).wrapping_mul(0x9E37_79B9));
        order.reverse();
        pools.push((rel, ex.clone(), known.into_iter().cloned().collect::<Vec<_>>(), order));
    }
    let mut out = vec![];
    let mut rng = crate::data::SplitMix64(seed);
    while out.len() < count && pools.iter().any(|p| !p.3.is_empty()) {
        for (rel, all, known, order) in pools.iter_mut() {
            if out.len() == count {
                break;
            }
            let Some(i) = order.pop() else { continue };
            let fact = &known[i];
            let others: Vec<&Example> = all.iter().filter(|e| e.target != fact.target).collect();
            if others.is_empty() {
                continue;
            }
            let new = others[rng.below(others.len())];
            out.push(Request {
                subject: fact.triple.subject.clone(),
                template: fact.triple.template.clone(),
                object: fact.triple.object.clone(),
                new_object: new.triple.object.clone(),
                relation: rel.name.clone(),
            });
        }
    }
    if out.len() < count {
        return Err(Error::input(format!(
            "only {} counterfactual edits can be drawn: the model's top-1 answer is right for too few facts",
            out.len()
        )));
    }
    Ok(out)
}
