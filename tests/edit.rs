//! Knowledge editing: ROME's update maps the key to the optimised value and is rank one under C = I; FT stays
//! inside its clamp; an edit to the current answer changes nothing; bad requests are refused.
mod common;

use candle_core::Tensor;
use common::*;
use kcirc::edit::ft::FineTune;
use kcirc::edit::measure::{run, templates_of, Mode, Probes};
use kcirc::edit::rome::Rome;
use kcirc::edit::{Editor, Prepared, Request};
use kcirc::model::Model;
use kcirc::progress::Silent;
use kcirc::tokenizer::Tokenizer;

fn request(new_object: &str) -> Request {
    Request {
        subject: "France".into(),
        template: "The capital of {} is the city of".into(),
        object: "Paris".into(),
        new_object: new_object.into(),
        relation: "country_capital_city".into(),
    }
}

fn vals(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

/// `k*·W' + b = v*` and `W' − W` is rank one (`a ⊗ δ̂` reproduces it).
fn rome_update_is_exact(model: &Model, tok: &Tokenizer, layer: usize) {
    let rome = Rome::new(model, tok, layer, 0).unwrap();
    assert_eq!(rome.contexts.len(), 6, "the prompt alone and five prefixes");
    let req = Prepared::new(&request("Rome"), tok).unwrap();
    let (k, v, update) = rome.compute(model, tok, &req, &Silent).unwrap();
    let edited = update.apply(model).unwrap();
    let out = rome.output(&edited, &k).unwrap();
    let err = vals(&out).iter().zip(vals(&v)).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    let scale = vals(&v).iter().map(|x| x.abs()).fold(0f32, f32::max).max(1.0);
    assert!(err < 1e-4 * scale, "k*·W' + b vs v*: {err}");
    let diff = (edited.mlp_out_weight(layer) - model.mlp_out_weight(layer)).unwrap();
    let delta = (&v - rome.output(model, &k).unwrap()).unwrap();
    let norm = delta.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap().sqrt();
    assert!(norm > 0.0, "the value moved");
    let unit = (delta / norm as f64).unwrap();
    let a = diff.matmul(&unit.unsqueeze(1).unwrap()).unwrap(); // [d_mlp, 1]
    let rebuilt = a.matmul(&unit.unsqueeze(0).unwrap()).unwrap();
    let resid = vals(&(diff.clone() - rebuilt).unwrap()).iter().map(|x| x.abs()).fold(0f32, f32::max);
    let size = vals(&diff).iter().map(|x| x.abs()).fold(0f32, f32::max);
    assert!(resid < 1e-5 * size.max(1e-3) + 1e-7, "not rank one: residual {resid} of {size}");
}

#[test]
fn rome_update_maps_the_key_to_the_value_gpt2() {
    let (model, tok) = tiny_gpt2();
    rome_update_is_exact(&model, &tok, 0);
}

#[test]
fn rome_edits_smollm2_and_keeps_other_relations() {
    let (model, tok) = smollm2();
    rome_update_is_exact(&model, &tok, kcirc::edit::default_layer(&model.cfg));
    let rels = vec![
        kcirc::data::read(&root().join("data/lre/country_capital_city.json")).unwrap(),
        kcirc::data::read(&root().join("data/country_language.jsonl")).unwrap(),
    ];
    let probes = Probes::new(&model, &tok, &rels, templates_of(&rels), 8).unwrap();
    let rome = Rome::new(&model, &tok, 5, 0).unwrap();
    let req = Prepared::new(&request("Rome"), &tok).unwrap();
    let (_, report) = run(&model, &tok, &rome, &[req], &probes, Mode::Sequential, &Silent).unwrap();
    let r = &report.requests[0];
    assert!(r.before.new_rank > 0 && r.after.reliability.new_rank == 0, "{r:?}");
    assert!(r.after.generalization.as_ref().unwrap().n_templates >= 2);
    assert!(r.after.locality_other.as_ref().unwrap().unchanged >= 0.75, "{r:?}");
}

#[test]
fn fine_tuning_stays_inside_its_clamp() {
    let (model, tok) = tiny_gpt2();
    for last in [false, true] {
        let mut ft = FineTune::new(&model, 1, last).unwrap();
        ft.clamp = 1e-3;
        ft.steps = 6;
        let req = Prepared::new(&request("Rome"), &tok).unwrap();
        let u = ft.edit(&model, &tok, &req, &Silent).unwrap();
        let d = vals(&(u.weight - model.mlp_out_weight(1)).unwrap());
        let max = d.iter().map(|x| x.abs()).fold(0f32, f32::max);
        assert!(max <= 1e-3 * (1.0 + 1e-5), "{} moved a weight by {max}", ft.name());
        assert!(max > 5e-4, "{} barely moved ({max})", ft.name());
    }
}

#[test]
fn an_edit_to_the_current_answer_changes_nothing() {
    let (model, tok) = tiny_gpt2();
    let rels = vec![kcirc::data::read(&root().join("data/country_capital_city.jsonl")).unwrap()];
    let probes = Probes::new(&model, &tok, &rels, templates_of(&rels), 6).unwrap();
    let req = Prepared::new(&request("Paris"), &tok).unwrap();
    assert!(req.is_noop());
    let rome = Rome::new(&model, &tok, 0, 0).unwrap();
    let (edited, report) = run(&model, &tok, &rome, std::slice::from_ref(&req), &probes, Mode::Sequential, &Silent).unwrap();
    assert!(report.requests[0].skipped.is_some());
    assert_eq!(vals(edited[0].mlp_out_weight(0)), vals(model.mlp_out_weight(0)));
    let l = report.requests[0].after.locality_relation.as_ref().unwrap();
    assert_eq!((l.unchanged, l.mean_kl), (1.0, 0.0));
    assert_eq!(report.requests[0].before, report.requests[0].after.reliability);
}

#[test]
fn bad_requests_are_refused() {
    let (_, tok) = tiny_gpt2();
    let err = |r: Request| Prepared::new(&r, &tok).unwrap_err().to_string();
    assert!(err(request(" ")).contains("tokenizes to nothing"));
    assert!(err(Request { object: "".into(), ..request("Rome") }).contains("tokenizes to nothing"));
    let e = kcirc::edit::parse_requests("{\"subject\": \"x\"}\n", "r.jsonl").unwrap_err().to_string();
    assert!(e.contains("r.jsonl: line 1"), "{e}");
    let e = kcirc::edit::parse_requests(
        "{\"subject\":\"France\",\"template\":\"no slot\",\"object\":\"Paris\",\"new_object\":\"Rome\"}\n",
        "r.jsonl",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("has no `{}`"), "{e}");
    let (model, _) = tiny_gpt2();
    assert!(Rome::new(&model, &tok, 2, 0).unwrap_err().to_string().contains("out of range"));
}

/// An edited model written out and loaded again gives the in-memory edited model's logits: GPT-2 (safetensors
/// source), SmolLM2 (GGUF source, written as Llama safetensors) and Qwen2 (its own layout).
#[test]
fn an_edited_model_written_and_loaded_again_gives_the_same_logits() {
    let dir = tempfile::tempdir().unwrap();
    for (name, (model, tok), layer) in [("gpt2", tiny_gpt2(), 1), ("smollm2", smollm2(), 5), ("qwen2", tiny_qwen2(), 1)] {
        let mut ft = FineTune::new(&model, layer, false).unwrap();
        ft.steps = 2;
        let req = Prepared::new(&request("Rome"), &tok).unwrap();
        let edited = ft.edit(&model, &tok, &req, &Silent).unwrap().apply(&model).unwrap();
        let out = dir.path().join(name);
        kcirc::model::save(&edited, &tok, &out).unwrap();
        assert!(kcirc::model::save(&edited, &tok, &out).is_err(), "an existing folder is not overwritten");
        let (again, tok2) = kcirc::model::load(out.to_str().unwrap(), &candle_core::Device::Cpu).unwrap();
        let prompts = vec![tok.encode("The capital of France is the city of").unwrap(), tok.encode("Paris 12 ünïcode").unwrap()];
        assert_eq!(prompts[1], tok2.encode("Paris 12 ünïcode").unwrap(), "{name}: the tokenizer round-trips");
        let b = edited.batch(&prompts).unwrap();
        let (x, y) = (vals(&edited.forward(&b).unwrap()), vals(&again.forward(&b).unwrap()));
        let d = x.iter().zip(&y).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(d < 1e-4, "{name}: written and reloaded logits differ by {d}");
        let clean = vals(&model.forward(&b).unwrap());
        assert!(clean.iter().zip(&x).any(|(a, b)| (a - b).abs() > 1e-4), "{name}: the edit changed nothing");
    }
    // Qwen2's layout: q/k/v biases (the value bias as read, not folded), no output bias, no lm_head when tied.
    let config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.path().join("qwen2/config.json")).unwrap()).unwrap();
    assert_eq!((config["model_type"].as_str(), config["tie_word_embeddings"].as_bool()), (Some("qwen2"), Some(true)));
    let written = candle_core::safetensors::load(dir.path().join("qwen2/model.safetensors"), &candle_core::Device::Cpu).unwrap();
    let source = candle_core::safetensors::load(fixture("qwen2-tiny/model.safetensors"), &candle_core::Device::Cpu).unwrap();
    let mut names: Vec<&String> = written.keys().collect();
    names.sort();
    let mut expected: Vec<&String> = source.keys().collect();
    expected.sort();
    assert_eq!(names, expected, "the same tensor names as the checkpoint");
    for n in ["model.layers.0.self_attn.v_proj.bias", "model.layers.1.self_attn.q_proj.bias", "model.embed_tokens.weight"] {
        let d = (&written[n] - &source[n]).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert_eq!(d, 0.0, "{n} written as read");
    }
}

