//! The canonical weight set. Adapters (`gpt2.rs`, `llama.rs`) fill it; the engine only ever reads this.
use candle_core::Tensor;

/// A normalisation layer's parameters.
#[derive(Debug, Clone)]
pub struct Norm {
    /// Gain, `[d_model]`.
    pub weight: Tensor,
    /// Bias, `[d_model]` (LayerNorm only).
    pub bias: Option<Tensor>,
}

/// One attention block in per-head form, so every head can read its own input.
#[derive(Debug, Clone)]
pub struct Attention {
    /// `[n_heads, d_model, d_head]`.
    pub w_q: Tensor,
    /// `[n_heads, 1, d_head]`.
    pub b_q: Tensor,
    /// `[n_kv_heads, d_model, d_head]`.
    pub w_k: Tensor,
    /// `[n_kv_heads, 1, d_head]`.
    pub b_k: Tensor,
    /// `[n_kv_heads, d_model, d_head]`; the value bias is folded into `b_o`.
    pub w_v: Tensor,
    /// `[n_kv_heads, 1, d_head]`: the value bias as the checkpoint has it. The forward pass never reads it (its
    /// fold is in `b_o`); exporters whose layout has no output bias (Qwen2) write it back.
    pub b_v: Tensor,
    /// `[n_heads, d_head, d_model]`.
    pub w_o: Tensor,
    /// `[d_model]`: output bias plus every head's `b_V · W_O` (constant, since softmax rows sum to 1).
    pub b_o: Tensor,
    /// Fused `[d_model, (n_heads + 2 n_kv_heads) d_head]` and `[(n_heads + 2 n_kv_heads) d_head]`, for the
    /// fast path where every port reads the same residual.
    pub w_qkv: Tensor,
    pub b_qkv: Tensor,
}

/// One MLP block.
#[derive(Debug, Clone)]
pub enum Mlp {
    /// `w_in [d_model, d_mlp]`, `b_in [d_mlp]`, `w_out [d_mlp, d_model]`, `b_out [d_model]`.
    GeluTanh { w_in: Tensor, b_in: Tensor, w_out: Tensor, b_out: Tensor },
    /// `w_gate_up [d_model, 2 d_mlp]` (gate first), `w_down [d_mlp, d_model]`.
    SwiGlu { w_gate_up: Tensor, w_down: Tensor },
}

/// One transformer block.
#[derive(Debug, Clone)]
pub struct Layer {
    pub ln1: Norm,
    pub attn: Attention,
    pub ln2: Norm,
    pub mlp: Mlp,
}

/// All weights of the canonical transformer (f32).
#[derive(Debug, Clone)]
pub struct Weights {
    /// Token embedding `[vocab, d_model]`.
    pub embed: Tensor,
    /// Learned position embedding `[max_positions, d_model]` (GPT-2 only).
    pub pos_embed: Option<Tensor>,
    pub layers: Vec<Layer>,
    pub ln_final: Norm,
    /// Unembedding `[d_model, vocab]`.
    pub unembed: Tensor,
    /// Unembedding bias `[vocab]`, if any.
    pub b_unembed: Option<Tensor>,
}

/// Raw per-layer attention weights in matrix form, as adapters read them: `[d_model, n·d_head]` each,
/// biases `[n·d_head]`, output `[n_heads·d_head, d_model]`. `Attention::from_matrices` turns them canonical.
pub struct AttentionMatrices {
    pub w_q: Tensor,
    pub b_q: Option<Tensor>,
    pub w_k: Tensor,
    pub b_k: Option<Tensor>,
    pub w_v: Tensor,
    pub b_v: Option<Tensor>,
    pub w_o: Tensor,
    pub b_o: Option<Tensor>,
}

impl Attention {
    /// Splits matrix-form weights per head and folds the value bias into the output bias.
    pub fn from_matrices(m: AttentionMatrices, cfg: &super::Config) -> candle_core::Result<Self> {
        let (d, h, kv, dh) = (cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.d_head);
        let dev = m.w_q.device().clone();
        let zeros = |n: usize| Tensor::zeros(n, candle_core::DType::F32, &dev);
        let b_q = m.b_q.map_or_else(|| zeros(h * dh), Ok)?;
        let b_k = m.b_k.map_or_else(|| zeros(kv * dh), Ok)?;
        let b_v = m.b_v.map_or_else(|| zeros(kv * dh), Ok)?;
        let b_o = m.b_o.map_or_else(|| zeros(d), Ok)?;
        // [d, n*dh] -> [n, d, dh]
        let per_head = |w: &Tensor, n: usize| w.reshape((d, n, dh))?.permute((1, 0, 2))?.contiguous();
        let w_q = per_head(&m.w_q, h)?;
        let w_k = per_head(&m.w_k, kv)?;
        let w_v = per_head(&m.w_v, kv)?;
        let w_o = m.w_o.reshape((h, dh, d))?.contiguous()?;
        let b_v = b_v.reshape((kv, 1, dh))?;
        let b_o = (b_o + value_bias_output(&b_v, &w_o, cfg)?)?;
        let w_qkv = Tensor::cat(&[&m.w_q, &m.w_k, &m.w_v], 1)?.contiguous()?;
        // The value bias lives in `b_o` now, so the fused projection leaves it out.
        let b_qkv = Tensor::cat(&[&b_q, &b_k, &zeros(kv * dh)?], 0)?;
        Ok(Self { w_q, b_q: b_q.reshape((h, 1, dh))?, w_k, b_k: b_k.reshape((kv, 1, dh))?, w_v, b_v, w_o, b_o, w_qkv, b_qkv })
    }

    /// The output bias the checkpoint had: `b_o` without the folded value bias, `[d_model]` (zero for a layout
    /// without one, up to rounding).
    pub fn own_output_bias(&self, cfg: &super::Config) -> candle_core::Result<Tensor> {
        &self.b_o - value_bias_output(&self.b_v, &self.w_o, cfg)?
    }
}

/// What the value bias adds to the block output, `Σ_i b_V[g(i)] · W_O[i]` over query heads `i` reading
/// key/value head `g(i) = i / group_size` — a constant, because softmax rows sum to 1. `b_v [n_kv_heads, 1,
/// d_head]`, `w_o [n_heads, d_head, d_model]` → `[d_model]`.
fn value_bias_output(b_v: &Tensor, w_o: &Tensor, cfg: &super::Config) -> candle_core::Result<Tensor> {
    let group = cfg.group_size();
    let idx: Vec<u32> = (0..cfg.n_heads).map(|i| (i / group) as u32).collect();
    let idx = Tensor::new(idx.as_slice(), b_v.device())?;
    super::ops::mm(&b_v.index_select(&idx, 0)?, w_o)?.sum(0)?.reshape(cfg.d_model)
    // [h, 1, dh]·[h, dh, d] → [d]
}
