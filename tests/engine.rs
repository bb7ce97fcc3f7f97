//! The canonical engine against Hugging Face transformers (golden logits from `scripts/make_fixtures.py`).
mod common;

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use common::*;
use kcirc::model::{Clean, Logits, Model};
use kcirc::tokenizer::Tokenizer;

const TOL: f32 = 1e-4;

/// Every reference prompt: same token ids, and logits within `TOL` at the last position (whole vocabulary)
/// and at every position (first 512 vocabulary entries). Returns the largest difference seen.
fn check_against_reference(model: &Model, tok: &Tokenizer, dir: &str) -> f32 {
    let r = reference(dir);
    let mut worst = 0f32;
    for (i, (text, ids)) in r.prompts.iter().enumerate() {
        assert_eq!(&tok.encode(text).unwrap(), ids, "token ids of {text:?}");
        let batch = model.batch(std::slice::from_ref(ids)).unwrap();
        let (_, all) = model.run(&batch, &Clean, Logits::All).unwrap(); // [1, T, V]
        let all = all.squeeze(0).unwrap();
        let t = ids.len();
        let last = all.get(t - 1).unwrap();
        let d_last = max_abs_diff(&last, &r.tensors[&format!("last.{i}")]);
        let d_all = max_abs_diff(&all.narrow(1, 0, 512).unwrap(), &r.tensors[&format!("all.{i}")]);
        assert!(d_last <= TOL && d_all <= TOL, "{text:?}: max abs diff last {d_last}, all {d_all}");
        worst = worst.max(d_last).max(d_all);
    }
    eprintln!("{dir}: max abs diff {worst:e}");
    worst
}

#[test]
fn gpt2_hub_layout_matches_transformers() {
    let (model, tok) = tiny_gpt2();
    check_against_reference(&model, &tok, "gpt2-tiny");
}

#[test]
fn gpt2_prefixed_layout_matches_transformers() {
    // The same weights under `transformer.` names plus an explicit `lm_head.weight`, as save_pretrained writes them.
    let dir = tempfile::tempdir().unwrap();
    let src = candle_core::safetensors::load(fixture("gpt2-tiny/model.safetensors"), &Device::Cpu).unwrap();
    let mut renamed: HashMap<String, Tensor> = src.iter().map(|(k, v)| (format!("transformer.{k}"), v.clone())).collect();
    renamed.insert("lm_head.weight".into(), src["wte.weight"].clone());
    assert!(!renamed.contains_key("wte.weight"));
    candle_core::safetensors::save(&renamed, dir.path().join("model.safetensors")).unwrap();
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(fixture(&format!("gpt2-tiny/{f}")), dir.path().join(f)).unwrap();
    }
    let (model, tok) = kcirc::model::load(dir.path().to_str().unwrap(), &Device::Cpu).unwrap();
    check_against_reference(&model, &tok, "gpt2-tiny");
}

#[test]
fn qwen2_matches_transformers() {
    let (model, tok) = tiny_qwen2();
    assert_eq!(model.cfg.family, "qwen2");
    assert_eq!((model.cfg.n_heads, model.cfg.n_kv_heads), (4, 2), "grouped-query attention kept native");
    check_against_reference(&model, &tok, "qwen2-tiny");
}

/// The Qwen2 fixture's query and key biases matter (so its parity tests them): without them the logits are
/// far from transformers'. They are added before the rotation, as for any family.
#[test]
fn qwen2_query_and_key_biases_are_exercised() {
    let (mut model, _) = tiny_qwen2();
    let r = reference("qwen2-tiny");
    for layer in &mut model.weights.layers {
        let a = &mut layer.attn;
        assert!(a.b_q.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap() > 0.1);
        a.b_q = a.b_q.zeros_like().unwrap();
        a.b_k = a.b_k.zeros_like().unwrap();
        let (h, kv, dh) = (model.cfg.n_heads, model.cfg.n_kv_heads, model.cfg.d_head);
        let v = a.b_qkv.narrow(0, (h + kv) * dh, kv * dh).unwrap();
        a.b_qkv = Tensor::cat(&[&Tensor::zeros((h + kv) * dh, candle_core::DType::F32, &Device::Cpu).unwrap(), &v], 0).unwrap();
    }
    let ids = &r.prompts[0].1;
    let (_, all) = model.run(&model.batch(std::slice::from_ref(ids)).unwrap(), &Clean, Logits::All).unwrap();
    let last = all.squeeze(0).unwrap().get(ids.len() - 1).unwrap();
    let d = max_abs_diff(&last, &r.tensors["last.0"]);
    assert!(d > 1e-2, "without q/k biases the logits still match to {d}");
}

