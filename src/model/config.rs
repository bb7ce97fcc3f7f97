//! The canonical configuration every family adapter produces.
use serde::Serialize;

/// How the residual stream is normalised before each block and before the unembedding.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum NormKind {
    /// `(x - mean) / sqrt(var + eps) * w + b` (GPT-2).
    LayerNorm,
    /// `x / sqrt(mean(x²) + eps) * w` (Llama).
    RmsNorm,
}

/// How token positions enter the model.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum Positional {
    /// A learned position embedding added to the token embedding (GPT-2).
    Learned { max_positions: usize },
    /// Rotary embeddings on queries and keys, half-split (`rotate_half`) convention (Llama, Hugging Face layout).
    /// `max_positions`: the context the model was trained for (`max_position_embeddings`, GGUF
    /// `context_length`), when the checkpoint says; longer prompts are refused as for learned positions.
    Rotary { theta: f64, max_positions: Option<usize> },
}

/// The MLP's shape.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum MlpKind {
    /// `gelu_tanh(x W_in + b_in) W_out + b_out` (GPT-2).
    GeluTanh,
    /// `(silu(x W_gate) ⊙ x W_up) W_down` (Llama).
    SwiGlu,
}

/// Hyper-parameters of the canonical transformer. Every family adapter maps its checkpoint config onto this.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Config {
    /// Family name for messages and circuit files (`gpt2`, `llama`).
    pub family: String,
    pub n_layers: usize,
    pub d_model: usize,
    /// Query heads per layer.
    pub n_heads: usize,
    /// Key/value heads per layer (`n_heads` without grouped-query attention).
    pub n_kv_heads: usize,
    pub d_head: usize,
    pub d_mlp: usize,
    pub vocab_size: usize,
    pub norm: NormKind,
    pub norm_eps: f64,
    pub positional: Positional,
    pub mlp: MlpKind,
}

impl Config {
    /// The longest prompt the model takes, in tokens, when its checkpoint says.
    pub fn max_positions(&self) -> Option<usize> {
        match self.positional {
            Positional::Learned { max_positions } => Some(max_positions),
            Positional::Rotary { max_positions, .. } => max_positions,
        }
    }

    /// Query heads that share one key/value head.
    pub fn group_size(&self) -> usize {
        self.n_heads / self.n_kv_heads
    }

    /// Checks the invariants the engine relies on.
    pub fn validate(&self) -> crate::Result<()> {
        let bad = |m: String| Err(crate::Error::config(m));
        let sizes = [
            ("layers", self.n_layers),
            ("d_model", self.d_model),
            ("query heads", self.n_heads),
            ("key/value heads", self.n_kv_heads),
            ("context positions", self.max_positions().unwrap_or(1)),
        ];
        if let Some((name, _)) = sizes.iter().find(|(_, n)| *n == 0) {
            return bad(format!("{name}: 0"));
        }
        if self.n_heads % self.n_kv_heads != 0 {
            return bad(format!("{} query heads are not a multiple of {} key/value heads", self.n_heads, self.n_kv_heads));
        }
        if self.d_head == 0 || (matches!(self.positional, Positional::Rotary { .. }) && self.d_head % 2 == 1) {
            return bad(format!("bad head dimension {}", self.d_head));
        }
        Ok(())
    }
}
