//! Mean ablation's reference set: the means over the discovery facts and the relation's facts outside the
//! held-out split, against a mean computed by hand prompt by prompt; the split never lets a held-out fact in;
//! discovery, the circuit file and the held-out evaluation use the same set.
mod common;

use common::*;
use kcirc::data::{self, Example, Relation};
use kcirc::discover::Task;
use kcirc::eval::{full_model_outcomes, EvalOptions};
use kcirc::intervene::{broadcast_means, reference_means, Ablation, RecordHeads};
use kcirc::metric::Metric;
use kcirc::model::{Activations, Logits, Model};
use kcirc::pipeline::Settings;
use kcirc::split::{prepare, MeanOver, MAX_REFERENCE};

fn capitals() -> Relation {
    data::read(&root().join("data/country_capital_city.jsonl")).unwrap()
}

/// The sender values a prompt gets run alone: embed and MLP `l` `[len, D]` and layer `l`'s heads `[H, len, D]`
/// as nested vectors.
type Alone = (Vec<Vec<f32>>, Vec<Vec<f32>>, Vec<Vec<Vec<f32>>>);

fn alone(model: &Model, prompt: &[u32], layer: usize) -> Alone {
    let acts = model.run(&model.batch(&[prompt.to_vec()]).unwrap(), &RecordHeads, Logits::Hidden).unwrap().0;
    let heads = acts.heads(layer).unwrap().squeeze(1).unwrap().to_vec3::<f32>().unwrap();
    (acts.embed.get(0).unwrap().to_vec2().unwrap(), acts.mlps[layer].get(0).unwrap().to_vec2().unwrap(), heads)
}

/// Mean of `rows` (each `[D]`), element by element.
fn mean(rows: &[&Vec<f32>]) -> Vec<f32> {
    let d = rows[0].len();
    (0..d).map(|i| rows.iter().map(|r| r[i] as f64).sum::<f64>() as f32 / rows.len() as f32).collect()
}

fn close(a: &[f32], b: &[f32], what: &str) {
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!((x - y).abs() <= 1e-4 * (1.0 + y.abs()), "{what}[{i}]: {x} vs {y}");
    }
}

/// Checks `means` (one row, `T` positions, as `reference_means` returns and as every row of a broadcast batch
/// holds) against the hand mean over `prompts` run one by one: position `p` from the end is the mean over the
/// prompts longer than `p`. Row `row` of `means`, which has `t` positions: with `t > T` the farther ones read
/// the farthest mean, with `t < T` (a batch shorter than the longest reference prompt) the last `t` means.
fn check_against_hand_means(model: &Model, prompts: &[Vec<u32>], means: &Activations, row: usize, layer: usize) {
    let runs: Vec<Alone> = prompts.iter().map(|p| alone(model, p, layer)).collect();
    let longest = prompts.iter().map(|p| p.len()).max().unwrap();
    let embed = means.embed.get(row).unwrap().to_vec2::<f32>().unwrap();
    let mlp = means.mlps[layer].get(row).unwrap().to_vec2::<f32>().unwrap();
    let heads = means.heads(layer).unwrap().narrow(1, row, 1).unwrap().squeeze(1).unwrap().to_vec3::<f32>().unwrap();
    let t = embed.len();
    for q in 0..t {
        // Position q from the end; beyond the longest prompt, the farthest position.
        let qq = q.min(longest - 1);
        let having: Vec<(usize, &Alone)> = prompts.iter().zip(&runs).filter(|(p, _)| p.len() > qq).map(|(p, r)| (p.len(), r)).collect();
        assert!(!having.is_empty());
        let at = |f: &dyn Fn(&Alone, usize) -> &Vec<f32>| -> Vec<f32> {
            mean(&having.iter().map(|(len, r)| f(r, len - 1 - qq)).collect::<Vec<_>>())
        };
        close(&embed[t - 1 - q], &at(&|r, i| &r.0[i]), &format!("embed, {q} from the end"));
        close(&mlp[t - 1 - q], &at(&|r, i| &r.1[i]), &format!("mlp {layer}, {q} from the end"));
        for (h, head) in heads.iter().enumerate() {
            close(&head[t - 1 - q], &at(&|r, i| &r.2[h][i]), &format!("head {h} of layer {layer}, {q} from the end"));
        }
    }
}

/// Prompts of several lengths, more than one accumulation chunk of them.
fn prompts_of_many_lengths(tok: &kcirc::tokenizer::Tokenizer) -> Vec<Vec<u32>> {
    let texts = [
        "The capital of France is",
        "Paris",
        "The capital city of the country of Germany is the city of",
        "A",
        "Rome is in",
        "The largest city of Australia, by population, is",
    ];
    (0..20).map(|i| tok.encode(&format!("{} {}", texts[i % texts.len()], "x".repeat(i % 3 + 1))).unwrap()).collect()
}

