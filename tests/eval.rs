//! Held-out evaluation: Hit@k, MRR and faithfulness against hand-computed values, the split, random circuits.
mod common;

use candle_core::{Device, Tensor};
use common::*;
use kcirc::circuit::{CircuitFile, ModelShape, RunInfo};
use kcirc::data::{self, Relation};
use kcirc::eval::{outcomes, random_edges, EvalOptions, Metrics};
use kcirc::intervene::Ablation;
use kcirc::metric::Metric;
use kcirc::pipeline::Settings;
use kcirc::split::prepare;

#[test]
fn ranks_hits_and_mrr_by_hand() {
    // Row 0: target 2 (logit 2) has one greater (3) -> rank 1. Row 1: target 0 (5) below 6 -> rank 1.
    // Row 2: target 1 (7) ties with entry 0: a tie counts against the target -> rank 1.
    let logits = Tensor::new(&[[1f32, 3., 2.], [5., 4., 6.], [7., 7., 0.]], &Device::Cpu).unwrap();
    let o = outcomes(&logits, &[2, 0, 1]).unwrap();
    assert_eq!(o.iter().map(|x| x.rank).collect::<Vec<_>>(), vec![1, 1, 1]);
    let m = Metrics::new(&o, 2);
    assert_eq!(m.hit_at_1, 0.0);
    assert!((m.hit_at_k - 1.0).abs() < 1e-12);
    assert!((m.mrr - 0.5).abs() < 1e-12);
    assert!((m.target_logit - (2.0 + 5.0 + 7.0) / 3.0).abs() < 1e-6);
    // prob of row 2's target: e^7 / (2e^7 + 1)
    let p2 = (7f64).exp() / (2.0 * (7f64).exp() + 1.0);
    assert!((o[2].target_prob - p2).abs() < 1e-6);
    // A strict maximum is rank 0.
    let o = outcomes(&Tensor::new(&[[1f32, 9., 2.]], &Device::Cpu).unwrap(), &[1]).unwrap();
    assert_eq!(o[0].rank, 0);
}

#[test]
fn random_circuits_have_exactly_the_requested_edge_count() {
    for (total, count, seed) in [(100, 7, 1), (32491, 1500, 2), (10, 10, 3), (10, 0, 4)] {
        let e = random_edges(total, count, seed);
        assert_eq!(e.len(), count);
        let mut d = e.clone();
        d.dedup();
        assert_eq!(d.len(), count, "distinct");
        assert!(e.iter().all(|&i| i < total));
        assert_eq!(e, random_edges(total, count, seed), "deterministic");
    }
    assert_ne!(random_edges(1000, 10, 1), random_edges(1000, 10, 2));
}

fn capitals() -> Relation {
    data::read(&root().join("data/country_capital_city.jsonl")).unwrap()
}

#[test]
fn split_is_deterministic_and_disjoint() {
    let (model, tok) = tiny_gpt2();
    let rel = capitals();
    let s = Settings { examples: Some(5), filter_known: false, ..Default::default() };
    let a = prepare(&model, &tok, &rel, &s.split_rule()).unwrap();
    let b = prepare(&model, &tok, &rel, &s.split_rule()).unwrap();
    assert_eq!(a.discovery, b.discovery);
    assert_eq!(a.test, b.test);
    assert_eq!(a.discovery.len() + a.test.len(), rel.triples.len());
    for d in &a.discovery {
        assert!(!a.test.iter().any(|t| t.triple == d.triple), "{:?} in both", d.triple.subject);
    }
    let c = prepare(&model, &tok, &rel, &Settings { seed: 7, ..s.clone() }.split_rule()).unwrap();
    assert_ne!(a.discovery, c.discovery, "another seed, another split");
}

fn circuit_file(model: &kcirc::model::Model, removed: &[bool], examples: Vec<kcirc::data::Triple>, ablation: Ablation) -> CircuitFile {
    let g = kcirc::graph::Graph::new(&model.cfg);
    let c = kcirc::discover::Circuit { removed: removed.to_vec(), effect: vec![None; removed.len()], metric: 0.0, chosen: None };
    let run = RunInfo {
        model: "tiny".into(),
        model_shape: ModelShape::from(&model.cfg),
        relation: "r".into(),
        method: "test".into(),
        ablation,
        metric: Metric::Logit,
        threshold: None,
        signed: None,
        ig_steps: None,
        selection: None,
        candidates: None,
        triples: None,
        seed: 0,
        k: 10,
        filter_known: false,
        n_examples: examples.len(),
        kcirc_version: kcirc::VERSION.into(),
        stability: None,
        demonstrations: None,
        edits: None,
        mean_over: None,
        n_reference: None,
        examples,
        reference: vec![],
    };
    CircuitFile::new(run, &g, &c)
}

