//! Attribution cost on SmolLM2-135M: one plain forward pass of the discovery batch, the differentiable forward
//! with gradient probes on every receiver input, and the backward pass that yields every receiver's input
//! gradient (`eap::receiver_gradients`, forward + backward), and EAP-IG's scoring of every edge (5 steps). Prints
//! the backward / forward ratios and the EAP-IG time the README quotes. `cargo bench --bench attribution` (needs
//! scripts/fetch-models.sh); `BENCH_EXAMPLES` (default 20).
use std::time::Instant;

use candle_core::Device;
use kcirc::data::{example, read};
use kcirc::discover::{eap, Task};
use kcirc::intervene::Ablation;
use kcirc::metric::Metric;
use kcirc::model::{Clean, Logits};

/// Median of `runs` timed calls after one warm-up, in seconds.
fn median(runs: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut t: Vec<f64> = (0..runs)
        .map(|_| {
            let t0 = Instant::now();
            f();
            t0.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[runs / 2]
}

fn main() {
    kcirc::parallel::configure(kcirc::parallel::available());
    let path = std::env::var("KCIRC_SMOLLM2").unwrap_or_else(|_| "models/SmolLM2-135M-Instruct.Q4_1.gguf".into());
    let (model, tok) = kcirc::model::load(&path, &Device::Cpu).expect("run scripts/fetch-models.sh first");
    let n: usize = std::env::var("BENCH_EXAMPLES").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    let rel = read(std::path::Path::new("data/adj_antonym.jsonl")).unwrap();
    let ex: Vec<_> = rel.triples[..n].iter().map(|t| example(t, &tok).unwrap()).collect();
    let task = Task::new(&model, ex, Ablation::Mean, None, Metric::Logit).unwrap();
    let embed = model.embed(&task.batch).unwrap();
    let forward = median(5, || {
        model.run(&task.batch, &Clean, Logits::Hidden).unwrap();
    });
    let probed = median(5, || {
        eap::probed_forward(&task, &embed, eap::PortProbes::Projections).unwrap();
    });
    let gradients = median(5, || {
        eap::receiver_gradients(&task, &embed).unwrap();
    });
    let backward = gradients - probed;
    let t0 = Instant::now();
    let scores = eap::edge_scores(&task, Some(5), &kcirc::progress::Silent).unwrap();
    let eap_ig = t0.elapsed().as_secs_f64();
    assert_eq!(scores.len(), task.graph.edges.len());
    println!(
        "{{\"bench\":\"attribution\",\"examples\":{n},\"tokens\":{},\"forward_s\":{forward:.4},\"probed_forward_s\":{probed:.4},\"backward_s\":{backward:.4},\"backward_over_forward\":{:.2},\"backward_over_probed_forward\":{:.2},\"eap_ig_5_steps_all_edges_s\":{eap_ig:.2},\"edges\":{},\"threads\":{}}}",
        task.batch.size() * task.batch.tokens.dim(1).unwrap(),
        backward / forward,
        backward / probed,
        scores.len(),
        kcirc::parallel::threads()
    );
}
