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
        Relation { name: name.into(), triples, lines, source: None }
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
    let text = std::str::from_utf8(bytes).map_err(|e| Error::input(format!("{label}: not UTF-8 text: {e}")))?;
    let mut rel = if text.trim_start().starts_with('{')
        && serde_json::from_str::<serde_json::Value>(text).is_ok_and(|v| v.get("samples").is_some())
    {
        from_lre(text, stem).map_err(|e| Error::input(format!("{label}: {e}")))?
    } else {
        from_jsonl(text, stem).map_err(|e| Error::input(format!("{label}: {e}")))?
    };
    if rel.triples.is_empty() {
        return Err(Error::input(format!("{label}: no triples")));
    }
    rel.source = Some(Source::new(label, bytes));
    Ok(rel)
}

fn from_lre(text: &str, stem: &str) -> std::result::Result<Relation, String> {
    let f: LreFile = serde_json::from_str(text).map_err(|e| format!("not an LRE relation file: {e}"))?;
    let template = f.prompt_templates_zs.first().or(f.prompt_templates.first()).ok_or("LRE file has no prompt template")?.clone();
    if !template.contains("{}") {
        return Err(format!("template {template:?} has no `{{}}` for the subject"));
    }
    let relation = if f.name.is_empty() { stem.to_string() } else { f.name.replace(' ', "_") };
    let triples = f
        .samples
        .into_iter()
        .map(|s| Triple { subject: s.subject, relation: relation.clone(), object: s.object, template: template.clone(), prompt: None })
        .collect();
    Ok(Relation::new(relation, triples))
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
        if t.object.trim().is_empty() {
            return Err(format!("line {}: empty object", i + 1));
        }
        triples.push(t);
        lines.push(i + 1);
    }
    let name = triples.iter().map(|t| t.relation.as_str()).find(|r| !r.is_empty()).unwrap_or(stem).to_string();
    Ok(Relation { lines, ..Relation::new(name, triples) })
}

/// A triple ready for the model: prompt token ids and the target token (first token of `" " + object`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Example {
    pub triple: Triple,
    pub tokens: Vec<u32>,
    pub target: u32,
}

/// Tokenises a triple. Fails on an empty prompt or an object that tokenizes to nothing.
pub fn example(t: &Triple, tok: &Tokenizer) -> Result<Example> {
    let prompt = t.prompt_text()?;
    let tokens = tok.encode(&prompt)?;
    if tokens.is_empty() {
        return Err(Error::input(format!("prompt {prompt:?} tokenizes to nothing")));
    }
    let target = *tok
        .encode_plain(&format!(" {}", t.object.trim_start()))?
        .first()
        .ok_or_else(|| Error::input(format!("object {:?} tokenizes to nothing", t.object)))?;
    Ok(Example { triple: t.clone(), tokens, target })
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
