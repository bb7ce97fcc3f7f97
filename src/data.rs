//! Facts: (subject, relation, object) triples with a prompt template, read from kcirc's JSON Lines format or
//! from LRE relation files, and the deterministic discovery/test split.
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::tokenizer::Tokenizer;
use crate::{Error, Result};

/// One fact. The prompt is `template` with `{}` replaced by `subject`, unless `prompt` overrides it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Triple {
    pub subject: String,
    #[serde(default)]
    pub relation: String,
    pub object: String,
    #[serde(default)]
    pub template: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
}

impl Triple {
    /// The prompt text the model sees.
    pub fn prompt_text(&self) -> Result<String> {
        if let Some(p) = &self.prompt {
            return Ok(p.clone());
        }
        if !self.template.contains("{}") {
            return Err(Error::input(format!("template {:?} has no `{{}}` for the subject", self.template)));
        }
        Ok(self.template.replacen("{}", &self.subject, 1))
    }
}

/// The triples of one relation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Relation {
    pub name: String,
    pub triples: Vec<Triple>,
    /// Where each triple was read: its line (JSON Lines) or its sample number (LRE), for error messages.
    #[serde(skip)]
    pub lines: Vec<usize>,
    /// The file it came from, when it came from one.
    #[serde(skip)]
    pub source: Option<Source>,
    /// Every template the relation has: an LRE file's `prompt_templates` and `prompt_templates_zs`, or the
    /// distinct templates of its facts (what editing's generalization is measured on).
    #[serde(skip)]
    pub templates: Vec<String>,
}

/// A relation file as the circuit files record it: enough to read it again and notice that it changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    /// The path as given (`-` for standard input).
    pub path: String,
    /// `fnv1a64:` and the 64-bit FNV-1a hash of the file's bytes, in hex.
    pub digest: String,
}

impl Source {
    pub fn new(path: &str, bytes: &[u8]) -> Source {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for &b in bytes {
            h = (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
        }
        Source { path: path.to_string(), digest: format!("fnv1a64:{h:016x}") }
    }
}

impl Relation {
    /// A relation built in code (no file).
    pub fn new(name: impl Into<String>, triples: Vec<Triple>) -> Relation {
        let lines = (1..=triples.len()).collect();
        let mut templates: Vec<String> = vec![];
        for t in &triples {
            if t.prompt.is_none() && !templates.contains(&t.template) {
                templates.push(t.template.clone());
            }
        }
        Relation { name: name.into(), triples, lines, source: None, templates }
    }

    /// Where triple `i` came from, for messages: `file: line N` (or `triple N` without a file).
    pub fn locate(&self, i: usize) -> String {
        let n = self.lines.get(i).copied().unwrap_or(i + 1);
        match &self.source {
            Some(s) => format!("{}: line {n}", s.path),
            None => format!("triple {n}"),
        }
    }

    /// Every fact tokenised, in file order; an error names the file and line of the first fact that fails.
    pub fn examples(&self, tok: &Tokenizer) -> Result<Vec<Example>> {
        self.triples
            .iter()
            .enumerate()
            .map(|(i, t)| example(t, tok).map_err(|e| Error::input(format!("{} ({}): {e}", self.locate(i), t.subject))))
            .collect()
    }
}

/// An LRE relation file (the paper's data format).
#[derive(Deserialize)]
struct LreFile {
    name: String,
    #[serde(default)]
    prompt_templates: Vec<String>,
    #[serde(default)]
    prompt_templates_zs: Vec<String>,
    samples: Vec<LreSample>,
}

#[derive(Deserialize)]
struct LreSample {
    subject: String,
    object: String,
}

/// Reads triples from a JSON Lines file (one triple per line) or an LRE relation file (a JSON object with
/// `samples`). Errors name the file and, for JSON Lines, the line.
pub fn read(path: &Path) -> Result<Relation> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("relation");
    parse(&bytes, stem, &path.display().to_string())
}

