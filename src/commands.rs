//! One function per subcommand: wiring between flags and the library, nothing more.
use std::io::Write;

use anyhow::{bail, Result};
use candle_core::Device;
use clap::{Args, ValueEnum};

use crate::{Cli, DeviceArg};
use kcirc::graph::Graph;

pub fn device(d: DeviceArg) -> Result<Device> {
    match d {
        DeviceArg::Cpu => Ok(Device::Cpu),
        DeviceArg::Cuda => {
            if !candle_core::utils::cuda_is_available() {
                bail!("--device cuda: this kcirc was built without the `cuda` feature (cargo build --release --features cuda)");
            }
            Ok(Device::new_cuda(0)?)
        }
    }
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
pub enum Format {
    Json,
    Text,
}

#[derive(Args)]
pub struct PredictArgs {
    /// Model: hub id (gpt2, gpt2-medium, HuggingFaceTB/SmolLM2-135M, …), a local folder, or a .gguf file.
    #[arg(long)]
    pub model: String,
    /// Prompt text (repeat for several prompts; they run as one padded batch).
    #[arg(long, required = true)]
    pub prompt: Vec<String>,
    /// How many top tokens to show.
    #[arg(long, default_value_t = 10)]
    pub top_k: usize,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Json)]
    pub format: Format,
}

pub fn predict(cli: &Cli, a: &PredictArgs) -> Result<()> {
    if a.top_k == 0 {
        bail!("--top-k must be at least 1");
    }
    let dev = device(cli.device)?;
    let (model, tok) = kcirc::model::load(&a.model, &dev)?;
    let preds = kcirc::predict::predict(&model, &tok, &a.prompt, a.top_k)?;
    let mut out = std::io::stdout().lock();
    for p in preds {
        match a.format {
            Format::Json => writeln!(out, "{}", serde_json::to_string(&p)?)?,
            Format::Text => {
                writeln!(out, "{}  ({} tokens)", p.prompt, p.tokens.len())?;
                writeln!(out, "  {:>4}  {:>8}  {:>10}  {:>8}  token", "rank", "id", "logit", "prob")?;
                for (i, c) in p.top.iter().enumerate() {
                    writeln!(out, "  {:>4}  {:>8}  {:>10.4}  {:>8.4}  {:?}", i + 1, c.id, c.logit, c.prob, c.token)?;
                }
            }
        }
    }
    Ok(())
}

#[derive(Args)]
pub struct GraphArgs {
    /// Model: hub id, folder (a config.json alone is enough) or .gguf file.
    #[arg(long)]
    pub model: String,
    /// Print a JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn graph(a: &GraphArgs) -> Result<()> {
    let cfg = kcirc::model::load_config(&a.model)?;
    let counts = Graph::new(&cfg).counts();
    if a.json {
        println!("{}", serde_json::to_string(&counts)?);
    } else {
        println!("model      {}", a.model);
        println!("layers     {} ({} query heads, {} key/value heads)", cfg.n_layers, cfg.n_heads, cfg.n_kv_heads);
        println!("nodes      {}", counts.nodes);
        println!("senders    {}", counts.senders);
        println!("receivers  {}", counts.receivers);
        println!("edges      {}", counts.edges);
    }
    Ok(())
}
