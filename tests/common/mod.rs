//! Shared test helpers: fixture paths, golden references, comparisons.
#![allow(dead_code)]
use std::path::PathBuf;

use candle_core::{Device, Tensor};
use kcirc::model::Model;
use kcirc::tokenizer::Tokenizer;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn fixture(p: &str) -> PathBuf {
    root().join("tests/fixtures").join(p)
}

/// The real SmolLM2-135M-Instruct GGUF (`scripts/fetch-models.sh` puts it there; the README's test command runs it).
pub fn smollm2_path() -> PathBuf {
    let p = std::env::var("KCIRC_SMOLLM2")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root().join("models/SmolLM2-135M-Instruct.Q4_1.gguf"));
    assert!(p.is_file(), "{} is missing: run scripts/fetch-models.sh first", p.display());
    p
}

pub fn tiny_gpt2() -> (Model, Tokenizer) {
    kcirc::model::load(fixture("gpt2-tiny").to_str().unwrap(), &Device::Cpu).unwrap()
}

pub fn smollm2() -> (Model, Tokenizer) {
    kcirc::model::load(smollm2_path().to_str().unwrap(), &Device::Cpu).unwrap()
}

/// A golden reference written by `scripts/make_fixtures.py`.
pub struct Reference {
    pub prompts: Vec<(String, Vec<u32>)>,
    pub tensors: std::collections::HashMap<String, Tensor>,
    pub json: serde_json::Value,
}

pub fn reference(dir: &str) -> Reference {
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture(&format!("{dir}/reference.json"))).unwrap()).unwrap();
    let prompts = json["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let ids = p["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
            (p["text"].as_str().unwrap().to_string(), ids)
        })
        .collect();
    let tensors = candle_core::safetensors::load(fixture(&format!("{dir}/reference.safetensors")), &Device::Cpu).unwrap();
    Reference { prompts, tensors, json }
}

pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shape mismatch");
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}
