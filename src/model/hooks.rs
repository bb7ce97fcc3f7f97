//! Named hook points: the places in the forward pass where analyses, interventions and edits read and write
//! activations (TransformerLens's `hook_resid_pre`, `hook_pattern`, `hook_z`, `hook_mlp_out`, done the candle
//! way). A client ([`Hooks`]) declares which points it reads (the engine records only those) and which it
//! writes (the engine hands it the value and uses its replacement); the engine has no other special cases.
//!
//! Two kinds of points: *stream* points (`Embed`, `ResidPre`, `ResidMid`, `ResidFinal`, and every block's
//! output) change what everything downstream sees; *receiver-input* points (`AttnIn`, `MlpIn`, `LogitsIn`)
//! change only what one receiver reads, leaving the residual stream as it is — that is what edge interventions
//! are built on (brief §1).
use std::collections::BTreeMap;

use candle_core::Tensor;

use crate::Result;

/// A named place in the forward pass. Shapes use B = batch rows, T = padded sequence length, D = d_model,
/// H = query heads, P = H + 2K attention input ports (K = key/value heads), dh = d_head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HookPoint {
    /// `hook_embed` + `hook_pos_embed`: the `input` sender, `[B, T, D]`. Stream.
    Embed,
    /// `blocks.l.hook_resid_pre`: the residual stream before attention `l`, `[B, T, D]`. Stream.
    ResidPre(usize),
    /// What the attention ports of layer `l` read before `ln1` — the receivers `a{l}.h{h}<q>` (H of them), then
    /// the key and value inputs (K each) — `[P, B, T, D]`. Receiver input; by default every port reads
    /// `ResidPre(l)` (handed to a writer as a broadcast view).
    AttnIn(usize),
    /// The per-port projections of layer `l` — every query head's query (bias included, before rotary), then
    /// every key/value head's key (bias included, before rotary) and value (no bias: folded into `b_O`) —
    /// `[P, B, T, dh]`, in port order. Port `p` of [`AttnIn`](HookPoint::AttnIn) reaches the model only through
    /// row `p` here, so attribution reads its gradient at this `dh`-wide point instead of the `D`-wide port input.
    Qkv(usize),
    /// `blocks.l.attn.hook_v`: the value vectors of every key/value head (value bias folded into `b_O`, so
    /// without it), `[K, B, T, dh]`. Query head `h` reads key/value head `h / (H / K)`.
    V(usize),
    /// `blocks.l.attn.hook_pattern`: softmax attention weights, query position × key position, `[H, B, T, T]`.
    Pattern(usize),
    /// `blocks.l.attn.hook_z`: every head's pattern-weighted values, `[H, B, T, dh]`.
    Z(usize),
    /// `blocks.l.attn.hook_result`: every head's output `z · W_O[h]` (the sender `a{l}.h{h}`, no bias),
    /// `[H, B, T, D]`. Computed only when read or written; a write makes the block output their sum plus `b_O`.
    HeadOut(usize),
    /// `blocks.l.hook_attn_out`: the attention block's output (every head plus `b_O`), `[B, T, D]`.
    AttnOut(usize),
    /// `blocks.l.hook_resid_mid`: the residual stream before MLP `l`, `[B, T, D]`. Stream.
    ResidMid(usize),
    /// What MLP `l` reads before `ln2` (the receiver `m{l}`), `[B, T, D]`. Receiver input; by default
    /// `ResidMid(l)`.
    MlpIn(usize),
    /// `blocks.l.mlp.hook_post`: the hidden activation after the nonlinearity, the input of the output projection
    /// (ROME's key), `[B, T, d_mlp]`.
    MlpHidden(usize),
    /// `blocks.l.hook_mlp_out`: MLP `l`'s output, bias included (the sender `m{l}`), `[B, T, D]`.
    MlpOut(usize),
    /// The final residual stream, `[B, T, D]`. Stream.
    ResidFinal,
    /// What the `logits` receiver reads (before the final norm), `[B, T, D]`. Receiver input; by default
    /// `ResidFinal`.
    LogitsIn,
}

