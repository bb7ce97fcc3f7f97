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

#[derive(Args)]
pub struct DiscoverArgs {
    /// Model: hub id, local folder or .gguf file.
    #[arg(long)]
    pub model: String,
    /// Triples: JSON Lines (subject, relation, object, template) or an LRE relation file. Repeat for several
    /// relations (one circuit each, into --out-dir).
    #[arg(long, required_unless_present = "relations")]
    pub triples: Vec<std::path::PathBuf>,
    /// Every relation file (*.json, *.jsonl) in this folder, one circuit each, into --out-dir.
    #[arg(long)]
    pub relations: Option<std::path::PathBuf>,
    /// Folder for the circuits of a batch run (`<relation>.json`); a JSON Lines summary goes to stdout.
    #[arg(long)]
    pub out_dir: Option<std::path::PathBuf>,
    /// A preset of discovery settings (JSON; configs/paper.json, configs/cpu.json); flags override it.
    #[arg(long)]
    pub config: Option<std::path::PathBuf>,
    /// Discovery method: acdc (exact), eap, eap-ig (attribution), hybrid (EAP-IG candidates, exact ablation).
    #[arg(long)]
    pub method: Option<String>,
    /// eap/eap-ig: keep the top-n edges by |score|.
    #[arg(long)]
    pub top_n: Option<usize>,
    /// eap/eap-ig: keep edges with |score| at least this.
    #[arg(long, allow_negative_numbers = true)]
    pub score_threshold: Option<f64>,
    /// EAP-IG interpolation steps.
    #[arg(long)]
    pub ig_steps: Option<usize>,
    /// hybrid: EAP-IG candidate edges for exact ablation.
    #[arg(long)]
    pub candidates: Option<usize>,
    /// Write every edge's score (JSON Lines) for `kcirc select` (eap, eap-ig, hybrid).
    #[arg(long)]
    pub scores: Option<std::path::PathBuf>,
    /// τ: prune an edge whose removal changes the metric by less than this.
    #[arg(long, allow_negative_numbers = true)]
    pub threshold: Option<f64>,
    /// Signed rule `Δ < τ` (ACDC's and the paper's) instead of `|Δ| < τ`.
    #[arg(long)]
    pub signed: bool,
    #[arg(long, value_enum)]
    pub metric: Option<kcirc::metric::Metric>,
    #[arg(long, value_enum)]
    pub ablation: Option<kcirc::intervene::Ablation>,
    /// Number of discovery triples.
    #[arg(long)]
    pub examples: Option<usize>,
    /// Seed of the discovery/test split (and of corrupted prompts).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Keep facts the full model does not know (rank ≥ k) instead of dropping them.
    #[arg(long)]
    pub no_filter: bool,
    /// Write the circuit here (JSON) instead of stdout.
    #[arg(long)]
    pub out: Option<std::path::PathBuf>,
    /// Also write the circuit as Graphviz DOT.
    #[arg(long)]
    pub dot: Option<std::path::PathBuf>,
    /// Skip the held-out evaluation.
    #[arg(long)]
    pub no_eval: bool,
    /// Random circuits in the held-out evaluation.
    #[arg(long, default_value_t = 5)]
    pub random: usize,
}

impl DiscoverArgs {
    /// The preset, overridden by explicit flags.
    pub fn settings(&self) -> Result<kcirc::discover::setup::Settings> {
        let mut s = match &self.config {
            Some(p) => kcirc::discover::setup::Settings::from_file(p)?,
            None => Default::default(),
        };
        if let Some(m) = &self.method {
            s.method = m.clone();
        }
        if let Some(t) = self.threshold {
            s.threshold = t;
        }
        if self.signed {
            s.signed = true;
        }
        if let Some(m) = self.metric {
            s.metric = m;
        }
        if let Some(a) = self.ablation {
            s.ablation = a;
        }
        if let Some(n) = self.examples {
            s.examples = n;
        }
        if let Some(seed) = self.seed {
            s.seed = seed;
        }
        if self.no_filter {
            s.filter_known = false;
        }
        if self.top_n.is_some() {
            s.top_n = self.top_n;
        }
        if self.score_threshold.is_some() {
            s.score_threshold = self.score_threshold;
        }
        if let Some(k) = self.ig_steps {
            s.ig_steps = k;
        }
        if let Some(c) = self.candidates {
            s.candidates = c;
        }
        s.validate()?;
        Ok(s)
    }
}

