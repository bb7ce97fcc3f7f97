//! Writes a GPT-2-shaped checkpoint folder with random weights (config.json, model.safetensors, the real GPT-2
//! tokenizer.json of the test fixture), for benchmarks at sizes no fixture has. Not a trained model: circuits
//! found on it prune unlike a trained model's, so only its time and memory figures mean anything.
//!
//! `cargo run --release --example random_gpt2 -- OUT_DIR [medium|small|LAYERS,HEADS,D_MODEL] [SEED]`
//! (default `medium`: 24 layers, 16 heads, d_model 1024, 50,257 tokens, 1,024 positions — 231,877 edges).
use std::path::Path;

use candle_core::{Device, Tensor};

/// `n` values from a seeded generator, roughly N(0, std²) (sum of four uniforms, rescaled).
fn normal(rng: &mut kcirc::data::SplitMix64, n: usize, std: f32) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let s: f32 = (0..4).map(|_| (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32 - 0.5).sum();
            s * std * (3.0f32).sqrt()
        })
        .collect()
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let out = Path::new(args.get(1).ok_or_else(|| anyhow::anyhow!("usage: random_gpt2 OUT_DIR [medium|small|L,H,D] [SEED]"))?);
    let (layers, heads, d) = match args.get(2).map(String::as_str).unwrap_or("medium") {
        "medium" => (24, 16, 1024),
        "small" => (12, 12, 768),
        shape => {
            let v: Vec<usize> = shape.split(',').map(str::parse).collect::<Result<_, _>>()?;
            anyhow::ensure!(v.len() == 3 && v[2] % v[1] == 0, "shape is LAYERS,HEADS,D_MODEL with D_MODEL a multiple of HEADS");
            (v[0], v[1], v[2])
        }
    };
    let seed: u64 = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(0);
    let (vocab, positions) = (50257, 1024);
    anyhow::ensure!(!out.exists(), "{} exists already", out.display());
    std::fs::create_dir_all(out)?;
    let mut rng = kcirc::data::SplitMix64(seed);
    let dev = Device::Cpu;
    let mut tensors: Vec<(String, Tensor)> = vec![];
    let mut add = |name: String, shape: &[usize], values: Vec<f32>| -> anyhow::Result<()> {
        tensors.push((name, Tensor::from_vec(values, shape, &dev)?));
        Ok(())
    };
    // GPT-2's initialisation: weights N(0, 0.02²), output projections scaled by 1/sqrt(2·layers), biases 0,
    // norm gains 1.
    let out_std = 0.02 / (2.0 * layers as f32).sqrt();
    add("wte.weight".into(), &[vocab, d], normal(&mut rng, vocab * d, 0.02))?;
    add("wpe.weight".into(), &[positions, d], normal(&mut rng, positions * d, 0.01))?;
    for l in 0..layers {
        let p = format!("h.{l}");
        for ln in ["ln_1", "ln_2"] {
            add(format!("{p}.{ln}.weight"), &[d], vec![1.0; d])?;
            add(format!("{p}.{ln}.bias"), &[d], vec![0.0; d])?;
        }
        add(format!("{p}.attn.c_attn.weight"), &[d, 3 * d], normal(&mut rng, 3 * d * d, 0.02))?;
        add(format!("{p}.attn.c_attn.bias"), &[3 * d], vec![0.0; 3 * d])?;
        add(format!("{p}.attn.c_proj.weight"), &[d, d], normal(&mut rng, d * d, out_std))?;
        add(format!("{p}.attn.c_proj.bias"), &[d], vec![0.0; d])?;
        add(format!("{p}.mlp.c_fc.weight"), &[d, 4 * d], normal(&mut rng, 4 * d * d, 0.02))?;
        add(format!("{p}.mlp.c_fc.bias"), &[4 * d], vec![0.0; 4 * d])?;
        add(format!("{p}.mlp.c_proj.weight"), &[4 * d, d], normal(&mut rng, 4 * d * d, out_std))?;
        add(format!("{p}.mlp.c_proj.bias"), &[d], vec![0.0; d])?;
    }
    add("ln_f.weight".into(), &[d], vec![1.0; d])?;
    add("ln_f.bias".into(), &[d], vec![0.0; d])?;
    candle_core::safetensors::save(&tensors.iter().map(|(n, t)| (n.as_str(), t.clone())).collect(), out.join("model.safetensors"))?;
    let config = serde_json::json!({
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "activation_function": "gelu_new",
        "n_layer": layers,
        "n_head": heads,
        "n_embd": d,
        "n_positions": positions,
        "vocab_size": vocab,
        "layer_norm_epsilon": 1e-5,
        "tie_word_embeddings": true,
        "bos_token_id": 50256,
        "eos_token_id": 50256
    });
    std::fs::write(out.join("config.json"), serde_json::to_string_pretty(&config)? + "\n")?;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::copy(root.join("tests/fixtures/gpt2-tiny/tokenizer.json"), out.join("tokenizer.json"))?;
    println!("{}: random GPT-2, {layers} layers, {heads} heads, d_model {d}, seed {seed}", out.display());
    Ok(())
}
