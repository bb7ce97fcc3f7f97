//! Llama family adapter: RMSNorm, rotary embeddings, SwiGLU, grouped-query attention (kept native), tied or
//! untied unembedding. Reads Hugging Face safetensors (`nn.Linear` weights, `[out, in]`) and GGUF (llama.cpp
//! names, q/k rows permuted for interleaved rotary: un-permuted here to the half-split layout).
use candle_core::Tensor;
use serde_json::Value;

use super::gpt2::check;
use super::source::{Gguf, TensorSource};
use super::weights::{Attention, AttentionMatrices, Layer, Mlp, Norm, Weights};
use super::{Config, MlpKind, NormKind, Positional};
use crate::{Error, Result};

/// Maps a Hugging Face `LlamaConfig` onto the canonical config.
pub fn config(json: &Value) -> Result<Config> {
    let get = |k: &str| json.get(k).and_then(Value::as_u64).map(|v| v as usize);
    let need = |k: &str| get(k).ok_or_else(|| Error::config(format!("config.json has no `{k}`")));
    let d_model = need("hidden_size")?;
    let n_heads = need("num_attention_heads")?;
    if let Some(s) = json.get("rope_scaling").filter(|v| !v.is_null()) {
        return Err(Error::config(format!("rope_scaling {s} is not supported yet")));
    }
    // transformers ≥ 5 writes `rope_parameters: {rope_theta, rope_type}` where 4.x wrote `rope_theta`.
    let rope = json.get("rope_parameters").filter(|v| !v.is_null());
    if let Some(kind) = rope.and_then(|r| r.get("rope_type")).and_then(Value::as_str).filter(|k| *k != "default") {
        return Err(Error::config(format!("rope_type `{kind}` is not supported yet (default rotary only)")));
    }
    let theta = json.get("rope_theta").or_else(|| rope.and_then(|r| r.get("rope_theta"))).and_then(Value::as_f64).unwrap_or(10000.0);
    match json.get("hidden_act").and_then(Value::as_str).unwrap_or("silu") {
        "silu" | "swish" => {}
        other => return Err(Error::config(format!("Llama activation `{other}` is not supported (silu only)"))),
    }
    let cfg = Config {
        family: "llama".into(),
        n_layers: need("num_hidden_layers")?,
        d_model,
        n_heads,
        n_kv_heads: get("num_key_value_heads").unwrap_or(n_heads),
        d_head: get("head_dim").unwrap_or(d_model / n_heads.max(1)),
        d_mlp: need("intermediate_size")?,
        vocab_size: need("vocab_size")?,
        norm: NormKind::RmsNorm,
        norm_eps: json.get("rms_norm_eps").and_then(Value::as_f64).unwrap_or(1e-6),
        positional: Positional::Rotary { theta, max_positions: get("max_position_embeddings") },
        mlp: MlpKind::SwiGlu,
    };
    cfg.validate()?;
    Ok(cfg)
}

/// Whether the unembedding is the token embedding (`tie_word_embeddings`, false when absent as in
/// transformers' `LlamaConfig` and `Qwen2Config`). A tied model ignores any `lm_head.weight` as transformers
/// does; an untied one without it falls back to the embedding.
pub fn tied(json: &Value) -> bool {
    json.get("tie_word_embeddings").and_then(Value::as_bool).unwrap_or(false)
}