/// A progress bar on stderr, hidden with `--quiet` or when stderr is not a terminal.
pub fn progress_bar(cli: &Cli) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if cli.quiet || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let pb = indicatif::ProgressBar::new(0);
    pb.set_style(
        indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} edges · {msg} · ETA {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb
}

pub fn discover(cli: &Cli, a: &DiscoverArgs) -> Result<()> {
    let s = a.settings()?;
    s.method()?; // validate before loading anything
    let mut files = a.triples.clone();
    if let Some(dir) = &a.relations {
        let mut found: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json" || x == "jsonl"))
            .collect();
        found.sort();
        if found.is_empty() {
            bail!("{}: no relation files (*.json, *.jsonl)", dir.display());
        }
        files.extend(found);
    }
    let dev = device(cli.device)?;
    if files.len() == 1 {
        let relation = kcirc::data::read(&files[0])?;
        let (model, tok) = kcirc::model::load(&a.model, &dev)?;
        return discover_one(cli, a, &s, &model, &tok, &relation, a.out.as_deref(), a.dot.as_deref()).map(|_| ());
    }
    // Batch: one circuit per relation; a failing relation is reported and the others go on.
    let out_dir = a.out_dir.clone().ok_or_else(|| anyhow::anyhow!("several relations need --out-dir for their circuits"))?;
    std::fs::create_dir_all(&out_dir).map_err(|e| anyhow::anyhow!("{}: {e}", out_dir.display()))?;
    let (model, tok) = kcirc::model::load(&a.model, &dev)?;
    let mut failures = 0;
    let mut table = String::from("relation                       edges    %edges  full@10  circ@10  rand@10  faithful\n");
    for f in &files {
        let result = kcirc::data::read(f).map_err(anyhow::Error::from).and_then(|relation| {
            let out = out_dir.join(format!("{}.json", relation.name));
            let dot = a.dot.as_ref().map(|_| out_dir.join(format!("{}.dot", relation.name)));
            discover_one(cli, a, &s, &model, &tok, &relation, Some(&out), dot.as_deref())
        });
        let line = match result {
            Ok(file) => {
                let ev = file.eval.clone().unwrap_or(serde_json::Value::Null);
                let num = |v: &serde_json::Value| v.as_f64().map_or("-".to_string(), |x| format!("{x:.3}"));
                table += &format!(
                    "{:<30} {:>6} {:>8.2}% {:>8} {:>8} {:>8} {:>9}\n",
                    file.relation,
                    file.n_edges,
                    100.0 * file.n_edges as f64 / file.n_edges_total as f64,
                    num(&ev["full"]["hit_at_k"]),
                    num(&ev["circuit"]["hit_at_k"]),
                    num(&ev["random"]["mean"]["hit_at_k"]),
                    num(&ev["faithfulness"])
                );
                serde_json::json!({
                    "relation": file.relation, "circuit": out_dir.join(format!("{}.json", file.relation)),
                    "n_edges": file.n_edges, "n_edges_total": file.n_edges_total,
                    "n_triples": ev["n_triples"], "full_hit_at_k": ev["full"]["hit_at_k"], "circuit_hit_at_k": ev["circuit"]["hit_at_k"],
                    "random_hit_at_k": ev["random"]["mean"]["hit_at_k"], "faithfulness": ev["faithfulness"],
                })
            }
            Err(e) => {
                failures += 1;
                let msg = format!("{e:#}").lines().next().unwrap_or("").to_string();
                eprintln!("kcirc: error: {}: {msg}", f.display());
                table += &format!("{:<30} failed: {msg}\n", f.file_stem().and_then(|x| x.to_str()).unwrap_or("?"));
                serde_json::json!({"file": f, "error": msg})
            }
        };
        println!("{line}");
    }
    eprint!("\n{table}");
    if failures > 0 {
        bail!("{failures} of {} relations failed", files.len());
    }
    Ok(())
}

