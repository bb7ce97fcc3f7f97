//! Qwen2 family adapter (Qwen2, Qwen2.5 — MIB's Qwen2.5-0.5B): the Llama layout and tensor names with biases on
//! the query, key and value projections and none on the output projection, grouped-query attention, tied or
//! untied unembedding. Reading is the Llama adapter's (it takes whatever attention biases a checkpoint has, and
//! the engine adds query and key biases before the rotation as it does for any family); this file maps the
//! config and writes the Qwen2 layout back.
use candle_core::Tensor;
use serde_json::Value;

use super::llama::{self, BiasLayout};
use super::source::TensorSource;
use super::weights::Weights;
use super::Config;
use crate::{Error, Result};

/// Maps a Hugging Face `Qwen2Config` onto the canonical config.
pub fn config(json: &Value) -> Result<Config> {
    if json.get("use_sliding_window").and_then(Value::as_bool) == Some(true) {
        return Err(Error::config("sliding-window attention (use_sliding_window: true) is not supported"));
    }
    let layers = json.get("layer_types").and_then(Value::as_array).into_iter().flatten();
    if let Some(kind) = layers.filter_map(Value::as_str).find(|k| *k != "full_attention") {
        return Err(Error::config(format!("layer type `{kind}` is not supported (full attention only)")));
    }
    let mut cfg = llama::config(json)?;
    cfg.family = "qwen2".into();
    Ok(cfg)
}

/// Reads Qwen2 weights from Hugging Face safetensors.
pub fn weights(src: &dyn TensorSource, cfg: &Config, json: &Value) -> Result<Weights> {
    llama::weights(src, cfg, llama::tied(json))
}

/// The canonical weights in the hub's Qwen2 layout (Llama names, `[out, in]` matrices, q/k/v biases, no
/// `lm_head.weight` when the unembedding is the embedding) and its `config.json`.
pub fn export(w: &Weights, cfg: &Config, bos: Option<u32>) -> Result<(Vec<(String, Tensor)>, Value)> {
    let (mut out, _) = llama::hf_tensors(w, cfg, BiasLayout::Qkv)?;
    let untied = (&w.unembed - w.embed.t()?)?.abs()?.max_all()?.to_scalar::<f32>()? > 0.0;
    if untied {
        out.push(("lm_head.weight".into(), w.unembed.t()?.contiguous()?));
    }
    let config = serde_json::json!({
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "hidden_act": "silu",
        "hidden_size": cfg.d_model,
        "intermediate_size": cfg.d_mlp,
        "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.n_kv_heads,
        "head_dim": cfg.d_head,
        "num_hidden_layers": cfg.n_layers,
        "rms_norm_eps": cfg.norm_eps,
        "rope_theta": llama::rope_theta(cfg),
        "vocab_size": cfg.vocab_size,
        "max_position_embeddings": cfg.max_positions().unwrap_or(32768),
        "use_sliding_window": false,
        "tie_word_embeddings": !untied,
        "bos_token_id": bos,
        "torch_dtype": "float32"
    });
    Ok((out, config))
}