/// Erasure on the tiny GPT-2: "before" is the full model, the removed edges are circuit edges taken in
/// |effect| order (a prefix), the search stops at the first size that reaches the target, and the random
/// baseline removes as many edges.
#[test]
fn erasure_removes_a_prefix_of_the_circuit_and_reports_costs() {
    use kcirc::erase::{erase, EraseOptions, Ranking, Unit};
    let (model, tok) = tiny_gpt2();
    let rel = kcirc::data::read(&root().join("data/country_capital_city.jsonl")).unwrap();
    let other = kcirc::data::read(&root().join("data/country_language.jsonl")).unwrap();
    let settings = kcirc::pipeline::Settings {
        method: "eap".into(),
        examples: Some(4),
        filter_known: false,
        top_n: Some(60),
        target_faithfulness: None,
        ..Default::default()
    };
    let d = kcirc::pipeline::discover(&model, &tok, "gpt2-tiny", &rel, &settings, None, &Silent).unwrap();
    let file = d.file;
    // The tiny random model knows nothing: at k = 20,000 of 50,257 it ranks enough answers high to erase some.
    let opts = EraseOptions {
        ranking: Ranking::Effect,
        unit: Unit::Edges,
        tolerance: 0.1,
        target_hit: 0.5,
        k: 20000,
        random: 2,
        seed: 0,
        max_facts: 6,
    };
    let r = erase(&model, &tok, &file, &rel, std::slice::from_ref(&other), &opts, &Silent).unwrap();
    let mut by_effect: Vec<(String, f64)> = file.edges.iter().map(|e| (e.name.clone(), e.effect.unwrap().abs())).collect();
    by_effect.sort_by(|a, b| b.1.total_cmp(&a.1));
    let names: Vec<String> = by_effect.iter().take(r.n_removed).map(|e| e.0.clone()).collect();
    let mut got = r.removed.clone();
    let mut want = names.clone();
    got.sort();
    want.sort();
    assert_eq!(got, want, "the removed edges are the circuit's first by |effect|");
    assert!(r.target.n_facts == 20, "the 24 facts less the 4 discovery facts (the circuit filters nothing)");
    if r.reached {
        assert!(r.target.hit_erased <= 0.5);
        let before = r.searched.iter().filter(|s| s.0 < r.n_removed).map(|s| s.1);
        assert!(before.clone().all(|h| h > 0.5), "a smaller size already reached the target: {:?}", r.searched);
    }
    assert_eq!(r.others.len(), 1);
    assert!(r.others[0].hit_random.is_finite());
    let greedy =
        erase(&model, &tok, &file, &rel, std::slice::from_ref(&other), &EraseOptions { ranking: Ranking::Greedy, ..opts }, &Silent)
            .unwrap();
    assert!(greedy.n_removed <= greedy.n_candidates);
    // Nodes: the circuit's senders (not the input) by their circuit edges' summed |effect|, each removed with
    // every edge out of it.
    let graph = kcirc::graph::Graph::new(&model.cfg);
    let mut by_node: std::collections::BTreeMap<usize, f64> = Default::default();
    for e in &file.edges {
        let id = graph.edge_id(&e.name).unwrap();
        *by_node.entry(graph.edges[id].sender).or_default() += e.effect.unwrap().abs();
    }
    by_node.remove(&0);
    let mut order: Vec<(usize, f64)> = by_node.into_iter().collect();
    order.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    for ranking in [Ranking::Effect, Ranking::Greedy] {
        let r =
            erase(&model, &tok, &file, &rel, std::slice::from_ref(&other), &EraseOptions { ranking, unit: Unit::Nodes, ..opts }, &Silent)
                .unwrap();
        assert_eq!(r.n_candidates, order.len(), "{ranking:?}");
        let removed: Vec<usize> = r.removed.iter().map(|n| (0..graph.n_senders()).find(|&s| graph.sender_name(s) == *n).unwrap()).collect();
        assert_eq!(r.n_removed_edges, removed.iter().map(|&s| graph.edges_from[s].len()).sum::<usize>(), "{ranking:?}");
        if ranking == Ranking::Effect {
            let want: Vec<usize> = order.iter().take(r.n_removed).map(|x| x.0).collect();
            assert_eq!(removed, want, "the nodes removed are the first by summed |effect|");
        }
        assert!(r.others[0].hit_random.is_finite());
    }
}

