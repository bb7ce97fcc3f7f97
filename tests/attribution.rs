//! Attribution: autograd receiver gradients against finite differences, and EAP / EAP-IG scores against exact
//! single-edge ablation effects.
mod common;

use candle_core::Tensor;
use common::*;
use kcirc::discover::cone::{needs, Cone};
use kcirc::discover::eap::{edge_scores, edge_scores_chunked, receiver_gradients, receiver_gradients_at, PortProbes};
use kcirc::discover::Task;
use kcirc::intervene::Ablation;
use kcirc::metric::Metric;
use kcirc::model::{Activations, HookPoint, Hooks, Logits, Model};
use kcirc::progress::Silent;

/// Adds `delta` to one receiver input: the attention port `port` of `layer` (or its MLP when `port` is None).
struct Perturb {
    layer: usize,
    port: Option<usize>,
    delta: Tensor,
    ports: usize,
}

impl Hooks for Perturb {
    fn writes(&self, point: HookPoint) -> bool {
        match self.port {
            Some(_) => point == HookPoint::AttnIn(self.layer),
            None => point == HookPoint::MlpIn(self.layer),
        }
    }
    fn write(&self, _: HookPoint, value: &Tensor, _: &Activations) -> kcirc::Result<Option<Tensor>> {
        let Some(p) = self.port else { return Ok(Some((value + &self.delta)?)) };
        let z = self.delta.zeros_like()?;
        let all: Vec<&Tensor> = (0..self.ports).map(|i| if i == p { &self.delta } else { &z }).collect();
        Ok(Some((Tensor::stack(&all, 0)? + value)?))
    }
}

fn gradients_match_finite_differences(model: &Model, prompts: &[Vec<u32>]) {
    for metric in [Metric::Logit, Metric::Nll, Metric::Kl] {
        let t = Task::new(model, examples(model, prompts), Ablation::Zero, None, metric).unwrap();
        let embed = model.embed(&t.batch).unwrap();
        let grads = receiver_gradients(&t, &embed).unwrap();
        let (ga, gm) = (&grads.attn, &grads.mlp);
        let ports = model.cfg.n_heads + 2 * model.cfg.n_kv_heads;
        let (n, tt, d) = embed.dims3().unwrap();
        let mut rng = kcirc::data::SplitMix64(42);
        for (layer, port) in [(0, Some(0)), (1, Some(ports - 1)), (0, None), (model.cfg.n_layers - 1, Some(1))] {
            let u: Vec<f32> = (0..n * tt * d).map(|_| (rng.next_u64() % 2001) as f32 / 1000.0 - 1.0).collect();
            let u = Tensor::from_vec(u, (n, tt, d), &candle_core::Device::Cpu).unwrap();
            let grad = match port {
                Some(p) => ga[layer].as_ref().unwrap().get(p).unwrap(),
                None => gm[layer].clone().unwrap(),
            };
            let analytic = (grad * &u).unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() as f64;
            let eps = 1e-2;
            let m = |sign: f64| {
                let hook = Perturb { layer, port, delta: (&u * (sign * eps)).unwrap(), ports };
                let hidden = model.run(&t.batch, &hook, Logits::Hidden).unwrap().1;
                t.full.score(metric, model, &hidden).unwrap()[0]
            };
            let numeric = (m(1.0) - m(-1.0)) / (2.0 * eps);
            let err = (analytic - numeric).abs();
            assert!(err <= 2e-2 * numeric.abs().max(1e-1), "{metric} layer {layer} port {port:?}: analytic {analytic} numeric {numeric}");
        }
    }
}

#[test]
fn gradients_match_finite_differences_gpt2() {
    let (model, tok) = tiny_gpt2();
    let prompts: Vec<Vec<u32>> = ["The capital city of France is", "Hi there"].iter().map(|p| tok.encode(p).unwrap()).collect();
    gradients_match_finite_differences(&model, &prompts);
}

#[test]
fn gradients_match_finite_differences_llama() {
    gradients_match_finite_differences(&tiny_llama(5), &[vec![5, 17, 33, 2, 90], vec![8, 8, 41]]);
}

/// Spearman rank correlation.
fn spearman(a: &[f64], b: &[f64]) -> f64 {
    let rank = |v: &[f64]| {
        let mut idx: Vec<usize> = (0..v.len()).collect();
        idx.sort_by(|&i, &j| v[i].total_cmp(&v[j]));
        let mut r = vec![0.0; v.len()];
        for (k, &i) in idx.iter().enumerate() {
            r[i] = k as f64;
        }
        r
    };
    let (ra, rb) = (rank(a), rank(b));
    let n = a.len() as f64;
    let mean = (n - 1.0) / 2.0;
    let cov: f64 = ra.iter().zip(&rb).map(|(x, y)| (x - mean) * (y - mean)).sum();
    let var: f64 = ra.iter().map(|x| (x - mean).powi(2)).sum();
    cov / var
}