/// The canonical config from GGUF metadata (`llama.*` keys).
pub fn gguf_config(g: &Gguf) -> Result<Config> {
    let arch = g.meta_str("general.architecture")?;
    if arch != "llama" {
        return Err(Error::UnsupportedArchitecture(format!("gguf:{arch}")));
    }
    let k = |s: &str| format!("llama.{s}");
    let d_model = g.meta_usize(&k("embedding_length"))?;
    let n_heads = g.meta_usize(&k("attention.head_count"))?;
    let n_kv_heads = if g.has_meta(&k("attention.head_count_kv")) { g.meta_usize(&k("attention.head_count_kv"))? } else { n_heads };
    let vocab_size =
        if g.has_meta(&k("vocab_size")) { g.meta_usize(&k("vocab_size"))? } else { g.meta_strings("tokenizer.ggml.tokens")?.len() };
    let d_head = if g.has_meta(&k("attention.key_length")) { g.meta_usize(&k("attention.key_length"))? } else { d_model / n_heads.max(1) };
    let cfg = Config {
        family: "llama".into(),
        n_layers: g.meta_usize(&k("block_count"))?,
        d_model,
        n_heads,
        n_kv_heads,
        d_head,
        d_mlp: g.meta_usize(&k("feed_forward_length"))?,
        vocab_size,
        norm: NormKind::RmsNorm,
        norm_eps: g.meta_f64(&k("attention.layer_norm_rms_epsilon")).unwrap_or(1e-5),
        positional: Positional::Rotary {
            theta: g.meta_f64(&k("rope.freq_base")).unwrap_or(10000.0),
            max_positions: if g.has_meta(&k("context_length")) { Some(g.meta_usize(&k("context_length"))?) } else { None },
        },
        mlp: MlpKind::SwiGlu,
    };
    cfg.validate()?;
    Ok(cfg)
}

/// Tensor names of one checkpoint layout.
struct Names {
    embed: &'static str,
    norm_final: &'static str,
    unembed: &'static str,
    layer: fn(usize, &str) -> String,
    /// GGUF stores q/k rows permuted for interleaved rotary.
    permuted_qk: bool,
}

const HF: Names = Names {
    embed: "model.embed_tokens.weight",
    norm_final: "model.norm.weight",
    unembed: "lm_head.weight",
    layer: |l, part| {
        let name = match part {
            "ln1" => "input_layernorm",
            "ln2" => "post_attention_layernorm",
            "q" => "self_attn.q_proj",
            "k" => "self_attn.k_proj",
            "v" => "self_attn.v_proj",
            "o" => "self_attn.o_proj",
            "gate" => "mlp.gate_proj",
            "up" => "mlp.up_proj",
            _ => "mlp.down_proj",
        };
        format!("model.layers.{l}.{name}")
    },
    permuted_qk: false,
};

const GGUF: Names = Names {
    embed: "token_embd.weight",
    norm_final: "output_norm.weight",
    unembed: "output.weight",
    layer: |l, part| {
        let name = match part {
            "ln1" => "attn_norm",
            "ln2" => "ffn_norm",
            "q" => "attn_q",
            "k" => "attn_k",
            "v" => "attn_v",
            "o" => "attn_output",
            "gate" => "ffn_gate",
            "up" => "ffn_up",
            _ => "ffn_down",
        };
        format!("blk.{l}.{name}")
    },
    permuted_qk: true,
};

/// Reads Llama-layout weights from Hugging Face safetensors (Qwen2's too: the same names, with q/k/v biases),
/// the unembedding tied to the embedding when `tied` ([`tied`]).
pub fn weights(src: &dyn TensorSource, cfg: &Config, tied: bool) -> Result<Weights> {
    read(src, cfg, &HF, tied)
}

/// Reads Llama weights from a GGUF file (tied when it has no `output.weight`).
pub fn gguf_weights(src: &Gguf, cfg: &Config) -> Result<Weights> {
    read(src, cfg, &GGUF, false)
}

/// Undoes llama.cpp's q/k row permutation: rows `[n, 2, dh/2]` (interleaved pairs) back to `[n, dh/2, 2]`
/// order, i.e. the half-split layout. `w [n·dh, d_in]`.
fn unpermute(w: &Tensor, n: usize) -> Result<Tensor> {
    let (rows, d_in) = w.dims2()?;
    let half = rows / n / 2;
    Ok(w.reshape((n, half, 2, d_in))?.transpose(1, 2)?.reshape((rows, d_in))?)
}

