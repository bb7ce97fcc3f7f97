//! GPT-2 family adapter: Conv1D (`[in, out]`) weights, learned positions, LayerNorm, GELU (tanh), tied unembedding.
//! Accepts tensor names with the `transformer.` prefix and without it (the hub's `model.safetensors`).
use candle_core::Tensor;
use serde_json::Value;

use super::source::TensorSource;
use super::weights::{Attention, AttentionMatrices, Layer, Mlp, Norm, Weights};
use super::{Config, MlpKind, NormKind, Positional};
use crate::{Error, Result};

/// Maps a Hugging Face `GPT2Config` onto the canonical config.
pub fn config(json: &Value) -> Result<Config> {
    let get = |k: &str| json.get(k).and_then(Value::as_u64).map(|v| v as usize);
    let need = |k: &str| get(k).ok_or_else(|| Error::config(format!("config.json has no `{k}`")));
    let d_model = need("n_embd")?;
    let n_heads = need("n_head")?;
    if json.get("scale_attn_by_inverse_layer_idx").and_then(Value::as_bool) == Some(true) {
        return Err(Error::config("scale_attn_by_inverse_layer_idx is not supported"));
    }
    match json.get("activation_function").and_then(Value::as_str).unwrap_or("gelu_new") {
        "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => {}
        other => return Err(Error::config(format!("GPT-2 activation `{other}` is not supported (gelu_new only)"))),
    }
    if n_heads == 0 || d_model % n_heads != 0 {
        return Err(Error::config(format!("n_embd {d_model} is not a multiple of n_head {n_heads}")));
    }
    let cfg = Config {
        family: "gpt2".into(),
        n_layers: need("n_layer")?,
        d_model,
        n_heads,
        n_kv_heads: n_heads,
        d_head: d_model / n_heads,
        d_mlp: get("n_inner").unwrap_or(4 * d_model),
        vocab_size: need("vocab_size")?,
        norm: NormKind::LayerNorm,
        norm_eps: json.get("layer_norm_epsilon").and_then(Value::as_f64).unwrap_or(1e-5),
        positional: Positional::Learned { max_positions: get("n_positions").or(get("n_ctx")).unwrap_or(1024) },
        mlp: MlpKind::GeluTanh,
    };
    cfg.validate()?;
    Ok(cfg)
}

/// Reads GPT-2 weights from `src` into the canonical layout.
pub fn weights(src: &dyn TensorSource, cfg: &Config) -> Result<Weights> {
    let prefix = if src.has("transformer.wte.weight") { "transformer." } else { "" };
    let get = |n: &str| src.get_any(&[format!("{prefix}{n}")]);
    let norm = |n: &str| -> Result<Norm> { Ok(Norm { weight: get(&format!("{n}.weight"))?, bias: Some(get(&format!("{n}.bias"))?) }) };
    let d = cfg.d_model;
    let embed = get("wte.weight")?;
    check(src, "wte.weight", &embed, &[cfg.vocab_size, d])?;
    let mut layers = Vec::with_capacity(cfg.n_layers);
    for l in 0..cfg.n_layers {
        let p = format!("h.{l}");
        let c_attn = get(&format!("{p}.attn.c_attn.weight"))?; // [d, 3d]
        check(src, "c_attn.weight", &c_attn, &[d, 3 * d])?;
        let b_attn = get(&format!("{p}.attn.c_attn.bias"))?;
        let col = |t: &Tensor, i: usize| t.narrow(t.rank() - 1, i * d, d);
        let attn = Attention::from_matrices(
            AttentionMatrices {
                w_q: col(&c_attn, 0)?,
                b_q: Some(col(&b_attn, 0)?),
                w_k: col(&c_attn, 1)?,
                b_k: Some(col(&b_attn, 1)?),
                w_v: col(&c_attn, 2)?,
                b_v: Some(col(&b_attn, 2)?),
                w_o: get(&format!("{p}.attn.c_proj.weight"))?,
                b_o: Some(get(&format!("{p}.attn.c_proj.bias"))?),
            },
            cfg,
        )?;
        let w_in = get(&format!("{p}.mlp.c_fc.weight"))?;
        check(src, "mlp.c_fc.weight", &w_in, &[d, cfg.d_mlp])?;
        layers.push(Layer {
            ln1: norm(&format!("{p}.ln_1"))?,
            attn,
            ln2: norm(&format!("{p}.ln_2"))?,
            mlp: Mlp::GeluTanh {
                w_in,
                b_in: get(&format!("{p}.mlp.c_fc.bias"))?,
                w_out: get(&format!("{p}.mlp.c_proj.weight"))?,
                b_out: get(&format!("{p}.mlp.c_proj.bias"))?,
            },
        });
    }
    let unembed = if src.has("lm_head.weight") { src.get("lm_head.weight")?.t()?.contiguous()? } else { embed.t()?.contiguous()? };
    Ok(Weights { pos_embed: Some(get("wpe.weight")?), embed, layers, ln_final: norm("ln_f")?, unembed, b_unembed: None })
}