fn attribution_agrees_with_exact_effects(model: &Model, prompts: &[Vec<u32>]) -> (f64, f64) {
    let t = Task::new(model, examples(model, prompts), Ablation::Zero, None, Metric::Logit).unwrap();
    let g = &t.graph;
    let into_logits = &g.edges_into[g.logits_receiver()];
    let none = vec![false; g.edges.len()];
    let circuits: Vec<Vec<bool>> = into_logits
        .iter()
        .map(|&e| {
            let mut removed = none.clone();
            removed[e] = true;
            removed
        })
        .collect();
    // Each circuit's metric from the forward-cone evaluator (every circuit differs from the full one only in
    // edges into `logits`, so only its input is recomputed).
    let (cone, _) = Cone::new(&t, &none).unwrap();
    let exact = cone.scores(g.logits_receiver(), &circuits, &none, &needs(&t, &none)).unwrap().0;
    // The cone's scores are the full-forward scores.
    assert!((exact[0] - t.score(&circuits[0]).unwrap()).abs() < 1e-4);
    let eap = edge_scores(&t, None, &Silent).unwrap();
    let ig = edge_scores(&t, Some(5), &Silent).unwrap();
    let pick = |s: &[f64]| into_logits.iter().map(|&e| s[e]).collect::<Vec<_>>();
    let (re, ri) = (spearman(&pick(&eap), &exact), spearman(&pick(&ig), &exact));
    // Signs agree wherever the exact effect is not negligible.
    // Signs agree wherever the exact effect matters (|Δ| above 5% of the largest).
    let big = exact.iter().fold(0f64, |m, x| m.max(x.abs())) * 0.05;
    let disagree = pick(&eap).iter().zip(&exact).filter(|(a, x)| x.abs() > big && a.signum() != x.signum()).count();
    for (i, (a, x)) in pick(&eap).iter().zip(&exact).enumerate() {
        if x.abs() > big && a.signum() != x.signum() {
            eprintln!("{}: EAP {a:.4} exact {x:.4}", g.edges[into_logits[i]].name);
        }
    }
    let significant = exact.iter().filter(|x| x.abs() > big).count();
    eprintln!("signs: {disagree} of {significant} significant edges disagree");
    // Removing a massive-activation sender moves the final norm far from its linear regime: allow 1 in 20.
    assert!(disagree * 20 <= significant, "EAP signs disagree with exact effects on {disagree} of {significant} edges");
    (re, ri)
}

/// On the real model, where each sender is a small part of the residual stream, the edges into `logits` are
/// linear up to the final norm: attribution must rank them like exact ablation. (On the tiny random models a
/// single sender is a large share of a 24–32-wide residual and the final norm is far from linear.)
#[test]
fn eap_ranks_edges_into_logits_like_exact_ablation() {
    let (model, tok) = smollm2();
    let rel = kcirc::data::read(&root().join("data/country_capital_city.jsonl")).unwrap();
    let prompts: Vec<Vec<u32>> = rel.triples[..4].iter().map(|t| tok.encode(&t.prompt_text().unwrap()).unwrap()).collect();
    let (eap, ig) = attribution_agrees_with_exact_effects(&model, &prompts);
    eprintln!("smollm2: spearman EAP {eap:.3}, EAP-IG {ig:.3}");
    assert!(eap >= 0.9, "EAP {eap}");
    assert!(ig >= 0.9 && ig >= eap, "EAP-IG {ig} (EAP {eap})");
}

