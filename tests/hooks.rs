//! Named hook points: reading changes nothing, writes do exactly what they say, and the gradients editing needs
//! (with respect to a delta at a hook point, and to one MLP output projection) match finite differences.
mod common;

use candle_core::{DType, Device, Tensor};
use common::*;
use kcirc::gradient::{delta_gradient, mlp_out_gradient};
use kcirc::model::hooks::{AddAt, Record, Stack};
use kcirc::model::{Activations, Batch, Clean, HookPoint, Hooks, Logits, Model};

fn gpt2_batch(model: &Model, tok: &kcirc::tokenizer::Tokenizer) -> Batch {
    let prompts: Vec<Vec<u32>> =
        ["The capital city of France is", "Hi there", "In 1969, 3 astronauts went"].iter().map(|p| tok.encode(p).unwrap()).collect();
    model.batch(&prompts).unwrap()
}

fn llama_batch(model: &Model) -> Batch {
    model.batch(&[vec![5, 17, 33, 2, 90], vec![8, 8, 41, 60, 11, 72, 3], vec![1, 2, 3]]).unwrap()
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_dtype(DType::F32).unwrap().to_vec1().unwrap()
}

/// A tensor of `shape` with fixed pseudo-random entries in [-scale, scale].
fn noise(shape: &[usize], seed: u64, scale: f32) -> Tensor {
    let mut rng = kcirc::data::SplitMix64(seed);
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| ((rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// Reading every point records every point and leaves the logits bit for bit; the recorded values have the
/// documented shapes; the heads' outputs plus the bias are the block's output (the decomposition DLA uses).
fn reading_changes_nothing(model: &Model, batch: &Batch) {
    let plain = model.run(batch, &Clean, Logits::All).unwrap().1;
    let all = Record(|_| true);
    let (acts, read) = model.run(batch, &all, Logits::All).unwrap();
    assert_eq!(values(&plain), values(&read), "reading hook points changed the logits");
    let cfg = &model.cfg;
    let (b, t) = (batch.size(), batch.seq_len);
    let (d, h, p) = (cfg.d_model, cfg.n_heads, cfg.n_heads + 2 * cfg.n_kv_heads);
    for point in HookPoint::all(cfg.n_layers) {
        let v = acts.get(point).unwrap_or_else(|| panic!("{} not recorded", point.name()));
        let want: Vec<usize> = match point {
            HookPoint::AttnIn(_) => vec![p, b, t, d],
            HookPoint::Qkv(_) => vec![p, b, t, cfg.d_head],
            HookPoint::V(_) => vec![cfg.n_kv_heads, b, t, cfg.d_head],
            HookPoint::Pattern(_) => vec![h, b, t, t],
            HookPoint::Z(_) => vec![h, b, t, cfg.d_head],
            HookPoint::HeadOut(_) => vec![h, b, t, d],
            HookPoint::MlpHidden(_) => vec![b, t, cfg.d_mlp],
            _ => vec![b, t, d],
        };
        assert_eq!(v.dims(), want.as_slice(), "{}", point.name());
    }
    for l in 0..cfg.n_layers {
        let heads = acts.heads(l).unwrap();
        let sum = heads.sum(0).unwrap().broadcast_add(&model.weights.layers[l].attn.b_o).unwrap();
        let out = acts.get(HookPoint::AttnOut(l)).unwrap();
        assert!(max_abs_diff(&sum, &out) < 1e-4, "layer {l}: Σ heads + b_O vs block output {}", max_abs_diff(&sum, &out));
        // The stream is the sum of what the blocks write.
        let mid = (acts.get(HookPoint::ResidPre(l)).unwrap() + &out).unwrap();
        assert_eq!(values(&mid), values(&acts.get(HookPoint::ResidMid(l)).unwrap()));
        // Every pattern row over real keys sums to 1.
        let rows = acts.get(HookPoint::Pattern(l)).unwrap().sum(3).unwrap();
        assert!(values(&rows).iter().all(|s| (s - 1.0).abs() < 1e-5));
    }
    // The receiver inputs read the stream by default.
    let last = cfg.n_layers - 1;
    assert_eq!(values(&acts.get(HookPoint::MlpIn(last)).unwrap()), values(&acts.get(HookPoint::ResidMid(last)).unwrap()));
    assert_eq!(values(&acts.get(HookPoint::LogitsIn).unwrap()), values(&acts.get(HookPoint::ResidFinal).unwrap()));
}

#[test]
fn reading_every_hook_point_changes_nothing_gpt2() {
    let (model, tok) = tiny_gpt2();
    reading_changes_nothing(&model, &gpt2_batch(&model, &tok));
}

#[test]
fn reading_every_hook_point_changes_nothing_llama() {
    let model = tiny_llama(4);
    reading_changes_nothing(&model, &llama_batch(&model));
}

/// Writes a point's own value back (identity writes at every point): nothing changes.
struct WriteBack;
impl Hooks for WriteBack {
    fn writes(&self, _: HookPoint) -> bool {
        true
    }
    fn write(&self, _: HookPoint, value: &Tensor, _: &Activations) -> kcirc::Result<Option<Tensor>> {
        Ok(Some(value.clone()))
    }
}

/// Adds `delta` to the MLP output of `layer`: the stream after it changes, by hand.
struct AddToMlpOut {
    layer: usize,
    delta: Tensor,
}
impl Hooks for AddToMlpOut {
    fn writes(&self, p: HookPoint) -> bool {
        p == HookPoint::MlpOut(self.layer)
    }
    fn write(&self, _: HookPoint, value: &Tensor, _: &Activations) -> kcirc::Result<Option<Tensor>> {
        Ok(Some(value.broadcast_add(&self.delta)?))
    }
}

fn writes_do_what_they_say(model: &Model, batch: &Batch) {
    let plain = model.run(batch, &Clean, Logits::All).unwrap().1;
    let (b, t, d) = (batch.size(), batch.seq_len, model.cfg.d_model);
    // A zero delta at an MLP output, and every value written back as it is: bit-identical.
    let zero =
        AddAt { point: HookPoint::MlpOut(0), delta: Tensor::zeros((b, t, d), DType::F32, &Device::Cpu).unwrap(), differentiable: false };
    assert_eq!(values(&plain), values(&model.run(batch, &zero, Logits::All).unwrap().1));
    // Writing head outputs back makes the block output their sum plus the bias: equal up to summation order.
    let back = model.run(batch, &WriteBack, Logits::All).unwrap().1;
    assert!(max_abs_diff(&plain, &back) < 1e-4, "{}", max_abs_diff(&plain, &back));
    // A delta at the final residual is the unembedding of (residual + delta), computed by hand: bit-identical.
    let delta = noise(&[b, t, d], 7, 0.5);
    let record = Record(|p| p == HookPoint::ResidFinal);
    let clean = model.run(batch, &record, Logits::All).unwrap().0;
    let by_hand = model.unembed(&(clean.resid_final.clone().unwrap() + &delta).unwrap(), Logits::All).unwrap();
    let final_add = AddAt { point: HookPoint::ResidFinal, delta: delta.clone(), differentiable: false };
    let hooked = model.run(batch, &final_add, Logits::All).unwrap().1;
    assert_eq!(values(&by_hand), values(&hooked));
    assert!(max_abs_diff(&by_hand, &plain) > 1e-2, "the delta must matter");
    // A delta at the residual before layer 1's attention: the stream there is the clean one plus the delta
    // (exactly), and the logits are those of adding it to MLP 0's output (the stream's last term) by hand.
    let pre = AddAt { point: HookPoint::ResidPre(1), delta: delta.clone(), differentiable: false };
    let stack = Stack(vec![&pre, &record]);
    let (acts, hooked) = model.run(batch, &stack, Logits::All).unwrap();
    let clean_pre = model.run(batch, &Clean, Logits::All).unwrap().0.resid_pre[1].clone();
    assert_eq!(values(&acts.resid_pre[1]), values(&(clean_pre + &delta).unwrap()));
    let hand = model.run(batch, &AddToMlpOut { layer: 0, delta: delta.clone() }, Logits::All).unwrap().1;
    assert!(max_abs_diff(&hooked, &hand) < 1e-4, "{}", max_abs_diff(&hooked, &hand));
    assert!(max_abs_diff(&hooked, &plain) > 1e-2, "the delta must matter");
    // A receiver-input write changes what that receiver reads, not the stream.
    let mlp_in = AddAt { point: HookPoint::MlpIn(0), delta: delta.clone(), differentiable: false };
    let stack = Stack(vec![&mlp_in, &record]);
    let acts = model.run(batch, &stack, Logits::All).unwrap().0;
    let clean = model.run(batch, &Clean, Logits::All).unwrap().0;
    assert_eq!(values(&acts.resid_mid[0]), values(&clean.resid_mid[0]));
    assert!(max_abs_diff(&acts.mlps[0], &clean.mlps[0]) > 1e-3);
}

#[test]
fn writes_do_what_they_say_gpt2() {
    let (model, tok) = tiny_gpt2();
    writes_do_what_they_say(&model, &gpt2_batch(&model, &tok));
}

#[test]
fn writes_do_what_they_say_llama() {
    let model = tiny_llama(6);
    writes_do_what_they_say(&model, &llama_batch(&model));
}

/// Mean negative log-probability of fixed target tokens at the last position, from `[B, V]` logits: a loss of
/// the kind editing minimises.
fn nll(targets: Vec<u32>) -> impl Fn(&Tensor) -> kcirc::Result<Tensor> {
    move |logits: &Tensor| {
        let lp = candle_nn::ops::log_softmax(logits, candle_core::D::Minus1)?;
        let idx = Tensor::from_vec(targets.clone(), (targets.len(), 1), logits.device())?;
        Ok(lp.gather(&idx, 1)?.mean_all()?.neg()?)
    }
}

/// `⟨grad, u⟩` against the central difference of the loss along `u`.
fn assert_directional(what: &str, analytic: f64, plus: f64, minus: f64, eps: f64) {
    let numeric = (plus - minus) / (2.0 * eps);
    let err = (analytic - numeric).abs();
    eprintln!("{what}: analytic {analytic:.6} numeric {numeric:.6}");
    assert!(err <= 2e-2 * numeric.abs().max(1e-2), "{what}: analytic {analytic} numeric {numeric}");
    assert!(numeric.abs() > 1e-4, "{what}: the direction must matter ({numeric})");
}

fn gradients_match_finite_differences(model: &Model, batch: &Batch) {
    let targets: Vec<u32> = (0..batch.size() as u32).map(|i| 3 + 5 * i).collect();
    let loss = nll(targets);
    let run_loss = |m: &Model, hooks: &dyn Hooks| -> f64 {
        let out = m.run(batch, hooks, Logits::Last).unwrap().1;
        loss(&out).unwrap().to_scalar::<f32>().unwrap() as f64
    };
    let eps = 1e-2;
    // One MLP's output projection, in the first and the last layer.
    for layer in [0, model.cfg.n_layers - 1] {
        let w = model.mlp_out_weight(layer).clone();
        let (value, grad) = mlp_out_gradient(model, batch, layer, Logits::Last, &loss).unwrap();
        assert!((value - run_loss(model, &Clean)).abs() < 1e-4);
        assert_eq!(grad.dims(), w.dims());
        let u = noise(w.dims(), 40 + layer as u64, 1.0);
        let analytic = (&grad * &u).unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() as f64;
        let at = |s: f64| run_loss(&model.with_mlp_out_weight(layer, (&w + (&u * (s * eps)).unwrap()).unwrap()).unwrap(), &Clean);
        assert_directional(&format!("MLP {layer} output projection"), analytic, at(1.0), at(-1.0), eps);
    }
    // A delta at a hook point (ROME writes its value vector at an MLP output).
    let (b, t, d) = (batch.size(), batch.seq_len, model.cfg.d_model);
    for point in [HookPoint::MlpOut(0), HookPoint::ResidMid(model.cfg.n_layers - 1)] {
        let zero = Tensor::zeros((b, t, d), DType::F32, &Device::Cpu).unwrap();
        let (_, grad) = delta_gradient(model, batch, point, &zero, Logits::Last, &loss).unwrap();
        let u = noise(&[b, t, d], 9, 1.0);
        let analytic = (&grad * &u).unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() as f64;
        let at = |s: f64| run_loss(model, &AddAt { point, delta: (&u * (s * eps)).unwrap(), differentiable: false });
        assert_directional(&point.name(), analytic, at(1.0), at(-1.0), eps);
    }
}

#[test]
fn editing_gradients_match_finite_differences_gpt2() {
    let (model, tok) = tiny_gpt2();
    gradients_match_finite_differences(&model, &gpt2_batch(&model, &tok));
}

#[test]
fn editing_gradients_match_finite_differences_llama() {
    let model = tiny_llama(8);
    gradients_match_finite_differences(&model, &llama_batch(&model));
}
