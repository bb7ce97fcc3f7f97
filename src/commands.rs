//! One function per subcommand: flags turned into library calls, results printed. Nothing else.
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use candle_core::Device;
use clap::{Args, ValueEnum};

use crate::{Cli, DeviceArg};
use kcirc::batch::{self, Shard, SummaryLine};
use kcirc::graph::{Graph, Selection};
use kcirc::pipeline::{self, Outputs, Settings};
use kcirc::progress::Progress;

pub fn device(d: DeviceArg) -> Result<Device> {
    match d {
        DeviceArg::Cpu => Ok(Device::Cpu),
        DeviceArg::Cuda => {
            if !candle_core::utils::cuda_is_available() {
                bail!("--device cuda: this kcirc was built without the `cuda` feature (cargo build --release --features cuda)");
            }
            // No GPU, no driver or a driver too old for this build: one line, exit 2, before any work.
            Device::new_cuda(0).map_err(|e| anyhow::anyhow!("--device cuda: no usable CUDA device 0: {e}"))
        }
    }
}

/// The progress bar on stderr (hidden with `--quiet` or when stderr is not a terminal), run information lines
/// (hidden with `--quiet`) and warnings (always shown).
pub struct Bar {
    bar: indicatif::ProgressBar,
    quiet: bool,
}