/// EAP-IG runs its integration steps on kcirc's workers and adds their gradients in step order: the scores are the
/// same bits with one worker (the steps one after another, the previous path) as with two, on GPT-2 and a
/// grouped-query Llama, for every ablation that has its own path.
#[test]
fn eap_ig_scores_are_the_same_bits_whatever_the_threads() {
    let (gpt2, tok) = tiny_gpt2();
    let gpt2_prompts: Vec<Vec<u32>> = ["The capital of France is", "Water boils at a temperature of", "One, two, three, four"]
        .iter()
        .map(|p| tok.encode(p).unwrap())
        .collect();
    let llama = tiny_llama(7);
    let llama_prompts: Vec<Vec<u32>> = vec![vec![1, 5, 9, 13, 2], vec![4, 8, 15, 16, 23, 42], vec![3, 3, 7]];
    for (model, prompts) in [(&gpt2, &gpt2_prompts), (&llama, &llama_prompts)] {
        for ablation in [Ablation::Zero, Ablation::Mean] {
            let t = Task::new(model, examples(model, prompts), ablation, None, Metric::Kl).unwrap();
            let at = |threads: usize| {
                kcirc::parallel::configure(threads);
                let s = edge_scores(&t, Some(5), &Silent).unwrap();
                kcirc::parallel::configure(1);
                s.iter().map(|x| x.to_bits()).collect::<Vec<u64>>()
            };
            let one = at(1);
            assert!(one.iter().any(|&b| f64::from_bits(b) != 0.0), "scores are not all zero");
            assert_eq!(one, at(2), "{ablation:?}: two workers changed the scores");
            assert_eq!(one, at(3), "{ablation:?}: three workers (rounds of 3 and 2 steps) changed the scores");
        }
    }
}

/// Concurrent integration steps: one per worker while half the available memory holds them, at least one.
#[test]
fn eap_ig_runs_as_many_steps_at_once_as_memory_allows() {
    use kcirc::discover::eap::step_workers;
    let (gpt2, tok) = tiny_gpt2();
    let t =
        Task::new(&gpt2, examples(&gpt2, &[tok.encode("The capital of France is").unwrap()]), Ablation::Zero, None, Metric::Kl).unwrap();
    assert_eq!(step_workers(&t, 2, None), 2, "unknown memory: one step per worker");
    assert_eq!(step_workers(&t, 2, Some(1 << 40)), 2);
    assert_eq!(step_workers(&t, 4, Some(0)), 1, "at least one step");
    let (smol, _) = smollm2();
    let prompts: Vec<Vec<u32>> = (0..20).map(|i| vec![1 + i; 8]).collect();
    let t = Task::new(&smol, examples(&smol, &prompts), Ablation::Zero, None, Metric::Kl).unwrap();
    assert_eq!(step_workers(&t, 2, Some(16 << 30)), 2, "20 SmolLM2 prompts fit twice in 8 GB");
    assert_eq!(step_workers(&t, 2, Some(1 << 30)), 1, "but not in 512 MB");
}

/// The attention ports' gradients read at their `dh`-wide projections and carried back through `W_p` and the
/// normalisation's Jacobian by hand (what attribution runs) equal autograd's at the `D`-wide port inputs (the
/// naive reference), for every port of every layer, with the MLP and `logits` gradients unchanged: GPT-2
/// (LayerNorm, learned positions), a grouped-query Llama (RMSNorm, rotary), Qwen2 (q/k biases).
#[test]
fn port_gradients_from_projections_equal_autograd_at_the_ports() {
    let (gpt2, tok) = tiny_gpt2();
    let gpt2_prompts: Vec<Vec<u32>> = ["The capital of France is", "Hi there"].iter().map(|p| tok.encode(p).unwrap()).collect();
    let (qwen, qtok) = tiny_qwen2();
    let qwen_prompts: Vec<Vec<u32>> = ["The capital of France is", "One two"].iter().map(|p| qtok.encode(p).unwrap()).collect();
    let llama = tiny_llama(3);
    let llama_prompts: Vec<Vec<u32>> = vec![vec![5, 17, 33, 2, 90], vec![8, 8, 41]];
    for (name, model, prompts) in [("gpt2", &gpt2, &gpt2_prompts), ("llama", &llama, &llama_prompts), ("qwen2", &qwen, &qwen_prompts)] {
        for metric in [Metric::Kl, Metric::Logit] {
            let t = Task::new(model, examples(model, prompts), Ablation::Zero, None, metric).unwrap();
            // A point on the path, not the clean input: the normalisation's Jacobian depends on it.
            let embed = (model.embed(&t.batch).unwrap() * 0.6).unwrap();
            let fast = receiver_gradients_at(&t, &embed, PortProbes::Projections).unwrap();
            let naive = receiver_gradients_at(&t, &embed, PortProbes::Inputs).unwrap();
            let close = |what: String, a: &Option<Tensor>, b: &Option<Tensor>| {
                let (a, b) = (a.as_ref().unwrap(), b.as_ref().unwrap());
                assert_eq!(a.dims(), b.dims(), "{what}");
                let scale = b.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
                let err = max_abs_diff(a, b);
                assert!(scale > 0.0 && err <= 1e-5 * scale, "{name} {metric} {what}: max |Δ| {err} of {scale}");
            };
            for l in 0..model.cfg.n_layers {
                close(format!("attn {l}"), &fast.attn[l], &naive.attn[l]);
                close(format!("mlp {l}"), &fast.mlp[l], &naive.mlp[l]);
            }
            close("logits".into(), &fast.logits, &naive.logits);
        }
    }
}

