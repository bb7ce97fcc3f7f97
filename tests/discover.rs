//! Exact discovery: the intervened forward pass, and ACDC's fast path against the naive one-forward-per-edge
//! reference for every ablation, metric and threshold reading.
mod common;

use candle_core::Tensor;
use common::*;
use kcirc::discover::acdc::Acdc;
use kcirc::discover::cone::{needs, Cone, Need};
use kcirc::discover::{Discovery, Task};
use kcirc::intervene::{Ablation, EdgeInputs};
use kcirc::metric::Metric;
use kcirc::model::{Clean, Logits, Model};
use kcirc::progress::Silent;

/// Same-length corrupted prompts: every token id shifted.
fn corrupted(prompts: &[Vec<u32>], vocab: usize) -> Vec<Vec<u32>> {
    prompts.iter().map(|p| p.iter().map(|&t| (t + 7) % vocab as u32).collect()).collect()
}

fn task<'a>(model: &'a Model, prompts: &[Vec<u32>], ablation: Ablation, metric: Metric) -> Task<'a> {
    let c = corrupted(prompts, model.cfg.vocab_size);
    Task::new(model, examples(model, prompts), ablation, Some(c), metric).unwrap()
}

/// A threshold that splits the edges into `logits`: midway between the two middle single-edge |Δ| there
/// (never equal to a measured Δ, where float noise would decide).
fn median_threshold(t: &Task) -> f64 {
    let g = &t.graph;
    let mut deltas: Vec<f64> = g.edges_into[g.logits_receiver()]
        .iter()
        .map(|&e| {
            let mut removed = vec![false; g.edges.len()];
            removed[e] = true;
            t.score(&removed).unwrap().abs()
        })
        .collect();
    deltas.sort_by(f64::total_cmp);
    let m = deltas.len() / 2;
    (deltas[m - 1] + deltas[m]) / 2.0
}

fn fast_equals_naive(model: &Model, prompts: &[Vec<u32>]) {
    for ablation in [Ablation::Zero, Ablation::Mean, Ablation::Resample] {
        for metric in [Metric::Logit, Metric::Nll, Metric::Kl] {
            let t = task(model, prompts, ablation, metric);
            let tau = median_threshold(&t);
            for signed in [false, true] {
                let mut acdc = Acdc::new(tau, signed).unwrap();
                let fast = acdc.discover(&t, &Silent).unwrap();
                acdc.naive = true;
                let naive = acdc.discover(&t, &Silent).unwrap();
                let what = format!("{ablation} {metric} signed={signed} τ={tau:.4}");
                let total = t.graph.edges.len();
                assert!(fast.n_kept() > 0 && fast.n_kept() < total, "{what}: trivial circuit ({} of {total})", fast.n_kept());
                if fast.removed != naive.removed {
                    for e in 0..total {
                        if fast.removed[e] != naive.removed[e]
                            || (fast.effect[e].unwrap_or(0.0) - naive.effect[e].unwrap_or(0.0)).abs() > 1e-5
                        {
                            eprintln!(
                                "{}: fast {:?} {:?} naive {:?} {:?}",
                                t.graph.edges[e].name, fast.removed[e], fast.effect[e], naive.removed[e], naive.effect[e]
                            );
                        }
                    }
                }
                assert_eq!(fast.removed, naive.removed, "{what}: edge sets differ");
                assert!((fast.metric - naive.metric).abs() < 1e-4, "{what}: {} vs {}", fast.metric, naive.metric);
                // The reported metric is the circuit's metric when evaluated again from scratch.
                assert!((t.score(&fast.removed).unwrap() - fast.metric).abs() < 1e-4, "{what}");
                eprintln!("{what}: kept {} of {total}, metric {:.4}", fast.n_kept(), fast.metric);
            }
        }
    }
}

/// Prompts of three lengths (left padding exercised) for the random Llama.
fn llama_prompts() -> Vec<Vec<u32>> {
    vec![vec![5, 17, 33, 2, 90], vec![8, 8, 41, 60, 11, 72, 3], vec![1, 2, 3]]
}

fn gpt2_prompts(tok: &kcirc::tokenizer::Tokenizer) -> Vec<Vec<u32>> {
    ["The capital city of France is", "Hi there", "In 1969, 3 astronauts went"].iter().map(|p| tok.encode(p).unwrap()).collect()
}

#[test]
fn acdc_fast_path_equals_naive_gpt2() {
    let (model, tok) = tiny_gpt2();
    fast_equals_naive(&model, &gpt2_prompts(&tok));
}

#[test]
fn acdc_fast_path_equals_naive_llama_gqa() {
    let model = tiny_llama(1);
    let prompts = llama_prompts();
    fast_equals_naive(&model, &prompts);
}