/// Fails with a one-line checkpoint error when a tensor's shape is not what the config promises.
pub(crate) fn check(src: &dyn TensorSource, name: &str, t: &Tensor, want: &[usize]) -> Result<()> {
    if t.dims() != want {
        return Err(Error::BadCheckpoint {
            path: src.path().to_path_buf(),
            reason: format!("tensor `{name}` has shape {:?}, config expects {want:?}", t.dims()),
        });
    }
    Ok(())
}

/// The canonical weights in the hub's GPT-2 layout (`transformer.`-prefixed names, Conv1D `[in, out]`
/// matrices) and its `config.json`. The value bias comes out folded into `attn.c_proj.bias` (and zero in
/// `c_attn.bias`): the same function, since softmax rows sum to one.
pub fn export(w: &Weights, cfg: &Config) -> Result<(Vec<(String, Tensor)>, Value)> {
    let d = cfg.d_model;
    let mut out: Vec<(String, Tensor)> = vec![("transformer.wte.weight".into(), w.embed.clone())];
    if let Some(pe) = &w.pos_embed {
        out.push(("transformer.wpe.weight".into(), pe.clone()));
    }
    let norm = |out: &mut Vec<(String, Tensor)>, name: &str, n: &Norm| -> Result<()> {
        out.push((format!("{name}.weight"), n.weight.clone()));
        let bias = match &n.bias {
            Some(b) => b.clone(),
            None => n.weight.zeros_like()?,
        };
        out.push((format!("{name}.bias"), bias));
        Ok(())
    };
    for (l, layer) in w.layers.iter().enumerate() {
        let p = format!("transformer.h.{l}");
        norm(&mut out, &format!("{p}.ln_1"), &layer.ln1)?;
        norm(&mut out, &format!("{p}.ln_2"), &layer.ln2)?;
        let a = &layer.attn;
        out.push((format!("{p}.attn.c_attn.weight"), a.w_qkv.clone()));
        out.push((format!("{p}.attn.c_attn.bias"), a.b_qkv.clone()));
        out.push((format!("{p}.attn.c_proj.weight"), a.w_o.reshape((d, d))?));
        out.push((format!("{p}.attn.c_proj.bias"), a.b_o.clone()));
        let Mlp::GeluTanh { w_in, b_in, w_out, b_out } = &layer.mlp else {
            return Err(Error::bug("a GPT-2 layer without a GELU MLP"));
        };
        out.push((format!("{p}.mlp.c_fc.weight"), w_in.clone()));
        out.push((format!("{p}.mlp.c_fc.bias"), b_in.clone()));
        out.push((format!("{p}.mlp.c_proj.weight"), w_out.clone()));
        out.push((format!("{p}.mlp.c_proj.bias"), b_out.clone()));
    }
    norm(&mut out, "transformer.ln_f", &w.ln_final)?;
    out.push(("lm_head.weight".into(), w.unembed.t()?.contiguous()?));
    let max_positions = match cfg.positional {
        Positional::Learned { max_positions } => max_positions,
        Positional::Rotary { .. } => 1024,
    };
    let config = serde_json::json!({
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "activation_function": "gelu_new",
        "n_embd": d,
        "n_head": cfg.n_heads,
        "n_layer": cfg.n_layers,
        "n_inner": cfg.d_mlp,
        "n_positions": max_positions,
        "n_ctx": max_positions,
        "vocab_size": cfg.vocab_size,
        "layer_norm_epsilon": cfg.norm_eps,
        "tie_word_embeddings": false,
        "torch_dtype": "float32"
    });
    Ok((out, config))
}