#[test]
fn reference_means_are_the_hand_computed_mean_over_prompts_of_different_lengths() {
    let (model, tok) = tiny_gpt2();
    let prompts = prompts_of_many_lengths(&tok);
    let lengths: std::collections::BTreeSet<usize> = prompts.iter().map(|p| p.len()).collect();
    assert!(lengths.len() >= 4, "{lengths:?}");
    let means = reference_means(&model, &prompts).unwrap();
    assert_eq!(means.embed.dims()[..2], [1, *lengths.iter().max().unwrap()]);
    for layer in [0, model.cfg.n_layers - 1] {
        check_against_hand_means(&model, &prompts, &means, 0, layer);
    }
    // Broadcast to a batch of 3 rows longer than any reference prompt: every row the same, the extra positions
    // the farthest mean.
    let t = lengths.iter().max().unwrap() + 3;
    let b = broadcast_means(&means, 3, t).unwrap();
    assert_eq!(b.embed.dims()[..2], [3, t]);
    for row in 0..3 {
        check_against_hand_means(&model, &prompts, &b, row, 1);
    }
    // The order of the prompts does not matter beyond rounding.
    let mut rev = prompts.clone();
    rev.reverse();
    let diff = (reference_means(&model, &rev).unwrap().embed - &means.embed).unwrap().abs().unwrap().max_all().unwrap();
    assert!(diff.to_scalar::<f32>().unwrap() < 1e-5);
    // The threads only spread the chunks: same bits whatever their number.
    // (Results never depend on the worker count, so changing it under the other tests of this binary is safe.)
    kcirc::parallel::configure(1);
    let one = reference_means(&model, &prompts).unwrap();
    kcirc::parallel::configure(3);
    let three = reference_means(&model, &prompts).unwrap();
    kcirc::parallel::configure(1);
    let bits = |a: &Activations| -> Vec<u32> {
        let mut v: Vec<u32> = a.embed.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().map(|x| x.to_bits()).collect();
        for l in 0..a.mlps.len() {
            v.extend(a.heads(l).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().map(|x| x.to_bits()));
            v.extend(a.mlps[l].flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().map(|x| x.to_bits()));
        }
        v
    };
    assert_eq!(bits(&one), bits(&three));
}

/// Settings under which the random tiny GPT-2 "knows" about half of the capitals (rank < 25,000 of 50,257).
fn half_known() -> Settings {
    Settings {
        examples: Some(3),
        k: 25_000,
        ablation: Ablation::Mean,
        mean_over: MeanOver::Relation,
        method: "eap".into(),
        top_n: Some(20),
        ..Default::default()
    }
}

#[test]
fn the_reference_set_is_every_fact_outside_the_held_out_split_and_never_a_held_out_one() {
    let (model, tok) = tiny_gpt2();
    let rel = capitals();
    let s = half_known();
    let p = prepare(&model, &tok, &rel, &s.split_rule()).unwrap();
    let all = rel.examples(&tok).unwrap();
    let known: Vec<bool> = full_model_outcomes(&model, &all).unwrap().iter().map(|o| o.rank < s.k).collect();
    let n_unknown = known.iter().filter(|k| !**k).count();
    assert!(n_unknown >= 3 && n_unknown < all.len() - 6, "{n_unknown} of {} unknown", all.len());
    // Fewer facts than MAX_REFERENCE: discovery, held-out and reference facts are all the facts, each once.
    assert!(all.len() <= MAX_REFERENCE);
    assert_eq!(p.reference.len(), n_unknown);
    assert_eq!(p.discovery.len() + p.test.len() + p.reference.len(), all.len());
    let in_ = |set: &[Example], e: &Example| set.iter().any(|x| x.triple == e.triple);
    for r in &p.reference {
        assert!(!in_(&p.test, r) && !in_(&p.discovery, r), "{} is held out or discovery", r.triple.subject);
        let i = all.iter().position(|a| a.triple == r.triple).unwrap();
        assert!(!known[i], "{} is known", r.triple.subject);
    }
    // Off, or under another ablation: no reference facts.
    assert!(prepare(&model, &tok, &rel, &Settings { mean_over: MeanOver::Discovery, ..s.clone() }.split_rule())
        .unwrap()
        .reference
        .is_empty());
    assert!(prepare(&model, &tok, &rel, &Settings { ablation: Ablation::Zero, ..s.clone() }.split_rule()).unwrap().reference.is_empty());
    // Capped with the discovery facts at MAX_REFERENCE, in the seed's order: the same facts whatever the run.
    assert_eq!(prepare(&model, &tok, &rel, &s.split_rule()).unwrap().reference, p.reference);

    // The task's ablated values are the hand means over the discovery and reference prompts.
    let task =
        Task::with_reference(&model, p.discovery.clone(), &p.reference, MeanOver::Relation, Ablation::Mean, None, Metric::Kl).unwrap();
    assert_eq!(task.n_reference, 3 + n_unknown);
    let prompts: Vec<Vec<u32>> = p.discovery.iter().chain(&p.reference).map(|e| e.tokens.clone()).collect();
    let ablated = task.ablated.as_ref().unwrap();
    for row in 0..3 {
        check_against_hand_means(&model, &prompts, ablated, row, 1);
    }
    // Task::new: the discovery prompts alone.
    let plain = Task::new(&model, p.discovery.clone(), Ablation::Mean, None, Metric::Kl).unwrap();
    assert_eq!(plain.n_reference, 3);
    let own: Vec<Vec<u32>> = p.discovery.iter().map(|e| e.tokens.clone()).collect();
    check_against_hand_means(&model, &own, plain.ablated.as_ref().unwrap(), 0, 1);
}