/// No edge removed: the intervened forward is the plain forward. Every edge into `logits` removed under zero
/// ablation: the logits are the unembedding of the constant terms alone (the attention output biases).
fn intervened_forward_limits(model: &Model, prompts: &[Vec<u32>]) {
    let t = task(model, prompts, Ablation::Zero, Metric::Logit);
    let g = &t.graph;
    let plain = model.run(&t.batch, &Clean, Logits::All).unwrap().1;
    let none = vec![false; g.edges.len()];
    let hook = EdgeInputs::new(g, vec![&none], None, t.n_examples());
    let hooked = model.run(&t.batch, &hook, Logits::All).unwrap().1;
    assert_eq!(max_abs_diff(&plain, &hooked), 0.0);

    let mut removed = none.clone();
    for &e in &g.edges_into[g.logits_receiver()] {
        removed[e] = true;
    }
    let hook = EdgeInputs::new(g, vec![&removed], None, t.n_examples());
    let cut = model.run(&t.batch, &hook, Logits::All).unwrap().1;
    let mut constants = model.weights.layers[0].attn.b_o.zeros_like().unwrap();
    for l in &model.weights.layers {
        constants = (constants + &l.attn.b_o).unwrap();
    }
    let (b, tt) = (t.batch.size(), t.batch.seq_len);
    let x = constants.reshape((1, 1, ())).unwrap().broadcast_as((b, tt, model.cfg.d_model)).unwrap().contiguous().unwrap();
    let expect = model.unembed(&x, Logits::All).unwrap();
    assert!(max_abs_diff(&cut, &expect) < 1e-5, "{}", max_abs_diff(&cut, &expect));
    // And the naive reference agrees.
    assert!((t.score_naive(&removed).unwrap() - t.score(&removed).unwrap()).abs() < 1e-5);
    let _ = Tensor::zeros(1, candle_core::DType::F32, &candle_core::Device::Cpu);
}

#[test]
fn intervened_forward_limits_gpt2() {
    let (model, tok) = tiny_gpt2();
    intervened_forward_limits(&model, &gpt2_prompts(&tok));
}

#[test]
fn intervened_forward_limits_llama() {
    intervened_forward_limits(&tiny_llama(2), &[vec![5, 17, 33, 2, 90], vec![8, 8, 41]]);
}

#[test]
fn zero_threshold_keeps_every_edge_that_matters_and_huge_threshold_keeps_none() {
    let model = tiny_llama(3);
    let prompts = vec![vec![5, 17, 33, 2, 90], vec![8, 8, 41]];
    let t = task(&model, &prompts, Ablation::Zero, Metric::Logit);
    let all = Acdc::new(1e9, false).unwrap().discover(&t, &Silent).unwrap();
    assert_eq!(all.n_kept(), 0);
    assert!(Acdc::new(-1.0, false).is_err());
    assert!(Acdc::new(f64::NAN, false).is_err());
}

/// The batched intervention (several circuits as copies of one batch, stacked sender matmuls, complement sums)
/// gives every circuit the metric of the naive reference run alone, for sparse, half and dense circuits.
fn batched_circuits_equal_naive(model: &Model, prompts: &[Vec<u32>]) {
    let n_edges = kcirc::graph::Graph::new(&model.cfg).edges.len();
    let circuits: Vec<Vec<bool>> = [0.03, 0.5, 0.97, 0.0, 1.0]
        .iter()
        .enumerate()
        .map(|(i, &keep)| {
            let mut rng = kcirc::data::SplitMix64(11 + i as u64);
            (0..n_edges).map(|_| (rng.next_u64() as f64 / u64::MAX as f64) >= keep).collect()
        })
        .collect();
    for ablation in [Ablation::Zero, Ablation::Mean, Ablation::Resample] {
        let t = task(model, prompts, ablation, Metric::Logit);
        let refs: Vec<&[bool]> = circuits.iter().map(|c| c.as_slice()).collect();
        let batch = t.batch.repeat(circuits.len()).unwrap();
        let hook = EdgeInputs::new(&t.graph, refs.clone(), t.ablated.as_ref(), t.n_examples());
        let hidden = model.run(&batch, &hook, Logits::Hidden).unwrap().1;
        let batched = t.full.score(t.metric, model, &hidden).unwrap();
        for (c, removed) in circuits.iter().enumerate() {
            let naive = t.score_naive(removed).unwrap();
            assert!((batched[c] - naive).abs() < 1e-4, "{ablation} circuit {c}: batched {} naive {naive}", batched[c]);
        }
        // The circuits differ, so a mix-up between copies would show.
        assert!((batched[0] - batched[2]).abs() > 1e-3);
    }
}

#[test]
fn batched_circuits_equal_naive_gpt2() {
    let (model, tok) = tiny_gpt2();
    batched_circuits_equal_naive(&model, &gpt2_prompts(&tok));
}

#[test]
fn batched_circuits_equal_naive_llama_gqa() {
    let model = tiny_llama(3);
    let prompts = llama_prompts();
    batched_circuits_equal_naive(&model, &prompts);
}