impl HookPoint {
    /// The point's TransformerLens-style name (`blocks.3.attn.hook_pattern`), for messages and files.
    pub fn name(self) -> String {
        use HookPoint::*;
        match self {
            Embed => "hook_embed".into(),
            ResidPre(l) => format!("blocks.{l}.hook_resid_pre"),
            AttnIn(l) => format!("blocks.{l}.hook_attn_in"),
            Qkv(l) => format!("blocks.{l}.attn.hook_qkv"),
            V(l) => format!("blocks.{l}.attn.hook_v"),
            Pattern(l) => format!("blocks.{l}.attn.hook_pattern"),
            Z(l) => format!("blocks.{l}.attn.hook_z"),
            HeadOut(l) => format!("blocks.{l}.attn.hook_result"),
            AttnOut(l) => format!("blocks.{l}.hook_attn_out"),
            ResidMid(l) => format!("blocks.{l}.hook_resid_mid"),
            MlpIn(l) => format!("blocks.{l}.hook_mlp_in"),
            MlpHidden(l) => format!("blocks.{l}.mlp.hook_post"),
            MlpOut(l) => format!("blocks.{l}.hook_mlp_out"),
            ResidFinal => "hook_resid_final".into(),
            LogitsIn => "hook_logits_in".into(),
        }
    }

    /// Every point of a model with `n_layers` layers, in forward order.
    pub fn all(n_layers: usize) -> Vec<HookPoint> {
        use HookPoint::*;
        let mut v = vec![Embed];
        for l in 0..n_layers {
            v.extend([
                ResidPre(l),
                AttnIn(l),
                Qkv(l),
                V(l),
                Pattern(l),
                Z(l),
                HeadOut(l),
                AttnOut(l),
                ResidMid(l),
                MlpIn(l),
                MlpHidden(l),
                MlpOut(l),
            ]);
        }
        v.extend([ResidFinal, LogitsIn]);
        v
    }
}

/// A client of the forward pass: what it reads, what it writes, and whether gradients must flow.
///
/// The engine asks [`writes`](Hooks::writes) at every point and calls [`write`](Hooks::write) only where it is
/// true, so a client that writes nowhere costs nothing; it records a point's value (after any write) only where
/// [`reads`](Hooks::reads) is true.
pub trait Hooks {
    /// Whether the engine must record this point's value in [`Activations`].
    fn reads(&self, _point: HookPoint) -> bool {
        false
    }
    /// Whether [`write`](Hooks::write) may replace this point's value.
    fn writes(&self, _point: HookPoint) -> bool {
        false
    }
    /// The replacement for `value` at `point` (same shape), or `None` to keep it. `acts` holds everything the
    /// run has computed so far (every sender output before this point, the points the client reads).
    fn write(&self, _point: HookPoint, _value: &Tensor, _acts: &Activations) -> Result<Option<Tensor>> {
        Ok(None)
    }
    /// Whether gradients must flow through the run: candle's fused kernels (softmax, normalisation) have no
    /// backward pass and are swapped for differentiable versions.
    fn differentiable(&self) -> bool {
        false
    }
}

/// The unmodified model: reads and writes nothing.
pub struct Clean;
impl Hooks for Clean {}

/// Records the points `which` selects and changes nothing.
pub struct Record<F: Fn(HookPoint) -> bool>(pub F);

impl<F: Fn(HookPoint) -> bool> Hooks for Record<F> {
    fn reads(&self, point: HookPoint) -> bool {
        (self.0)(point)
    }
}

/// Records every head's output (the senders `a{l}.h{h}`), which edge interventions and ablated values need.
pub fn record_heads() -> Record<fn(HookPoint) -> bool> {
    Record(|p| matches!(p, HookPoint::HeadOut(_)))
}

/// Adds `delta` (broadcast to the point's shape) to the value at `point`. With a `candle_core::Var` as the
/// delta and `differentiable`, the backward pass yields the loss's gradient with respect to it.
pub struct AddAt {
    pub point: HookPoint,
    pub delta: Tensor,
    pub differentiable: bool,
}

impl Hooks for AddAt {
    fn writes(&self, point: HookPoint) -> bool {
        point == self.point
    }
    fn write(&self, _: HookPoint, value: &Tensor, _: &Activations) -> Result<Option<Tensor>> {
        Ok(Some(value.broadcast_add(&self.delta)?))
    }
    fn differentiable(&self) -> bool {
        self.differentiable
    }
}