#[test]
fn discovery_records_the_reference_set_and_evaluation_uses_it_without_scoring_it() {
    let (model, tok) = tiny_gpt2();
    let rel = capitals();
    let s = half_known();
    let opts = EvalOptions { k: s.k, random: 1, seed: 0, filter_known: true, demonstrations: 0 };
    let d = kcirc::pipeline::discover(&model, &tok, "tiny", &rel, &s, Some(&opts), &kcirc::progress::Silent).unwrap();
    let run = &d.file.run;
    let reference: Vec<_> = d.prepared.reference.iter().map(|e| e.triple.clone()).collect();
    assert!(!reference.is_empty());
    assert_eq!(run.reference, reference);
    assert_eq!(run.n_reference, Some(3 + reference.len()));
    // The file round-trips and its held-out report scored exactly the held-out split.
    let file = kcirc::circuit::CircuitFile::parse(&d.file.to_json().unwrap(), "file").unwrap();
    assert_eq!(file.run.reference, reference);
    let r = d.report.unwrap();
    assert_eq!(r.n_reference, Some(3 + reference.len()));
    assert_eq!(r.n_triples, d.prepared.test.len());
    assert_eq!(r.n_skipped_reference, 0);
    // Evaluated from the file: the same report.
    let again = kcirc::eval::evaluate(&model, &tok, &file, &rel, &opts).unwrap();
    assert_eq!(serde_json::to_string(&again).unwrap(), serde_json::to_string(&r).unwrap());
    // Evaluated with a k under which every fact is known: the reference facts are still never scored.
    let all_known = EvalOptions { k: 50_257, ..opts.clone() };
    let wide = kcirc::eval::evaluate(&model, &tok, &file, &rel, &all_known).unwrap();
    assert_eq!(wide.n_skipped_reference, reference.len());
    assert_eq!(wide.n_triples, rel.triples.len() - 3 - reference.len());
    assert_eq!(wide.n_dropped_unknown, 0);
    // Without the reference set, other means: the empty circuit's held-out logits change.
    let off = Settings { mean_over: MeanOver::Discovery, ..s.clone() };
    let d_off = kcirc::pipeline::discover(&model, &tok, "tiny", &rel, &off, Some(&opts), &kcirc::progress::Silent).unwrap();
    assert!(d_off.file.run.reference.is_empty());
    assert_eq!(d_off.file.run.n_reference, Some(3));
    assert_ne!(d_off.report.unwrap().empty.target_logit, r.empty.target_logit);
}