fn read(src: &dyn TensorSource, cfg: &Config, names: &Names, tied: bool) -> Result<Weights> {
    let (d, h, kv, dh) = (cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.d_head);
    let embed = src.get(names.embed)?;
    check(src, names.embed, &embed, &[cfg.vocab_size, d])?;
    let bias = |l: usize, part: &str| -> Result<Option<Tensor>> {
        let n = format!("{}.bias", (names.layer)(l, part));
        if src.has(&n) {
            Ok(Some(src.get(&n)?))
        } else {
            Ok(None)
        }
    };
    let mut layers = Vec::with_capacity(cfg.n_layers);
    for l in 0..cfg.n_layers {
        let get = |part: &str| src.get(&format!("{}.weight", (names.layer)(l, part)));
        // Linear weights are [out, in]: the canonical matrices are [in, out].
        let linear = |part: &str, out: usize, inp: usize| -> Result<Tensor> {
            let w = get(part)?;
            check(src, &(names.layer)(l, part), &w, &[out, inp])?;
            let w = match (names.permuted_qk, part) {
                (true, "q") => unpermute(&w, h)?,
                (true, "k") => unpermute(&w, kv)?,
                _ => w,
            };
            Ok(w.t()?.contiguous()?)
        };
        let attn = Attention::from_matrices(
            AttentionMatrices {
                w_q: linear("q", h * dh, d)?,
                b_q: bias(l, "q")?,
                w_k: linear("k", kv * dh, d)?,
                b_k: bias(l, "k")?,
                w_v: linear("v", kv * dh, d)?,
                b_v: bias(l, "v")?,
                w_o: linear("o", d, h * dh)?,
                b_o: bias(l, "o")?,
            },
            cfg,
        )?;
        if bias(l, "gate")?.is_some() {
            return Err(Error::config("MLP biases are not supported for the Llama family"));
        }
        let w_gate_up = Tensor::cat(&[&linear("gate", cfg.d_mlp, d)?, &linear("up", cfg.d_mlp, d)?], 1)?;
        layers.push(Layer {
            ln1: Norm { weight: get("ln1")?, bias: None },
            attn,
            ln2: Norm { weight: get("ln2")?, bias: None },
            mlp: Mlp::SwiGlu { w_gate_up, w_down: linear("down", d, cfg.d_mlp)? },
        });
    }
    let unembed = if !tied && src.has(names.unembed) { src.get(names.unembed)?.t()?.contiguous()? } else { embed.t()?.contiguous()? };
    Ok(Weights {
        embed,
        pos_embed: None,
        layers,
        ln_final: Norm { weight: src.get(names.norm_final)?, bias: None },
        unembed,
        b_unembed: None,
    })
}

/// How an exporter writes attention biases.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum BiasLayout {
    /// Llama's `attention_bias`: query, key, value and output biases, or none when all are zero; the value
    /// bias stays folded into the output bias (the same function).
    AllOrNone,
    /// Qwen2's: query, key and value biases (the checkpoint's own value bias) and no output bias.
    Qkv,
}