/// `--paraphrases`: generalization is measured on the paraphrases that apply to the request (templates and full
/// prompts; not another subject's, not the edit prompt itself), as the new object's mean rank on them; a bad
/// line is refused by its number.
#[test]
fn generalization_uses_the_paraphrases_that_apply() {
    use kcirc::edit::measure::parse_paraphrases;
    let (model, tok) = tiny_gpt2();
    let text = "{\"template\": \"{} has its capital in\"}\n\n\
                {\"subject\": \"France\", \"prompt\": \"The French capital, France's first city, is\"}\n\
                {\"subject\": \"Japan\", \"template\": \"Japan: {}\"}\n\
                {\"relation\": \"other\", \"template\": \"{} is\"}\n\
                {\"template\": \"The capital of {} is the city of\"}\n";
    let mut probes = Probes::new(&model, &tok, &[], Default::default(), 0).unwrap();
    probes.paraphrases = Some(parse_paraphrases(text, "p.jsonl").unwrap());
    let req = Prepared::new(&request("Rome"), &tok).unwrap();
    let g = probes.measure(&model, &tok, &req).unwrap().generalization.unwrap();
    let rank = |prompt: &str| -> usize {
        let logits = model.forward(&model.batch(&[tok.encode(prompt).unwrap()]).unwrap()).unwrap().get(0).unwrap();
        kcirc::rank::rank_in(&logits.to_vec1::<f32>().unwrap(), req.new_token() as usize)
    };
    let want = (rank("France has its capital in") + rank("The French capital, France's first city, is")) as f64 / 2.0;
    assert_eq!((g.n_templates, g.mean_new_rank), (2, want));
    let err = |t: &str| parse_paraphrases(t, "p.jsonl").unwrap_err().to_string();
    assert!(err("{\"template\": \"{} is\"}\n{\"templat\": \"x {}\"}").starts_with("p.jsonl: line 2:"));
    assert!(err("{\"template\": \"{} is\", \"prompt\": \"x\", \"subject\": \"x\"}").contains("line 1: give exactly one"));
    assert!(err("{\"template\": \"no slot\"}").contains("has no `{}`"));
    assert!(err("{\"prompt\": \"France is\"}").contains("needs the `subject`"));
    assert!(err("{\"subject\": \"Spain\", \"prompt\": \"France is\"}").contains("not found in the prompt"));
}

