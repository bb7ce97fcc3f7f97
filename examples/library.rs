//! kcirc as a library: the pipeline `kcirc discover` runs, then a hook client that reads attention patterns
//! and one that writes at a hook point — all on the same engine.
//!
//! `cargo run --release --example library -- models/SmolLM2-135M-Instruct.Q4_1.gguf data/country_capital_city.jsonl`
use candle_core::Device;
use kcirc::eval::EvalOptions;
use kcirc::model::hooks::{AddAt, Record};
use kcirc::model::{HookPoint, Logits};
use kcirc::pipeline::{self, Settings};
use kcirc::progress::Silent;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (model_path, triples) = match args.as_slice() {
        [_, m, t] => (m.as_str(), t.as_str()),
        _ => anyhow::bail!("usage: library MODEL TRIPLES"),
    };
    kcirc::parallel::configure(kcirc::parallel::available());
    let (model, tok) = kcirc::model::load(model_path, &Device::Cpu)?;
    let relation = kcirc::data::read(std::path::Path::new(triples))?;

    // 1. The pipeline: split, discover (the defaults: EAP-IG, KL metric, the smallest circuit reaching
    //    faithfulness 0.85), evaluate on the held-out facts.
    let settings = Settings::default();
    let eval = EvalOptions {
        k: settings.k,
        random: 3,
        seed: settings.seed,
        filter_known: settings.filter_known,
        demonstrations: settings.demonstrations,
    };
    let d = pipeline::discover(&model, &tok, model_path, &relation, &settings, Some(&eval), &Silent)?;
    println!("{}", pipeline::kept_line(&d.file));
    if let Some(r) = &d.report {
        println!("held-out Hit@10: full {:.3}, circuit {:.3}, random {:.3}", r.full.hit_at_k, r.circuit.hit_at_k, r.random.mean.hit_at_k);
    }

    // 2. Read a hook point: where the last position of the first discovery prompt attends in the last layer.
    let example = &d.prepared.discovery[0];
    let batch = model.batch(std::slice::from_ref(&example.tokens))?;
    let last = model.cfg.n_layers - 1;
    let (acts, _) = model.run(&batch, &Record(|p| p == HookPoint::Pattern(last)), Logits::Last)?;
    let pattern = acts.expect(HookPoint::Pattern(last))?; // [H, 1, T, T]
    let t = batch.seq_len;
    let from_last = pattern.narrow(2, t - 1, 1)?.squeeze(2)?.squeeze(1)?; // [H, T]
    println!("layer {last} head 0 attention from the last token: {:?}", from_last.get(0)?.to_vec1::<f32>()?);

    // 3. Write at a hook point: push the final residual along the target's unembedding direction.
    let direction = model.weights.unembed.narrow(1, example.target as usize, 1)?.t()?; // [1, D]
    let delta = (direction.unsqueeze(0)? * 0.1)?; // broadcast over [B, T, D]
    let pushed = AddAt { point: HookPoint::ResidFinal, delta, differentiable: false };
    let logits = model.run(&batch, &pushed, Logits::Last)?.1;
    let plain = model.forward(&batch)?;
    let gain = (logits.get(0)?.get(example.target as usize)? - plain.get(0)?.get(example.target as usize)?)?;
    println!("target logit after the push: {:+.3}", gain.to_scalar::<f32>()?);
    Ok(())
}
