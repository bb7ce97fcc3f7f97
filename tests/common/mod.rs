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
    let p = std::env::var("KCIRC_SMOLLM2").map(PathBuf::from).unwrap_or_else(|_| root().join("models/SmolLM2-135M-Instruct.Q4_1.gguf"));
    assert!(p.is_file(), "{} is missing: run scripts/fetch-models.sh first", p.display());
    p
}

pub fn tiny_gpt2() -> (Model, Tokenizer) {
    kcirc::model::load(fixture("gpt2-tiny").to_str().unwrap(), &Device::Cpu).unwrap()
}

/// The random-weight Qwen2 fixture (q/k/v biases, grouped-query attention, tied embeddings).
pub fn tiny_qwen2() -> (Model, Tokenizer) {
    kcirc::model::load(fixture("qwen2-tiny").to_str().unwrap(), &Device::Cpu).unwrap()
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

/// A small random Llama-family model with grouped-query attention (4 query heads sharing 2 key/value heads),
/// built directly in the canonical layout (no checkpoint needed for fast-vs-naive comparisons).
pub fn tiny_llama(seed: u64) -> Model {
    use kcirc::model::weights::{Attention, AttentionMatrices, Layer, Mlp, Norm, Weights};
    use kcirc::model::{Config, MlpKind, NormKind, Positional};
    let cfg = Config {
        family: "llama".into(),
        n_layers: 3,
        d_model: 24,
        n_heads: 4,
        n_kv_heads: 2,
        d_head: 6,
        d_mlp: 40,
        vocab_size: 97,
        norm: NormKind::RmsNorm,
        norm_eps: 1e-5,
        positional: Positional::Rotary { theta: 10000.0, max_positions: None },
        mlp: MlpKind::SwiGlu,
    };
    let dev = Device::Cpu;
    let mut rng = kcirc::data::SplitMix64(seed);
    let mut rand = |shape: &[usize], scale: f32| {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| ((rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale).collect();
        Tensor::from_vec(v, shape, &dev).unwrap()
    };
    let (d, h, kv, dh, f) = (cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.d_head, cfg.d_mlp);
    let layers = (0..cfg.n_layers)
        .map(|_| {
            let m = AttentionMatrices {
                w_q: rand(&[d, h * dh], 0.5),
                b_q: None,
                w_k: rand(&[d, kv * dh], 0.5),
                b_k: None,
                w_v: rand(&[d, kv * dh], 0.5),
                b_v: Some(rand(&[kv * dh], 0.3)),
                w_o: rand(&[h * dh, d], 0.5),
                b_o: Some(rand(&[d], 0.3)),
            };
            Layer {
                ln1: Norm { weight: (rand(&[d], 0.2) + 1.0).unwrap(), bias: None },
                attn: Attention::from_matrices(m, &cfg).unwrap(),
                ln2: Norm { weight: (rand(&[d], 0.2) + 1.0).unwrap(), bias: None },
                mlp: Mlp::SwiGlu { w_gate_up: rand(&[d, 2 * f], 0.4), w_down: rand(&[f, d], 0.4) },
            }
        })
        .collect();
    let embed = rand(&[cfg.vocab_size, d], 1.0);
    let weights = Weights {
        unembed: embed.t().unwrap().contiguous().unwrap(),
        embed,
        pos_embed: None,
        layers,
        ln_final: Norm { weight: (rand(&[d], 0.2) + 1.0).unwrap(), bias: None },
        b_unembed: None,
    };
    Model { name: "tiny-llama".into(), cfg, weights, device: dev, edits: None }
}

/// Examples whose target is the model's own top-1 next token (so the metric has something to lose).
pub fn examples(model: &Model, prompts: &[Vec<u32>]) -> Vec<kcirc::data::Example> {
    let logits = model.forward(&model.batch(prompts).unwrap()).unwrap();
    let top: Vec<u32> = logits.argmax(1).unwrap().to_vec1().unwrap();
    prompts
        .iter()
        .zip(top)
        .map(|(p, t)| kcirc::data::Example {
            triple: kcirc::data::Triple {
                subject: "s".into(),
                relation: "r".into(),
                object: "o".into(),
                template: "{}".into(),
                prompt: None,
            },
            tokens: p.clone(),
            // The first token plays the subject, the rest the relation.
            spans: (0..p.len()).map(|i| if i == 0 { kcirc::data::Span::Subject } else { kcirc::data::Span::Relation }).collect(),
            target: t,
        })
        .collect()
}

/// Ten capitals whose prompts all have 8 tokens on GPT-2's tokenizer (objects with distinct first tokens), and
/// one, Bosnia and Herzegovina (13 tokens), that no other fact can stand in for under resample ablation.
pub fn capitals_with_a_long_subject() -> kcirc::data::Relation {
    let facts = [
        ("France", "Paris"),
        ("Spain", "Madrid"),
        ("Italy", "Rome"),
        ("Japan", "Tokyo"),
        ("China", "Beijing"),
        ("Canada", "Ottawa"),
        ("Germany", "Berlin"),
        ("Russia", "Moscow"),
        ("Peru", "Lima"),
        ("Egypt", "Cairo"),
        ("Bosnia and Herzegovina", "Sarajevo"),
    ];
    let t = |(s, o): (&str, &str)| kcirc::data::Triple {
        subject: s.into(),
        relation: "capitals".into(),
        object: o.into(),
        template: "The capital of {} is the city of".into(),
        prompt: None,
    };
    kcirc::data::Relation::new("capitals", facts.into_iter().map(t).collect())
}
