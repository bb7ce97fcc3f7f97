//! What-the-circuit-does analyses, checked for exactness: the lens's last point is the model's (or the
//! circuit's) logits, direct logit attribution adds up to the target logit, a head's source split adds up to
//! its attribution, attention shares add up to one, head ablation is removing every edge out of the head, and
//! a circuit diffed with itself is identical. On the random GPT-2 fixture (multi-head attention) and on SmolLM2
//! (grouped-query attention).
mod common;

use candle_core::Tensor;
use common::*;
use kcirc::analysis::heads::{circuit_heads, random_like, Heads};
use kcirc::analysis::lens::Lens;
use kcirc::analysis::{dla, trace, Analysis, CircuitView, Context, FactOptions, Facts};
use kcirc::data::{Relation, Span, Triple};
use kcirc::eval::AblationSource;
use kcirc::graph::Graph;
use kcirc::intervene::{AblateHeads, Ablation, EdgeInputs};
use kcirc::model::{Logits, Model};
use kcirc::progress::Silent;
use kcirc::tokenizer::Tokenizer;

fn capitals() -> Relation {
    kcirc::data::read(&root().join("data/country_capital_city.jsonl")).unwrap()
}

fn context<'a>(model: &'a Model, tok: &'a Tokenizer, n: usize) -> Context<'a> {
    let filter = FactOptions { known_only: false, k: 10, max_facts: n, demonstrations: 0, seed: 0 };
    Context::new(model, tok, Facts::Relation(capitals()), filter, None).unwrap()
}

/// A circuit of every `keep_every`-th edge, with the given ablation's values (mean: over the context's facts).
fn circuit(ctx: &Context, keep_every: usize, ablation: Ablation) -> CircuitView {
    let graph = Graph::new(&ctx.model.cfg);
    let removed: Vec<bool> = (0..graph.edges.len()).map(|e| e % keep_every != 0).collect();
    let values = match ablation {
        Ablation::Zero => AblationSource::Zero,
        _ => AblationSource::mean_of(ctx.model, &ctx.facts).unwrap(),
    };
    CircuitView { graph, removed, ablation, values }
}