impl Bar {
    pub fn new(cli: &Cli, unit: &str) -> Bar {
        use std::io::IsTerminal;
        if cli.quiet || !std::io::stderr().is_terminal() {
            return Bar { bar: indicatif::ProgressBar::hidden(), quiet: cli.quiet };
        }
        let bar = indicatif::ProgressBar::new(0);
        let template = format!("{{elapsed_precise}} [{{bar:30}}] {{pos}}/{{len}} {unit} · {{msg}} · ETA {{eta}}");
        bar.set_style(
            indicatif::ProgressStyle::with_template(&template)
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        Bar { bar, quiet: false }
    }

    /// A line (or a table: its first line prefixed, the rest as they are) on stderr, around the bar.
    fn line(&self, line: &str) {
        self.bar.suspend(|| {
            let mut lines = line.lines();
            if let Some(first) = lines.next() {
                eprintln!("kcirc: {first}");
            }
            for l in lines {
                eprintln!("{l}");
            }
        });
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl Progress for Bar {
    fn start(&self, total: u64) {
        self.bar.set_length(total);
        self.bar.set_position(0);
    }
    fn advance(&self, n: u64) {
        self.bar.inc(n);
    }
    fn message(&self, msg: &str) {
        self.bar.set_message(msg.to_string());
    }
    fn info(&self, line: &str) {
        if !self.quiet {
            self.line(line);
        }
    }
    fn warn(&self, line: &str) {
        self.line(&format!("note: {line}"));
    }
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
pub enum Format {
    Json,
    Text,
}

/// How a batch run's summary is printed.
#[derive(Clone, Copy, ValueEnum, PartialEq)]
pub enum SummaryFormat {
    Jsonl,
    Tsv,
    Text,
}

/// How `kcirc graph` prints its counts.
#[derive(Clone, Copy, ValueEnum, PartialEq)]
pub enum GraphFormat {
    Json,
    Tsv,
    Text,
}

/// `--metric`: see [`kcirc::metric::Metric`].
#[derive(Clone, Copy, ValueEnum)]
pub enum MetricArg {
    /// Target-logit drop (the paper's).
    Logit,
    /// Target negative log-likelihood increase.
    Nll,
    /// KL divergence of the next-token distribution from the full model's.
    Kl,
}

impl From<MetricArg> for kcirc::metric::Metric {
    fn from(m: MetricArg) -> Self {
        match m {
            MetricArg::Logit => Self::Logit,
            MetricArg::Nll => Self::Nll,
            MetricArg::Kl => Self::Kl,
        }
    }
}

/// `--ablation`: see [`kcirc::intervene::Ablation`].
#[derive(Clone, Copy, ValueEnum)]
pub enum AblationArg {
    /// Removed edges carry nothing (the paper's setting).
    Zero,
    /// The sender's mean output over a set of prompts (`--mean-over`: by default the relation's own).
    Mean,
    /// The sender's output on another fact's prompt of the same length.
    Resample,
}

impl From<AblationArg> for kcirc::intervene::Ablation {
    fn from(a: AblationArg) -> Self {
        match a {
            AblationArg::Zero => Self::Zero,
            AblationArg::Mean => Self::Mean,
            AblationArg::Resample => Self::Resample,
        }
    }
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
    /// Print a JSON object instead of a table (`--format json`).
    #[arg(long)]
    pub json: bool,
    #[arg(long, value_enum, default_value_t = GraphFormat::Text)]
    pub format: GraphFormat,
}

pub fn graph(a: &GraphArgs) -> Result<()> {
    let cfg = kcirc::model::load_config(&a.model)?;
    let counts = Graph::new(&cfg).counts();
    let format = if a.json { GraphFormat::Json } else { a.format };
    if format == GraphFormat::Json {
        println!("{}", serde_json::to_string(&counts)?);
    } else if format == GraphFormat::Tsv {
        println!("layers\tquery_heads\tkv_heads\tnodes\tsenders\treceivers\tedges");
        println!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}",
            cfg.n_layers, cfg.n_heads, cfg.n_kv_heads, counts.nodes, counts.senders, counts.receivers, counts.edges
        );
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

/// Discovery flags that `--rerun` takes from the circuit file instead.
const SETTING_FLAGS: [&str; 22] = [
    "mean_over",
    "stability",
    "no_reference",
    "config",
    "method",
    "top_n",
    "score_threshold",
    "top_fraction",
    "target_faithfulness",
    "ig_steps",
    "candidates",
    "threshold",
    "signed",
    "metric",
    "ablation",
    "examples",
    "seed",
    "no_filter",
    "relations",
    "edit_method",
    "edit_layer",
    "edit_steps",
];

#[derive(Args)]
pub struct DiscoverArgs {
    /// Model: hub id, local folder or .gguf file. With --rerun, defaults to the circuit file's model.
    #[arg(long, required_unless_present = "rerun")]
    pub model: Option<String>,
    /// Triples: JSON Lines (subject, relation, object, template) or an LRE relation file (`-`: standard input).
    /// Repeat for several relations (one circuit each, into --out-dir). With --rerun, where the relation file is
    /// now.
    #[arg(long, required_unless_present_any = ["relations", "rerun"])]
    pub triples: Vec<PathBuf>,
    /// Every relation file (*.json, *.jsonl) in this folder, one circuit each, into --out-dir.
    #[arg(long)]
    pub relations: Option<PathBuf>,
    /// Make a circuit file again from the settings it records (the relation file it names, or --triples): the
    /// same inputs give the same file, byte for byte.
    #[arg(long, value_name = "CIRCUIT", conflicts_with_all = SETTING_FLAGS)]
    pub rerun: Option<PathBuf>,
    /// Folder for the circuits of a batch run (`<relation>.json`); a JSON Lines summary goes to stdout. Given
    /// with one relation, that relation runs as a batch of one.
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
    /// Run share I of N of the batch (1 ≤ I ≤ N): the relation files in run order (every --triples, then the
    /// --relations folder sorted), every N-th from the I-th. Run all N with the same flags (GNU parallel, a
    /// Slurm array, several machines) and `kcirc merge` their summaries.
    #[arg(long, value_name = "I/N", value_parser = parse_shard, requires = "out_dir", conflicts_with = "rerun")]
    pub shard: Option<Shard>,
    /// Skip relations whose circuit file in --out-dir is complete and made by these same settings (their
    /// summary lines are printed from the files); discover the others. A circuit file of other settings is
    /// refused.
    #[arg(long, requires = "out_dir", conflicts_with = "rerun")]
    pub resume: bool,
    /// eap/eap-ig: keep the top-n edges by |score|.
    #[arg(long)]
    pub top_n: Option<usize>,
    /// eap/eap-ig: keep edges with |score| at least this.
    #[arg(long, allow_negative_numbers = true)]
    pub score_threshold: Option<f64>,
    /// eap/eap-ig: keep this fraction of all edges by |score|.
    #[arg(long, allow_negative_numbers = true)]
    pub top_fraction: Option<f64>,
    /// eap/eap-ig (the default size rule, 0.85): keep the smallest top-n whose faithfulness on the discovery
    /// facts, 1 − m(circuit)/m(empty) under --metric, reaches this. --top-n, --top-fraction or
    /// --score-threshold win over it.
    #[arg(long, allow_negative_numbers = true)]
    pub target_faithfulness: Option<f64>,
    /// hybrid: EAP-IG candidate edges for exact ablation.
    #[arg(long)]
    pub candidates: Option<usize>,
    /// Write every edge's attribution score (JSON Lines with a header) for `kcirc select` (eap, eap-ig; hybrid
    /// writes its EAP-IG scores). With FILE: there (one relation only). Without: beside the circuit, `--out`'s
    /// name with `.scores.jsonl`; in a batch run `<out-dir>/<relation>.scores.jsonl` for every relation. `-`:
    /// standard output (with --out FILE).
    #[arg(long, value_name = "FILE", num_args = 0..=1)]
    pub scores: Option<Option<PathBuf>>,
    /// How a batch run prints its summary on standard output: one JSON object per relation (docs/schema/
    /// summary.schema.json), tab-separated with a header line, or a table.
    #[arg(long, value_enum, default_value_t = SummaryFormat::Jsonl)]
    pub format: SummaryFormat,
    /// τ: prune an edge whose removal changes the metric by less than this.
    #[arg(long, allow_negative_numbers = true)]
    pub threshold: Option<f64>,
    /// Signed rule `Δ < τ` (ACDC's and the paper's) instead of `|Δ| < τ`.
    #[arg(long)]
    pub signed: bool,
    /// Also discover from as many other facts (disjoint from the discovery split) and report the edge and node
    /// Jaccard of the two circuits (`stability_report` in the file).
    #[arg(long)]
    pub stability: bool,
    #[command(flatten)]
    pub common: SettingFlags,
    #[command(flatten)]
    pub edit: EditFlags,
    #[command(flatten)]
    pub output: CircuitOutput,
}

/// The discovery settings `discover` and `curve` share: a preset and the flags that override it.
#[derive(Args)]
pub struct SettingFlags {
    /// A preset of discovery settings (JSON; configs/paper.json, configs/cpu.json); flags override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Discovery method: acdc (exact), eap, eap-ig (attribution, the default), hybrid (EAP-IG candidates, exact
    /// ablation).
    #[arg(long)]
    pub method: Option<String>,
    /// What a removed edge costs and faithfulness measures (default kl; configs/paper.json: nll).
    #[arg(long, value_enum)]
    pub metric: Option<MetricArg>,
    #[arg(long, value_enum)]
    pub ablation: Option<AblationArg>,
    /// Number of discovery triples (default: half the facts the model knows, at most 32).
    #[arg(long)]
    pub examples: Option<usize>,
    /// Seed of the discovery/test split (and of corrupted prompts and random circuits).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Keep facts the full model does not know (rank ≥ k) instead of dropping them.
    #[arg(long)]
    pub no_filter: bool,
    /// EAP-IG interpolation steps.
    #[arg(long)]
    pub ig_steps: Option<usize>,
    /// Prepend this many other facts of the discovery split, with their answers, to every prompt (in-context
    /// learning; mean or zero ablation).
    #[arg(long)]
    pub demonstrations: Option<usize>,
    /// Mean ablation: which prompts the means are taken over (what a removed edge carries).
    #[arg(long, value_enum)]
    pub mean_over: Option<MeanOverArg>,
    /// Mean ablation over the discovery prompts only (the same as `--mean-over discovery`).
    #[arg(long, conflicts_with = "mean_over")]
    pub no_reference: bool,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum MeanOverArg {
    /// The discovery prompts and the relation's facts outside the held-out split (at most 128 prompts): the
    /// empty circuit is the relation's average prompt (the default).
    Relation,
    /// Fact prompts of the other relations kcirc ships (5 each, never this relation's): the empty circuit
    /// knows neither subject nor relation.
    Corpus,
    /// The discovery prompts alone.
    Discovery,
}

impl From<MeanOverArg> for kcirc::split::MeanOver {
    fn from(a: MeanOverArg) -> Self {
        match a {
            MeanOverArg::Corpus => Self::Corpus,
            MeanOverArg::Relation => Self::Relation,
            MeanOverArg::Discovery => Self::Discovery,
        }
    }
}

impl SettingFlags {
    /// The preset (or the defaults), overridden by these flags; not yet validated.
    pub fn settings(&self) -> Result<Settings> {
        let mut s = match &self.config {
            Some(p) => Settings::from_file(p)?,
            None => Settings::default(),
        };
        if let Some(m) = &self.method {
            s.method = m.clone();
        }
        if let Some(k) = self.demonstrations {
            s.demonstrations = k;
        }
        if self.no_reference {
            s.mean_over = kcirc::split::MeanOver::Discovery;
        }
        if let Some(m) = self.mean_over {
            s.mean_over = m.into();
        }
        if let Some(m) = self.metric {
            s.metric = m.into();
        }
        if let Some(a) = self.ablation {
            s.ablation = a.into();
        }
        if let Some(n) = self.examples {
            s.examples = Some(n);
        }
        if let Some(seed) = self.seed {
            s.seed = seed;
        }
        if self.no_filter {
            s.filter_known = false;
        }
        if let Some(k) = self.ig_steps {
            s.ig_steps = k;
        }
        Ok(s)
    }
}

/// `--edits`: knowledge edits applied to the model in memory before a command runs (as `kcirc edit` with
/// the same flags would leave it; the output records them).
#[derive(Args)]
pub struct EditFlags {
    /// Apply these edit requests (JSON Lines of {"subject", "template", "object", "new_object"}, as `kcirc edit
    /// --requests`) to the model in memory first, one after another; circuit files and reports record them.
    /// With --rerun, where the requests file is now.
    #[arg(long, value_name = "REQUESTS")]
    pub edits: Option<PathBuf>,
    /// With --edits: rome (the default), ft-m or ft-l.
    #[arg(long, requires = "edits")]
    pub edit_method: Option<String>,
    /// With --edits: the layer whose MLP output projection is rewritten (default as `kcirc edit`).
    #[arg(long, requires = "edits")]
    pub edit_layer: Option<usize>,
    /// With --edits: the editor's optimisation steps (default as `kcirc edit`: ROME 20, FT 25).
    #[arg(long, requires = "edits")]
    pub edit_steps: Option<usize>,
}

impl EditFlags {
    /// The edits to apply, read and checked (before any model is loaded).
    fn spec(&self) -> Result<Option<kcirc::edit::EditSpec>> {
        let Some(p) = &self.edits else { return Ok(None) };
        let options = kcirc::edit::EditorOptions {
            method: self.edit_method.clone().unwrap_or_else(|| "rome".into()),
            layer: self.edit_layer,
            steps: self.edit_steps,
            ..Default::default()
        };
        Ok(Some(kcirc::edit::EditSpec::new(&read_text(p)?, &p.display().to_string(), options)?))
    }
}

/// The edits a file records (`None`: none), read again from `path` or from where the record says.
fn recorded_edits(record: Option<&kcirc::model::EditRecord>, path: Option<&Path>) -> Result<Option<kcirc::edit::EditSpec>> {
    match (record, path) {
        (Some(r), p) => {
            let p = p.map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from(&r.requests.path));
            Ok(Some(kcirc::edit::EditSpec::from_record(r, &read_text(&p)?, &p.display().to_string())?))
        }
        (None, Some(p)) => bail!("--edits {}: the file records no edits, and these would change what it reproduces", p.display()),
        (None, None) => Ok(None),
    }
}

/// The model, with `edits` applied in memory.
fn load_model(cli: &Cli, name: &str, edits: Option<&kcirc::edit::EditSpec>) -> Result<(kcirc::model::Model, kcirc::tokenizer::Tokenizer)> {
    let bar = Bar::new(cli, "steps");
    let loaded = kcirc::edit::load(name, &device(cli.device)?, edits, &bar)?;
    bar.finish();
    Ok(loaded)
}

/// A note when `circuit` was discovered on a model edited otherwise than `model`.
fn note_edits(cli: &Cli, circuit: &kcirc::circuit::CircuitFile, model: &kcirc::model::Model) {
    if let Some(msg) = kcirc::edit::edits_differ(circuit.run.edits.as_ref(), model.edits.as_ref()) {
        Bar::new(cli, "").warn(&msg);
    }
}

/// Where a circuit goes, and its held-out evaluation (`discover`, `select`).
#[derive(Args)]
pub struct CircuitOutput {
    /// Write the circuit here (JSON) instead of standard output.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Also write the circuit as Graphviz DOT: to FILE, or without one beside the circuit (`--out`'s name with
    /// `.dot`; a batch run writes `<out-dir>/<relation>.dot` and takes no file name). `-`: standard output, with
    /// --out FILE.
    #[arg(long, value_name = "FILE", num_args = 0..=1)]
    pub dot: Option<Option<PathBuf>>,
    /// Also draw the circuit as a standalone SVG, laid out by kcirc (its 500 strongest edges): to FILE, or without
    /// one beside the circuit (`--out`'s name with `.svg`; a batch run writes `<out-dir>/<relation>.svg` and
    /// takes no file name). `-`: standard output, with --out FILE. `kcirc report` draws more.
    #[arg(long, value_name = "FILE", num_args = 0..=1)]
    pub svg: Option<Option<PathBuf>>,
    /// Skip the held-out evaluation.
    #[arg(long)]
    pub no_eval: bool,
    /// Random circuits in the held-out evaluation.
    #[arg(long, default_value_t = 5)]
    pub random: usize,
}

impl CircuitOutput {
    /// Where `--dot` and `--svg` write for one circuit: the file given, or `--out`'s name with `.dot`/`.svg`.
    fn pictures(&self) -> Result<(Option<PathBuf>, Option<PathBuf>)> {
        let resolve = |flag: &str, given: &Option<Option<PathBuf>>, ext: &str| -> Result<Option<PathBuf>> {
            Ok(match given {
                None => None,
                Some(Some(p)) => Some(p.clone()),
                Some(None) => match &self.out {
                    Some(out) if !is_std(out) => Some(out.with_extension(ext)),
                    _ => bail!("{flag} without a file name writes beside the circuit: give --out FILE too (or {flag} FILE)"),
                },
            })
        };
        Ok((resolve("--dot", &self.dot, "dot")?, resolve("--svg", &self.svg, "svg")?))
    }

    /// In a batch run the pictures are flags: each goes beside its relation's circuit.
    fn batch_pictures(&self) -> Result<(bool, bool)> {
        for (flag, given) in [("--dot", &self.dot), ("--svg", &self.svg)] {
            if let Some(Some(p)) = given {
                bail!(
                    "{flag} takes no file name in a batch run (got {}): each relation's picture goes beside its circuit in --out-dir",
                    p.display()
                );
            }
        }
        Ok((self.dot.is_some(), self.svg.is_some()))
    }
}

impl DiscoverArgs {
    /// The preset, overridden by explicit flags.
    pub fn settings(&self) -> Result<Settings> {
        let mut s = self.common.settings()?;
        if let Some(t) = self.threshold {
            s.threshold = t;
        }
        if self.signed {
            s.signed = true;
        }
        if self.stability {
            s.stability = true;
        }
        if self.top_n.is_some() {
            s.top_n = self.top_n;
        }
        if self.score_threshold.is_some() {
            s.score_threshold = self.score_threshold;
        }
        if self.top_fraction.is_some() {
            s.top_fraction = self.top_fraction;
        }
        if self.target_faithfulness.is_some() {
            s.target_faithfulness = self.target_faithfulness;
        }
        if let Some(c) = self.candidates {
            s.candidates = c;
        }
        // The library names settings as preset files do; say which flag was wrong.
        s.validate().map_err(|e| anyhow::anyhow!("{}", flag_names(&e.to_string())))?;
        Ok(s)
    }

    /// The relation files to discover on: every `--triples`, then the `--relations` folder's files, sorted.
    fn files(&self) -> Result<Vec<PathBuf>> {
        Ok(batch::relation_files(&self.triples, self.relations.as_deref())?)
    }
}

/// `--shard I/N` (the message goes after clap's "invalid value '…' for '--shard <I/N>'").
fn parse_shard(s: &str) -> std::result::Result<Shard, String> {
    s.parse().map_err(|e: kcirc::Error| e.to_string())
}

/// `top_n must…` → `--top-n must…`: a settings message in terms of the flags.
fn flag_names(msg: &str) -> String {
    let mut out = msg.to_string();
    for name in [
        "score_threshold",
        "target_faithfulness",
        "top_fraction",
        "top_n",
        "ig_steps",
        "candidates",
        "threshold",
        "examples",
        "k",
        "method",
    ] {
        if out.starts_with(name) && out[name.len()..].starts_with(' ') {
            out = format!("--{}{}", name.replace('_', "-"), &out[name.len()..]);
            break;
        }
    }
    out
}

pub fn discover(cli: &Cli, a: &DiscoverArgs) -> Result<()> {
    if let Some(circuit) = &a.rerun {
        return rerun(cli, a, circuit);
    }
    let s = a.settings()?;
    let files = a.files()?;
    if a.scores.is_some() && s.method == "acdc" {
        bail!("--scores needs an attribution method (eap, eap-ig, hybrid): acdc computes no edge scores");
    }
    let model_name = a.model.clone().unwrap_or_default();
    let eval = (!a.output.no_eval).then_some(kcirc::eval::EvalOptions {
        k: s.k,
        random: a.output.random,
        seed: s.seed,
        filter_known: s.filter_known,
        demonstrations: s.demonstrations,
    });
    device(cli.device)?;
    if files.len() == 1 && a.relations.is_none() && a.out_dir.is_none() {
        let scores = match &a.scores {
            Some(Some(p)) => Some(p.clone()),
            Some(None) => match &a.output.out {
                Some(out) if !is_std(out) => Some(out.with_extension("scores.jsonl")),
                _ => bail!("--scores without a file name writes beside the circuit: give --out FILE too (or --scores FILE)"),
            },
            None => None,
        };
        let (dot, svg) = a.output.pictures()?;
        let out = Outputs { circuit: a.output.out.clone(), dot, svg, scores };
        check_stdout(&out)?;
        let relation = read_relation(&files[0])?;
        let edits = a.edit.spec()?;
        let (model, tok) = load_model(cli, &model_name, edits.as_ref())?;
        return discover_one(cli, &model, &tok, &model_name, &relation, &s, eval.as_ref(), &out);
    }
    if files.iter().any(|f| is_std(f)) {
        bail!("--triples - reads one relation from standard input: a batch run needs files");
    }
    if let Some(Some(p)) = &a.scores {
        bail!("--scores {}: a batch run writes one scores file per relation, `<out-dir>/<relation>.scores.jsonl`: give --scores without a file name", p.display());
    }
    let out_dir = a
        .out_dir
        .clone()
        .ok_or_else(|| anyhow::anyhow!("a batch run (several relations, --relations) needs --out-dir for its circuits"))?;
    if let Some(out) = &a.output.out {
        bail!("--out {}: a batch run writes `<out-dir>/<relation>.json` for every relation", out.display());
    }
    let files = match a.shard {
        Some(shard) => {
            let mine = shard.pick(&files);
            let bar = Bar::new(cli, "edges");
            bar.info(&format!("shard {shard}: {} of {} relations", mine.len(), files.len()));
            if mine.is_empty() {
                return Ok(());
            }
            mine
        }
        None => files,
    };
    let (dot, svg) = a.output.batch_pictures()?;
    let outputs = batch::BatchOutputs { out_dir, dot, svg, scores: a.scores.is_some(), resume: a.resume };
    outputs.check()?;
    let edits = a.edit.spec()?;
    let (model, tok) = load_model(cli, &model_name, edits.as_ref())?;
    let bar = Bar::new(cli, "edges");
    let mut printer = SummaryPrinter::new(a.format);
    let mut print = |line: &SummaryLine| {
        if let SummaryLine::Failed { file, error } = line {
            // The file once: most errors already start with it.
            let file = file.display().to_string();
            bar.line(&format!("error: {}", if error.starts_with(&file) { error.clone() } else { format!("{file}: {error}") }));
        }
        printer.print(line);
    };
    let lines = batch::discover_batch(&model, &tok, &model_name, &files, &s, eval.as_ref(), &outputs, &bar, &mut print)?;
    bar.finish();
    let mut table = String::from(SummaryLine::TABLE_HEADER);
    for l in &lines {
        table += "\n";
        table += &l.table_row();
    }
    bar.info(&table);
    failed_relations(&lines)
}

/// A batch summary on standard output, one line at a time, in the chosen format (TSV and text with a header).
struct SummaryPrinter {
    format: SummaryFormat,
    first: bool,
}

impl SummaryPrinter {
    fn new(format: SummaryFormat) -> SummaryPrinter {
        SummaryPrinter { format, first: true }
    }

    fn print(&mut self, line: &SummaryLine) {
        let header = match self.format {
            SummaryFormat::Jsonl => None,
            SummaryFormat::Tsv => Some(SummaryLine::TSV_HEADER),
            SummaryFormat::Text => Some(SummaryLine::TABLE_HEADER),
        };
        if let Some(h) = header.filter(|_| std::mem::take(&mut self.first)) {
            println!("{h}");
        }
        match self.format {
            SummaryFormat::Jsonl => println!("{}", serde_json::to_string(line).unwrap_or_default()),
            SummaryFormat::Tsv => println!("{}", line.tsv_row()),
            SummaryFormat::Text => println!("{}", line.table_row()),
        }
    }
}

/// The batch's exit: an error (exit 2) when a relation failed, after every line was printed.
fn failed_relations(lines: &[SummaryLine]) -> Result<()> {
    let failures = lines.iter().filter(|l| matches!(l, SummaryLine::Failed { .. })).count();
    if failures > 0 {
        bail!("{failures} of {} relations failed", lines.len());
    }
    Ok(())
}

#[derive(Args)]
pub struct MergeArgs {
    /// Summaries of the shards (`kcirc discover --shard I/N` standard output, JSON Lines; `-`: standard input),
    /// in any order.
    #[arg(value_name = "SUMMARY", required_unless_present = "out_dir")]
    pub summaries: Vec<PathBuf>,
    /// The relation files the shards were given, as they were given (they fix the order of the lines and which
    /// relations must be there).
    #[arg(long, required_unless_present = "relations")]
    pub triples: Vec<PathBuf>,
    /// The relation folder the shards were given.
    #[arg(long)]
    pub relations: Option<PathBuf>,
    /// Instead of summaries: make each relation's line from its circuit file in this folder (the shards'
    /// --out-dir, gathered), naming `<relation>.scores.jsonl` when it is there.
    #[arg(long, conflicts_with = "summaries")]
    pub out_dir: Option<PathBuf>,
    /// One JSON object per relation, tab-separated with a header line, or a table.
    #[arg(long, value_enum, default_value_t = SummaryFormat::Jsonl)]
    pub format: SummaryFormat,
}

/// `kcirc merge`: the summary one batch run would have printed, from its shards' summaries or circuit files.
pub fn merge(a: &MergeArgs) -> Result<()> {
    let files = batch::relation_files(&a.triples, a.relations.as_deref())?;
    let lines = match &a.out_dir {
        Some(dir) => batch::summary_of_folder(
            &files,
            &batch::BatchOutputs { out_dir: dir.clone(), dot: false, svg: false, scores: false, resume: false },
        )?,
        None => {
            one_stdin(&a.summaries.iter().map(|p| ("SUMMARY", Some(p.as_path()))).collect::<Vec<_>>())?;
            let texts = a.summaries.iter().map(|p| Ok((p.display().to_string(), read_text(p)?))).collect::<Result<Vec<_>>>()?;
            batch::merge(&files, &texts)?
        }
    };
    let mut printer = SummaryPrinter::new(a.format);
    for l in &lines {
        printer.print(l);
    }
    failed_relations(&lines)
}

/// One relation: discover, evaluate, write (the circuit to stdout without `--out`).
#[allow(clippy::too_many_arguments)]
fn discover_one(
    cli: &Cli,
    model: &kcirc::model::Model,
    tok: &kcirc::tokenizer::Tokenizer,
    model_name: &str,
    relation: &kcirc::data::Relation,
    s: &Settings,
    eval: Option<&kcirc::eval::EvalOptions>,
    out: &Outputs,
) -> Result<()> {
    let t0 = std::time::Instant::now();
    let bar = Bar::new(cli, "edges");
    let d = pipeline::discover(model, tok, model_name, relation, s, eval, &bar)?;
    bar.finish();
    bar.info(&format!("{} in {:.1}s", pipeline::kept_line(&d.file), t0.elapsed().as_secs_f64()));
    // Files first (atomically), then whichever output goes to standard output.
    let file = |p: &Option<PathBuf>| p.clone().filter(|p| !is_std(p));
    pipeline::write(&d, &Outputs { circuit: file(&out.circuit), dot: file(&out.dot), svg: file(&out.svg), scores: file(&out.scores) })?;
    let to_stdout = |p: &Option<PathBuf>| p.as_deref().is_some_and(is_std);
    if out.circuit.is_none() || to_stdout(&out.circuit) {
        println!("{}", d.file.to_json()?);
    } else if to_stdout(&out.dot) {
        print!("{}", kcirc::circuit::to_dot(&d.file));
    } else if to_stdout(&out.svg) {
        print!("{}", kcirc::report::circuit_svg(&d.file, None, &kcirc::report::Options::default()));
    } else if to_stdout(&out.scores) {
        let (header, scores) =
            d.scores.as_ref().ok_or_else(|| anyhow::anyhow!("--scores: method {} computes no edge scores", d.file.run.method))?;
        print!("{}", kcirc::scores::render(header, &d.graph, scores)?);
    }
    Ok(())
}

/// One output at most on standard output: the circuit (without `--out`, or `--out -`), `--dot -`, `--svg -`,
/// `--scores -`; the files among them can be written.
fn check_stdout(out: &Outputs) -> Result<()> {
    let std = |p: &Option<PathBuf>| p.as_deref().is_some_and(is_std);
    let circuit = if out.circuit.is_none() { "the circuit (no --out)" } else { "--out -" };
    one_stdout(&[
        (circuit, out.circuit.is_none() || std(&out.circuit)),
        ("--dot -", std(&out.dot)),
        ("--svg -", std(&out.svg)),
        ("--scores -", std(&out.scores)),
    ])?;
    check_files(&[out.circuit.as_deref(), out.dot.as_deref(), out.svg.as_deref(), out.scores.as_deref()])
}

/// `discover --rerun FILE`: the settings, discovery examples' split and evaluation the file records.
fn rerun(cli: &Cli, a: &DiscoverArgs, circuit: &Path) -> Result<()> {
    let old = kcirc::circuit::CircuitFile::read(circuit)?;
    let run = &old.run;
    let s = Settings::from_run(run)?;
    let path = match (a.triples.as_slice(), &run.triples) {
        ([one], _) => one.clone(),
        ([], Some(src)) if src.path != "-" => PathBuf::from(&src.path),
        ([], _) => bail!("{}: the circuit file names no relation file to read again: give --triples", circuit.display()),
        _ => bail!("--rerun takes one --triples"),
    };
    let relation = read_relation(&path)?;
    if let (Some(was), Some(now)) = (&run.triples, &relation.source) {
        if was.digest != now.digest {
            bail!(
                "{}: the relation file has changed since {} was made ({} then, {} now)",
                path.display(),
                circuit.display(),
                was.digest,
                now.digest
            );
        }
    }
    let model_name = a.model.clone().unwrap_or_else(|| run.model.clone());
    let eval = match &old.eval {
        Some(e) if !a.output.no_eval => {
            let random =
                e["random"]["runs"].as_u64().ok_or_else(|| anyhow::anyhow!("{}: eval report without random.runs", circuit.display()))?;
            Some(kcirc::eval::EvalOptions {
                k: s.k,
                random: random as usize,
                seed: s.seed,
                filter_known: s.filter_known,
                demonstrations: s.demonstrations,
            })
        }
        _ => None,
    };
    let (dot, svg) = a.output.pictures()?;
    let out = Outputs { circuit: a.output.out.clone(), dot, svg, scores: a.scores.clone().flatten() };
    check_stdout(&out)?;
    let edits = recorded_edits(run.edits.as_ref(), a.edit.edits.as_deref())?;
    let (model, tok) = load_model(cli, &model_name, edits.as_ref())?;
    discover_one(cli, &model, &tok, &model_name, &relation, &s, eval.as_ref(), &out)
}

#[derive(Args)]
#[command(group(clap::ArgGroup::new("selection").required(true).args(["top_n", "score_threshold", "target_faithfulness"])))]
pub struct SelectArgs {
    /// Edge scores written by `kcirc discover --scores` (`-`: standard input).
    #[arg(long)]
    pub scores: PathBuf,
    /// The model the scores were computed on: hub id, local folder or .gguf file.
    #[arg(long)]
    pub model: String,
    /// Keep the top-n edges by |score|.
    #[arg(long)]
    pub top_n: Option<usize>,
    /// Keep edges with |score| at least this.
    #[arg(long, allow_negative_numbers = true)]
    pub score_threshold: Option<f64>,
    /// Keep the smallest top-n whose faithfulness on the header's discovery facts reaches this.
    #[arg(long, allow_negative_numbers = true)]
    pub target_faithfulness: Option<f64>,
    /// The relation's triples, for the held-out evaluation (without them it is skipped; `-`: standard input).
    #[arg(long)]
    pub triples: Option<PathBuf>,
    #[command(flatten)]
    pub output: CircuitOutput,
}

pub fn select(cli: &Cli, a: &SelectArgs) -> Result<()> {
    let t0 = std::time::Instant::now();
    let selection = match (a.top_n, a.score_threshold, a.target_faithfulness) {
        (Some(0), ..) => bail!("--top-n must be at least 1"),
        (Some(n), ..) => Selection::TopN(n),
        (None, Some(x), _) if !x.is_finite() || x < 0.0 => bail!("--score-threshold must be a finite number ≥ 0, got {x}"),
        (None, Some(x), _) => Selection::Threshold(x),
        (None, None, Some(t)) if !(t > 0.0 && t <= 1.0) => bail!("--target-faithfulness must be in (0, 1], got {t}"),
        (None, None, Some(t)) => Selection::TargetFaithfulness(t),
        (None, None, None) => bail!("give --top-n, --score-threshold or --target-faithfulness"),
    };
    one_stdin(&[("--scores", Some(&a.scores)), ("--triples", a.triples.as_deref())])?;
    let (dot, svg) = a.output.pictures()?;
    one_stdout(&[
        (if a.output.out.is_none() { "the circuit (no --out)" } else { "--out -" }, a.output.out.as_deref().map_or(true, is_std)),
        ("--dot -", dot.as_deref().is_some_and(is_std)),
        ("--svg -", svg.as_deref().is_some_and(is_std)),
    ])?;
    check_files(&[a.output.out.as_deref(), dot.as_deref(), svg.as_deref()])?;
    let file = read_scores(&a.scores)?;
    // The graph check needs only the model's config: a scores file from another model fails before loading.
    let cfg = kcirc::model::load_config(&a.model)?;
    file.scores(&Graph::new(&cfg), &cfg)?;
    let bar = Bar::new(cli, "edges");
    let relation = match (&a.triples, a.output.no_eval) {
        (Some(p), false) => Some(read_relation(p)?),
        (None, false) => {
            bar.warn("no --triples: held-out evaluation skipped");
            None
        }
        (_, true) => None,
    };
    let edits = recorded_edits(file.header.run.edits.as_ref(), None)?;
    let (model, tok) = load_model(cli, &a.model, edits.as_ref())?;
    let (circuit, _) = pipeline::select(&model, &tok, &a.model, &file, selection, relation.as_ref().map(|r| (r, a.output.random)), &bar)?;
    bar.info(&format!("{} in {:.1}s", pipeline::kept_line(&circuit), t0.elapsed().as_secs_f64()));
    let json = circuit.to_json()? + "\n";
    let picture = kcirc::report::circuit_svg(&circuit, None, &kcirc::report::Options::default());
    let dot_text = kcirc::circuit::to_dot(&circuit);
    for (target, text) in [(&a.output.out, &json), (&dot, &dot_text), (&svg, &picture)] {
        if let Some(p) = target.as_deref().filter(|p| !is_std(p)) {
            kcirc::circuit::write_atomic(p, text)?;
        }
    }
    if a.output.out.as_deref().map_or(true, is_std) {
        print!("{json}");
    } else if dot.as_deref().is_some_and(is_std) {
        print!("{dot_text}");
    } else if svg.as_deref().is_some_and(is_std) {
        print!("{picture}");
    }
    Ok(())
}

/// How `kcirc eval` prints its report on stdout.
#[derive(Clone, Copy, ValueEnum, PartialEq)]
pub enum ReportFormat {
    /// Pretty JSON (docs/schema/report.schema.json).
    Json,
    /// The same JSON on one line.
    Jsonl,
    /// Tab-separated, a header line, one row per variant (full, circuit, random, random_sd, empty).
    Tsv,
    /// The human-readable table.
    Text,
}

#[derive(Args)]
pub struct EvalArgs {
    /// Model the circuit was discovered on: hub id, local folder or .gguf file.
    #[arg(long)]
    pub model: String,
    /// Circuit file written by `kcirc discover` (`-`: standard input).
    #[arg(long)]
    pub circuit: PathBuf,
    /// Triples to score on (JSON Lines or LRE; `-`: standard input); the circuit's discovery triples are skipped.
    #[arg(long)]
    pub triples: PathBuf,
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
    /// Demonstrations from the circuit's discovery facts prepended to every held-out prompt (default: as many
    /// as the circuit was discovered with).
    #[arg(long)]
    pub demonstrations: Option<usize>,
    /// How to print the report.
    #[arg(long, value_enum, default_value_t = ReportFormat::Json)]
    pub format: ReportFormat,
    /// Gate: exit 1 unless the circuit's Hit@10 is at least this.
    #[arg(long, allow_negative_numbers = true)]
    pub min_hit10: Option<f64>,
    /// Gate: exit 1 unless the circuit's Hit@1 is at least this.
    #[arg(long, allow_negative_numbers = true)]
    pub min_hit1: Option<f64>,
    /// Gate: exit 1 unless the faithfulness is at least this.
    #[arg(long, allow_negative_numbers = true)]
    pub min_faithfulness: Option<f64>,
    /// Gate: exit 1 unless circuit Hit@k ÷ full-model Hit@k is at least this.
    #[arg(long, allow_negative_numbers = true)]
    pub min_ratio: Option<f64>,
    /// Gate: exit 1 unless the random circuits' mean Hit@10 is at most this.
    #[arg(long, allow_negative_numbers = true)]
    pub max_random_hit10: Option<f64>,
    /// Gate: an accepted report (or a circuit file with its `eval`; `-`: standard input) that circuit Hit@k,
    /// Hit@1, MRR and faithfulness may not fall below by more than --max-drop.
    #[arg(long)]
    pub baseline: Option<PathBuf>,
    /// With --baseline: the largest drop allowed in each watched metric.
    #[arg(long, requires = "baseline", default_value_t = 0.0)]
    pub max_drop: f64,
    #[command(flatten)]
    pub edit: EditFlags,
}

/// `-` as a path: standard input (or output).
fn is_std(p: &Path) -> bool {
    p.as_os_str() == "-"
}

/// Fails when more than one of the named input flags reads standard input.
fn one_stdin(inputs: &[(&str, Option<&Path>)]) -> Result<()> {
    let claims: Vec<&str> = inputs.iter().filter(|(_, p)| p.is_some_and(is_std)).map(|(f, _)| *f).collect();
    if claims.len() > 1 {
        bail!("{} cannot all read standard input: give files to all but one", claims.join(" and "));
    }
    Ok(())
}

/// Fails when more than one output claims standard output (`claims`: flag, whether it writes there).
fn one_stdout(claims: &[(&str, bool)]) -> Result<()> {
    let on: Vec<&str> = claims.iter().filter(|(_, c)| *c).map(|(f, _)| *f).collect();
    if on.len() > 1 {
        bail!("{} cannot all write to standard output: give files to all but one", on.join(" and "));
    }
    Ok(())
}

/// Every output file (not `-`) can be written: checked before any work, so a bad path fails at once and leaves
/// no other output behind.
fn check_files(paths: &[Option<&Path>]) -> Result<()> {
    for p in paths.iter().flatten().filter(|p| !is_std(p)) {
        kcirc::circuit::check_writable(p)?;
    }
    Ok(())
}

/// All of standard input, as bytes.
fn stdin_bytes() -> Result<Vec<u8>> {
    let mut v = vec![];
    std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut v).map_err(|e| anyhow::anyhow!("standard input: {e}"))?;
    Ok(v)
}

/// A relation file, or standard input for `-`.
fn read_relation(p: &Path) -> Result<kcirc::data::Relation> {
    Ok(match is_std(p) {
        true => kcirc::data::parse(&stdin_bytes()?, "stdin", "-")?,
        false => kcirc::data::read(p)?,
    })
}

/// A file's text, or standard input for `-`.
fn read_text(p: &Path) -> Result<String> {
    match is_std(p) {
        true => Ok(kcirc::data::utf8(&stdin_bytes()?, "standard input")?.to_string()),
        false => Ok(kcirc::circuit::read_text(p)?),
    }
}

/// A scores file, or standard input for `-`.
fn read_scores(p: &Path) -> Result<kcirc::scores::ScoresFile> {
    Ok(kcirc::scores::ScoresFile::parse(&read_text(p)?, p)?)
}

/// A circuit file, or standard input for `-`.
fn read_circuit(p: &Path) -> Result<kcirc::circuit::CircuitFile> {
    Ok(kcirc::circuit::CircuitFile::parse(&read_text(p)?, &p.display().to_string())?)
}

pub fn eval(cli: &Cli, a: &EvalArgs) -> Result<()> {
    use kcirc::gate::Gate;
    if a.k == 0 {
        bail!("--k must be at least 1");
    }
    let bounds = [
        ("--min-hit10", a.min_hit10),
        ("--min-hit1", a.min_hit1),
        ("--min-faithfulness", a.min_faithfulness),
        ("--min-ratio", a.min_ratio),
        ("--max-random-hit10", a.max_random_hit10),
        ("--max-drop", Some(a.max_drop)),
    ];
    for (name, v) in bounds {
        if v.is_some_and(|v| !v.is_finite()) {
            bail!("{name} must be a finite number");
        }
    }
    if a.max_drop < 0.0 {
        bail!("--max-drop must be at least 0");
    }
    if (a.min_hit10.is_some() || a.max_random_hit10.is_some()) && a.k != 10 {
        bail!("--min-hit10 and --max-random-hit10 need --k 10");
    }
    if a.max_random_hit10.is_some() && a.random == 0 {
        // Without random circuits the gate would compare nothing and pass.
        bail!("--max-random-hit10 needs random circuits: --random must be at least 1");
    }
    one_stdin(&[("--circuit", Some(&a.circuit)), ("--triples", Some(&a.triples)), ("--baseline", a.baseline.as_deref())])?;
    let circuit = read_circuit(&a.circuit)?;
    let relation = read_relation(&a.triples)?;
    let baseline = match &a.baseline {
        Some(p) => {
            let text = read_text(p)?;
            let value = serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{}: not JSON: {e}", p.display()))?;
            Some(kcirc::gate::baseline_report(value, &p.display().to_string())?)
        }
        None => None,
    };
    let edits = a.edit.spec()?;
    let (model, tok) = load_model(cli, &a.model, edits.as_ref())?;
    note_edits(cli, &circuit, &model);
    let opts = kcirc::eval::EvalOptions {
        k: a.k,
        random: a.random,
        seed: a.seed.unwrap_or(circuit.run.seed),
        filter_known: !a.no_filter,
        demonstrations: a.demonstrations.unwrap_or(circuit.run.demonstrations.unwrap_or(0)),
    };
    let report = kcirc::eval::evaluate(&model, &tok, &circuit, &relation, &opts)?;
    match a.format {
        ReportFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        ReportFormat::Jsonl => println!("{}", serde_json::to_string(&report)?),
        ReportFormat::Tsv => print!("{}", report.tsv()),
        ReportFormat::Text => print!("{}", report.table()),
    }
    let bar = Bar::new(cli, "facts");
    if a.format != ReportFormat::Text {
        bar.info(report.table().trim_end());
    }
    for w in report.warnings() {
        bar.warn(&w);
    }
    let gates: Vec<(Gate, &str)> = [
        a.min_hit10.map(|x| (Gate::MinHitK(x), "--min-hit10")),
        a.min_hit1.map(|x| (Gate::MinHit1(x), "--min-hit1")),
        a.min_faithfulness.map(|x| (Gate::MinFaithfulness(x), "--min-faithfulness")),
        a.min_ratio.map(|x| (Gate::MinRatio(x), "--min-ratio")),
        a.max_random_hit10.map(|x| (Gate::MaxRandomHitK(x), "--max-random-hit10")),
    ]
    .into_iter()
    .flatten()
    .collect();
    let mut failed = kcirc::gate::check(&report, &gates);
    if let Some(b) = &baseline {
        failed.extend(kcirc::gate::against_baseline(&report, b, a.max_drop)?);
    }
    if !failed.is_empty() {
        return Err(crate::GateFailed(failed.into_iter().map(|f| f.0).collect()).into());
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
        /// The relation file (`-`: standard input).
        file: PathBuf,
    },
    /// Counterfactual edit requests on stdout (JSON Lines for `kcirc edit --requests`): facts the model answers
    /// right (top-1), each given another answer of its relation; relations take turns, seeded.
    Counterfactuals {
        /// Model whose known facts are drawn.
        #[arg(long)]
        model: String,
        /// Relation files to draw from.
        #[arg(long, required = true)]
        triples: Vec<PathBuf>,
        #[arg(long, default_value_t = 20)]
        count: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// The mean-ablation corpus on stdout: 5 facts of every relation file in DIR (sorted by name), the first
    /// in seed 0's shuffle. kcirc ships `kcirc data corpus data/` as data/corpus/mean-ablation.jsonl.
    Corpus {
        /// Folder of relation files (*.json, *.jsonl).
        dir: PathBuf,
    },
}

pub fn data(cli: &Cli, a: &DataArgs) -> Result<()> {
    match &a.command {
        DataCommand::Counterfactuals { model, triples, count, seed } => {
            let rels = triples.iter().map(|p| read_relation(p)).collect::<Result<Vec<_>>>()?;
            let (model, tok) = kcirc::model::load(model, &device(cli.device)?)?;
            let reqs = kcirc::edit::counterfactuals(&model, &tok, &rels, *count, *seed)?;
            let mut out = std::io::stdout().lock();
            for r in &reqs {
                writeln!(out, "{}", serde_json::to_string(r)?)?;
            }
        }
        DataCommand::Corpus { dir } => {
            let files = kcirc::batch::relation_files(&[], Some(dir))?;
            let rels = files.iter().map(|p| read_relation(p)).collect::<Result<Vec<_>>>()?;
            let mut out = std::io::stdout().lock();
            for t in kcirc::data::corpus_of(&rels, 0) {
                writeln!(out, "{}", serde_json::to_string(&t)?)?;
            }
        }
        DataCommand::Convert { file } => {
            let rel = read_relation(file)?;
            let mut out = std::io::stdout().lock();
            for t in &rel.triples {
                writeln!(out, "{}", serde_json::to_string(t)?)?;
            }
        }
    }
    Ok(())
}

#[derive(Args)]
pub struct CurveArgs {
    /// Model: hub id, local folder or .gguf file.
    #[arg(long)]
    pub model: String,
    /// The relation's triples (JSON Lines or LRE; `-`: standard input), for the split and the held-out facts.
    #[arg(long)]
    pub triples: PathBuf,
    /// Rank the edges by the scores of `kcirc discover --scores` (its header fixes the discovery facts).
    #[arg(long, conflicts_with_all = ["method", "config", "ablation", "mean_over", "no_reference", "metric", "examples", "seed", "no_filter", "ig_steps"])]
    pub scores: Option<PathBuf>,
    #[command(flatten)]
    pub common: SettingFlags,
    /// Circuit sizes, fractions of all edges in (0, 1], increasing (size 0, the empty circuit, is always the
    /// first point).
    #[arg(long, value_delimiter = ',', allow_negative_numbers = true, default_value = "0.001,0.002,0.005,0.01,0.02,0.05,0.1,0.2,0.5,1")]
    pub sizes: Vec<f64>,
    /// Random circuits per size.
    #[arg(long, default_value_t = 3)]
    pub random: usize,
    /// Measure on the discovery facts only (no held-out Hit@k).
    #[arg(long)]
    pub no_eval: bool,
    /// Held-out facts scored at each size, at most (the first in file order; every size costs a forward pass
    /// of them per circuit).
    #[arg(long, default_value_t = 64)]
    pub max_held_out: usize,
    #[command(flatten)]
    pub edit: EditFlags,
}

pub fn curve(cli: &Cli, a: &CurveArgs) -> Result<()> {
    kcirc::curve::check_sizes(&a.sizes).map_err(|e| anyhow::anyhow!("--{e}"))?;
    let s = a.common.settings()?;
    if !matches!(s.method.as_str(), "eap" | "eap-ig") {
        bail!("--method {}: a curve ranks edges by attribution (eap or eap-ig)", s.method);
    }
    s.validate().map_err(|e| anyhow::anyhow!("{}", flag_names(&e.to_string())))?;
    if a.max_held_out == 0 {
        bail!("--max-held-out must be at least 1 (or --no-eval)");
    }
    one_stdin(&[("--triples", Some(&a.triples)), ("--scores", a.scores.as_deref())])?;
    let scores = a.scores.as_deref().map(read_scores).transpose()?;
    let relation = read_relation(&a.triples)?;
    let edits = match &scores {
        Some(f) => recorded_edits(f.header.run.edits.as_ref(), a.edit.edits.as_deref())?,
        None => a.edit.spec()?,
    };
    let (model, tok) = load_model(cli, &a.model, edits.as_ref())?;
    let eval = (!a.no_eval).then_some(kcirc::eval::EvalOptions {
        k: s.k,
        random: a.random,
        seed: s.seed,
        filter_known: s.filter_known,
        demonstrations: s.demonstrations,
    });
    let bar = Bar::new(cli, "sizes");
    let curve = pipeline::curve(
        &model,
        &tok,
        &a.model,
        &relation,
        &s,
        scores.as_ref(),
        &a.sizes,
        eval.as_ref().map(|e| (e, a.max_held_out)),
        &bar,
    )?;
    bar.finish();
    let ar = &curve.areas;
    bar.info(&format!(
        "{}: CMD {:.3} (logit) {:.3} (KL){}{}",
        curve.relation,
        ar.logit.cmd,
        ar.kl.cmd,
        ar.random_logit.map(|r| format!(", random {:.3}", r.cmd)).unwrap_or_default(),
        ar.held_out.map(|h| format!("; held-out CMD {:.3}", h.cmd)).unwrap_or_default()
    ));
    println!("{}", serde_json::to_string_pretty(&curve)?);
    Ok(())
}

/// Where `lens` and `heads` take their facts from.
#[derive(Args)]
pub struct FactArgs {
    /// One prompt to analyse (with --subject and --object) instead of --triples.
    #[arg(long, conflicts_with = "triples", requires_all = ["subject", "object"])]
    pub prompt: Option<String>,
    /// The subject's text in --prompt (its positions are the subject positions).
    #[arg(long, requires = "prompt")]
    pub subject: Option<String>,
    /// The expected answer to --prompt.
    #[arg(long, requires = "prompt")]
    pub object: Option<String>,
    /// Facts to analyse (JSON Lines or LRE; `-`: standard input).
    #[arg(long)]
    pub triples: Option<PathBuf>,
    /// Analyse at most this many facts (the first in file order).
    #[arg(long, default_value_t = 32)]
    pub max_facts: usize,
    /// Prepend this many demonstrations (other facts with their answers) to every prompt: from the circuit's
    /// discovery facts when --circuit is given (default: as many as it was discovered with), else from the
    /// other facts of --triples.
    #[arg(long)]
    pub demonstrations: Option<usize>,
}

impl FactArgs {
    fn options(&self, known_only: bool, k: usize, circuit: Option<&kcirc::circuit::CircuitFile>) -> kcirc::analysis::FactOptions {
        let recorded = circuit.and_then(|c| c.run.demonstrations).unwrap_or(0);
        kcirc::analysis::FactOptions {
            known_only,
            k,
            max_facts: self.max_facts,
            demonstrations: self.demonstrations.unwrap_or(recorded),
            seed: circuit.map_or(0, |c| c.run.seed),
        }
    }

    fn facts(&self) -> Result<kcirc::analysis::Facts> {
        use kcirc::analysis::Facts;
        Ok(match (&self.prompt, &self.triples) {
            (Some(p), _) => Facts::Prompt {
                prompt: p.clone(),
                subject: self.subject.clone().unwrap_or_default(),
                object: self.object.clone().unwrap_or_default(),
            },
            (None, Some(t)) => Facts::Relation(read_relation(t)?),
            (None, None) => bail!("give --triples FILE, or --prompt TEXT with --subject and --object"),
        })
    }
}

#[derive(Args)]
pub struct LensArgs {
    /// Model: hub id, local folder or .gguf file.
    #[arg(long)]
    pub model: String,
    #[command(flatten)]
    pub facts: FactArgs,
    /// Also read the lens under this circuit's ablation (a circuit file of the same model).
    #[arg(long)]
    pub circuit: Option<PathBuf>,
    /// Follow this answer beside the target (a hallucination: the wrong answer the model gives).
    #[arg(long, conflicts_with = "compare_predicted")]
    pub compare_object: Option<String>,
    /// For each fact the model gets wrong, follow its own top-1 answer beside the target.
    #[arg(long)]
    pub compare_predicted: bool,
    /// Only facts the full model ranks below --k.
    #[arg(long)]
    pub known_only: bool,
    #[arg(long, default_value_t = 10)]
    pub k: usize,
    #[arg(long, value_enum, default_value_t = Format::Json)]
    pub format: Format,
    #[command(flatten)]
    pub edit: EditFlags,
}

pub fn lens(cli: &Cli, a: &LensArgs) -> Result<()> {
    use kcirc::analysis::{lens::Lens, Context};
    one_stdin(&[("--triples", a.facts.triples.as_deref()), ("--circuit", a.circuit.as_deref())])?;
    let facts = a.facts.facts()?;
    let circuit = a.circuit.as_deref().map(read_circuit).transpose()?;
    let edits = a.edit.spec()?;
    let (model, tok) = load_model(cli, &a.model, edits.as_ref())?;
    if let Some(c) = &circuit {
        note_edits(cli, c, &model);
    }
    let filter = a.facts.options(a.known_only, a.k, circuit.as_ref());
    let ctx = Context::new(&model, &tok, facts, filter, circuit.as_ref())?;
    let compare = match &a.compare_object {
        Some(o) => Some(kcirc::data::answer_token(&tok, o)?),
        None => None,
    };
    let lens = Lens { compare: vec![compare; ctx.facts.len()], compare_predicted: a.compare_predicted };
    analyse(cli, &lens, &ctx, a.format, kcirc::analysis::lens::Report::table)
}

/// Runs an analysis with a progress bar and prints its report as JSON or as its text table.
fn analyse<A: kcirc::analysis::Analysis>(
    cli: &Cli,
    analysis: &A,
    ctx: &kcirc::analysis::Context,
    format: Format,
    table: fn(&A::Report) -> String,
) -> Result<()> {
    let bar = Bar::new(cli, "facts");
    let report = analysis.analyse(ctx, &bar)?;
    bar.finish();
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Format::Text => print!("{}", table(&report)),
    }
    Ok(())
}

#[derive(Args)]
pub struct HeadsArgs {
    /// Model the circuit was discovered on.
    #[arg(long)]
    pub model: String,
    /// Circuit file: its heads are reported, and its ablation fills ablated heads.
    #[arg(long)]
    pub circuit: PathBuf,
    #[command(flatten)]
    pub facts: FactArgs,
    /// Report every head of the model, not only the circuit's.
    #[arg(long)]
    pub all: bool,
    /// Also check this set of heads against random heads of the same layers (comma-separated, e.g. the heads
    /// `kcirc diff` says join an in-context circuit: a3.h1,a5.h0).
    #[arg(long, value_delimiter = ',')]
    pub ablate: Vec<String>,
    /// Random head sets per role in the ablation check.
    #[arg(long, default_value_t = 20)]
    pub random: usize,
    /// Seed of the random head sets (default: the circuit's seed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Keep facts the full model does not know (by default only facts it ranks below --k).
    #[arg(long)]
    pub no_filter: bool,
    #[arg(long, default_value_t = 10)]
    pub k: usize,
    #[arg(long, value_enum, default_value_t = Format::Json)]
    pub format: Format,
    #[command(flatten)]
    pub edit: EditFlags,
}

pub fn heads(cli: &Cli, a: &HeadsArgs) -> Result<()> {
    use kcirc::analysis::heads::{circuit_heads, Heads};
    use kcirc::analysis::Context;
    one_stdin(&[("--triples", a.facts.triples.as_deref()), ("--circuit", Some(&a.circuit))])?;
    let facts = a.facts.facts()?;
    let circuit = read_circuit(&a.circuit)?;
    let edits = a.edit.spec()?;
    let (model, tok) = load_model(cli, &a.model, edits.as_ref())?;
    note_edits(cli, &circuit, &model);
    let filter = a.facts.options(!a.no_filter, a.k, Some(&circuit));
    let ctx = Context::new(&model, &tok, facts, filter, Some(&circuit))?;
    let heads = match a.all {
        true => (0..model.cfg.n_layers).flat_map(|l| (0..model.cfg.n_heads).map(move |h| (l, h))).collect(),
        false => ctx.circuit.as_ref().map(circuit_heads).unwrap_or_default(),
    };
    let mut sets = vec![];
    if !a.ablate.is_empty() {
        sets.push(("given".to_string(), kcirc::analysis::heads::parse_heads(&a.ablate, model.cfg.n_layers, model.cfg.n_heads)?));
    }
    let analysis = Heads { heads, sets, random_draws: a.random, seed: a.seed.unwrap_or(circuit.run.seed) };
    analyse(cli, &analysis, &ctx, a.format, kcirc::analysis::heads::Report::table)
}

#[derive(Args)]
pub struct DiffArgs {
    /// Circuit files of one model (two or more; `-` for one of them: standard input).
    #[arg(required = true, num_args = 2..)]
    pub circuits: Vec<PathBuf>,
    #[arg(long, value_enum, default_value_t = Format::Json)]
    pub format: Format,
}

pub fn diff(a: &DiffArgs) -> Result<()> {
    if a.circuits.iter().filter(|p| is_std(p)).count() > 1 {
        bail!("only one circuit can come from standard input");
    }
    let files = a.circuits.iter().map(|p| Ok((p.display().to_string(), read_circuit(p)?))).collect::<Result<Vec<_>>>()?;
    let report = kcirc::analysis::diff::diff(&files)?;
    match a.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Format::Text => print!("{}", report.table()),
    }
    Ok(())
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
pub enum EditMode {
    Sequential,
    Independent,
}

#[derive(Args)]
pub struct EditArgs {
    /// Model to edit: hub id, local folder or .gguf file.
    #[arg(long)]
    pub model: String,
    /// Edit requests, JSON Lines of {"subject", "template", "object", "new_object", "relation"?} (`-`: standard
    /// input), applied one after another.
    #[arg(long, conflicts_with_all = ["subject", "template", "object", "new_object"])]
    pub requests: Option<PathBuf>,
    /// One edit: the subject (with --template, --object, --new-object).
    #[arg(long, requires_all = ["template", "object", "new_object"])]
    pub subject: Option<String>,
    /// One edit: the prompt template, `{}` for the subject.
    #[arg(long)]
    pub template: Option<String>,
    /// One edit: the current answer.
    #[arg(long)]
    pub object: Option<String>,
    /// One edit: the answer it should become.
    #[arg(long)]
    pub new_object: Option<String>,
    /// One edit: its relation (which --triples relation is "the same relation" for locality and generalization).
    #[arg(long)]
    pub relation: Option<String>,
    /// rome (rank-one update), ft-m (fine-tune one MLP output projection on the new object's tokens), ft-l (the
    /// same, last prompt position only).
    #[arg(long, default_value = "rome")]
    pub method: String,
    /// Layer whose MLP output projection is rewritten (default: a third of the depth for GPT-2 — 8 of
    /// GPT-2-medium's 24 —, 5/32 of it for Llama — 5 of SmolLM2-135M's 30).
    #[arg(long)]
    pub layer: Option<usize>,
    /// sequential: each request edits the model holding the earlier edits (measured after each and at the end);
    /// independent: each edits the unedited model and is measured alone (EasyEdit's per-edit numbers).
    #[arg(long, value_enum, default_value_t = EditMode::Sequential)]
    pub mode: EditMode,
    /// Relation files for locality (other subjects of the edited relation, facts of the others) and, through
    /// their templates (an LRE file has several), generalization.
    #[arg(long)]
    pub triples: Vec<PathBuf>,
    /// Locality facts taken per relation (the first in file order).
    #[arg(long, default_value_t = 24)]
    pub locality_facts: usize,
    /// Generalization prompts instead of the relation's templates: JSON Lines, each {"template": "… {} …"} or
    /// {"subject": S, "prompt": "… S …"}, with an optional "subject" and "relation" a line is limited to.
    #[arg(long)]
    pub paraphrases: Option<PathBuf>,
    /// ROME: estimate the key covariance C from this text file instead of C = I.
    #[arg(long)]
    pub cov_text: Option<PathBuf>,
    /// Write the edited model here: a new folder (model.safetensors in the family's own layout, config.json,
    /// tokenizer) that kcirc and Hugging Face transformers load; GGUF models come out as safetensors.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Also report the logit lens of the new and the old object on each edit prompt, before and after.
    #[arg(long)]
    pub lens: bool,
    /// The relation's circuit before the edits (a circuit file of this model): it is rediscovered on the edited
    /// model with the same discovery facts and settings, and the two are compared (a resample-ablated circuit
    /// needs its relation file among --triples, for the corruption partners).
    #[arg(long)]
    pub circuit: Option<PathBuf>,
    /// Seed of ROME's context prefixes.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Optimisation steps (default: ROME 20, FT 25).
    #[arg(long)]
    pub steps: Option<usize>,
    /// FT: L∞ radius of the weight change (default 5e-3).
    #[arg(long)]
    pub clamp: Option<f64>,
    #[arg(long, value_enum, default_value_t = Format::Json)]
    pub format: Format,
}

impl EditArgs {
    /// The requests with their line numbers, and the file they came from (`None`: the one-edit flags).
    fn requests(&self) -> Result<(kcirc::edit::NumberedRequests, Option<String>)> {
        match (&self.requests, &self.subject) {
            (Some(p), _) => {
                let label = p.display().to_string();
                Ok((kcirc::edit::parse_requests(&read_text(p)?, &label)?, Some(label)))
            }
            (None, Some(s)) => {
                let r = kcirc::edit::Request {
                    subject: s.clone(),
                    template: self.template.clone().unwrap_or_default(),
                    object: self.object.clone().unwrap_or_default(),
                    new_object: self.new_object.clone().unwrap_or_default(),
                    relation: self.relation.clone().unwrap_or_default(),
                };
                if !r.template.contains("{}") {
                    bail!("--template {:?} has no `{{}}` for the subject", r.template);
                }
                Ok((vec![(1, r)], None))
            }
            (None, None) => bail!("give --requests FILE, or --subject, --template, --object and --new-object"),
        }
    }
}

pub fn edit(cli: &Cli, a: &EditArgs) -> Result<()> {
    use kcirc::edit as ed;
    if a.clamp.is_some_and(|c| !(c > 0.0 && c.is_finite())) {
        bail!("--clamp must be a positive number");
    }
    if let Some(dir) = a.out.as_deref().filter(|d| d.exists()) {
        bail!("{}: already exists; kcirc does not overwrite a model folder", dir.display());
    }
    let mode = match a.mode {
        EditMode::Sequential => ed::measure::Mode::Sequential,
        EditMode::Independent => ed::measure::Mode::Independent,
    };
    if mode == ed::measure::Mode::Independent && (a.out.is_some() || a.circuit.is_some()) {
        bail!("--mode independent leaves no single edited model: --out and --circuit need --mode sequential");
    }
    let mut options =
        ed::EditorOptions { method: a.method.clone(), layer: a.layer, steps: a.steps, clamp: a.clamp, seed: a.seed, cov_text: None };
    options.check()?;
    let (requests, label) = a.requests()?;
    let relations = a.triples.iter().map(|p| read_relation(p)).collect::<Result<Vec<_>>>()?;
    options.cov_text = a.cov_text.as_deref().map(read_text).transpose()?;
    let before_circuit = a.circuit.as_deref().map(read_circuit).transpose()?;
    let paraphrases = match &a.paraphrases {
        Some(p) => Some(ed::measure::parse_paraphrases(&read_text(p)?, &p.display().to_string())?),
        None => None,
    };
    let (model, tok) = kcirc::model::load(&a.model, &device(cli.device)?)?;
    if let Some(c) = &before_circuit {
        c.run.model_shape.check("circuit", &c.run.model, &model.cfg)?;
    }
    if let Some(layer) = a.layer {
        ed::check_layer(layer, &model.cfg)?;
    }
    let prepared = ed::prepare_requests(&requests, label.as_deref(), &tok)?;
    let editor = options.editor(&model, &tok)?;
    let mut probes = ed::measure::Probes::new(&model, &tok, &relations, ed::measure::templates_of(&relations), a.locality_facts)?;
    probes.paraphrases = paraphrases;
    let bar = Bar::new(cli, "steps");
    let (edited, mut report) = ed::measure::run(&model, &tok, editor.as_ref(), &prepared, &probes, mode, &bar)?;
    // Sequential: one final model for every request; independent: each request's own.
    let edited_for = |i: usize| &edited[i.min(edited.len() - 1)];
    if a.lens {
        report.lens = Some(
            prepared
                .iter()
                .enumerate()
                .map(|(i, r)| ed::circuit::lens(&model, edited_for(i), &tok, r))
                .collect::<kcirc::Result<Vec<_>>>()?,
        );
    }
    if let Some(c) = &before_circuit {
        let relation = relations.iter().find(|r| r.name == c.run.relation);
        let (_, change) = pipeline::rediscover(&edited[0], &tok, c, relation, &bar)?;
        report.circuit = Some(serde_json::to_value(change)?);
    }
    bar.finish();
    if let Some(dir) = &a.out {
        kcirc::model::save(&edited[0], &tok, dir)?;
    }
    match a.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Format::Text => print!("{}", report.table()),
    }
    Ok(())
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
pub enum RankArg {
    Greedy,
    Specific,
    Effect,
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
pub enum UnitArg {
    Edges,
    Nodes,
}

#[derive(Args)]
pub struct EraseArgs {
    /// Model the circuit was discovered on.
    #[arg(long)]
    pub model: String,
    /// The circuit of the relation to erase (mean or zero ablation).
    #[arg(long)]
    pub circuit: PathBuf,
    /// The relation's facts; the circuit's discovery facts are skipped, the rest measure the erasure.
    #[arg(long)]
    pub triples: PathBuf,
    /// Other relations whose cost is measured (files; a folder: every .jsonl in it).
    #[arg(long)]
    pub others: Vec<PathBuf>,
    /// Which edges go: greedy (the circuit's largest |effect| first, skipping any edge whose removal costs one
    /// of --others more than --tolerance of Hit@k on 8 of its facts; the default), effect (largest |effect|
    /// first, no guard), specific (edges whose share of this relation's EAP-IG scores exceeds their share in
    /// every other relation's, most specific first).
    #[arg(long, value_enum, default_value_t = RankArg::Greedy)]
    pub rank: RankArg,
    /// What is removed: the circuit's edges one by one, or its nodes (heads and MLPs, each with every edge out
    /// of it; a node's effect is its circuit edges' summed |effect|), against as many random edges or nodes.
    #[arg(long, value_enum, default_value_t = UnitArg::Edges)]
    pub unit: UnitArg,
    /// Greedy: the largest drop of another relation's Hit@k an accepted edge may cause.
    #[arg(long, default_value_t = 0.1)]
    pub tolerance: f64,
    /// Held-out Hit@k at or below which the relation counts as erased.
    #[arg(long, default_value_t = 0.1)]
    pub target_hit: f64,
    #[arg(long, default_value_t = 10)]
    pub k: usize,
    /// Random edge sets of the same size.
    #[arg(long, default_value_t = 5)]
    pub random: usize,
    /// Seed of the random edge sets (default: the circuit's seed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Facts per other relation (known to the model, in file order).
    #[arg(long, default_value_t = 32)]
    pub max_facts: usize,
    #[arg(long, value_enum, default_value_t = Format::Json)]
    pub format: Format,
}

pub fn erase(cli: &Cli, a: &EraseArgs) -> Result<()> {
    if !(0.0..=1.0).contains(&a.target_hit) {
        bail!("--target-hit must be in [0, 1]");
    }
    if !(0.0..=1.0).contains(&a.tolerance) {
        bail!("--tolerance must be in [0, 1] (a drop of Hit@k), got {}", a.tolerance);
    }
    if a.k == 0 || a.max_facts == 0 {
        bail!("--k and --max-facts must be at least 1");
    }
    let circuit = read_circuit(&a.circuit)?;
    let relation = read_relation(&a.triples)?;
    let mut files = vec![];
    for p in &a.others {
        if p.is_dir() {
            let mut in_dir: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().is_some_and(|x| x == "jsonl"))
                .collect();
            if in_dir.is_empty() {
                bail!("--others {}: no relation files (*.jsonl) in the folder", p.display());
            }
            in_dir.sort();
            files.extend(in_dir);
        } else {
            files.push(p.clone());
        }
    }
    let mut others = vec![];
    for f in &files {
        let r = read_relation(f)?;
        if r.name != relation.name {
            others.push(r);
        }
    }
    let (model, tok) = kcirc::model::load(&a.model, &device(cli.device)?)?;
    let opts = kcirc::erase::EraseOptions {
        ranking: match a.rank {
            RankArg::Greedy => kcirc::erase::Ranking::Greedy,
            RankArg::Specific => kcirc::erase::Ranking::Specific,
            RankArg::Effect => kcirc::erase::Ranking::Effect,
        },
        unit: match a.unit {
            UnitArg::Edges => kcirc::erase::Unit::Edges,
            UnitArg::Nodes => kcirc::erase::Unit::Nodes,
        },
        tolerance: a.tolerance,
        target_hit: a.target_hit,
        k: a.k,
        random: a.random,
        seed: a.seed.unwrap_or(circuit.run.seed),
        max_facts: a.max_facts,
    };
    let bar = Bar::new(cli, "sizes");
    let report = kcirc::erase::erase(&model, &tok, &circuit, &relation, &others, &opts, &bar)?;
    bar.finish();
    match a.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Format::Text => print!("{}", report.table()),
    }
    Ok(())
}

#[derive(Args)]
#[command(group(clap::ArgGroup::new("outputs").required(true).multiple(true).args(["out", "svg"])))]
pub struct ReportArgs {
    /// Circuit file written by `kcirc discover` or `kcirc select`, format 1 or 2 (`-`: standard input).
    #[arg(long)]
    pub circuit: PathBuf,
    /// With --triples: measure the held-out report for the page (full model, circuit, random circuits) instead of
    /// the one the circuit file holds.
    #[arg(long, requires = "triples")]
    pub model: Option<String>,
    /// The relation's triples for --model (the circuit's discovery facts are skipped).
    #[arg(long, requires = "model")]
    pub triples: Option<PathBuf>,
    /// Random circuits in that held-out report.
    #[arg(long, default_value_t = 5)]
    pub random: usize,
    /// A faithfulness curve of the same relation (`kcirc curve` output).
    #[arg(long)]
    pub curve: Option<PathBuf>,
    /// A logit-lens report (`kcirc lens` output).
    #[arg(long)]
    pub lens: Option<PathBuf>,
    /// A head report (`kcirc heads` output): head colours by role, a head table and the ablation check.
    #[arg(long)]
    pub heads: Option<PathBuf>,
    /// An edit report (`kcirc edit` output): before and after.
    #[arg(long)]
    pub edit: Option<PathBuf>,
    /// Write the report page here: one HTML file that opens offline (`-`: standard output).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Write the circuit alone as a standalone SVG here, its --edges strongest edges (`-`: standard output).
    #[arg(long)]
    pub svg: Option<PathBuf>,
    /// Edges shown at first, the strongest by |effect| (all the SVG draws).
    #[arg(long, default_value_t = kcirc::report::DEFAULT_EDGES)]
    pub edges: usize,
    /// Edges drawn in the page at all, the strongest; those past --edges are behind its control.
    #[arg(long, default_value_t = kcirc::report::DEFAULT_MAX_EDGES)]
    pub max_edges: usize,
}

pub fn report(cli: &Cli, a: &ReportArgs) -> Result<()> {
    use kcirc::report::{read_json, Options, Sections};
    one_stdin(&[("--circuit", Some(&a.circuit)), ("--triples", a.triples.as_deref())])?;
    one_stdout(&[("--out -", a.out.as_deref().is_some_and(is_std)), ("--svg -", a.svg.as_deref().is_some_and(is_std))])?;
    check_files(&[a.out.as_deref(), a.svg.as_deref()])?;
    // Every input read and checked before anything is written.
    let label = |p: &Path| p.display().to_string();
    let mut s = Sections::new(read_circuit(&a.circuit)?, &label(&a.circuit))?;
    if let Some(p) = &a.curve {
        s = s.with_curve(read_json(p, "a curve (kcirc curve output)")?, &label(p))?;
    }
    if let Some(p) = &a.lens {
        s = s.with_lens(read_json(p, "a lens report (kcirc lens output)")?, &label(p))?;
    }
    if let Some(p) = &a.heads {
        s = s.with_heads(read_json(p, "a head report (kcirc heads output)")?, &label(p))?;
    }
    if let Some(p) = &a.edit {
        s = s.with_edit(read_json(p, "an edit report (kcirc edit output)")?, &label(p))?;
    }
    if let (Some(model_name), Some(triples)) = (&a.model, &a.triples) {
        let relation = read_relation(triples)?;
        let (model, tok) = kcirc::model::load(model_name, &device(cli.device)?)?;
        let run = &s.circuit.run;
        let opts = kcirc::eval::EvalOptions {
            k: run.k,
            random: a.random,
            seed: run.seed,
            filter_known: run.filter_known,
            demonstrations: run.demonstrations.unwrap_or(0),
        };
        s.eval = Some(kcirc::eval::evaluate(&model, &tok, &s.circuit, &relation, &opts)?);
    }
    let opts = Options { edges: a.edges, max_edges: a.max_edges };
    let outputs = [(&a.svg, a.svg.as_ref().map(|_| s.circuit_svg(&opts))), (&a.out, a.out.as_ref().map(|_| s.html(&opts)))];
    for (target, text) in &outputs {
        if let (Some(p), Some(text)) = (target, text) {
            if is_std(p) {
                print!("{text}");
            } else {
                kcirc::circuit::write_atomic(p, text)?;
            }
        }
    }
    let bar = Bar::new(cli, "");
    if let Some(p) = a.out.as_deref().filter(|p| !is_std(p)) {
        bar.info(&format!("report: {} ({} KB)", p.display(), outputs[1].1.as_ref().map_or(0, |t| t.len() / 1024)));
    }
    Ok(())
}