/// Parses a relation file's bytes (JSON Lines or LRE) read from `label` (a path, or `-` for standard input);
/// `stem` names the relation when the file does not.
pub fn parse(bytes: &[u8], stem: &str, label: &str) -> Result<Relation> {
    let text = utf8(bytes, label)?;
    let whole = text.trim_start().starts_with('{').then(|| serde_json::from_str::<serde_json::Value>(text));
    let mut rel = if whole.as_ref().is_some_and(|w| w.as_ref().is_ok_and(|v| v.get("samples").is_some())) {
        from_lre(text, stem).map_err(|e| Error::input(format!("{label}: {e}")))?
    } else if let Some(Err(e)) = whole.filter(|_| looks_like_broken_lre(text)) {
        // Read as JSON Lines its first line would be blamed, not where the LRE file breaks.
        return Err(Error::input(format!("{label}: not an LRE relation file: {e}")));
    } else {
        from_jsonl(text, stem).map_err(|e| Error::input(format!("{label}: {e}")))?
    };
    if rel.triples.is_empty() {
        return Err(Error::input(format!("{label}: no triples")));
    }
    rel.source = Some(Source::new(label, bytes));
    Ok(rel)
}

/// `bytes` as text; the error names `label` and the line (and column, in bytes) of the first byte that is not
/// UTF-8.
pub fn utf8<'a>(bytes: &'a [u8], label: &str) -> Result<&'a str> {
    std::str::from_utf8(bytes).map_err(|e| {
        let good = &bytes[..e.valid_up_to()];
        let line = 1 + good.iter().filter(|&&b| b == b'\n').count();
        let column = 1 + good.len() - good.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let bad = bytes[e.valid_up_to()];
        Error::input(format!("{label}: line {line}: not UTF-8 text (byte 0x{bad:02x} at column {column})"))
    })
}

/// A multi-line JSON document with `samples` whose first line is no JSON value alone: an LRE relation file cut
/// short or broken, not JSON Lines.
fn looks_like_broken_lre(text: &str) -> bool {
    let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    text.contains("\"samples\"") && text.trim().lines().count() > 1 && serde_json::from_str::<serde_json::Value>(first).is_err()
}

fn from_lre(text: &str, stem: &str) -> std::result::Result<Relation, String> {
    let f: LreFile = serde_json::from_str(text).map_err(|e| format!("not an LRE relation file: {e}"))?;
    let template = f.prompt_templates_zs.first().or(f.prompt_templates.first()).ok_or("LRE file has no prompt template")?.clone();
    if !template.contains("{}") {
        return Err(format!("template {template:?} has no `{{}}` for the subject"));
    }
    let relation = if f.name.is_empty() { stem.to_string() } else { f.name.replace(' ', "_") };
    for (i, s) in f.samples.iter().enumerate() {
        for (what, text) in [("subject", &s.subject), ("object", &s.object)] {
            if text.trim().is_empty() {
                return Err(format!("sample {}: empty {what}", i + 1));
            }
        }
    }
    let triples = f
        .samples
        .into_iter()
        .map(|s| Triple { subject: s.subject, relation: relation.clone(), object: s.object, template: template.clone(), prompt: None })
        .collect();
    let mut rel = Relation::new(relation, triples);
    for t in f.prompt_templates.iter().chain(&f.prompt_templates_zs) {
        if t.contains("{}") && !rel.templates.contains(t) {
            rel.templates.push(t.clone());
        }
    }
    Ok(rel)
}

fn from_jsonl(text: &str, stem: &str) -> std::result::Result<Relation, String> {
    let (mut triples, mut lines) = (vec![], vec![]);
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let t: Triple = serde_json::from_str(line).map_err(|e| format!("line {}: {e}", i + 1))?;
        if t.prompt.is_none() && !t.template.contains("{}") {
            return Err(format!("line {}: template {:?} has no `{{}}` for the subject", i + 1, t.template));
        }
        if t.subject.trim().is_empty() {
            return Err(format!("line {}: empty subject", i + 1));
        }
        if t.object.trim().is_empty() {
            return Err(format!("line {}: empty object", i + 1));
        }
        triples.push(t);
        lines.push(i + 1);
    }
    let name = triples.iter().map(|t| t.relation.as_str()).find(|r| !r.is_empty()).unwrap_or(stem).to_string();
    Ok(Relation { lines, ..Relation::new(name, triples) })
}