/// Every tensor of the Hugging Face Llama layout but `lm_head.weight` (`model.layers.{l}.self_attn.q_proj.weight`,
/// `[out, in]` matrices, rotary in the half-split convention), with attention biases as `layout` says; and
/// whether any bias was written.
pub(crate) fn hf_tensors(w: &Weights, cfg: &Config, layout: BiasLayout) -> Result<(Vec<(String, Tensor)>, bool)> {
    let (d, h, kv, dh, f) = (cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.d_head, cfg.d_mlp);
    let t = |x: Tensor| -> Result<Tensor> { Ok(x.t()?.contiguous()?) };
    let max_abs = |x: &Tensor| -> Result<f32> { Ok(x.abs()?.max_all()?.to_scalar::<f32>()?) };
    let mut out: Vec<(String, Tensor)> = vec![("model.embed_tokens.weight".into(), w.embed.clone())];
    let mut biased = layout == BiasLayout::Qkv;
    for (l, layer) in w.layers.iter().enumerate() {
        let p = format!("model.layers.{l}");
        let a = &layer.attn;
        out.push((format!("{p}.input_layernorm.weight"), layer.ln1.weight.clone()));
        out.push((format!("{p}.post_attention_layernorm.weight"), layer.ln2.weight.clone()));
        out.push((format!("{p}.self_attn.q_proj.weight"), t(a.w_qkv.narrow(1, 0, h * dh)?)?));
        out.push((format!("{p}.self_attn.k_proj.weight"), t(a.w_qkv.narrow(1, h * dh, kv * dh)?)?));
        out.push((format!("{p}.self_attn.v_proj.weight"), t(a.w_qkv.narrow(1, (h + kv) * dh, kv * dh)?)?));
        out.push((format!("{p}.self_attn.o_proj.weight"), t(a.w_o.reshape((h * dh, d))?)?));
        out.push((format!("{p}.self_attn.q_proj.bias"), a.b_qkv.narrow(0, 0, h * dh)?));
        out.push((format!("{p}.self_attn.k_proj.bias"), a.b_qkv.narrow(0, h * dh, kv * dh)?));
        match layout {
            BiasLayout::AllOrNone => {
                if max_abs(&a.b_qkv)? > 0.0 || max_abs(&a.b_o)? > 0.0 {
                    biased = true;
                }
                out.push((format!("{p}.self_attn.v_proj.bias"), a.b_qkv.narrow(0, (h + kv) * dh, kv * dh)?));
                out.push((format!("{p}.self_attn.o_proj.bias"), a.b_o.clone()));
            }
            BiasLayout::Qkv => {
                // Exact for a model read from this layout (the same fold computed twice).
                if max_abs(&a.own_output_bias(cfg)?)? > 1e-6 * (1.0 + max_abs(&a.b_o)?) {
                    return Err(Error::input(format!(
                        "layer {l} has an attention output bias, which the {} layout has no place for",
                        cfg.family
                    )));
                }
                out.push((format!("{p}.self_attn.v_proj.bias"), a.b_v.reshape(kv * dh)?));
            }
        }
        let Mlp::SwiGlu { w_gate_up, w_down } = &layer.mlp else {
            return Err(Error::bug(format!("a {} layer without a SwiGLU MLP", cfg.family)));
        };
        out.push((format!("{p}.mlp.gate_proj.weight"), t(w_gate_up.narrow(1, 0, f)?)?));
        out.push((format!("{p}.mlp.up_proj.weight"), t(w_gate_up.narrow(1, f, f)?)?));
        out.push((format!("{p}.mlp.down_proj.weight"), t(w_down.clone())?));
    }
    if !biased {
        out.retain(|(n, _)| !n.ends_with(".bias"));
    }
    out.push(("model.norm.weight".into(), w.ln_final.weight.clone()));
    Ok((out, biased))
}

/// The rotary base of a config (10000 for one without rotary, which no Llama-layout model is).
pub(crate) fn rope_theta(cfg: &Config) -> f64 {
    match cfg.positional {
        Positional::Rotary { theta, .. } => theta,
        Positional::Learned { .. } => 10000.0,
    }
}

/// The canonical weights in the hub's Llama layout (`model.layers.{l}.self_attn.q_proj.weight`, `[out, in]`
/// matrices, rotary in the half-split convention) and its `config.json`. GGUF sources come out this way too.
pub fn export(w: &Weights, cfg: &Config, bos: Option<u32>) -> Result<(Vec<(String, Tensor)>, Value)> {
    let (d, h, kv, dh, f) = (cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.d_head, cfg.d_mlp);
    let (mut out, biased) = hf_tensors(w, cfg, BiasLayout::AllOrNone)?;
    out.push(("lm_head.weight".into(), w.unembed.t()?.contiguous()?));
    let theta = rope_theta(cfg);
    let config = serde_json::json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_act": "silu",
        "hidden_size": d,
        "intermediate_size": f,
        "num_attention_heads": h,
        "num_key_value_heads": kv,
        "head_dim": dh,
        "num_hidden_layers": cfg.n_layers,
        "rms_norm_eps": cfg.norm_eps,
        "rope_theta": theta,
        "vocab_size": cfg.vocab_size,
        "max_position_embeddings": cfg.max_positions().unwrap_or(8192),
        "attention_bias": biased,
        "tie_word_embeddings": false,
        "bos_token_id": bos,
        "torch_dtype": "float32"
    });
    Ok((out, config))
}