/// No reads or writes, but a differentiable run: what a gradient with respect to a weight needs.
pub struct Differentiable;
impl Hooks for Differentiable {
    fn differentiable(&self) -> bool {
        true
    }
}

/// Several clients in one run: each reads what it reads; writes apply in order, each client seeing the value
/// the previous one left.
pub struct Stack<'a>(pub Vec<&'a dyn Hooks>);

impl Hooks for Stack<'_> {
    fn reads(&self, point: HookPoint) -> bool {
        self.0.iter().any(|h| h.reads(point))
    }
    fn writes(&self, point: HookPoint) -> bool {
        self.0.iter().any(|h| h.writes(point))
    }
    fn write(&self, point: HookPoint, value: &Tensor, acts: &Activations) -> Result<Option<Tensor>> {
        let mut out: Option<Tensor> = None;
        for h in self.0.iter().filter(|h| h.writes(point)) {
            if let Some(v) = h.write(point, out.as_ref().unwrap_or(value), acts)? {
                out = Some(v);
            }
        }
        Ok(out)
    }
    fn differentiable(&self) -> bool {
        self.0.iter().any(|h| h.differentiable())
    }
}

/// What one forward pass computed: the residual stream and every MLP's output (always kept: later layers and
/// edge interventions read them), and the value of every other point a client read (the cache, keyed by point).
#[derive(Debug, Clone)]
pub struct Activations {
    /// The `input` sender, `[B, T, D]`.
    pub embed: Tensor,
    /// Per layer, the residual before attention, `[B, T, D]`.
    pub resid_pre: Vec<Tensor>,
    /// Per layer, the residual before the MLP, `[B, T, D]`.
    pub resid_mid: Vec<Tensor>,
    /// Per layer, the MLP's output (the sender `m{l}`, output bias included), `[B, T, D]`.
    pub mlps: Vec<Tensor>,
    /// The final residual stream, `[B, T, D]` (`None` until the last layer has run).
    pub resid_final: Option<Tensor>,
    /// The other points clients read (see [`HookPoint`] for their shapes).
    pub cache: BTreeMap<HookPoint, Tensor>,
}

impl Activations {
    /// Sender outputs only: the embedding `[B, T, D]`, per layer every head's output `[H, B, T, D]` (may be
    /// empty) and the MLP outputs `[B, T, D]` — what ablated values need.
    pub fn senders(embed: Tensor, heads: Vec<Tensor>, mlps: Vec<Tensor>) -> Activations {
        let cache = heads.into_iter().enumerate().map(|(l, h)| (HookPoint::HeadOut(l), h)).collect();
        Activations { embed, resid_pre: vec![], resid_mid: vec![], mlps, resid_final: None, cache }
    }

    /// The value recorded at `point`, if the run kept it.
    pub fn get(&self, point: HookPoint) -> Option<Tensor> {
        use HookPoint::*;
        match point {
            Embed => Some(self.embed.clone()),
            ResidPre(l) => self.resid_pre.get(l).cloned(),
            ResidMid(l) => self.resid_mid.get(l).cloned(),
            MlpOut(l) => self.mlps.get(l).cloned(),
            ResidFinal => self.resid_final.clone(),
            other => self.cache.get(&other).cloned(),
        }
    }

    /// Like [`get`](Self::get), for a point the caller's hooks declared they read: its absence is a bug.
    pub fn expect(&self, point: HookPoint) -> Result<Tensor> {
        self.get(point).ok_or_else(|| crate::Error::bug(format!("{} was not recorded by this run", point.name())))
    }

    /// Every head's output of layer `l`, `[H, B, T, D]` (recorded when the run's hooks read `HeadOut`).
    pub fn heads(&self, l: usize) -> Result<Tensor> {
        self.expect(HookPoint::HeadOut(l))
    }

    /// Layers whose head outputs were recorded.
    pub fn n_head_layers(&self) -> usize {
        self.cache.keys().filter(|p| matches!(p, HookPoint::HeadOut(_))).count()
    }
}