#[test]
fn full_circuit_is_fully_faithful_and_faithfulness_is_the_logit_ratio() {
    let (model, tok) = tiny_gpt2();
    let rel = capitals();
    let s = Settings { examples: Some(3), filter_known: false, ..Default::default() };
    let prep = prepare(&model, &tok, &rel, &s.split_rule()).unwrap();
    let n = kcirc::graph::Graph::new(&model.cfg).edges.len();
    let examples: Vec<_> = prep.discovery.iter().map(|e| e.triple.clone()).collect();
    let opts = EvalOptions { k: 10, random: 3, seed: 0, filter_known: false, demonstrations: 0 };
    for ablation in [Ablation::Zero, Ablation::Mean, Ablation::Resample] {
        // The full model as a "circuit": identical to the full model, faithfulness 1.
        let file = circuit_file(&model, &vec![false; n], examples.clone(), ablation);
        let r = kcirc::eval::evaluate(&model, &tok, &file, &rel, &opts).unwrap();
        assert_eq!(r.n_skipped_discovery, 3);
        assert_eq!(r.n_triples, rel.triples.len() - 3);
        // Every capital is a different city, but two may share a first token.
        let answers: std::collections::BTreeSet<u32> = prep.discovery.iter().chain(&prep.test).map(|e| e.target).collect();
        assert_eq!(r.n_distinct_targets, answers.len());
        assert!(answers.len() > 10, "{}", answers.len());
        assert_eq!(r.circuit, r.full, "{ablation}");
        assert!((r.faithfulness - 1.0).abs() < 1e-9, "{ablation}: {}", r.faithfulness);
        // A half circuit: faithfulness is (circuit − empty) / (full − empty) of the mean target logit.
        let removed: Vec<bool> = (0..n).map(|i| i % 2 == 0).collect();
        let file = circuit_file(&model, &removed, examples.clone(), ablation);
        let r = kcirc::eval::evaluate(&model, &tok, &file, &rel, &opts).unwrap();
        let want = (r.circuit.target_logit - r.empty.target_logit) / (r.full.target_logit - r.empty.target_logit);
        assert!((r.faithfulness - want).abs() < 1e-12);
        assert_eq!(r.n_edges, n / 2);
        assert_eq!(r.random.runs, 3);
        // The table's intervals are Wilson's over the facts scored, from the hit counts.
        let hits = (r.circuit.hit_at_k * r.n_triples as f64).round() as usize;
        let (lo, hi) = kcirc::rank::wilson_interval(hits, r.n_triples);
        assert!(r.table().contains(&format!("circuit [{lo:.2}, {hi:.2}]")), "{}", r.table());
        assert!(r.table().contains(&format!("95% interval over {} facts", r.n_triples)));
    }
}

/// Wilson's 95% intervals against values computed by hand (Python, float64), the ends clamped to [0, 1].
#[test]
fn wilson_intervals_match_hand_computed_values() {
    use kcirc::rank::wilson_interval;
    let cases = [
        (20, 28, 0.5294071157, 0.8474600394),
        (0, 10, 0.0, 0.2775327999),
        (10, 10, 0.7224672001, 1.0),
        (7, 8, 0.5291118178, 0.9775825085),
        (343, 425, 0.7668593381, 0.8417571905),
    ];
    for (k, n, lo, hi) in cases {
        let (a, b) = wilson_interval(k, n);
        assert!((a - lo).abs() < 1e-9 && (b - hi).abs() < 1e-9, "{k}/{n}: [{a}, {b}]");
    }
    assert_eq!(wilson_interval(0, 0), (0.0, 1.0));
}

#[test]
fn circuit_from_another_model_is_refused() {
    let (model, tok) = tiny_gpt2();
    let other = tiny_llama(0);
    let n = kcirc::graph::Graph::new(&other.cfg).edges.len();
    let file = circuit_file(&other, &vec![false; n], vec![], Ablation::Zero);
    let opts = EvalOptions { k: 10, random: 1, seed: 0, filter_known: false, demonstrations: 0 };
    let err = kcirc::eval::evaluate(&model, &tok, &file, &capitals(), &opts).unwrap_err();
    assert!(err.to_string().contains("not this one"), "{err}");
}