/// Independent editing: each request edits the unedited model, so its numbers are those of a run of that
/// request alone; sequential editing differs (the second edit sees the first).
#[test]
fn independent_edits_equal_single_request_runs() {
    let (model, tok) = tiny_gpt2();
    let rels = vec![kcirc::data::read(&root().join("data/country_capital_city.jsonl")).unwrap()];
    let probes = Probes::new(&model, &tok, &rels, templates_of(&rels), 6).unwrap();
    let mut ft = FineTune::new(&model, 1, false).unwrap();
    ft.steps = 4;
    ft.clamp = 0.05;
    let reqs: Vec<Prepared> = [("France", "Rome"), ("Japan", "Berlin"), ("Germany", "Madrid")]
        .iter()
        .map(|(s, o)| Prepared::new(&Request { subject: s.to_string(), ..request(o) }, &tok).unwrap())
        .collect();
    let (models, all) = run(&model, &tok, &ft, &reqs, &probes, Mode::Independent, &Silent).unwrap();
    assert_eq!((models.len(), all.mode), (3, Mode::Independent));
    for (i, req) in reqs.iter().enumerate() {
        let (_, one) = run(&model, &tok, &ft, std::slice::from_ref(req), &probes, Mode::Sequential, &Silent).unwrap();
        let (a, b) = (&all.requests[i], &one.requests[0]);
        assert_eq!((&a.before, &a.after, a.steps, a.loss), (&b.before, &b.after, b.steps, b.loss), "request {i}");
        assert_eq!(a.at_end, a.after, "independent: the end is right after the edit");
    }
    let (_, seq) = run(&model, &tok, &ft, &reqs, &probes, Mode::Sequential, &Silent).unwrap();
    assert_ne!(seq.requests[1].after, all.requests[1].after, "sequential: the second edit sees the first");
}

