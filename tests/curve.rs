//! Faithfulness curves and the size a faithfulness target chooses: exact endpoints, hand-computed areas, the
//! smallest size against a brute-force scan, exact random sizes, byte-identical output, and bad input.
mod common;

use std::process::Command;

use common::*;
use kcirc::curve::{areas, check_sizes, measure};
use kcirc::discover::eap::{choose_size, choose_size_with, edge_scores, faithfulness};
use kcirc::discover::Task;
use kcirc::eval::{circuits_outcomes, random_circuits, EvalOptions, HeldOut};
use kcirc::graph::Selection;
use kcirc::intervene::Ablation;
use kcirc::metric::Metric;
use kcirc::progress::Silent;

#[test]
fn areas_of_a_hand_built_curve() {
    let a = areas(&[(0.0, 0.0), (0.5, 0.5), (1.0, 1.0)]);
    assert!((a.cpr - 0.5).abs() < 1e-12 && (a.cmd - 0.5).abs() < 1e-12, "{a:?}");
    // A curve that overshoots: CMD counts |1 − f| on both sides.
    let a = areas(&[(0.0, 0.0), (0.1, 0.8), (1.0, 1.2)]);
    assert!((a.cpr - (0.1 * 0.4 + 0.9 * 1.0)).abs() < 1e-12, "{a:?}");
    assert!((a.cmd - (0.1 * 0.6 + 0.9 * 0.2)).abs() < 1e-12, "{a:?}");
    // A perfect circuit at every size: CMD 0.
    assert_eq!(areas(&[(0.0, 1.0), (0.3, 1.0), (1.0, 1.0)]).cmd, 0.0);
    for bad in [vec![], vec![0.0, 0.5], vec![0.5, 0.2], vec![0.1, 1.5], vec![0.2, 0.2], vec![f64::NAN]] {
        assert!(check_sizes(&bad).is_err(), "{bad:?}");
    }
    assert!(check_sizes(&[0.001, 0.5, 1.0]).is_ok());
}

/// A task on four capitals of the tiny random GPT-2, and the relation.
fn tiny_task<'a>(
    model: &'a kcirc::model::Model,
    tok: &kcirc::tokenizer::Tokenizer,
    ablation: Ablation,
    metric: Metric,
) -> (Task<'a>, kcirc::data::Relation) {
    let rel = kcirc::data::read(&root().join("data/country_capital_city.jsonl")).unwrap();
    let examples: Vec<_> = rel.triples[..4].iter().map(|t| kcirc::data::example(t, tok).unwrap()).collect();
    (Task::new(model, examples, ablation, None, metric).unwrap(), rel)
}

