//! What a circuit does (brief §10): the logit lens ([`lens`]), direct logit attribution ([`dla`]), head
//! roles and the head-ablation check ([`heads`]), and circuit comparison ([`diff`]). Each model analysis is
//! one module behind [`Analysis`]; they share one traced forward pass per fact ([`trace`]).
//!
//! Analyses look at a fact one prompt at a time (a batch of one row): every head's output of every layer is
//! recorded, which at a whole batch would cost gigabytes.
pub mod diff;
pub mod dla;
pub mod heads;
pub mod lens;

use candle_core::Tensor;
use serde::Serialize;

use crate::circuit::CircuitFile;
use crate::data::{Example, Relation, Span, Triple};
use crate::eval::AblationSource;
use crate::graph::Graph;
use crate::intervene::{Ablation, EdgeInputs};
use crate::model::hooks::{Record, Stack};
use crate::model::{Activations, HookPoint, Hooks, Logits, Model};
use crate::progress::Progress;
use crate::tokenizer::Tokenizer;
use crate::{Error, Result};

/// A model analysis over a set of facts.
pub trait Analysis {
    /// What it reports (JSON on stdout).
    type Report: Serialize;
    /// Name as the command line spells it.
    fn name(&self) -> &'static str;
    /// Runs it, reporting one step per fact.
    fn analyse(&self, ctx: &Context, progress: &dyn Progress) -> Result<Self::Report>;
}

/// What an analysis looks at: a model, facts, and optionally a circuit whose ablation it compares against.
pub struct Context<'a> {
    pub model: &'a Model,
    pub tok: &'a Tokenizer,
    pub facts: Vec<Example>,
    pub circuit: Option<CircuitView>,
}

/// Where an analysis's facts come from.
pub enum Facts {
    /// One prompt, with its subject (found in the prompt) and the expected object.
    Prompt { prompt: String, subject: String, object: String },
    /// The facts of a relation file.
    Relation(Relation),
}

/// Which of the facts an analysis looks at, and how they are prompted.
#[derive(Debug, Clone, Copy)]
pub struct FactOptions {
    /// Keep only facts the full model ranks below `k` (decided without demonstrations).
    pub known_only: bool,
    pub k: usize,
    /// At most this many (the first in file order).
    pub max_facts: usize,
    /// Demonstrations prepended to every prompt: from the circuit's discovery facts when a circuit is given,
    /// else from the other facts of the relation.
    pub demonstrations: usize,
    /// Seed of the demonstrations' choice (a circuit's own seed when a circuit is given).
    pub seed: u64,
}

impl<'a> Context<'a> {
    /// The facts (filtered as asked), and the circuit (checked against the model) when one is given. A circuit
    /// under resample ablation keeps only facts with a corruption partner among the relation's facts.
    pub fn new(model: &'a Model, tok: &'a Tokenizer, facts: Facts, filter: FactOptions, circuit: Option<&CircuitFile>) -> Result<Self> {
        if filter.max_facts == 0 {
            return Err(Error::input("the number of facts to analyse must be at least 1"));
        }
        if filter.k == 0 {
            return Err(Error::input("--k must be at least 1 (a rank below 0 is no rank)"));
        }
        // The circuit is read against the model (its shape, then every edge) before any fact is run: a circuit
        // of another model is refused as such, not after the known-fact filter.
        let kept = circuit
            .map(|c| -> Result<(Graph, Vec<bool>)> {
                let graph = Graph::new(&model.cfg);
                let removed = c.removed(&graph, &model.cfg)?;
                Ok((graph, removed))
            })
            .transpose()?;
        let (mut facts, pool, label) = match facts {
            Facts::Prompt { prompt, subject, object } => {
                let t = Triple { subject, relation: String::new(), object, template: String::new(), prompt: Some(prompt) };
                let e = crate::data::example(&t, tok)?;
                (vec![e.clone()], vec![e], "the prompt".to_string())
            }
            Facts::Relation(rel) => {
                let all = rel.examples(tok)?;
                (all.clone(), all, format!("relation `{}`", rel.name))
            }
        };
        if filter.demonstrations > 0 && circuit.is_none() && pool.len() < 2 {
            return Err(Error::input("demonstrations need other facts: give --triples or a --circuit (its discovery facts)"));
        }
        if filter.known_only {
            facts = crate::rank::known(model, facts, filter.k)?;
            if facts.is_empty() {
                return Err(Error::input(format!("{label}: the model knows none of the facts (rank < {})", filter.k)));
            }
        }
        facts.truncate(filter.max_facts);
        if filter.demonstrations > 0 {
            let from: Vec<Triple> = match circuit {
                Some(c) => c.run.examples.clone(),
                None => pool.iter().map(|e| e.triple.clone()).collect(),
            };
            if circuit.is_some_and(|c| c.run.ablation == Ablation::Resample) {
                return Err(Error::input("demonstrations with resample ablation are not supported (use mean or zero ablation)"));
            }
            facts = crate::data::in_context(facts, &from, filter.demonstrations, filter.seed, tok)?;
        }
        let circuit = match circuit.zip(kept) {
            Some((file, (graph, removed))) => Some(CircuitView::new(model, tok, file, graph, removed, &mut facts, &pool)?),
            None => None,
        };
        Ok(Context { model, tok, facts, circuit })
    }
}

