//! Resolving `--model`: a local `.gguf` file, a local folder, or a Hugging Face hub repository (cached through
//! `hf-hub`, honouring `HF_HOME`, `HF_ENDPOINT` and `HF_HUB_OFFLINE`).
use std::path::{Path, PathBuf};

use hf_hub::api::sync::ApiBuilder;
use hf_hub::Cache;

use crate::{Error, Result};

/// The files of one model, wherever they came from.
#[derive(Debug, Clone)]
pub enum ModelFiles {
    /// `config.json` plus, when present, `tokenizer.json`, `tokenizer_config.json` and the safetensors shards.
    Safetensors { config: PathBuf, tokenizer: Option<PathBuf>, tokenizer_config: Option<PathBuf>, weights: Vec<PathBuf> },
    /// One self-describing GGUF file.
    Gguf(PathBuf),
}

/// Short names for the GPT-2 family.
pub fn hub_repo_id(name: &str) -> String {
    match name {
        "gpt2" | "gpt2-medium" | "gpt2-large" | "gpt2-xl" | "distilgpt2" => format!("openai-community/{name}"),
        other => other.to_string(),
    }
}

fn looks_like_path(name: &str) -> bool {
    name.starts_with('.') || name.starts_with('/') || name.starts_with('~') || name.ends_with(".gguf") || name.ends_with(".json")
}

/// Finds a model's files. `need_weights = false` fetches only what the graph needs (the configuration).
pub fn resolve(name: &str, need_weights: bool) -> Result<ModelFiles> {
    let path = Path::new(name);
    if path.is_file() {
        return match path.extension().and_then(|e| e.to_str()) {
            Some("gguf") => Ok(ModelFiles::Gguf(path.to_path_buf())),
            _ => Err(Error::ModelNotFound {
                name: name.into(),
                reason: "a model file must be a .gguf (or give a folder with config.json)".into(),
            }),
        };
    }
    if path.is_dir() {
        return folder(path, need_weights);
    }
    if looks_like_path(name) || name.split('/').count() > 2 {
        return Err(Error::ModelNotFound { name: name.into(), reason: "no such file or folder".into() });
    }
    hub(name, need_weights)
}

fn folder(dir: &Path, need_weights: bool) -> Result<ModelFiles> {
    let config = dir.join("config.json");
    if !config.is_file() {
        // A folder with a single GGUF file is a GGUF model.
        let ggufs: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| Error::io(dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "gguf"))
            .collect();
        if ggufs.len() == 1 {
            return Ok(ModelFiles::Gguf(ggufs[0].clone()));
        }
        return Err(Error::ModelNotFound { name: dir.display().to_string(), reason: "folder has no config.json".into() });
    }
    let opt = |f: &str| Some(dir.join(f)).filter(|p| p.is_file());
    let mut weights: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    weights.sort();
    if need_weights && weights.is_empty() {
        return Err(Error::ModelNotFound { name: dir.display().to_string(), reason: "folder has no *.safetensors".into() });
    }
    Ok(ModelFiles::Safetensors { config, tokenizer: opt("tokenizer.json"), tokenizer_config: opt("tokenizer_config.json"), weights })
}

fn offline() -> bool {
    std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| matches!(v.trim(), "1" | "true" | "TRUE" | "yes" | "ON" | "on"))
}

fn hub(name: &str, need_weights: bool) -> Result<ModelFiles> {
    let id = hub_repo_id(name);
    let not_found = |reason: String| Error::ModelNotFound {
        name: name.into(),
        reason: format!("{reason}; pass a local folder (config.json + *.safetensors + tokenizer.json) or a .gguf file instead"),
    };
    // Cache first, and only the cache when offline.
    let cache = Cache::from_env().model(id.clone());
    let api = if offline() {
        None
    } else {
        Some(ApiBuilder::from_env().with_progress(false).build().map_err(|e| not_found(format!("hub client: {e}")))?.model(id.clone()))
    };
    let fetch = |file: &str, required: bool| -> Result<Option<PathBuf>> {
        if let Some(p) = cache.get(file) {
            return Ok(Some(p));
        }
        match &api {
            None if required => Err(not_found(format!("`{file}` of {id} is not in the local cache and HF_HUB_OFFLINE is set"))),
            None => Ok(None),
            Some(api) => match api.get(file) {
                Ok(p) => Ok(Some(p)),
                Err(_) if !required => Ok(None),
                Err(e) => {
                    Err(not_found(format!("cannot fetch `{file}` of {id} from the Hugging Face hub ({})", super::source::one_line(&e))))
                }
            },
        }
    };
    let config = fetch("config.json", true)?.expect("required");
    let mut weights = vec![];
    let (mut tokenizer, mut tokenizer_config) = (None, None);
    if need_weights {
        tokenizer = fetch("tokenizer.json", true)?;
        tokenizer_config = fetch("tokenizer_config.json", false)?;
        if let Some(index) = fetch("model.safetensors.index.json", false)? {
            let text = std::fs::read_to_string(&index).map_err(|e| Error::io(&index, e))?;
            let json: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| Error::BadCheckpoint { path: index.clone(), reason: e.to_string() })?;
            let mut shards: Vec<String> = json["weight_map"]
                .as_object()
                .map(|m| m.values().filter_map(|v| v.as_str().map(String::from)).collect())
                .unwrap_or_default();
            shards.sort();
            shards.dedup();
            for s in shards {
                weights.push(fetch(&s, true)?.expect("required"));
            }
        } else {
            weights.push(fetch("model.safetensors", true)?.expect("required"));
        }
    }
    Ok(ModelFiles::Safetensors { config, tokenizer, tokenizer_config, weights })
}
