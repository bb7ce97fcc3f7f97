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
    /// Write every edge's attribution score (JSON Lines with a header) for `kcirc select` (eap, eap-ig; hybrid
    /// writes its EAP-IG scores). With FILE: there (one relation only). Without: beside the circuit, `--out`'s
    /// name with `.scores.jsonl`; in a batch run `<out-dir>/<relation>.scores.jsonl` for every relation.
    #[arg(long, value_name = "FILE", num_args = 0..=1)]
    pub scores: Option<Option<std::path::PathBuf>>,
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
    #[command(flatten)]
    pub output: CircuitOutput,
}

/// Where a circuit goes, and its held-out evaluation (`discover`, `select`).
#[derive(Args)]
pub struct CircuitOutput {
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
    if a.scores.is_some() && s.method == "acdc" {
        bail!("--scores needs an attribution method (eap, eap-ig, hybrid): acdc computes no edge scores");
    }
    let dev = device(cli.device)?;
    if files.len() == 1 {
        let scores = match &a.scores {
            Some(Some(p)) => Some(p.clone()),
            Some(None) => match &a.output.out {
                Some(out) => Some(out.with_extension("scores.jsonl")),
                None => bail!("--scores without a file name writes beside the circuit: give --out too (or --scores FILE)"),
            },
            None => None,
        };
        let relation = kcirc::data::read(&files[0])?;
        let (model, tok) = kcirc::model::load(&a.model, &dev)?;
        let out = Outputs { circuit: a.output.out.as_deref(), dot: a.output.dot.as_deref(), scores: scores.as_deref() };
        return discover_one(cli, a, &s, &model, &tok, &relation, out).map(|_| ());
    }
    if let Some(Some(p)) = &a.scores {
        bail!("--scores {}: a batch run writes one scores file per relation, `<out-dir>/<relation>.scores.jsonl`: give --scores without a file name", p.display());
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
            let dot = a.output.dot.as_ref().map(|_| out_dir.join(format!("{}.dot", relation.name)));
            let scores = a.scores.as_ref().map(|_| scores_path(&out_dir, &relation.name));
            let out = Outputs { circuit: Some(&out), dot: dot.as_deref(), scores: scores.as_deref() };
            discover_one(cli, a, &s, &model, &tok, &relation, out)
        });
        let line = match result {
            Ok(file) => {
                let ev = file.eval.clone().unwrap_or(serde_json::Value::Null);
                let num = |v: &serde_json::Value| v.as_f64().map_or("-".to_string(), |x| format!("{x:.3}"));
                table += &format!(
                    "{:<30} {:>6} {:>8.2}% {:>8} {:>8} {:>8} {:>9}\n",
                    file.run.relation,
                    file.n_edges,
                    100.0 * file.n_edges as f64 / file.n_edges_total as f64,
                    num(&ev["full"]["hit_at_k"]),
                    num(&ev["circuit"]["hit_at_k"]),
                    num(&ev["random"]["mean"]["hit_at_k"]),
                    num(&ev["faithfulness"])
                );
                let mut line = serde_json::json!({
                    "relation": file.run.relation, "circuit": out_dir.join(format!("{}.json", file.run.relation)),
                    "n_edges": file.n_edges, "n_edges_total": file.n_edges_total,
                    "n_triples": ev["n_triples"], "full_hit_at_k": ev["full"]["hit_at_k"], "circuit_hit_at_k": ev["circuit"]["hit_at_k"],
                    "random_hit_at_k": ev["random"]["mean"]["hit_at_k"], "faithfulness": ev["faithfulness"],
                });
                if a.scores.is_some() {
                    line["scores"] = serde_json::json!(scores_path(&out_dir, &file.run.relation));
                }
                line
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

/// A batch run's scores file of `relation`.
fn scores_path(out_dir: &std::path::Path, relation: &str) -> std::path::PathBuf {
    out_dir.join(format!("{relation}.scores.jsonl"))
}

/// Where one relation's results go: the circuit (stdout when `None`), its DOT and its edge scores.
struct Outputs<'p> {
    circuit: Option<&'p std::path::Path>,
    dot: Option<&'p std::path::Path>,
    scores: Option<&'p std::path::Path>,
}

/// Discovers (and, unless `--no-eval`, evaluates) the circuit of one relation; writes it to `out` or stdout.
fn discover_one(
    cli: &Cli,
    a: &DiscoverArgs,
    s: &kcirc::discover::setup::Settings,
    model: &kcirc::model::Model,
    tok: &kcirc::tokenizer::Tokenizer,
    relation: &kcirc::data::Relation,
    out: Outputs,
) -> Result<kcirc::circuit::CircuitFile> {
    use kcirc::circuit::{CircuitFile, ModelShape, RunInfo};
    use kcirc::discover::{setup::prepare, Task};
    let method = s.method()?;
    let t0 = std::time::Instant::now();
    let prep = prepare(model, tok, relation, s)?;
    let no_partner = if prep.dropped_no_partner > 0 {
        format!(", {} without a same-length partner for resample ablation skipped", prep.dropped_no_partner)
    } else {
        String::new()
    };
    eprintln!(
        "kcirc: {} · {} facts, {} known (rank < {}), {} for discovery, {} held out{no_partner}",
        relation.name,
        prep.total,
        prep.total - prep.dropped_unknown,
        s.k,
        prep.discovery.len(),
        prep.test.len()
    );
    let task = Task::new(model, prep.discovery.clone(), s.ablation, prep.corrupted_prompts(), s.metric)?;
    let pb = progress_bar(cli);
    let (circuit, scores) = method.discover_scored(&task, &pb)?;
    pb.finish_and_clear();
    let run = RunInfo {
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
    };
    let mut file = CircuitFile::new(run.clone(), &task.graph, &circuit);
    let held_out = (!a.output.no_eval && !prep.test.is_empty()).then_some(relation);
    let opts = kcirc::eval::EvalOptions { k: s.k, random: a.output.random, seed: s.seed, filter_known: s.filter_known };
    finish(&mut file, model, tok, held_out, &opts, out.circuit, out.dot, t0)?;
    if let Some(p) = out.scores {
        let scores = scores.ok_or_else(|| anyhow::anyhow!("--scores: method {} computes no edge scores", method.name()))?;
        let corrupted = prep.corrupted.as_ref().map(|c| c.iter().map(|e| e.triple.clone()).collect());
        let header = kcirc::scores::Header::new(run, &scores, corrupted, s.k, s.filter_known);
        kcirc::scores::write(p, &header, &task.graph, &scores.scores)?;
    }
    Ok(file)
}

/// The end of `discover` and `select`: scores `file` on the held-out facts of `relation` when one is given
/// (report into the file, table on stderr), says what was kept, and writes the circuit to `out` (or stdout)
/// and its DOT.
#[allow(clippy::too_many_arguments)]
fn finish(
    file: &mut kcirc::circuit::CircuitFile,
    model: &kcirc::model::Model,
    tok: &kcirc::tokenizer::Tokenizer,
    relation: Option<&kcirc::data::Relation>,
    opts: &kcirc::eval::EvalOptions,
    out: Option<&std::path::Path>,
    dot: Option<&std::path::Path>,
    t0: std::time::Instant,
) -> Result<()> {
    use kcirc::circuit::{to_dot, write_atomic};
    if let Some(relation) = relation {
        let report = kcirc::eval::evaluate(model, tok, file, relation, opts)?;
        eprint_report(&report, true);
        file.eval = Some(serde_json::to_value(&report)?);
    }
    eprintln!(
        "kcirc: kept {} of {} edges ({:.2}%), {} nodes, {} {:.4} (full model 0) in {:.1}s",
        file.n_edges,
        file.n_edges_total,
        100.0 * file.n_edges as f64 / file.n_edges_total as f64,
        file.nodes.len(),
        file.run.metric,
        file.metric_circuit,
        t0.elapsed().as_secs_f64()
    );
    let json = file.to_json()?;
    match out {
        Some(p) => write_atomic(p, &(json + "\n"))?,
        None => println!("{json}"),
    }
    if let Some(p) = dot {
        write_atomic(p, &to_dot(file))?;
    }
    Ok(())
}

#[derive(Args)]
#[command(group(clap::ArgGroup::new("selection").required(true).args(["top_n", "score_threshold"])))]
pub struct SelectArgs {
    /// Edge scores written by `kcirc discover --scores`.
    #[arg(long)]
    pub scores: std::path::PathBuf,
    /// The model the scores were computed on: hub id, local folder or .gguf file.
    #[arg(long)]
    pub model: String,
    /// Keep the top-n edges by |score|.
    #[arg(long)]
    pub top_n: Option<usize>,
    /// Keep edges with |score| at least this.
    #[arg(long, allow_negative_numbers = true)]
    pub score_threshold: Option<f64>,
    /// The relation's triples, for the held-out evaluation (without them it is skipped).
    #[arg(long)]
    pub triples: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub output: CircuitOutput,
}

pub fn select(cli: &Cli, a: &SelectArgs) -> Result<()> {
    use kcirc::discover::eap::Selection;
    let t0 = std::time::Instant::now();
    // Values are checked by `eap::select`, which every selection goes through.
    let selection = match (a.top_n, a.score_threshold) {
        (Some(n), _) => Selection::TopN(n),
        (None, Some(x)) => Selection::Threshold(x),
        (None, None) => bail!("give --top-n or --score-threshold"),
    };
    let file = kcirc::scores::ScoresFile::read(&a.scores)?;
    // The graph check needs only the model's config: a scores file from another model fails before loading.
    let cfg = kcirc::model::load_config(&a.model)?;
    let scores = file.scores(&Graph::new(&cfg), &cfg)?;
    let relation = match (&a.triples, a.output.no_eval) {
        (Some(p), false) => Some(kcirc::data::read(p)?),
        (None, false) => {
            eprintln!("kcirc: no --triples: held-out evaluation skipped");
            None
        }
        (_, true) => None,
    };
    let (model, tok) = kcirc::model::load(&a.model, &device(cli.device)?)?;
    let h = &file.header;
    let mut circuit = kcirc::scores::select_circuit(h, &scores, &model, &tok, &a.model, selection)?;
    let opts = kcirc::eval::EvalOptions { k: h.k, random: a.output.random, seed: h.run.seed, filter_known: h.filter_known };
    finish(&mut circuit, &model, &tok, relation.as_ref(), &opts, a.output.out.as_deref(), a.output.dot.as_deref(), t0)
}

/// A short human-readable table of a held-out report (stderr).
pub fn report_table(r: &kcirc::eval::Report) -> String {
    let row = |name: &str, m: &kcirc::eval::Metrics| {
        format!("  {name:<10} {:>7.3} {:>7.3} {:>7.3} {:>9.3} {:>8.4}\n", m.hit_at_1, m.hit_at_k, m.mrr, m.target_logit, m.target_prob)
    };
    let no_partner = match r.n_dropped_no_partner {
        0 => String::new(),
        n => format!(", {n} without a same-length partner for resample ablation dropped"),
    };
    let mut s = format!(
        "held-out: {} triples of {} ({} used for discovery, {} unknown to the model dropped{no_partner})\n  {:<10} {:>7} {:>7} {:>7} {:>9} {:>8}\n",
        r.n_triples, r.relation, r.n_skipped_discovery, r.n_dropped_unknown, "", "Hit@1", format!("Hit@{}", r.k), "MRR", "logit", "prob"
    );
    s += &row("full", &r.full);
    s += &row("circuit", &r.circuit);
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

/// The held-out report on stderr: the table (when `table`), and always a warning when the relation has at most
/// k distinct answers, so that Hit@k cannot tell circuit from chance.
fn eprint_report(r: &kcirc::eval::Report, table: bool) {
    if table {
        eprint!("{}", report_table(r));
    }
    if r.n_distinct_targets <= r.k {
        eprintln!(
            "kcirc: note: {} has only {} distinct answers (≤ k = {}): Hit@{} cannot separate the circuit from chance; read Hit@1, MRR and faithfulness",
            r.relation, r.n_distinct_targets, r.k, r.k
        );
    }
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
    let opts = kcirc::eval::EvalOptions { k: a.k, random: a.random, seed: a.seed.unwrap_or(circuit.run.seed), filter_known: !a.no_filter };
    let report = kcirc::eval::evaluate(&model, &tok, &circuit, &relation, &opts)?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    eprint_report(&report, !cli.quiet);
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
