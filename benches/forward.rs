//! Forward-pass throughput on SmolLM2-135M (f32, CPU): batch 8 × 32 tokens, full logits at every position,
//! the same shape `scripts/bench_torch.py` times for PyTorch. Run: `cargo bench --bench forward`.
use std::time::Instant;

use candle_core::Device;
use kcirc::model::Logits;

fn main() {
    let path = std::env::var("KCIRC_SMOLLM2").unwrap_or_else(|_| "models/SmolLM2-135M-Instruct.Q4_1.gguf".into());
    let (model, _) = kcirc::model::load(&path, &Device::Cpu).expect("run scripts/fetch-models.sh first");
    // Fixed pseudo-random token ids (splitmix64, seed 0).
    let mut state = 0u64;
    let mut next = || {
        state = state.wrapping_add(0x9E3779B97F4A7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
        ((z ^ (z >> 31)) % model.cfg.vocab_size as u64) as u32
    };
    let b: usize = std::env::var("BENCH_BATCH").ok().and_then(|v| v.parse().ok()).unwrap_or(8);
    let t = 32;
    let prompts: Vec<Vec<u32>> = (0..b).map(|_| (0..t).map(|_| next()).collect()).collect();
    kcirc::parallel::configure(kcirc::parallel::available());
    let which = if std::env::var("LAST").is_ok() { Logits::Last } else { Logits::All };
    let run = || model.forward_prompts(&prompts, which).unwrap();
    for _ in 0..2 {
        run();
    }
    let mut times: Vec<f64> = (0..5)
        .map(|_| {
            let t0 = Instant::now();
            run();
            t0.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    let median = times[2];
    println!(
        "{{\"impl\":\"kcirc\",\"threads\":{},\"batch\":{b},\"seq\":{t},\"tokens_per_s\":{:.1},\"median_s\":{:.4}}}",
        kcirc::parallel::threads(),
        (b * t) as f64 / median,
        median
    );
}