/// Attribution over chunks of examples (each chunk's scores weighted by its share of the examples) equals the
/// single pass up to summation order — uneven chunks included, for zero and mean ablation (whose mean stays
/// the mean over every example) and resample ablation — and the chunked scores are the same bits whatever the
/// threads.
#[test]
fn chunked_attribution_equals_one_pass() {
    let (gpt2, tok) = tiny_gpt2();
    let texts =
        ["The capital of France is", "Water boils at a temperature of", "One, two, three, four", "Hi there", "The Eiffel Tower is in"];
    let gpt2_prompts: Vec<Vec<u32>> = texts.iter().map(|p| tok.encode(p).unwrap()).collect();
    let llama = tiny_llama(7);
    let llama_prompts: Vec<Vec<u32>> = vec![vec![1, 5, 9, 13, 2], vec![4, 8, 15, 16, 23, 42], vec![3, 3, 7], vec![9, 2], vec![6, 6, 6, 6]];
    for (model, prompts) in [(&gpt2, &gpt2_prompts), (&llama, &llama_prompts)] {
        let corrupted: Vec<Vec<u32>> = prompts.iter().map(|p| p.iter().rev().copied().collect()).collect();
        for ablation in [Ablation::Zero, Ablation::Mean, Ablation::Resample] {
            let c = (ablation == Ablation::Resample).then(|| corrupted.clone());
            let t = Task::new(model, examples(model, prompts), ablation, c, Metric::Kl).unwrap();
            let one = edge_scores_chunked(&t, Some(3), prompts.len(), &Silent).unwrap();
            for rows in [1, 2] {
                let chunked = edge_scores_chunked(&t, Some(3), rows, &Silent).unwrap();
                let scale = one.iter().fold(0f64, |m, x| m.max(x.abs()));
                let err = one.iter().zip(&chunked).fold(0f64, |m, (a, b)| m.max((a - b).abs()));
                assert!(scale > 0.0 && err <= 1e-5 * scale, "{ablation:?}, chunks of {rows}: max |Δ| {err} of {scale}");
            }
            let bits = |threads: usize| {
                kcirc::parallel::configure(threads);
                let s = edge_scores_chunked(&t, Some(3), 2, &Silent).unwrap();
                kcirc::parallel::configure(1);
                s.iter().map(|x| x.to_bits()).collect::<Vec<u64>>()
            };
            assert_eq!(bits(1), bits(2), "{ablation:?}: two workers changed the chunked scores");
        }
    }
}

/// The chunk size comes from the data (padded length × d_model × receivers) under a fixed budget: 20 SmolLM2
/// facts are one chunk, so their scores are the single pass's; a larger task is split.
#[test]
fn attribution_chunks_are_fixed_by_the_data() {
    use kcirc::discover::eap::{chunk_rows, CHUNK_INPUT_FLOATS};
    let (smol, tok) = smollm2();
    let rel = kcirc::data::read(&root().join("data/country_capital_city.jsonl")).unwrap();
    let prompts: Vec<Vec<u32>> = rel.triples.iter().take(20).map(|t| tok.encode(&t.prompt_text().unwrap()).unwrap()).collect();
    let t = Task::new(&smol, examples(&smol, &prompts), Ablation::Zero, None, Metric::Kl).unwrap();
    assert!(chunk_rows(&t, CHUNK_INPUT_FLOATS) >= 20, "20 SmolLM2 facts must fit one chunk ({} rows)", chunk_rows(&t, CHUNK_INPUT_FLOATS));
    let per_row = t.batch.seq_len * smol.cfg.d_model * t.graph.n_receivers();
    assert_eq!(chunk_rows(&t, 3 * per_row + 1), 3, "20 rows at most 3 a chunk: 7 chunks, of 3 (and 2)");
    assert_eq!(chunk_rows(&t, 19 * per_row), 10, "19 a chunk: 10 + 10, not 19 + 1");
    assert_eq!(chunk_rows(&t, 6 * per_row), 5, "6 a chunk: 4 chunks of 5");
    assert_eq!(chunk_rows(&t, 1), 1, "at least one example per chunk");
}