/// `--cov-text`: the update uses C = the second moment of the layer's keys over the text (recorded here from one
/// chunk, plus the 1e-3 ridge): it still maps k* to v* to 1e-4, it is no longer C = I's (its direction is not
/// k*), and its direction u satisfies C·u ∥ k*, i.e. u ∝ C⁻¹k*.
#[test]
fn rome_with_a_covariance_from_text() {
    use candle_core::DType;
    use kcirc::model::hooks::Record;
    use kcirc::model::{HookPoint, Logits};
    let (model, tok) = tiny_gpt2();
    let layer = 0;
    let text = "Rivers carry water from the mountains to the sea. Cities grow along their banks, and bridges join \
                the two sides. Every spring the snow melts and the rivers rise.";
    let ids = tok.encode_plain(text).unwrap();
    assert!((16..=64).contains(&ids.len()), "one chunk: {} tokens", ids.len());
    let rome = Rome::new(&model, &tok, layer, 0).unwrap().with_covariance_from(&model, &tok, text).unwrap();
    let req = Prepared::new(&request("Rome"), &tok).unwrap();
    let (k, v, update) = rome.compute(&model, &tok, &req, &Silent).unwrap();
    let edited = update.apply(&model).unwrap();
    let out = rome.output(&edited, &k).unwrap();
    let err = vals(&out).iter().zip(vals(&v)).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    let scale = vals(&v).iter().map(|x| x.abs()).fold(0f32, f32::max).max(1.0);
    assert!(err < 1e-4 * scale, "k*·W' + b vs v*: {err}");
    // The update's direction over the keys: (W' − W)·δ̂ ∝ u.
    let diff = (edited.mlp_out_weight(layer) - model.mlp_out_weight(layer)).unwrap();
    let delta = (&v - rome.output(&model, &k).unwrap()).unwrap();
    let unit = (&delta / delta.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap().sqrt() as f64).unwrap();
    let u: Vec<f64> = vals(&diff.matmul(&unit.unsqueeze(1).unwrap()).unwrap()).iter().map(|&x| x as f64).collect();
    let key: Vec<f64> = vals(&k).iter().map(|&x| x as f64).collect();
    // C from the text's keys, recorded here.
    let record = Record(|p| matches!(p, HookPoint::MlpHidden(_)));
    let acts = model.run(&model.batch(std::slice::from_ref(&ids)).unwrap(), &record, Logits::Hidden).unwrap().0;
    let f = model.cfg.d_mlp;
    let keys = acts.expect(HookPoint::MlpHidden(layer)).unwrap().reshape((ids.len(), f)).unwrap().to_dtype(DType::F64).unwrap();
    let mut c = (keys.t().unwrap().matmul(&keys).unwrap() / ids.len() as f64).unwrap().to_vec2::<f64>().unwrap();
    let ridge = (0..f).map(|i| c[i][i]).sum::<f64>() / f as f64 * 1e-3;
    (0..f).for_each(|i| c[i][i] += ridge);
    let cu: Vec<f64> = c.iter().map(|row| row.iter().zip(&u).map(|(a, b)| a * b).sum()).collect();
    let cos = |a: &[f64], b: &[f64]| {
        let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        dot / (a.iter().map(|x| x * x).sum::<f64>().sqrt() * b.iter().map(|x| x * x).sum::<f64>().sqrt())
    };
    assert!(cos(&cu, &key) > 1.0 - 1e-4, "C·u is not parallel to k*: cos {}", cos(&cu, &key));
    assert!(cos(&u, &key) < 0.99, "the update direction is still k* (C = I): cos {}", cos(&u, &key));
}

