//! Models: one canonical transformer (`engine`), its weights (`weights`), and one adapter per family (GPT-2,
//! Llama, Qwen2). Adding a family means adding one adapter file and its arms in [`Family`]'s methods.
pub mod config;
pub mod engine;
pub mod gpt2;
pub mod hooks;
pub mod hub;
pub mod llama;
pub mod ops;
pub mod qwen2;
pub mod source;
pub mod weights;

use std::path::Path;

use candle_core::Device;
use serde_json::Value;

pub use config::{Config, MlpKind, NormKind, Positional};
pub use engine::{Batch, Logits, Model};
pub use hooks::{Activations, Clean, HookPoint, Hooks};
use hub::ModelFiles;
use source::{Gguf, Safetensors};

use crate::tokenizer::Tokenizer;
use crate::{Error, Result};

/// Knowledge edits applied to a loaded model in memory (`--edits`, brief §11): enough to apply them again
/// (`kcirc::edit::EditSpec::from_record`) and to notice that the requests file changed.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EditRecord {
    /// The edit requests file (JSON Lines, as `kcirc edit --requests` reads): path as given and content digest.
    pub requests: crate::data::Source,
    pub n_requests: usize,
    /// `rome`, `ft-m` or `ft-l`, applied to the requests one after another.
    pub method: String,
    pub layer: usize,
    /// The editor's optimisation steps at most.
    pub steps: usize,
    /// ROME's context-prefix seed.
    pub seed: u64,
    /// FT: the L∞ radius of the weight change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clamp: Option<f64>,
}

/// The model families kcirc has adapters for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Gpt2,
    Llama,
    Qwen2,
}

impl Family {
    /// Reads the family off a Hugging Face `config.json`.
    pub fn detect(json: &Value) -> Result<Family> {
        let model_type = json.get("model_type").and_then(Value::as_str).unwrap_or("");
        let arch = json.get("architectures").and_then(|a| a.get(0)).and_then(Value::as_str).unwrap_or("");
        match (model_type, arch) {
            ("gpt2", _) | (_, "GPT2LMHeadModel") => Ok(Family::Gpt2),
            ("llama", _) | (_, "LlamaForCausalLM") => Ok(Family::Llama),
            ("qwen2", _) | (_, "Qwen2ForCausalLM") => Ok(Family::Qwen2),
            _ => Err(Error::UnsupportedArchitecture(if model_type.is_empty() { arch.to_string() } else { model_type.to_string() })),
        }
    }

    fn config(self, json: &Value) -> Result<Config> {
        match self {
            Family::Gpt2 => gpt2::config(json),
            Family::Llama => llama::config(json),
            Family::Qwen2 => qwen2::config(json),
        }
    }

    /// The canonical weights of a checkpoint with config `json`.
    fn weights(self, src: &Safetensors, cfg: &Config, json: &Value) -> Result<weights::Weights> {
        match self {
            Family::Gpt2 => gpt2::weights(src, cfg),
            Family::Llama => llama::weights(src, cfg, llama::tied(json)),
            Family::Qwen2 => qwen2::weights(src, cfg, json),
        }
    }
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::BadConfig(format!("{}: {e}", path.display())))
}

/// The canonical configuration of `name` (hub id, folder or `.gguf`), fetching nothing but the configuration.
pub fn load_config(name: &str) -> Result<Config> {
    match hub::resolve(name, false)? {
        ModelFiles::Safetensors { config, .. } => {
            let json = read_json(&config)?;
            Family::detect(&json)?.config(&json)
        }
        ModelFiles::Gguf(path) => llama::gguf_config(&Gguf::open(&path, &Device::Cpu)?),
    }
}