/// A circuit ready to run on the context's facts: its removed edges and the values they carry.
pub struct CircuitView {
    pub graph: Graph,
    pub removed: Vec<bool>,
    pub ablation: Ablation,
    /// Indexed like the context's facts.
    pub values: AblationSource,
}

impl CircuitView {
    /// The circuit of `file` on `facts` (which must be facts of the circuit's model), its edges already read
    /// on the model's `graph` as `removed` ([`CircuitFile::removed`]): mean ablation takes the means of the
    /// circuit's own reference prompts (`RunInfo::mean_prompts`); resample ablation pairs every fact with a
    /// partner from `pool` (same template and token length), and `facts` keeps only those that have one.
    pub fn new(
        model: &Model,
        tok: &Tokenizer,
        file: &CircuitFile,
        graph: Graph,
        removed: Vec<bool>,
        facts: &mut Vec<Example>,
        pool: &[Example],
    ) -> Result<CircuitView> {
        let values = match file.run.ablation {
            Ablation::Zero => AblationSource::Zero,
            Ablation::Mean => AblationSource::mean_of_prompts(model, &file.run.mean_prompts(tok)?)?,
            Ablation::Resample => {
                let partners = crate::split::partners(facts, pool, file.run.seed);
                let (kept, corrupt): (Vec<Example>, Vec<Vec<u32>>) =
                    facts.iter().zip(partners).filter_map(|(e, p)| p.map(|p| (e.clone(), p.tokens.clone()))).unzip();
                if kept.is_empty() {
                    return Err(Error::input("no fact has a same-length partner for the circuit's resample ablation"));
                }
                *facts = kept;
                AblationSource::Resample(corrupt)
            }
        };
        Ok(CircuitView { graph, removed, ablation: file.run.ablation, values })
    }

    /// Whether the edge from dense sender `s` to the `logits` receiver is kept.
    fn keeps_to_logits(&self, s: usize) -> bool {
        let r = self.graph.logits_receiver();
        !self.removed[self.graph.edges_into[r][s]]
    }
}

/// Which source class each position of `e` counts in for attention shares and source-split attribution: the
/// example's spans, except that a first position holding a template token counts as `other`. Most models
/// park attention on the first position whatever it holds (an attention sink); counting it as a relation word
/// would make nearly every head a "relation head".
pub fn sources(e: &Example) -> Vec<Span> {
    let mut s = e.spans.clone();
    s.resize(e.tokens.len(), Span::Other);
    if s.first() == Some(&Span::Relation) {
        s[0] = Span::Other;
    }
    s
}

/// One fact's forward pass, with what every analysis reads.
pub struct Trace {
    /// One row: residual stream, MLP outputs, and every layer's head outputs, patterns and values.
    pub acts: Activations,
    /// The model's (or the circuit's) logits at the last position, `[V]`.
    pub logits: Vec<f32>,
    /// What the `logits` receiver reads from the embedding, `[T, D]`: under a circuit, the live output when the
    /// edge `input->logits` is kept, its ablated value when removed.
    pub embed: Tensor,
    /// Per layer, what the `logits` receiver reads from each head, `[H, T, D]` (no bias).
    pub heads: Vec<Tensor>,
    /// Per layer, the attention block as the `logits` receiver reads it (the heads plus `b_O`), `[T, D]`.
    pub attn: Vec<Tensor>,
    /// Per layer, what the `logits` receiver reads from the MLP, `[T, D]`.
    pub mlps: Vec<Tensor>,
}

impl Trace {
    /// The `logits` receiver's input accumulated block by block, `[T, D]` each: after the embedding, then after
    /// each layer's attention and MLP (`1 + 2L` points). Without a circuit these are the residual stream itself
    /// (bit for bit); the last one is what the final norm reads.
    pub fn cumulative(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out = vec![("embed".to_string(), self.embed.clone())];
        let mut x = self.embed.clone();
        for (l, (a, m)) in self.attn.iter().zip(&self.mlps).enumerate() {
            x = (&x + a)?;
            out.push((format!("a{l}"), x.clone()));
            x = (&x + m)?;
            out.push((format!("m{l}"), x.clone()));
        }
        Ok(out)
    }