/// Rediscovering a circuit on the model it was discovered on gives it back, edge for edge, under mean and under
/// resample ablation (whose corruption partners are chosen again from the relation file, which it then needs).
#[test]
fn rediscovery_on_the_unedited_model_gives_the_circuit_back() {
    use kcirc::intervene::Ablation;
    let (model, tok) = tiny_gpt2();
    let rel = kcirc::data::read(&root().join("data/country_capital_city.jsonl")).unwrap();
    for ablation in [Ablation::Mean, Ablation::Resample] {
        let settings = kcirc::pipeline::Settings {
            method: "eap".into(),
            examples: Some(4),
            filter_known: false,
            top_n: Some(40),
            target_faithfulness: None,
            ablation,
            ..Default::default()
        };
        let before = kcirc::pipeline::discover(&model, &tok, "gpt2-tiny", &rel, &settings, None, &Silent).unwrap().file;
        let (after, change) = kcirc::pipeline::rediscover(&model, &tok, &before, Some(&rel), &Silent).unwrap();
        assert_eq!(after.edges, before.edges, "{ablation:?}");
        assert_eq!((after.metric_full, after.metric_circuit), (before.metric_full, before.metric_circuit), "{ablation:?}");
        assert_eq!(change.edges_before, change.edges_after);
        let without = kcirc::pipeline::rediscover(&model, &tok, &before, None, &Silent);
        match ablation {
            Ablation::Resample => assert!(without.unwrap_err().to_string().contains("corruption partners")),
            _ => assert!(without.is_ok()),
        }
    }
}