#[test]
fn curve_endpoints_are_exact_and_random_circuits_have_the_circuits_size() {
    let (model, tok) = tiny_gpt2();
    let (task, rel) = tiny_task(&model, &tok, Ablation::Mean, Metric::Kl);
    let scores = edge_scores(&task, Some(3), &Silent).unwrap();
    let opts = EvalOptions { k: 10, random: 2, seed: 0, filter_known: false, demonstrations: 0 };
    let held = HeldOut::new(
        task.model,
        &tok,
        &task.examples,
        &[],
        &rel,
        rel.examples(&tok).unwrap(),
        Ablation::Mean,
        kcirc::split::MeanOver::Discovery,
        &opts,
        0,
    )
    .unwrap();
    let sizes = [0.05, 0.3, 1.0];
    let (points, a) = measure(&task, &scores, &sizes, 10, Some(&held), 2, 0, &Silent).unwrap();
    assert_eq!(points.len(), 4);
    let (empty, full) = (&points[0], &points[3]);
    assert_eq!((empty.size, empty.n_edges, empty.faithfulness.logit, empty.faithfulness.kl), (0.0, 0, 0.0, 0.0));
    assert_eq!((full.n_edges, full.faithfulness.logit, full.faithfulness.kl), (110, 1.0, 1.0));
    assert_eq!(full.held_out.unwrap().faithfulness, 1.0);
    assert_eq!(empty.held_out.unwrap().faithfulness, 0.0);
    assert!(points[1].n_edges > 0 && points[1].n_edges <= 6, "{}", points[1].n_edges);
    assert!(a.random_logit.is_some() && a.held_out.is_some());
    // Hit@k on the discovery facts at every size is what evaluation's own path (another batching, the means
    // over the same prompts) finds for those facts; the full circuit's is the full model's.
    let total = task.graph.edges.len();
    let mut circuits = vec![vec![true; total]];
    circuits.extend(sizes.iter().map(|s| task.graph.select(&scores, Selection::TopN((s * total as f64).round() as usize)).unwrap()));
    let refs: Vec<&[bool]> = circuits.iter().map(|c| c.as_slice()).collect();
    let by_eval = circuits_outcomes(task.model, &task.graph, &refs, &task.examples, &held.ablation).unwrap();
    let full_model = kcirc::rank::full_model_outcomes(task.model, &task.examples).unwrap();
    for (p, o) in points.iter().zip(&by_eval) {
        let (got, want) = (p.discovery.unwrap(), kcirc::rank::Metrics::new(o, 10));
        assert_eq!((got.hit_at_1, got.hit_at_k), (want.hit_at_1, want.hit_at_k), "size {}", p.size);
        assert!((got.mrr - want.mrr).abs() < 1e-9 && (got.target_logit - want.target_logit).abs() < 1e-4, "size {}", p.size);
    }
    let fm = kcirc::rank::Metrics::new(&full_model, 10);
    let fd = full.discovery.unwrap();
    assert_eq!((fd.hit_at_1, fd.hit_at_k), (fm.hit_at_1, fm.hit_at_k));
    assert!((fd.mrr - fm.mrr).abs() < 1e-9 && fd.mrr != empty.discovery.unwrap().mrr, "{fd:?}");
    // Random circuits of a size keep exactly that many edges, distinct per seed.
    for n in [1, 7, 55, 110] {
        let r = random_circuits(110, n, 3, 5);
        assert!(r.iter().all(|c| c.iter().filter(|x| !**x).count() == n), "{n}");
        if n < 110 {
            assert_ne!(r[0], r[1]);
        }
    }
}

/// The chosen size is the smallest top-n reaching the target, as a brute-force scan of every n finds it; the
/// grid search (forced on the small graph) returns a size that reaches it while one edge fewer does not.
#[test]
fn the_chosen_size_is_the_smallest_reaching_the_target() {
    let (model, tok) = tiny_gpt2();
    for (ablation, metric) in [(Ablation::Mean, Metric::Kl), (Ablation::Zero, Metric::Logit)] {
        let (task, _) = tiny_task(&model, &tok, ablation, metric);
        let scores = edge_scores(&task, Some(3), &Silent).unwrap();
        let total = task.graph.edges.len();
        let m_empty = task.score(&vec![true; total]).unwrap();
        let brute: Vec<f64> = (1..=total)
            .map(|n| faithfulness(task.score(&task.graph.select(&scores, Selection::TopN(n)).unwrap()).unwrap(), m_empty))
            .collect();
        assert_eq!(*brute.last().unwrap(), 1.0);
        for target in [0.2, 0.5, 0.8, 0.95, 1.0] {
            let want = brute.iter().position(|f| *f >= target).unwrap() + 1;
            let c = choose_size(&task, &scores, target).unwrap();
            assert_eq!(c.top_n, want, "{ablation} {metric} target {target}");
            assert_eq!(c.faithfulness, brute[want - 1]);
            let g = choose_size_with(&task, &scores, target, 0).unwrap();
            assert!(g.faithfulness >= target, "{target}: grid search reached {}", g.faithfulness);
            assert!(
                g.top_n == 1 || brute[g.top_n - 2] < target || g.searched.iter().all(|(n, _)| *n != g.top_n - 1),
                "{target}: {}",
                g.top_n
            );
            assert!(
                g.searched.iter().filter(|(n, _)| *n < g.top_n).all(|(_, f)| *f < target),
                "{target}: a smaller searched size reached it"
            );
        }
        assert!(choose_size(&task, &scores, 0.0).is_err());
        assert!(choose_size(&task, &scores, 1.5).is_err());
    }
}