/// The cone evaluator from a sparse circuit (some nodes needed at every position, some at the last only, some
/// nowhere) and from a dense one (receiver input changes from the running sum less the removed edges'),
/// evaluated directly: candidates removing further edges into query, key and value ports, MLPs and
/// `logits` (cumulatively, as ACDC's speculative copies do) score what the naive reference scores, and after a
/// copy is accepted the next receiver's scores are still exact.
fn cone_equals_naive(model: &Model, prompts: &[Vec<u32>]) {
    let n_edges = kcirc::graph::Graph::new(&model.cfg).edges.len();
    for (ablation, keep) in [Ablation::Zero, Ablation::Mean, Ablation::Resample].into_iter().flat_map(|a| [(a, 0.4), (a, 0.97)]) {
        let t = task(model, prompts, ablation, Metric::Logit);
        let g = &t.graph;
        let mut rng = kcirc::data::SplitMix64(3);
        let mut current: Vec<bool> = (0..n_edges).map(|_| (rng.next_u64() as f64 / u64::MAX as f64) >= keep).collect();
        let need = needs(&t, &current);
        let wanted: &[Need] = if keep < 0.5 { &[Need::None, Need::Last, Need::All] } else { &[Need::All] };
        for want in wanted {
            assert!(need.contains(want), "{ablation}: no sender needed {want:?}");
        }
        let (mut cone, metric) = Cone::new(&t, &current).unwrap();
        // The initial metric comes from the cone's own forward pass: the bits `Task::score` gives (what ACDC
        // started from before).
        assert_eq!(metric.to_bits(), t.score(&current).unwrap().to_bits(), "{ablation}: initial metric");
        let (h, kv) = (g.n_heads, g.n_kv_heads);
        let last = g.n_layers - 1;
        // Receivers in ACDC's order (later ones first): logits, the last MLP, the last layer's ports, then layer 0's.
        let mut receivers = vec![g.logits_receiver(), g.mlp_receiver(last)];
        for l in [last, 0] {
            receivers.extend([g.attn_receiver(l, h + kv), g.attn_receiver(l, h), g.attn_receiver(l, 1)]);
        }
        receivers.push(g.mlp_receiver(0));
        let mut tested = 0;
        for r in receivers {
            let need = needs(&t, &current);
            let kept: Vec<usize> = g.edges_into[r].iter().rev().copied().filter(|&e| !current[e]).take(5).collect();
            if kept.is_empty() {
                continue;
            }
            let mut copies = vec![];
            let mut removed = current.clone();
            for &e in &kept {
                removed[e] = true;
                copies.push(removed.clone());
            }
            let (scores, values) = cone.scores(r, &copies, &current, &need).unwrap();
            for (c, copy) in copies.iter().enumerate() {
                let naive = t.score_naive(copy).unwrap();
                assert!((scores[c] - naive).abs() < 1e-4, "{ablation} {} copy {c}: cone {} naive {naive}", g.receiver_name(r), scores[c]);
            }
            // Accept the middle copy.
            let j = copies.len() / 2;
            cone.accept(&values, j).unwrap();
            current = copies[j].clone();
            tested += 1;
        }
        assert!(tested >= 5, "{ablation}: only {tested} receivers had kept edges");
    }
}

#[test]
fn cone_equals_naive_gpt2() {
    let (model, tok) = tiny_gpt2();
    cone_equals_naive(&model, &gpt2_prompts(&tok));
}

#[test]
fn cone_equals_naive_llama_gqa() {
    cone_equals_naive(&tiny_llama(2), &llama_prompts());
}

/// Hybrid's start: ACDC from a circuit with edges already removed (the fast path's initial activations are
/// those of that circuit) finds what the naive path finds.
fn initially_removed_equals_naive(model: &Model, prompts: &[Vec<u32>]) {
    for ablation in [Ablation::Zero, Ablation::Mean] {
        let t = task(model, prompts, ablation, Metric::Kl);
        let mut rng = kcirc::data::SplitMix64(9);
        let init: Vec<bool> = (0..t.graph.edges.len()).map(|_| (rng.next_u64() as f64 / u64::MAX as f64) < 0.5).collect();
        let tau = median_threshold(&t) / 4.0;
        let mut acdc = Acdc { initially_removed: Some(init.clone()), ..Acdc::new(tau, false).unwrap() };
        let fast = acdc.discover(&t, &Silent).unwrap();
        acdc.naive = true;
        let naive = acdc.discover(&t, &Silent).unwrap();
        assert_eq!(fast.removed, naive.removed, "{ablation}: edge sets differ");
        assert!((fast.metric - naive.metric).abs() < 1e-4);
        let kept_from_init = init.iter().filter(|r| !**r).count();
        assert!(fast.n_kept() > 0 && fast.n_kept() < kept_from_init, "{ablation}: {} of {kept_from_init}", fast.n_kept());
    }
}

#[test]
fn initially_removed_equals_naive_gpt2() {
    let (model, tok) = tiny_gpt2();
    initially_removed_equals_naive(&model, &gpt2_prompts(&tok));
}

#[test]
fn initially_removed_equals_naive_llama_gqa() {
    initially_removed_equals_naive(&tiny_llama(1), &llama_prompts());
}