/// What a prompt position holds (brief §10): analyses split attention and attribution by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Span {
    /// A token of the subject (one that overlaps the subject's text).
    Subject,
    /// A token of the query's template: the relation words around the subject.
    Relation,
    /// A token of a prepended demonstration (in-context learning).
    Demonstration,
    /// Anything else: the BOS token.
    Other,
}

impl Span {
    pub const ALL: [Span; 4] = [Span::Subject, Span::Relation, Span::Demonstration, Span::Other];
    pub fn name(self) -> &'static str {
        match self {
            Span::Subject => "subject",
            Span::Relation => "relation",
            Span::Demonstration => "demonstration",
            Span::Other => "other",
        }
    }
}

/// A triple ready for the model: prompt token ids, what each position holds, and the target token (first token
/// of `" " + object`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Example {
    pub triple: Triple,
    pub tokens: Vec<u32>,
    /// One per token: subject, relation (template), demonstration or other.
    #[serde(default)]
    pub spans: Vec<Span>,
    pub target: u32,
}

impl Example {
    /// Positions holding `span`.
    pub fn positions(&self, span: Span) -> Vec<usize> {
        self.spans.iter().enumerate().filter(|(_, s)| **s == span).map(|(i, _)| i).collect()
    }
}

/// Tokenises a triple. Fails on an empty prompt, an object that tokenizes to nothing, or a prompt override
/// that does not contain the subject.
pub fn example(t: &Triple, tok: &Tokenizer) -> Result<Example> {
    example_in_context(t, &[], tok)
}

/// The text a demonstration contributes before the query: its filled prompt, its answer and a newline.
pub fn demonstration_text(t: &Triple) -> Result<String> {
    Ok(format!("{} {}\n", t.prompt_text()?, t.object.trim()))
}

/// Tokenises a triple after `demonstrations` (other facts with their answers, one per line: in-context
/// learning). Spans: the query's subject (the subject's text in the query prompt, its last occurrence when the
/// prompt is given explicitly), the rest of the query (relation), the demonstrations, and the BOS (other).
pub fn example_in_context(t: &Triple, demonstrations: &[&Triple], tok: &Tokenizer) -> Result<Example> {
    let query = t.prompt_text()?;
    let subject = t.subject.trim();
    if subject.is_empty() {
        return Err(Error::input("empty subject"));
    }
    let start = match &t.prompt {
        None => t.template.find("{}").map(|p| p + (t.subject.len() - t.subject.trim_start().len())),
        Some(p) => p.rfind(subject),
    }
    .ok_or_else(|| Error::input(format!("subject {:?} not found in the prompt {query:?}", t.subject)))?;
    let mut prefix = String::new();
    for d in demonstrations {
        prefix.push_str(&demonstration_text(d)?);
    }
    let text = format!("{prefix}{query}");
    let (tokens, ranges) = tok.encode_with_offsets(&text)?;
    if tokens.is_empty() || query.trim().is_empty() {
        return Err(Error::input(format!("prompt {query:?} tokenizes to nothing")));
    }
    if let Some(max) = tok.max_tokens.filter(|&m| tokens.len() > m) {
        return Err(Error::input(format!("prompt of {} tokens exceeds the model's {max} positions", tokens.len())));
    }
    let subj = prefix.len() + start..prefix.len() + start + subject.len();
    let spans = ranges
        .iter()
        .map(|r| {
            if r.is_empty() {
                Span::Other
            } else if r.start < subj.end && subj.start < r.end {
                Span::Subject
            } else if r.end <= prefix.len() {
                Span::Demonstration
            } else {
                Span::Relation
            }
        })
        .collect();
    let target = answer_token(tok, &t.object)?;
    Ok(Example { triple: t.clone(), tokens, spans, target })
}

