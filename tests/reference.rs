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
use kcirc::split::{prepare, MAX_REFERENCE};

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
/// prompts longer than `p`. Row `row` of `means`, which has `t ≥ T` positions (the farther ones read the
/// farthest mean).
fn check_against_hand_means(model: &Model, prompts: &[Vec<u32>], means: &Activations, row: usize, layer: usize) {
    let runs: Vec<Alone> = prompts.iter().map(|p| alone(model, p, layer)).collect();
    let longest = prompts.iter().map(|p| p.len()).max().unwrap();
    let embed = means.embed.get(row).unwrap().to_vec2::<f32>().unwrap();
    let mlp = means.mlps[layer].get(row).unwrap().to_vec2::<f32>().unwrap();
    let heads = means.heads(layer).unwrap().narrow(1, row, 1).unwrap().squeeze(1).unwrap().to_vec3::<f32>().unwrap();
    let t = embed.len();
    assert!(t >= longest);
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
    Settings { examples: Some(3), k: 25_000, ablation: Ablation::Mean, method: "eap".into(), top_n: Some(20), ..Default::default() }
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
    assert!(prepare(&model, &tok, &rel, &Settings { reference: false, ..s.clone() }.split_rule()).unwrap().reference.is_empty());
    assert!(prepare(&model, &tok, &rel, &Settings { ablation: Ablation::Zero, ..s.clone() }.split_rule()).unwrap().reference.is_empty());
    // Capped with the discovery facts at MAX_REFERENCE, in the seed's order: the same facts whatever the run.
    assert_eq!(prepare(&model, &tok, &rel, &s.split_rule()).unwrap().reference, p.reference);

    // The task's ablated values are the hand means over the discovery and reference prompts.
    let task = Task::with_reference(&model, p.discovery.clone(), &p.reference, Ablation::Mean, None, Metric::Kl).unwrap();
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
    let off = Settings { reference: false, ..s.clone() };
    let d_off = kcirc::pipeline::discover(&model, &tok, "tiny", &rel, &off, Some(&opts), &kcirc::progress::Silent).unwrap();
    assert!(d_off.file.run.reference.is_empty());
    assert_eq!(d_off.file.run.n_reference, Some(3));
    assert_ne!(d_off.report.unwrap().empty.target_logit, r.empty.target_logit);
}