fn vals(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// The lens at its last point is the logits; DLA of all nodes plus constants is the target logit; a head's
/// source split sums to its DLA — for the full model and under a circuit.
fn exactness(model: &Model, tok: &Tokenizer, n: usize) {
    let mut ctx = context(model, tok, n);
    for with_circuit in [false, true] {
        if with_circuit {
            ctx.circuit = Some(circuit(&ctx, 3, Ablation::Mean));
        }
        for i in 0..ctx.facts.len() {
            let tr = trace(&ctx, i, with_circuit).unwrap();
            let fact = &ctx.facts[i];
            // The model's own logits for this fact (under the circuit: the edge intervention's).
            let batch = model.batch(std::slice::from_ref(&fact.tokens)).unwrap();
            let want = match &ctx.circuit {
                Some(c) if with_circuit => {
                    let abl = c.values.values(model, &[i], batch.seq_len).unwrap();
                    let hook = EdgeInputs::new(&c.graph, vec![c.removed.as_slice()], abl.as_ref(), 1);
                    model.run(&batch, &hook, Logits::Last).unwrap().1
                }
                _ => model.forward(&batch).unwrap(),
            };
            let want = vals(&want);
            assert!(max_diff(&tr.logits, &want) < 1e-4, "trace logits");
            let cum = tr.cumulative().unwrap();
            assert_eq!(cum.len(), 1 + 2 * model.cfg.n_layers);
            let last = fact.tokens.len() - 1;
            let lens = kcirc::analysis::lens::lens_logits(&ctx, &[cum.last().unwrap().1.clone()], &[last]).unwrap();
            let d = max_diff(&vals(&lens), &want);
            assert!(d < 1e-4, "lens at the last point vs logits (circuit: {with_circuit}): {d}");
            if !with_circuit {
                // Without a circuit the accumulated points are the residual stream itself, bit for bit.
                for l in 0..model.cfg.n_layers {
                    assert_eq!(vals(&cum[1 + 2 * l].1), vals(&tr.acts.resid_mid[l].get(0).unwrap()), "after attention {l}");
                }
            }
            let (a, dir) = dla::attribute(model, &tr, fact.target).unwrap();
            let err = (a.total() - a.logit).abs();
            assert!(err < 1e-4 * a.logit.abs().max(1.0), "DLA total {} vs logit {} (circuit: {with_circuit})", a.total(), a.logit);
            let per_layer: f64 = a.per_layer().iter().map(|(x, y)| x + y).sum::<f64>() + a.embed + a.constant;
            assert!((per_layer - a.logit).abs() < 1e-4 * a.logit.abs().max(1.0));
            if !with_circuit {
                for l in 0..model.cfg.n_layers {
                    let split = dla::head_sources(model, &tr, &dir, l).unwrap().to_vec2::<f32>().unwrap();
                    for (h, row) in split.iter().enumerate() {
                        let s: f64 = row.iter().map(|&x| x as f64).sum();
                        assert!((s - a.heads[l][h]).abs() < 1e-4, "a{l}.h{h}: source split {s} vs DLA {}", a.heads[l][h]);
                    }
                }
            }
        }
    }
}

#[test]
fn lens_and_attribution_are_exact_gpt2() {
    let (model, tok) = tiny_gpt2();
    exactness(&model, &tok, 4);
}

#[test]
fn lens_and_attribution_are_exact_smollm2() {
    let (model, tok) = smollm2();
    exactness(&model, &tok, 2);
}

#[test]
fn spans_find_the_subject_and_the_relation_words() {
    let (_, tok) = tiny_gpt2();
    let t = Triple {
        subject: "United States".into(),
        relation: "r".into(),
        object: "Washington".into(),
        template: "The capital of {} is the city of".into(),
        prompt: None,
    };
    let e = kcirc::data::example(&t, &tok).unwrap();
    let text = |span: Span| -> String { e.positions(span).iter().map(|&p| tok.token_text(e.tokens[p])).collect() };
    assert_eq!(text(Span::Subject), " United States");
    assert_eq!(text(Span::Relation), "The capital of is the city of");
    // The first position is the attention sink: analyses count it as other.
    assert_eq!(kcirc::analysis::sources(&e)[0], Span::Other);
    // An explicit prompt: the subject is found in it; a subject it does not contain is an error.
    let p = Triple { prompt: Some("Paris is the capital of France".into()), subject: "France".into(), ..t.clone() };
    let e = kcirc::data::example(&p, &tok).unwrap();
    assert_eq!(e.positions(Span::Subject), vec![e.tokens.len() - 1]);
    let bad = Triple { subject: "Spain".into(), ..p };
    let err = kcirc::data::example(&bad, &tok).unwrap_err().to_string();
    assert!(err.contains("not found in the prompt"), "{err}");
    // Demonstrations: their tokens are marked, the query's spans are where they were.
    let d = Triple { subject: "Canada".into(), object: "Ottawa".into(), ..t.clone() };
    let e = kcirc::data::example_in_context(&t, &[&d], &tok).unwrap();
    let demo: String = e.positions(Span::Demonstration).iter().map(|&p| tok.token_text(e.tokens[p])).collect();
    assert_eq!(demo, "The capital of Canada is the city of Ottawa\n");
    let subj: String = e.positions(Span::Subject).iter().map(|&p| tok.token_text(e.tokens[p])).collect();
    assert_eq!(subj, " United States");
}

/// Head reports: attention shares sum to one per head, DLA parts sum to the DLA, roles follow the rules, and
/// the ablation check's full-model numbers are the model's.
fn head_report(model: &Model, tok: &Tokenizer, n: usize) {
    let mut ctx = context(model, tok, n);
    ctx.circuit = Some(circuit(&ctx, 2, Ablation::Mean));
    let all: Vec<(usize, usize)> = (0..model.cfg.n_layers).flat_map(|l| (0..model.cfg.n_heads).map(move |h| (l, h))).collect();
    let r = Heads { heads: all.clone(), sets: vec![("given".into(), vec![(0, 0), (0, 1)])], random_draws: 3, seed: 1 }
        .analyse(&ctx, &Silent)
        .unwrap();
    assert_eq!(r.heads.len(), all.len());
    for h in &r.heads {
        assert!((h.attention.total() - 1.0).abs() < 1e-5, "{}: attention shares sum to {}", h.name, h.attention.total());
        assert!((h.dla_by_source.total() - h.dla).abs() < 1e-9);
        assert_eq!(h.role, kcirc::analysis::heads::role(&h.attention, h.dla, !h.relation_words.is_empty()));
        assert_eq!(h.kv_head, h.head / model.cfg.group_size());
        assert_eq!(h.top_tokens.len(), kcirc::analysis::heads::TOP_TOKENS);
        assert!(h.top_tokens.windows(2).all(|w| w[0].value >= w[1].value));
    }
    let o = kcirc::rank::full_model_outcomes(model, &ctx.facts).unwrap();
    let mean_rank = o.iter().map(|o| o.rank as f64).sum::<f64>() / o.len() as f64;
    assert!((r.full.mean_rank - mean_rank).abs() < 1e-9);
    for c in &r.checks {
        assert!(!c.heads.is_empty());
        assert_eq!(c.random_draws, 3);
    }
    let given = r.checks.iter().find(|c| c.set == "given").unwrap();
    assert_eq!(given.heads, vec!["a0.h0", "a0.h1"]);
}

#[test]
fn head_reports_add_up_gpt2() {
    let (model, tok) = tiny_gpt2();
    head_report(&model, &tok, 4);
}

#[test]
fn head_reports_add_up_smollm2() {
    let (model, tok) = smollm2();
    head_report(&model, &tok, 2);
}

/// Ablating heads is removing every edge out of them: the same logits as the edge intervention.
#[test]
fn head_ablation_is_removing_the_heads_edges() {
    let (model, tok) = tiny_gpt2();
    let ctx = context(&model, &tok, 3);
    let graph = Graph::new(&model.cfg);
    let set = [(0usize, 1usize), (1, 2), (1, 3)];
    let mut removed = vec![false; graph.edges.len()];
    for &(l, h) in &set {
        for &e in &graph.edges_from[graph.head_sender(l, h)] {
            removed[e] = true;
        }
    }
    let prompts: Vec<Vec<u32>> = ctx.facts.iter().map(|e| e.tokens.clone()).collect();
    let batch = model.batch(&prompts).unwrap();
    for source in [AblationSource::Zero, AblationSource::mean_of(&model, &ctx.facts).unwrap()] {
        let rows: Vec<usize> = (0..prompts.len()).collect();
        let abl = source.values(&model, &rows, batch.seq_len).unwrap();
        let by_heads = model.run(&batch, &AblateHeads { heads: &set, ablated: abl.as_ref() }, Logits::Last).unwrap().1;
        let by_edges =
            model.run(&batch, &EdgeInputs::new(&graph, vec![removed.as_slice()], abl.as_ref(), rows.len()), Logits::Last).unwrap().1;
        let d = max_diff(&vals(&by_heads), &vals(&by_edges));
        assert!(d < 1e-4, "head ablation vs edge removal: {d}");
        let clean = model.forward(&batch).unwrap();
        assert!(max_diff(&vals(&by_heads), &vals(&clean)) > 1e-3, "ablating three heads changed nothing");
    }
    // Random sets: as many heads per layer, none of the set's.
    for r in random_like(&set, model.cfg.n_heads, 5, 7) {
        assert_eq!(r.iter().filter(|x| x.0 == 0).count(), 1);
        assert_eq!(r.iter().filter(|x| x.0 == 1).count(), 2);
        assert!(r.iter().all(|x| !set.contains(x)));
    }
}

#[test]
fn lens_report_follows_the_target_and_a_rival() {
    let (model, tok) = tiny_gpt2();
    let mut ctx = context(&model, &tok, 3);
    ctx.circuit = Some(circuit(&ctx, 4, Ablation::Zero));
    let rival = kcirc::data::answer_token(&tok, "London").unwrap();
    let lens = Lens { compare: vec![Some(rival); 3], compare_predicted: false };
    let r = lens.analyse(&ctx, &Silent).unwrap();
    let o = kcirc::rank::full_model_outcomes(&model, &ctx.facts).unwrap();
    for (f, o) in r.facts.iter().zip(&o) {
        let last = f.full.points.last().unwrap();
        assert_eq!(last.rank, o.rank, "the lens's last point is the model's rank");
        assert!((last.prob - o.target_prob).abs() < 1e-5);
        assert!(last.compare_rank.is_some());
        let c = f.circuit.as_ref().unwrap();
        assert_eq!(c.points.len(), f.full.points.len());
        // `emerges_at` is the first point of the final run of top-1 points.
        match &f.full.emerges_at {
            Some(p) => {
                let k = f.full.points.iter().position(|x| &x.point == p).unwrap();
                assert!(f.full.points[k..].iter().all(|x| x.rank == 0));
                assert!(k == 0 || f.full.points[k - 1].rank != 0);
            }
            None => assert_ne!(last.rank, 0),
        }
    }
    assert_eq!(r.summary.len(), 1 + 2 * model.cfg.n_layers);
    assert!(r.summary.iter().all(|s| s.circuit_mean_rank.is_some()));
}

#[test]
fn circuit_heads_are_the_senders_with_kept_edges() {
    let (model, tok) = tiny_gpt2();
    let ctx = context(&model, &tok, 1);
    let mut view = circuit(&ctx, 1, Ablation::Zero);
    view.removed = vec![true; view.graph.edges.len()];
    assert!(circuit_heads(&view).is_empty());
    let e = view.graph.edges_from[view.graph.head_sender(1, 2)][0];
    view.removed[e] = false;
    assert_eq!(circuit_heads(&view), vec![(1, 2)]);
}

/// Demonstrations come from the discovery facts only — never the fact itself, never a held-out fact — the same
/// ones wherever a fact is prompted; too many, or resample ablation, is refused.
#[test]
fn demonstrations_come_from_the_discovery_split() {
    use kcirc::split::{prepare, SplitRule};
    let (model, tok) = tiny_gpt2();
    let rel = capitals();
    let rule = SplitRule {
        examples: Some(6),
        seed: 3,
        filter_known: false,
        k: 10,
        ablation: Ablation::Mean,
        demonstrations: 2,
        mean_over: kcirc::split::MeanOver::Relation,
    };
    let p = prepare(&model, &tok, &rel, &rule).unwrap();
    let discovery: Vec<String> = p.discovery.iter().map(|e| e.triple.subject.clone()).collect();
    let demo_subjects = |e: &kcirc::data::Example| -> Vec<String> {
        let text: String = e.positions(Span::Demonstration).iter().map(|&q| tok.token_text(e.tokens[q])).collect();
        rel.triples.iter().filter(|t| text.contains(&format!("of {} is", t.subject))).map(|t| t.subject.clone()).collect()
    };
    for e in p.discovery.iter().chain(&p.test) {
        let d = demo_subjects(e);
        assert_eq!(d.len(), 2, "{}: {d:?}", e.triple.subject);
        assert!(d.iter().all(|s| discovery.contains(s) && *s != e.triple.subject), "{}: {d:?}", e.triple.subject);
        // The query's own spans are intact after the demonstrations.
        let subj: String = e.positions(Span::Subject).iter().map(|&q| tok.token_text(e.tokens[q])).collect();
        assert_eq!(subj.trim(), e.triple.subject);
    }
    // A fact gets the same demonstrations wherever it is prompted.
    let pool: Vec<Triple> = p.discovery.iter().map(|e| e.triple.clone()).collect();
    let again = kcirc::data::in_context(vec![kcirc::data::example(&p.test[0].triple, &tok).unwrap()], &pool, 2, 3, &tok).unwrap();
    assert_eq!(again[0].tokens, p.test[0].tokens);
    let too_many = SplitRule { demonstrations: 6, ..rule };
    let err = prepare(&model, &tok, &rel, &too_many).err().unwrap().to_string();
    assert!(err.contains("6 demonstrations asked for, but only 5"), "{err}");
    let resample = SplitRule { ablation: Ablation::Resample, ..rule };
    assert!(prepare(&model, &tok, &rel, &resample).is_err());
}
