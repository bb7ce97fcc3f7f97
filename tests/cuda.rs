//! CPU against CUDA: the same model loaded on both devices gives the same logits (tiny GPT-2 fixture, SmolLM2,
//! and Hugging Face's reference logits) and the same EAP-IG edge scores. Compiled with `--features cuda` only and
//! ignored by default: they need a GPU. `scripts/gpu-check.sh` runs them with `--ignored`.
//!
//! Tolerances. The CPU engine is held to 1e-4 (absolute, logits of order 10) against PyTorch. On CUDA every
//! matmul is one cuBLAS call that sums the reduction in its own blocked order (the CPU path sums K in chunks of at
//! most 288) and the normalisation's statistics are computed from tensor ops rather than the CPU kernel's f64
//! loop, so the two devices round differently at every layer: the f32 unit roundoff (6e-8) times sums of a few
//! thousand terms of magnitude up to ~10 over 30 layers gives differences of order 1e-4; `LOGIT_TOL` allows 1e-3
//! absolute, 10x the CPU-vs-PyTorch bar and still three orders of magnitude under the logit gaps that decide a
//! rank. TF32 stays off (candle's default), which this tolerance assumes. Ranks are compared at the last position:
//! the top-10 tokens must be the same and in the same order except where two logits lie within `LOGIT_TOL` of each
//! other (a tie that either device may break).
#![cfg(feature = "cuda")]
mod common;

use candle_core::{Device, Tensor};
use common::*;
use kcirc::model::{Clean, Logits, Model};
use kcirc::progress::Silent;
use kcirc::tokenizer::Tokenizer;

const LOGIT_TOL: f32 = 1e-3;
/// EAP-IG scores: the largest CPU-vs-CUDA difference relative to the largest |score| (gradients and deltas each
/// carry the logit-level differences above).
const SCORE_TOL: f64 = 1e-3;

fn cuda() -> Device {
    Device::new_cuda(0).expect("--features cuda tests need a CUDA device (run them with scripts/gpu-check.sh)")
}

fn load(name: &str, dev: &Device) -> (Model, Tokenizer) {
    kcirc::model::load(name, dev).unwrap()
}

/// `[T, V]` logits of one prompt, on CPU whatever device ran it.
fn logits(model: &Model, ids: &[u32]) -> Tensor {
    let batch = model.batch(&[ids.to_vec()]).unwrap();
    let (_, all) = model.run(&batch, &Clean, Logits::All).unwrap(); // [1, T, V]
    all.squeeze(0).unwrap().to_device(&Device::Cpu).unwrap()
}

/// The top-10 token ids of `cpu` and `gpu` (`[V]` logits) agree, up to swaps of tokens whose logits tie within
/// `LOGIT_TOL`.
fn same_top10(cpu: &Tensor, gpu: &Tensor, what: &str) {
    let c: Vec<f32> = cpu.to_vec1().unwrap();
    let g: Vec<f32> = gpu.to_vec1().unwrap();
    let top = |v: &[f32]| {
        let mut idx: Vec<usize> = (0..v.len()).collect();
        idx.sort_by(|&a, &b| v[b].total_cmp(&v[a]).then(a.cmp(&b)));
        idx.truncate(10);
        idx
    };
    let (tc, tg) = (top(&c), top(&g));
    for (r, (&a, &b)) in tc.iter().zip(&tg).enumerate() {
        assert!(a == b || (c[a] - c[b]).abs() <= LOGIT_TOL, "{what}: rank {r}: CPU token {a} ({}), CUDA token {b} ({})", c[a], g[b]);
    }
}

