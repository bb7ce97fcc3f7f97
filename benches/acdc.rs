//! Exact discovery throughput: edges tested per second by ACDC's fast path (forward-cone evaluator, speculative
//! batches, kcirc's threads) against the naive path (one full forward pass with every receiver input rebuilt,
//! per tested edge), measured in the same run. `cargo bench --bench acdc` (needs scripts/fetch-models.sh).
use std::time::Instant;

use candle_core::Device;
use kcirc::data::{example, read};
use kcirc::discover::{acdc::Acdc, Discovery, Task};
use kcirc::intervene::Ablation;
use kcirc::metric::Metric;
use kcirc::model::Model;
use kcirc::tokenizer::Tokenizer;

/// Runs fast ACDC over the edges into receivers at layers ≥ `from_layer` (the rest removed up front, as the
/// hybrid method does), then times `naive_samples` naive single-edge evaluations.
fn bench(name: &str, model: &Model, tok: &Tokenizer, examples: usize, from_layer: usize, threshold: f64, naive_samples: usize) {
    let rel = read(std::path::Path::new("data/country_capital_city.jsonl")).unwrap();
    let ex: Vec<_> = rel.triples[..examples].iter().map(|t| example(t, tok).unwrap()).collect();
    let task = Task::new(model, ex, Ablation::Zero, None, Metric::Logit).unwrap();
    let g = &task.graph;
    let initially: Vec<bool> = g
        .edges
        .iter()
        .map(|e| match g.receiver(e.receiver) {
            kcirc::graph::Node::HeadInput { layer, .. } | kcirc::graph::Node::Mlp { layer } => layer < from_layer,
            _ => false,
        })
        .collect();
    let acdc = Acdc { initially_removed: Some(initially.clone()), ..Acdc::new(threshold, false).unwrap() };
    let t0 = Instant::now();
    let c = acdc.discover(&task, &kcirc::progress::Silent).unwrap();
    let fast_s = t0.elapsed().as_secs_f64();
    let tested = c.effect.iter().filter(|e| e.is_some()).count();
    let fast_rate = tested as f64 / fast_s;
    // Naive: one full forward per tested edge.
    let t0 = Instant::now();
    for i in 0..naive_samples {
        let mut removed = initially.clone();
        let e = g.edges_into[g.logits_receiver()][i % g.n_senders()];
        removed[e] = true;
        task.score_naive(&removed).unwrap();
    }
    let naive_rate = naive_samples as f64 / t0.elapsed().as_secs_f64();
    println!(
        "{{\"bench\":\"acdc\",\"model\":\"{name}\",\"examples\":{examples},\"edges_tested\":{tested},\"kept\":{},\"fast_s\":{fast_s:.2},\"fast_edges_per_s\":{fast_rate:.1},\"naive_edges_per_s\":{naive_rate:.2},\"speedup\":{:.1},\"threads\":{}}}",
        c.n_kept(),
        fast_rate / naive_rate,
        kcirc::parallel::threads()
    );
}

fn main() {
    kcirc::parallel::configure(kcirc::parallel::available());
    let (tiny, tiny_tok) = kcirc::model::load("tests/fixtures/gpt2-tiny", &Device::Cpu).unwrap();
    bench("gpt2-tiny", &tiny, &tiny_tok, 8, 0, 0.05, 50);
    let path = std::env::var("KCIRC_SMOLLM2").unwrap_or_else(|_| "models/SmolLM2-135M-Instruct.Q4_1.gguf".into());
    let (model, tok) = kcirc::model::load(&path, &Device::Cpu).expect("run scripts/fetch-models.sh first");
    let from = std::env::var("BENCH_FROM_LAYER").ok().and_then(|v| v.parse().ok()).unwrap_or(26);
    bench("SmolLM2-135M", &model, &tok, 8, from, 0.5, 5);
}