/// The `k` demonstrations of `query` (in-context learning): other facts of `pool` — never one with the query's
/// subject — in an order fixed by `seed` and the query's subject, so a fact gets the same demonstrations
/// wherever it is scored (discovery, evaluation, the lens). Fails when `pool` has fewer than `k` such facts.
pub fn demonstrations_for<'p>(query: &Triple, pool: &'p [Triple], k: usize, seed: u64) -> Result<Vec<&'p Triple>> {
    let others: Vec<&Triple> = pool.iter().filter(|t| t.subject != query.subject).collect();
    if others.len() < k {
        return Err(Error::input(format!(
            "{k} demonstrations asked for, but only {} other facts of the discovery split are available",
            others.len()
        )));
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in query.subject.as_bytes() {
        h = (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
    }
    let order = shuffled(others.len(), seed ^ h);
    Ok(order.into_iter().take(k).map(|i| others[i]).collect())
}

/// `examples` again with `k` demonstrations from `pool` prepended to each (see [`demonstrations_for`]); the
/// examples themselves when `k` is 0.
pub fn in_context(examples: Vec<Example>, pool: &[Triple], k: usize, seed: u64, tok: &Tokenizer) -> Result<Vec<Example>> {
    if k == 0 {
        return Ok(examples);
    }
    examples.iter().map(|e| example_in_context(&e.triple, &demonstrations_for(&e.triple, pool, k, seed)?, tok)).collect()
}

/// The token an answer is scored by: the first token of `" " + object`. Fails when it tokenizes to nothing.
pub fn answer_token(tok: &Tokenizer, object: &str) -> Result<u32> {
    if object.trim().is_empty() {
        return Err(Error::input(format!("object {object:?} tokenizes to nothing")));
    }
    tok.encode_plain(&format!(" {}", object.trim_start()))?
        .first()
        .copied()
        .ok_or_else(|| Error::input(format!("object {object:?} tokenizes to nothing")))
}

/// A small deterministic PRNG (SplitMix64): the split must not change with a dependency's version.
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    /// Fisher–Yates shuffle.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }
}

/// Indices `0..n` in the order of `seed`'s shuffle: the first ones are the discovery candidates, the rest the
/// held-out test set.
pub fn shuffled(n: usize, seed: u64) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..n).collect();
    SplitMix64(seed).shuffle(&mut idx);
    idx
}

/// Facts per relation in the mean-ablation corpus ([`corpus_of`]).
pub const CORPUS_PER_RELATION: usize = 5;

/// The mean-ablation corpus kcirc ships: [`corpus_of`] the 24 relations of `data/` (file-name order, seed 0),
/// written by `kcirc data corpus data/ > data/corpus/mean-ablation.jsonl` and compiled in, so a run on any relation file
/// finds it.
const SHIPPED_CORPUS: &str = include_str!("../data/corpus/mean-ablation.jsonl");

/// A relation-agnostic set of fact prompts: the first [`CORPUS_PER_RELATION`] facts of each relation in
/// `seed`'s shuffle, relations in the order given. Mean ablation over it (`MeanOver::Corpus`) replaces a removed
/// edge by what the sender carries on an average fact-completion prompt, not on the relation's own average
/// prompt: the empty circuit then no longer knows which relation is asked, so a circuit has to carry the
/// relation as well as the subject, and random circuits fall to chance.
pub fn corpus_of(relations: &[Relation], seed: u64) -> Vec<Triple> {
    relations
        .iter()
        .flat_map(|r| shuffled(r.triples.len(), seed).into_iter().take(CORPUS_PER_RELATION).map(|i| r.triples[i].clone()))
        .collect()
}

/// The shipped corpus (`SHIPPED_CORPUS`) without the facts of `relation`: neither those named like it nor
/// any whose prompt is one of its prompts (so no held-out prompt ever enters the means), in corpus order.
pub fn corpus_for(relation: &Relation) -> Result<Vec<Triple>> {
    let corpus = from_jsonl(SHIPPED_CORPUS, "corpus").map_err(|e| Error::bug(format!("the shipped corpus: {e}")))?;
    let prompts: std::collections::HashSet<String> = relation.triples.iter().filter_map(|t| t.prompt_text().ok()).collect();
    let mut kept = vec![];
    for t in corpus.triples {
        if t.relation != relation.name && !prompts.contains(&t.prompt_text()?) {
            kept.push(t);
        }
    }
    Ok(kept)
}