/// The corpus (the default): every prompt of the shipped corpus except the relation's own, never a fact of the
/// relation (so never a held-out one), in corpus order; the task's ablated values are the hand means over
/// exactly those prompts (not the discovery prompts); the circuit file records them and evaluation from the
/// file reproduces the report.
#[test]
fn corpus_means_exclude_the_relation_and_are_the_hand_means_over_the_corpus() {
    let (model, tok) = tiny_gpt2();
    let rel = capitals();
    let s = Settings { mean_over: MeanOver::Corpus, ..half_known() };
    let p = prepare(&model, &tok, &rel, &s.split_rule()).unwrap();
    let shipped = data::parse(&std::fs::read(root().join("data/corpus/mean-ablation.jsonl")).unwrap(), "c", "c").unwrap();
    assert_eq!(shipped.triples.len(), 24 * data::CORPUS_PER_RELATION);
    let own = shipped.triples.iter().filter(|t| t.relation == rel.name).count();
    assert_eq!(own, data::CORPUS_PER_RELATION, "the shipped corpus holds 5 capitals");
    let expected: Vec<_> = shipped.triples.iter().filter(|t| t.relation != rel.name).cloned().collect();
    assert_eq!(p.reference.iter().map(|e| e.triple.clone()).collect::<Vec<_>>(), expected);
    let prompts: std::collections::HashSet<String> = rel.triples.iter().map(|t| t.prompt_text().unwrap()).collect();
    assert!(p.reference.iter().all(|e| !prompts.contains(&e.triple.prompt_text().unwrap())));
    // A relation under another name whose facts are in the corpus: its prompts are removed all the same.
    let renamed = Relation::new("capitals_again", rel.triples.iter().map(|t| data::Triple { relation: "x".into(), ..t.clone() }).collect());
    assert_eq!(data::corpus_for(&renamed).unwrap().len(), expected.len());

    let task = Task::with_reference(&model, p.discovery.clone(), &p.reference, MeanOver::Corpus, Ablation::Mean, None, Metric::Kl).unwrap();
    assert_eq!(task.n_reference, expected.len());
    let corpus: Vec<Vec<u32>> = p.reference.iter().map(|e| e.tokens.clone()).collect();
    for row in 0..3 {
        check_against_hand_means(&model, &corpus, task.ablated.as_ref().unwrap(), row, 1);
    }

    let opts = EvalOptions { k: s.k, random: 1, seed: 0, filter_known: true, demonstrations: 0 };
    let d = kcirc::pipeline::discover(&model, &tok, "tiny", &rel, &s, Some(&opts), &kcirc::progress::Silent).unwrap();
    assert_eq!(d.file.run.mean_over, Some(MeanOver::Corpus));
    assert_eq!(d.file.run.n_reference, Some(expected.len()));
    let file = kcirc::circuit::CircuitFile::parse(&d.file.to_json().unwrap(), "file").unwrap();
    assert_eq!(Settings::from_run(&file.run).unwrap().mean_over, MeanOver::Corpus);
    let r = d.report.unwrap();
    assert_eq!(r.n_reference, Some(expected.len()));
    assert_eq!(r.n_skipped_reference, 0);
    let again = kcirc::eval::evaluate(&model, &tok, &file, &rel, &opts).unwrap();
    assert_eq!(serde_json::to_string(&again).unwrap(), serde_json::to_string(&r).unwrap());
    // The relation's own means give another empty circuit.
    let d_rel = kcirc::pipeline::discover(&model, &tok, "tiny", &rel, &half_known(), Some(&opts), &kcirc::progress::Silent).unwrap();
    assert_ne!(d_rel.report.unwrap().empty.target_logit, r.empty.target_logit);
}

/// The shipped corpus is what `kcirc data corpus data/` writes: 5 facts of every shipped relation, seed 0.
#[test]
fn the_shipped_corpus_is_regenerated_from_the_shipped_relations() {
    let files = kcirc::batch::relation_files(&[], Some(&root().join("data"))).unwrap();
    assert_eq!(files.len(), 24);
    let rels: Vec<Relation> = files.iter().map(|f| data::read(f).unwrap()).collect();
    let shipped = data::parse(&std::fs::read(root().join("data/corpus/mean-ablation.jsonl")).unwrap(), "c", "c").unwrap();
    assert_eq!(data::corpus_of(&rels, 0), shipped.triples);
    // Every relation contributes its first 5 facts in seed 0's shuffle.
    let first = &rels[0];
    let order = data::shuffled(first.triples.len(), 0);
    assert_eq!(shipped.triples[..5].to_vec(), order[..5].iter().map(|&i| first.triples[i].clone()).collect::<Vec<_>>());
}

/// Circuit files from before the choice of means say nothing: they took the relation's prompts (the discovery
/// prompts alone when they list no reference facts), and `--rerun` reads them so.
#[test]
fn files_without_mean_over_read_as_the_relations_means() {
    let (model, tok) = tiny_gpt2();
    let rel = capitals();
    let d = kcirc::pipeline::discover(&model, &tok, "tiny", &rel, &half_known(), None, &kcirc::progress::Silent).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&d.file.to_json().unwrap()).unwrap();
    assert_eq!(json["mean_over"], "relation");
    json.as_object_mut().unwrap().remove("mean_over");
    let old = kcirc::circuit::CircuitFile::parse(&json.to_string(), "old").unwrap();
    assert_eq!(old.run.mean_over(), MeanOver::Relation);
    assert_eq!(Settings::from_run(&old.run).unwrap().mean_over, MeanOver::Relation);
    json.as_object_mut().unwrap().remove("reference");
    let older = kcirc::circuit::CircuitFile::parse(&json.to_string(), "older").unwrap();
    assert_eq!(Settings::from_run(&older.run).unwrap().mean_over, MeanOver::Discovery);
}