/// Discovers (and, unless `--no-eval`, evaluates) the circuit of one relation; writes it to `out` or stdout.
#[allow(clippy::too_many_arguments)]
fn discover_one(
    cli: &Cli,
    a: &DiscoverArgs,
    s: &kcirc::discover::setup::Settings,
    model: &kcirc::model::Model,
    tok: &kcirc::tokenizer::Tokenizer,
    relation: &kcirc::data::Relation,
    out: Option<&std::path::Path>,
    dot: Option<&std::path::Path>,
) -> Result<kcirc::circuit::CircuitFile> {
    use kcirc::circuit::{circuit_nodes, edge_records, to_dot, write_atomic, CircuitFile, ModelShape, FORMAT};
    use kcirc::discover::{setup::prepare, Task};
    let method = s.method()?;
    let (model, tok) = (model, tok);
    let t0 = std::time::Instant::now();
    let prep = prepare(model, tok, relation, s)?;
    eprintln!(
        "kcirc: {} · {} facts, {} known (rank < {}), {} for discovery, {} held out",
        relation.name,
        prep.total,
        prep.total - prep.dropped_unknown,
        s.k,
        prep.discovery.len(),
        prep.test.len()
    );
    let task = Task::new(model, prep.discovery.clone(), s.ablation, prep.corrupted.clone(), s.metric)?;
    let pb = progress_bar(cli);
    let circuit = method.discover(&task, &pb)?;
    pb.finish_and_clear();
    let g = &task.graph;
    let file = CircuitFile {
        format: FORMAT,
        model: a.model.clone(),
        model_shape: ModelShape::from(&model.cfg),
        relation: relation.name.clone(),
        method: method.name().into(),
        ablation: s.ablation,
        metric: s.metric,
        threshold: s.threshold,
        signed: s.signed,
        seed: s.seed,
        examples: prep.discovery.iter().map(|e| e.triple.clone()).collect(),
        metric_full: 0.0,
        metric_circuit: circuit.metric,
        n_edges_total: g.edges.len(),
        n_edges: circuit.n_kept(),
        nodes: circuit_nodes(g, &circuit),
        edges: edge_records(g, &circuit),
        eval: None,
    };
    let mut file = file;
    if !a.no_eval && !prep.test.is_empty() {
        let opts = kcirc::eval::EvalOptions { k: s.k, random: a.random, seed: s.seed, filter_known: s.filter_known };
        let report = kcirc::eval::evaluate(model, tok, &file, relation, &opts)?;
        eprint!("{}", report_table(&report));
        file.eval = Some(serde_json::to_value(&report)?);
    }
    eprintln!(
        "kcirc: kept {} of {} edges ({:.2}%), {} nodes, {} {:.4} (full model 0) in {:.1}s",
        file.n_edges,
        file.n_edges_total,
        100.0 * file.n_edges as f64 / file.n_edges_total as f64,
        file.nodes.len(),
        s.metric,
        file.metric_circuit,
        t0.elapsed().as_secs_f64()
    );
    let json = file.to_json()?;
    match out {
        Some(p) => write_atomic(p, &(json + "\n"))?,
        None => println!("{json}"),
    }
    if let Some(p) = dot {
        write_atomic(p, &to_dot(&file))?;
    }
    if let Some(p) = &a.scores {
        let mut text = String::new();
        for (e, edge) in g.edges.iter().enumerate() {
            if let Some(score) = circuit.effect[e] {
                text += &serde_json::to_string(&serde_json::json!({"name": edge.name, "score": score}))?;
                text.push('\n');
            }
        }
        write_atomic(p, &text)?;
    }
    Ok(file)
}

/// A short human-readable table of a held-out report (stderr).
pub fn report_table(r: &kcirc::eval::Report) -> String {
    let row = |name: &str, m: &kcirc::eval::Metrics| {
        format!("  {name:<10} {:>7.3} {:>7.3} {:>7.3} {:>9.3} {:>8.4}\n", m.hit_at_1, m.hit_at_k, m.mrr, m.target_logit, m.target_prob)
    };
    let mut s = format!(
        "held-out: {} triples of {} ({} used for discovery, {} unknown to the model dropped)\n  {:<10} {:>7} {:>7} {:>7} {:>9} {:>8}\n",
        r.n_triples, r.relation, r.n_skipped_discovery, r.n_dropped_unknown, "", "Hit@1", format!("Hit@{}", r.k), "MRR", "logit", "prob"
    );
    s += &row("full", &r.full);
    s += &row(&format!("circuit"), &r.circuit);
    s += &row(&format!("random×{}", r.random.runs), &r.random.mean);
    s += &row("empty", &r.empty);
    s += &format!(
        "  circuit: {} of {} edges ({:.2}%), {} nodes, faithfulness {:.3}\n",
        r.n_edges,
        r.n_edges_total,
        100.0 * r.n_edges as f64 / r.n_edges_total as f64,
        r.n_nodes,
        r.faithfulness
    );
    s
}