/// `tie_word_embeddings: true` unembeds with the token embedding, as transformers does, even beside an
/// `lm_head.weight`; `false` reads that matrix.
#[test]
fn qwen2_tied_embeddings_follow_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let mut tensors = candle_core::safetensors::load(fixture("qwen2-tiny/model.safetensors"), &Device::Cpu).unwrap();
    assert!(!tensors.contains_key("lm_head.weight"), "the fixture is tied");
    let embed = tensors["model.embed_tokens.weight"].clone();
    tensors.insert("lm_head.weight".into(), (embed * 0.5).unwrap());
    candle_core::safetensors::save(&tensors, dir.path().join("model.safetensors")).unwrap();
    std::fs::copy(fixture("qwen2-tiny/tokenizer.json"), dir.path().join("tokenizer.json")).unwrap();
    let config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fixture("qwen2-tiny/config.json")).unwrap()).unwrap();
    let r = reference("qwen2-tiny");
    let ids = &r.prompts[0].1;
    for tied in [true, false] {
        let mut c = config.clone();
        c["tie_word_embeddings"] = tied.into();
        std::fs::write(dir.path().join("config.json"), c.to_string()).unwrap();
        let (model, _) = kcirc::model::load(dir.path().to_str().unwrap(), &Device::Cpu).unwrap();
        let logits = model.forward(&model.batch(std::slice::from_ref(ids)).unwrap()).unwrap();
        let d = max_abs_diff(&logits.get(0).unwrap(), &r.tensors["last.0"]); // [B, V]: the last position
        assert_eq!(d <= TOL, tied, "tied {tied}: max abs diff {d}");
    }
}

#[test]
fn smollm2_gguf_matches_transformers() {
    let (model, tok) = smollm2();
    check_against_reference(&model, &tok, "smollm2");
}

#[test]
fn smollm2_knows_the_capital_of_france() {
    let (model, tok) = smollm2();
    let p = kcirc::predict::predict(&model, &tok, &["The capital city of France is".to_string()], 5).unwrap();
    assert_eq!(p[0].top[0].token, " Paris");
    assert!(p[0].top[0].prob > 0.3, "{:?}", p[0].top[0]);
}

/// Left padding with a mask: a prompt gives the same logits alone and inside a padded batch.
fn padded_batch_equals_alone(model: &Model, tok: &Tokenizer) {
    let prompts = ["The capital city of France is", "Hi", "In 1969, 3 astronauts flew 384400 km to the Moon and back."];
    let ids: Vec<Vec<u32>> = prompts.iter().map(|p| tok.encode(p).unwrap()).collect();
    let together = model.forward(&model.batch(&ids).unwrap()).unwrap();
    for (i, one) in ids.iter().enumerate() {
        let alone = model.forward(&model.batch(std::slice::from_ref(one)).unwrap()).unwrap();
        let d = max_abs_diff(&alone.squeeze(0).unwrap(), &together.get(i).unwrap());
        assert!(d <= 1e-4, "prompt {i}: batched vs alone differ by {d}");
    }
}

#[test]
fn padded_batch_equals_alone_gpt2() {
    let (m, t) = tiny_gpt2();
    padded_batch_equals_alone(&m, &t);
}

#[test]
fn padded_batch_equals_alone_qwen2() {
    let (m, t) = tiny_qwen2();
    padded_batch_equals_alone(&m, &t);
}

#[test]
fn padded_batch_equals_alone_smollm2() {
    let (m, t) = smollm2();
    padded_batch_equals_alone(&m, &t);
}