fn kcirc(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kcirc")).args(args).arg("--quiet").output().unwrap()
}

#[test]
fn curve_json_is_byte_identical_and_bad_sizes_are_refused() {
    let model = fixture("gpt2-tiny");
    let triples = root().join("data/country_capital_city.jsonl");
    let run = |extra: &[&str]| {
        let mut args =
            vec!["curve", "--model", model.to_str().unwrap(), "--triples", triples.to_str().unwrap(), "--no-filter", "--examples", "4"];
        args.extend_from_slice(&["--sizes", "0.01,0.1,0.5,1", "--random", "2"]);
        args.extend_from_slice(extra);
        kcirc(&args)
    };
    let a = run(&["--threads", "1"]);
    let b = run(&["--threads", "2"]);
    assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
    assert_eq!(a.stdout, b.stdout);
    let c: serde_json::Value = serde_json::from_slice(&a.stdout).unwrap();
    assert_eq!(c["points"].as_array().unwrap().len(), 5);
    assert_eq!(c["points"][4]["faithfulness"]["kl"], 1.0);
    assert!(c["areas"]["random_logit"]["cmd"].as_f64().is_some());
    assert_eq!(c["n_held_out"], 20, "24 facts, 4 for discovery");
    let capped: serde_json::Value = serde_json::from_slice(&run(&["--max-held-out", "5"]).stdout).unwrap();
    assert_eq!(capped["n_held_out"], 5);
    assert_eq!(capped["points"][2]["faithfulness"], c["points"][2]["faithfulness"], "discovery numbers do not depend on it");
    for (sizes, needle) in [("0,0.5", "(0, 1]"), ("0.5,0.2", "must increase"), ("0.1,1.5", "(0, 1]"), ("", "sizes")] {
        let o = run(&["--sizes", sizes]);
        assert_eq!(o.status.code(), Some(2), "{sizes}: {}", String::from_utf8_lossy(&o.stderr));
        assert!(String::from_utf8_lossy(&o.stderr).contains(needle), "{sizes}: {}", String::from_utf8_lossy(&o.stderr));
    }
    let o = run(&["--method", "acdc"]);
    assert_eq!(o.status.code(), Some(2));
    // A faithfulness target outside (0, 1] is refused before anything runs.
    for t in ["0", "1.5", "-0.2"] {
        let o =
            kcirc(&["discover", "--model", model.to_str().unwrap(), "--triples", triples.to_str().unwrap(), "--target-faithfulness", t]);
        assert_eq!(o.status.code(), Some(2), "{t}");
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("--target-faithfulness must be in (0, 1]"),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

/// `--stability` discovers again from as many held-out facts and reports edge and node Jaccard; the file,
/// stability included, reruns byte for byte.
#[test]
fn stability_compares_circuits_from_disjoint_splits() {
    let dir = tempfile::tempdir().unwrap();
    let model = fixture("gpt2-tiny");
    let triples = root().join("data/country_capital_city.jsonl");
    let a = dir.path().join("a.json");
    let o = kcirc(&[
        "discover",
        "--model",
        model.to_str().unwrap(),
        "--triples",
        triples.to_str().unwrap(),
        "--no-filter",
        "--examples",
        "4",
        "--random",
        "1",
        "--stability",
        "--out",
        a.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let c: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&a).unwrap()).unwrap();
    let st = &c["stability_report"];
    assert_eq!(st["n_examples"], 4);
    for key in ["edge_jaccard", "node_jaccard"] {
        let j = st[key].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&j), "{key} {j}");
    }
    assert!(st["n_edges_other"].as_u64().unwrap() > 0);
    let b = dir.path().join("b.json");
    let o = kcirc(&["discover", "--rerun", a.to_str().unwrap(), "--out", b.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
}