#[derive(Args)]
pub struct EvalArgs {
    /// Model the circuit was discovered on: hub id, local folder or .gguf file.
    #[arg(long)]
    pub model: String,
    /// Circuit file written by `kcirc discover`.
    #[arg(long)]
    pub circuit: std::path::PathBuf,
    /// Triples to score on (JSON Lines or LRE); the circuit's discovery triples are skipped.
    #[arg(long)]
    pub triples: std::path::PathBuf,
    /// k of Hit@k.
    #[arg(long, default_value_t = 10)]
    pub k: usize,
    /// Random circuits of the same edge count.
    #[arg(long, default_value_t = 5)]
    pub random: usize,
    /// Seed of the random circuits (default: the circuit's seed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Keep triples the full model does not know.
    #[arg(long)]
    pub no_filter: bool,
    /// Gate: exit 1 unless the circuit's Hit@10 is at least this.
    #[arg(long)]
    pub min_hit10: Option<f64>,
    /// Gate: exit 1 unless the faithfulness is at least this.
    #[arg(long, allow_negative_numbers = true)]
    pub min_faithfulness: Option<f64>,
}

pub fn eval(cli: &Cli, a: &EvalArgs) -> Result<()> {
    if a.k == 0 {
        bail!("--k must be at least 1");
    }
    for (name, v) in [("--min-hit10", a.min_hit10), ("--min-faithfulness", a.min_faithfulness)] {
        if v.is_some_and(|v| !v.is_finite()) {
            bail!("{name} must be a finite number");
        }
    }
    let circuit = kcirc::circuit::CircuitFile::read(&a.circuit)?;
    let relation = kcirc::data::read(&a.triples)?;
    let dev = device(cli.device)?;
    let (model, tok) = kcirc::model::load(&a.model, &dev)?;
    let opts = kcirc::eval::EvalOptions { k: a.k, random: a.random, seed: a.seed.unwrap_or(circuit.seed), filter_known: !a.no_filter };
    let report = kcirc::eval::evaluate(&model, &tok, &circuit, &relation, &opts)?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    if !cli.quiet {
        eprint!("{}", report_table(&report));
    }
    let mut failed = vec![];
    if let Some(x) = a.min_hit10 {
        // Hit@10 is the circuit's Hit@k with k = 10.
        let hit10 = if a.k == 10 { report.circuit.hit_at_k } else { bail!("--min-hit10 needs --k 10") };
        if hit10 < x {
            failed.push(format!("circuit Hit@10 {hit10:.3} < --min-hit10 {x}"));
        }
    }
    if let Some(x) = a.min_faithfulness {
        if report.faithfulness < x {
            failed.push(format!("faithfulness {:.3} < --min-faithfulness {x}", report.faithfulness));
        }
    }
    if !failed.is_empty() {
        return Err(crate::GateFailed(failed.join("; ")).into());
    }
    Ok(())
}

#[derive(Args)]
pub struct DataArgs {
    #[command(subcommand)]
    pub command: DataCommand,
}

#[derive(clap::Subcommand)]
pub enum DataCommand {
    /// Convert an LRE relation file (or JSON Lines) to kcirc's JSON Lines on stdout.
    Convert {
        /// The relation file.
        file: std::path::PathBuf,
    },
}

pub fn data(a: &DataArgs) -> Result<()> {
    match &a.command {
        DataCommand::Convert { file } => {
            let rel = kcirc::data::read(file)?;
            let mut out = std::io::stdout().lock();
            for t in &rel.triples {
                writeln!(out, "{}", serde_json::to_string(t)?)?;
            }
        }
    }
    Ok(())
}