    /// The final residual at the last position, `[D]`.
    pub fn final_last(&self) -> Result<Tensor> {
        let x = self.cumulative()?.pop().map(|(_, x)| x).ok_or_else(|| Error::bug("empty trace"))?;
        let t = x.dim(0)?;
        Ok(x.get(t - 1)?)
    }
}

/// Runs fact `i` of `ctx` (under the context's circuit when `circuit`), recording what analyses read.
pub fn trace(ctx: &Context, i: usize, circuit: bool) -> Result<Trace> {
    let model = ctx.model;
    let fact = &ctx.facts[i];
    let batch = model.batch(std::slice::from_ref(&fact.tokens))?;
    let record = Record(|p| matches!(p, HookPoint::HeadOut(_) | HookPoint::Pattern(_) | HookPoint::V(_) | HookPoint::AttnOut(_)));
    let view = if circuit { ctx.circuit.as_ref() } else { None };
    let ablated = match view {
        Some(v) => v.values.values(model, &[i], batch.seq_len)?,
        None => None,
    };
    let edges = view.map(|v| EdgeInputs::new(&v.graph, vec![v.removed.as_slice()], ablated.as_ref(), 1));
    let mut clients: Vec<&dyn Hooks> = vec![&record];
    if let Some(e) = &edges {
        clients.push(e);
    }
    let (acts, logits) = model.run(&batch, &Stack(clients), Logits::Last)?;
    let logits = logits.get(0)?.to_vec1::<f32>()?;
    let row = |t: &Tensor| -> Result<Tensor> { Ok(t.get(0)?) };
    let n_layers = model.cfg.n_layers;
    let mut heads = Vec::with_capacity(n_layers);
    let mut attn = Vec::with_capacity(n_layers);
    let mut mlps = Vec::with_capacity(n_layers);
    let embed;
    match view {
        None => {
            embed = row(&acts.embed)?;
            for l in 0..n_layers {
                heads.push(acts.heads(l)?.narrow(1, 0, 1)?.squeeze(1)?);
                attn.push(row(&acts.expect(HookPoint::AttnOut(l))?)?);
                mlps.push(row(&acts.mlps[l])?);
            }
        }
        Some(v) => {
            // Kept edges carry the live output, removed ones the ablated value (zero without ablated values).
            let pick = |s: usize, live: Tensor, abl: Option<Tensor>| -> Result<Tensor> {
                Ok(match (v.keeps_to_logits(s), abl) {
                    (true, _) => live,
                    (false, Some(a)) => a,
                    (false, None) => live.zeros_like()?,
                })
            };
            embed = pick(0, row(&acts.embed)?, ablated.as_ref().map(|a| row(&a.embed)).transpose()?)?;
            for l in 0..n_layers {
                let live = acts.heads(l)?.narrow(1, 0, 1)?.squeeze(1)?; // [H, T, D]
                let abl = ablated.as_ref().map(|a| -> Result<Tensor> { Ok(a.heads(l)?.narrow(1, 0, 1)?.squeeze(1)?) }).transpose()?;
                let per_head = (0..model.cfg.n_heads)
                    .map(|h| pick(v.graph.head_sender(l, h), live.get(h)?, abl.as_ref().map(|a| a.get(h)).transpose()?))
                    .collect::<Result<Vec<_>>>()?;
                let hv = Tensor::stack(&per_head, 0)?;
                attn.push(hv.sum(0)?.broadcast_add(&model.weights.layers[l].attn.b_o)?);
                heads.push(hv);
                mlps.push(pick(v.graph.mlp_sender(l), row(&acts.mlps[l])?, ablated.as_ref().map(|a| row(&a.mlps[l])).transpose()?)?);
            }
        }
    }
    Ok(Trace { acts, logits, embed, heads, attn, mlps })
}

/// `f` of every fact's trace, in fact order (facts spread over kcirc's threads a few at a time, one step of
/// `progress` per fact).
pub fn traces_map<T: Send>(
    ctx: &Context,
    circuit: bool,
    progress: &dyn Progress,
    f: impl Fn(usize, &Trace) -> Result<T> + Sync,
) -> Result<Vec<T>> {
    let idx: Vec<usize> = (0..ctx.facts.len()).collect();
    let mut out = Vec::with_capacity(idx.len());
    for chunk in idx.chunks(crate::parallel::threads().max(1)) {
        let done = crate::parallel::map(chunk, |&i| -> Result<T> { f(i, &trace(ctx, i, circuit)?) });
        progress.advance(chunk.len() as u64);
        for r in done {
            out.push(r?);
        }
    }
    Ok(out)
}

/// The text of a token, for reports.
pub fn token(tok: &Tokenizer, id: u32) -> String {
    tok.token_text(id)
}
