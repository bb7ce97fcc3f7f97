//! Cross-fitted Hit@k of attribution circuits: how well a ranking found on half of a relation's discovery facts
//! keeps the *other* half's answers in the top k, at each circuit size. The experiment behind docs/results.md
//! ("Session 11: a cross-fitted size"): a size chosen where this out-of-fold Hit@k reaches a target is a size
//! chosen on facts the ranking never saw, without touching the held-out split.
//!
//! The discovery facts (the split `kcirc discover` makes with these settings) are cut into two halves A and B in
//! their split order; EAP(-IG) scores are computed on each half alone (the means of mean ablation stay those of
//! the whole task); the top-n circuit of A's ranking is run on B's facts and B's on A's. Prints one JSON array:
//! per size, the edges asked for, the facts whose target ranks below k (of all discovery facts), and the MRR.
//!
//! `cargo run --release --example cross_fit_size -- MODEL TRIPLES CONFIG N1,N2,...`
//! (`CONFIG` a `--config` preset such as configs/cpu.json; `N…` top-n edge counts, ascending).
use candle_core::Device;
use kcirc::discover::eap;
use kcirc::graph::Selection;
use kcirc::pipeline::Settings;
use kcirc::progress::Silent;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, model_path, triples, config, sizes] = args.as_slice() else {
        anyhow::bail!("usage: cross_fit_size MODEL TRIPLES CONFIG N1,N2,...");
    };
    let sizes: Vec<usize> = sizes.split(',').map(|s| s.trim().parse()).collect::<Result<_, _>>()?;
    kcirc::parallel::configure(kcirc::parallel::available());
    let (model, tok) = kcirc::model::load(model_path, &Device::Cpu)?;
    let relation = kcirc::data::read(std::path::Path::new(triples))?;
    let settings = Settings::from_file(std::path::Path::new(config))?;
    let ig_steps = match settings.method.as_str() {
        "eap" => None,
        "eap-ig" => Some(settings.ig_steps),
        other => anyhow::bail!("cross-fitting ranks edges by attribution: method eap or eap-ig, not {other}"),
    };
    let prepared = kcirc::split::prepare(&model, &tok, &relation, &settings.split_rule())?;
    let task = kcirc::pipeline::task_of(&model, &prepared, &settings)?;
    let n = task.n_examples();
    anyhow::ensure!(n >= 2, "cross-fitting needs at least two discovery facts, {} has {n}", relation.name);
    let half = n / 2;
    let (a, b) = (task.rows(0, half)?, task.rows(half, n - half)?);
    let (scores_a, scores_b) = (eap::edge_scores(&a, ig_steps, &Silent)?, eap::edge_scores(&b, ig_steps, &Silent)?);
    let mut rows = vec![];
    for &top_n in &sizes {
        // A's circuit on B's facts, B's on A's: every discovery fact judged by a ranking it took no part in.
        let on_b = b.scores_and_outcomes(&[task.graph.select(&scores_a, Selection::TopN(top_n))?], &[settings.metric])?;
        let on_a = a.scores_and_outcomes(&[task.graph.select(&scores_b, Selection::TopN(top_n))?], &[settings.metric])?;
        let outcomes: Vec<_> = on_b[0].1.iter().chain(&on_a[0].1).collect();
        let hits = outcomes.iter().filter(|o| o.rank < settings.k).count();
        let mrr = outcomes.iter().map(|o| 1.0 / (o.rank as f64 + 1.0)).sum::<f64>() / n as f64;
        rows.push(serde_json::json!({ "top_n": top_n, "hits": hits, "n": n, "mrr": mrr }));
    }
    println!("{}", serde_json::to_string(&rows)?);
    Ok(())
}