/// Loads model and tokenizer of `name` (hub id, folder or `.gguf`) onto `device`, as f32.
pub fn load(name: &str, device: &Device) -> Result<(Model, Tokenizer)> {
    let (cfg, weights, tokenizer) = match hub::resolve(name, true)? {
        ModelFiles::Safetensors { config, tokenizer, tokenizer_config, weights } => {
            let json = read_json(&config)?;
            let family = Family::detect(&json)?;
            let cfg = family.config(&json)?;
            let src = Safetensors::open(&weights, device)?;
            let w = family.weights(&src, &cfg, &json)?;
            let tok_path = tokenizer.ok_or_else(|| Error::ModelNotFound { name: name.into(), reason: "no tokenizer.json".into() })?;
            // BOS only when the tokenizer config asks for it.
            let add_bos = match &tokenizer_config {
                Some(p) => read_json(p)?.get("add_bos_token").and_then(Value::as_bool).unwrap_or(false),
                None => false,
            };
            let bos = if add_bos { json.get("bos_token_id").and_then(Value::as_u64).map(|v| v as u32) } else { None };
            (cfg, w, Tokenizer::from_file(&tok_path, bos)?)
        }
        ModelFiles::Gguf(path) => {
            let g = Gguf::open(&path, device)?;
            let cfg = llama::gguf_config(&g)?;
            let w = llama::gguf_weights(&g, &cfg)?;
            (cfg, w, gguf_tokenizer(&g)?)
        }
    };
    // A tokenizer of another model could give ids past the embedding's rows: refused here, not at a lookup.
    if let Some(max) = tokenizer.max_id().filter(|&m| m as usize >= cfg.vocab_size) {
        return Err(Error::Tokenizer(format!(
            "token ids run to {max}, past the model's {} embedding rows: the tokenizer is not this model's",
            cfg.vocab_size
        )));
    }
    let mut tokenizer = tokenizer;
    tokenizer.max_tokens = cfg.max_positions();
    let model = Model { name: name.to_string(), cfg, weights, device: device.clone(), edits: None };
    Ok((model, tokenizer))
}

/// The tokenizer stored in a GGUF file's metadata (byte-level BPE only).
fn gguf_tokenizer(g: &Gguf) -> Result<Tokenizer> {
    let kind = g.meta_str("tokenizer.ggml.model")?;
    if kind != "gpt2" {
        return Err(Error::Tokenizer(format!("GGUF tokenizer model `{kind}` is not supported (byte-level BPE `gpt2` only)")));
    }
    let tokens = g.meta_strings("tokenizer.ggml.tokens")?;
    let merges = g.meta_strings("tokenizer.ggml.merges")?;
    let types = g.meta_i64s("tokenizer.ggml.token_type").unwrap_or_default();
    let control = tokens.iter().zip(types.iter()).filter(|(_, &t)| t == 3).map(|(s, _)| s.clone()).collect();
    let pre = g.meta_str("tokenizer.ggml.pre").unwrap_or_else(|_| "default".into());
    let bos = match g.meta_bool("tokenizer.ggml.add_bos_token") {
        Some(true) => Some(g.meta_usize("tokenizer.ggml.bos_token_id")? as u32),
        _ => None,
    };
    Tokenizer::from_bpe_parts(tokens, merges, control, &pre, bos)
}

/// Writes `model` (its current, possibly edited, weights) and `tok` as a Hugging Face model folder `dir`:
/// `model.safetensors` in the family's own layout (f32), `config.json`, `tokenizer.json` and
/// `tokenizer_config.json` — what kcirc and transformers load. GGUF sources come out as safetensors. The folder
/// appears whole or not at all (written beside it, then renamed); an existing `dir` is refused.
pub fn save(model: &Model, tok: &Tokenizer, dir: &Path) -> Result<()> {
    if dir.exists() {
        return Err(Error::input(format!("{}: already exists; kcirc does not overwrite a model folder", dir.display())));
    }
    let (tensors, config) = match model.cfg.family.as_str() {
        "gpt2" => gpt2::export(&model.weights, &model.cfg)?,
        "llama" => llama::export(&model.weights, &model.cfg, tok.bos)?,
        "qwen2" => qwen2::export(&model.weights, &model.cfg, tok.bos)?,
        other => return Err(Error::bug(format!("no exporter for family `{other}`"))),
    };
    let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("model");
    let tmp = dir.with_file_name(format!(".{name}.kcirc-tmp"));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let write = || -> Result<()> {
        let map: std::collections::HashMap<String, candle_core::Tensor> =
            tensors.into_iter().map(|(n, t)| Ok((n, t.to_device(&Device::Cpu)?.contiguous()?))).collect::<Result<_>>()?;
        candle_core::safetensors::save(&map, tmp.join("model.safetensors"))?;
        let json = |v: &Value| serde_json::to_string_pretty(v).map_err(|e| Error::bug(e.to_string()));
        let put = |file: &str, text: String| std::fs::write(tmp.join(file), text).map_err(|e| Error::io(tmp.join(file), e));
        put("config.json", json(&config)?)?;
        put("tokenizer_config.json", json(&serde_json::json!({ "add_bos_token": tok.bos.is_some() }))?)?;
        tok.save(&tmp.join("tokenizer.json"))?;
        std::fs::rename(&tmp, dir).map_err(|e| Error::io(dir, e))
    };
    let r = write();
    if r.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    r
}