#[test]
fn facts_without_a_resample_partner_are_skipped_in_discovery_and_dropped_in_eval() {
    use kcirc::split::partners;
    let (model, tok) = tiny_gpt2();
    let rel = capitals_with_a_long_subject();
    let all: Vec<_> = rel.triples.iter().map(|t| data::example(t, &tok).unwrap()).collect();
    assert_eq!(all[10].tokens.len(), 13);
    assert!(all[..10].iter().all(|e| e.tokens.len() == 8));
    let p = partners(&all, &all, 0);
    assert!(p[10].is_none());
    for (e, q) in all[..10].iter().zip(&p[..10]) {
        let q = q.expect("a partner");
        assert_eq!(q.tokens.len(), e.tokens.len());
        assert_ne!(q.triple.subject, e.triple.subject);
        assert_ne!(q.target, e.target);
    }
    // Discovery: the partnerless fact is skipped (even when every other fact is needed) and counted.
    let s = Settings { examples: Some(10), filter_known: false, ablation: Ablation::Resample, ..Default::default() };
    let prep = prepare(&model, &tok, &rel, &s.split_rule()).unwrap();
    assert_eq!(prep.discovery.len(), 10);
    assert!(prep.test.is_empty());
    assert_eq!(prep.dropped_no_partner, 1);
    assert!(prep.discovery.iter().all(|e| e.triple.subject != "Bosnia and Herzegovina"));
    let corrupted = prep.corrupted.as_ref().unwrap();
    assert!(prep.discovery.iter().zip(corrupted).all(|(e, c)| c.tokens.len() == e.tokens.len() && c.triple.subject != e.triple.subject));
    // Other ablations need no partner: nothing skipped.
    let prep_mean = prepare(&model, &tok, &rel, &Settings { ablation: Ablation::Mean, ..s.clone() }.split_rule()).unwrap();
    assert_eq!(prep_mean.dropped_no_partner, 0);
    assert_eq!(prep_mean.test.len(), 1);
    let err = prepare(&model, &tok, &rel, &Settings { examples: Some(11), ..s.clone() }.split_rule()).err().unwrap();
    assert!(err.to_string().contains("1 of them without a same-length partner"), "{err}");
    // Evaluation: the held-out partnerless fact is dropped and counted; the rest are scored.
    let s3 = Settings { examples: Some(3), ..s.clone() };
    let prep = prepare(&model, &tok, &rel, &s3.split_rule()).unwrap();
    let n = kcirc::graph::Graph::new(&model.cfg).edges.len();
    let examples: Vec<_> = prep.discovery.iter().map(|e| e.triple.clone()).collect();
    let file = circuit_file(&model, &vec![false; n], examples.clone(), Ablation::Resample);
    let opts = EvalOptions { k: 10, random: 2, seed: 0, filter_known: false, demonstrations: 0 };
    let r = kcirc::eval::evaluate(&model, &tok, &file, &rel, &opts).unwrap();
    assert_eq!(r.n_dropped_no_partner, 1);
    assert_eq!(r.n_skipped_discovery, 3);
    assert_eq!(r.n_triples, 7);
    assert_eq!(r.circuit, r.full, "the full model as a circuit");
    // Under mean ablation the same fact is scored.
    let file = circuit_file(&model, &vec![false; n], examples, Ablation::Mean);
    let r = kcirc::eval::evaluate(&model, &tok, &file, &rel, &opts).unwrap();
    assert_eq!((r.n_dropped_no_partner, r.n_triples), (0, 8));
}

/// A write that cannot land (the path is a folder) fails naming the path and leaves no temporary file behind.
#[test]
fn a_failed_atomic_write_leaves_no_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("out.json");
    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join("x"), "keep").unwrap();
    let err = kcirc::circuit::write_atomic(&target, "{}").unwrap_err().to_string();
    assert!(err.contains("out.json"), "{err}");
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().filter_map(|e| e.ok()).map(|e| e.file_name()).collect();
    assert_eq!(left, vec![std::ffi::OsString::from("out.json")]);
    assert_eq!(std::fs::read_to_string(target.join("x")).unwrap(), "keep");
}