/// Every reference prompt alone and all of them as one left-padded batch: CUDA logits within `LOGIT_TOL` of the
/// CPU's (all positions, whole vocabulary) and of transformers' reference; same top-10 at the last position.
fn logits_parity(name: &str, dir: &str) {
    let (cpu, tok) = load(name, &Device::Cpu);
    let (gpu, _) = load(name, &cuda());
    let r = reference(dir);
    let mut worst = (0f32, 0f32);
    for (i, (text, ids)) in r.prompts.iter().enumerate() {
        assert_eq!(&tok.encode(text).unwrap(), ids);
        let (c, g) = (logits(&cpu, ids), logits(&gpu, ids));
        let d = max_abs_diff(&c, &g);
        let last = g.get(ids.len() - 1).unwrap();
        let d_ref = max_abs_diff(&last, &r.tensors[&format!("last.{i}")]);
        assert!(d <= LOGIT_TOL && d_ref <= LOGIT_TOL, "{dir} {text:?}: CUDA vs CPU {d:e}, CUDA vs transformers {d_ref:e}");
        same_top10(&c.get(ids.len() - 1).unwrap(), &last, &format!("{dir} {text:?}"));
        worst = (worst.0.max(d), worst.1.max(d_ref));
    }
    let ids: Vec<Vec<u32>> = r.prompts.iter().map(|(_, ids)| ids.clone()).collect();
    let c = cpu.forward(&cpu.batch(&ids).unwrap()).unwrap(); // [B, V], last positions
    let g = gpu.forward(&gpu.batch(&ids).unwrap()).unwrap().to_device(&Device::Cpu).unwrap();
    let d = max_abs_diff(&c, &g);
    assert!(d <= LOGIT_TOL, "{dir}: padded batch, CUDA vs CPU {d:e}");
    eprintln!("{dir}: logits max abs diff CUDA vs CPU {:e} (padded batch {d:e}), CUDA vs transformers {:e}", worst.0, worst.1);
}

#[test]
#[ignore = "needs a CUDA device: scripts/gpu-check.sh"]
fn gpt2_tiny_logits_cpu_equal_cuda() {
    logits_parity(fixture("gpt2-tiny").to_str().unwrap(), "gpt2-tiny");
}

#[test]
#[ignore = "needs a CUDA device: scripts/gpu-check.sh"]
fn smollm2_logits_cpu_equal_cuda() {
    logits_parity(smollm2_path().to_str().unwrap(), "smollm2");
}

/// EAP (plain gradients) and EAP-IG (5 steps) scores of every edge, zero ablation, the model's own top-1 on a few
/// prompts as targets: CUDA within `SCORE_TOL` of CPU relative to the largest |score|.
fn scores_parity(name: &str) {
    use kcirc::discover::eap::edge_scores;
    use kcirc::discover::Task;
    let (cpu, tok) = load(name, &Device::Cpu);
    let (gpu, _) = load(name, &cuda());
    let prompts: Vec<Vec<u32>> = ["The capital city of France is", "The capital city of Japan is", "The mother tongue of Dante is"]
        .iter()
        .map(|p| tok.encode(p).unwrap())
        .collect();
    for steps in [None, Some(5)] {
        let score = |m: &Model| {
            let t = Task::new(m, examples(m, &prompts), kcirc::intervene::Ablation::Zero, None, kcirc::metric::Metric::Logit).unwrap();
            edge_scores(&t, steps, &Silent).unwrap()
        };
        let (c, g) = (score(&cpu), score(&gpu));
        assert_eq!(c.len(), g.len());
        let scale = c.iter().fold(0f64, |m, x| m.max(x.abs()));
        let d = c.iter().zip(&g).fold(0f64, |m, (a, b)| m.max((a - b).abs()));
        assert!(scale > 0.0 && d <= SCORE_TOL * scale, "{name} steps {steps:?}: max |CPU - CUDA| {d:e}, largest |score| {scale:e}");
        eprintln!("{name} EAP steps {steps:?}: {} edges, max |CPU - CUDA| {:e} of largest |score| {scale:e}", c.len(), d);
    }
}

#[test]
#[ignore = "needs a CUDA device: scripts/gpu-check.sh"]
fn gpt2_tiny_edge_scores_cpu_equal_cuda() {
    scores_parity(fixture("gpt2-tiny").to_str().unwrap());
}

#[test]
#[ignore = "needs a CUDA device: scripts/gpu-check.sh"]
fn smollm2_edge_scores_cpu_equal_cuda() {
    scores_parity(smollm2_path().to_str().unwrap());
}
