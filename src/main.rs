//! The `kcirc` command line: parses flags, calls the library, prints JSON on stdout and progress on stderr.
//! Exit codes: 0 success, 1 a `--min-*` gate failed, 2 bad input (flags, files, models), 70 an internal error
//! (a bug in kcirc).
use std::process::ExitCode;

use anyhow::Result;
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};

mod commands;

#[derive(Parser)]
#[command(name = "kcirc", version, about = "Find the knowledge circuit of a transformer language model, and prove it with numbers.")]
#[command(
    after_help = "Examples:\n  kcirc discover --model models/SmolLM2-135M-Instruct.Q4_1.gguf --triples data/country_capital_city.jsonl --out circuit.json\n  kcirc eval --model models/SmolLM2-135M-Instruct.Q4_1.gguf --circuit circuit.json --triples data/country_capital_city.jsonl --min-hit10 0.8\n  kcirc predict --model models/SmolLM2-135M-Instruct.Q4_1.gguf --prompt 'The capital city of France is'\n  kcirc report --circuit circuit.json --curve curve.json --out report.html\n  kcirc graph --model gpt2-medium --json"
)]
pub struct Cli {
    /// Device to run on.
    #[arg(long, global = true, value_enum, default_value_t = DeviceArg::Cpu)]
    pub device: DeviceArg,
    /// No progress bars or run summaries (notes that change how the results read still show).
    #[arg(long, short, global = true)]
    pub quiet: bool,
    /// Worker threads (default: all cores). Results do not depend on it.
    #[arg(long, global = true)]
    pub threads: Option<usize>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum SchemaName {
    Circuit,
    Report,
    Summary,
    Edit,
    Erase,
    Curve,
    Lens,
    Heads,
    Diff,
    Scores,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum DeviceArg {
    Cpu,
    Cuda,
}

#[derive(Subcommand)]
pub enum Command {
    /// Top-k next tokens for one or more prompts (one JSON object per prompt and line).
    #[command(after_help = "Example:\n  kcirc predict --model gpt2 --prompt 'The capital city of France is' --top-k 5")]
    Predict(commands::PredictArgs),
    /// Find the circuit of a relation (EAP-IG by default; acdc, eap, hybrid) and score it on held-out triples.
    #[command(
        after_help = "Examples:\n  kcirc discover --model models/SmolLM2-135M-Instruct.Q4_1.gguf --triples data/country_capital_city.jsonl --out circuit.json\n  kcirc discover --model gpt2-medium --triples facts.jsonl --config configs/paper.json --dot circuit.dot\n  kcirc discover --rerun circuit.json --out again.json   # the same file, byte for byte"
    )]
    Discover(Box<commands::DiscoverArgs>),
    /// Build a circuit from the edge scores of `kcirc discover --scores`: top-n or score threshold, without
    /// computing the scores again (the same circuit an attribution run with that selection keeps).
    #[command(
        after_help = "Examples:\n  kcirc discover --model gpt2 --triples facts.jsonl --method eap-ig --scores scores.jsonl --out c.json\n  kcirc select --model gpt2 --scores scores.jsonl --top-n 500 --triples facts.jsonl --out c500.json"
    )]
    Select(commands::SelectArgs),
    /// Faithfulness curve: the edges ranked by attribution, cut at several sizes, each measured on the discovery
    /// and held-out facts beside random circuits, with the areas CPR and CMD (MIB's convention).
    #[command(
        after_help = "Example:\n  kcirc curve --model models/SmolLM2-135M-Instruct.Q4_1.gguf --triples data/country_capital_city.jsonl --sizes 0.001,0.01,0.05,0.2,1"
    )]
    Curve(Box<commands::CurveArgs>),
    /// Score a circuit on held-out triples: full model vs circuit vs random circuits of the same size.
    #[command(
        after_help = "Examples:\n  kcirc eval --model gpt2-medium --circuit circuit.json --triples test.jsonl --min-hit10 0.8\n\nExit codes: 0 every gate holds, 1 a gate failed (named on stderr), 2 bad input, 70 a bug in kcirc."
    )]
    Eval(commands::EvalArgs),
    /// Logit lens: the target's rank and probability after every attention block and MLP, at the last position
    /// and over the subject's positions; where the answer emerges; direct logit attribution per layer; with
    /// --circuit the same under the circuit's ablation; with --compare-object a rival answer beside it.
    #[command(
        after_help = "Examples:\n  kcirc lens --model models/SmolLM2-135M-Instruct.Q4_1.gguf --prompt 'The capital city of France is' --subject France --object Paris --format text\n  kcirc lens --model gpt2 --triples facts.jsonl --circuit circuit.json --compare-predicted"
    )]
    Lens(Box<commands::LensArgs>),
    /// Head roles: per head of a circuit (or --all), attention from the last position to subject, relation and
    /// other tokens, direct logit attribution split by source, top tokens, a role (mover, relation, mixed,
    /// other), and the ablation check of mover and relation heads against random heads of the same layers.
    #[command(
        after_help = "Example:\n  kcirc heads --model models/SmolLM2-135M-Instruct.Q4_1.gguf --circuit circuit.json --triples data/country_capital_city.jsonl --format text"
    )]
    Heads(Box<commands::HeadsArgs>),
    /// Compare circuits: shared and unique edges and nodes, Jaccard, per-layer node counts, heads that join or
    /// leave; an overlap matrix for more than two files.
    #[command(after_help = "Example:\n  kcirc diff zero-shot.json in-context.json --format text")]
    Diff(commands::DiffArgs),
    /// Edit facts (ROME, FT-M, FT-L on one MLP output projection), one request after another, and measure
    /// reliability, generalization and locality after each edit and at the end.
    #[command(
        after_help = "Examples:\n  kcirc edit --model models/SmolLM2-135M-Instruct.Q4_1.gguf --subject France --template 'The capital of {} is the city of' --object Paris --new-object Rome --triples data/country_capital_city.jsonl\n  kcirc data counterfactuals --model M --triples data/country_capital_city.jsonl --count 20 > requests.jsonl\n  kcirc edit --model M --requests requests.jsonl --method ft-m --triples data/lre/*.json"
    )]
    Edit(Box<commands::EditArgs>),
    /// Erase a relation's knowledge by removing the smallest part of its circuit (edges by |effect|) that drops
    /// its held-out Hit@k to near zero, and measure what that costs other relations against random edges.
    #[command(
        after_help = "Example:\n  kcirc erase --model models/SmolLM2-135M-Instruct.Q4_1.gguf --circuit capital.json --triples data/country_capital_city.jsonl --others data/ --format text"
    )]
    Erase(Box<commands::EraseArgs>),
    /// Put the summaries of a sharded batch run (`kcirc discover --shard I/N`) back into the summary one run
    /// prints, byte for byte: one line per relation in the run's order; a relation missing or in two lines is
    /// an error. Or make it from the circuit files of the shards' --out-dir (--out-dir).
    #[command(
        after_help = "Examples:\n  kcirc discover --model M --relations data/ --out-dir circuits/ --shard 1/2 > shard-1.jsonl   # and 2/2, anywhere\n  kcirc merge --relations data/ shard-1.jsonl shard-2.jsonl > summary.jsonl\n  kcirc merge --relations data/ --out-dir circuits/ > summary.jsonl"
    )]
    Merge(commands::MergeArgs),
    /// One self-contained HTML page of a circuit (layers bottom to top, edges by effect, hover for numbers) with
    /// the held-out table and, when given, the faithfulness curve, logit lens, head roles and an edit; or the
    /// circuit alone as a standalone SVG. Opens offline: no fonts, scripts or images from anywhere.
    #[command(
        after_help = "Examples:\n  kcirc report --circuit circuit.json --out report.html\n  kcirc report --circuit circuit.json --curve curve.json --lens lens.json --heads heads.json --out report.html\n  kcirc report --circuit circuit.json --svg circuit.svg --edges 200"
    )]
    Report(Box<commands::ReportArgs>),
    /// Convert data: `kcirc data convert LRE.json > triples.jsonl`.
    Data(commands::DataArgs),
    /// Node, sender, receiver and edge counts of the computation graph (needs only the model's config).
    #[command(after_help = "Example:\n  kcirc graph --model gpt2-medium --json")]
    Graph(commands::GraphArgs),
    /// Shell completions on stdout: `kcirc completions bash > /etc/bash_completion.d/kcirc`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// The man page (roff) on stdout: `kcirc man > kcirc.1`.
    Man,
    /// The JSON Schema of an output on stdout: circuit (the circuit file), report (`kcirc eval`), summary (a
    /// batch run's summary line), edit (`kcirc edit`), erase (`kcirc erase`), curve (`kcirc curve`), lens (`kcirc lens`), heads (`kcirc heads`), diff (`kcirc
    /// diff`), scores (each line of `kcirc discover --scores`).
    Schema {
        #[arg(value_enum)]
        name: SchemaName,
    },
}

/// An error that has its own exit code: gates that failed, each named.
#[derive(Debug)]
pub struct GateFailed(pub Vec<String>);
impl std::fmt::Display for GateFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join("; "))
    }
}
impl std::error::Error for GateFailed {}

fn run(cli: Cli) -> Result<()> {
    match &cli.command {
        Command::Predict(a) => commands::predict(&cli, a),
        Command::Graph(a) => commands::graph(a),
        Command::Discover(a) => commands::discover(&cli, a),
        Command::Select(a) => commands::select(&cli, a),
        Command::Eval(a) => commands::eval(&cli, a),
        Command::Curve(a) => commands::curve(&cli, a),
        Command::Lens(a) => commands::lens(&cli, a),
        Command::Heads(a) => commands::heads(&cli, a),
        Command::Diff(a) => commands::diff(a),
        Command::Data(a) => commands::data(&cli, a),
        Command::Merge(a) => commands::merge(a),
        Command::Edit(a) => commands::edit(&cli, a),
        Command::Erase(a) => commands::erase(&cli, a),
        Command::Report(a) => commands::report(&cli, a),
        Command::Completions { shell } => {
            clap_complete::generate(*shell, &mut Cli::command(), "kcirc", &mut std::io::stdout());
            Ok(())
        }
        Command::Man => {
            clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout())?;
            Ok(())
        }
        Command::Schema { name } => {
            print!(
                "{}",
                match name {
                    SchemaName::Circuit => include_str!("../docs/schema/circuit.schema.json"),
                    SchemaName::Report => include_str!("../docs/schema/report.schema.json"),
                    SchemaName::Summary => include_str!("../docs/schema/summary.schema.json"),
                    SchemaName::Edit => include_str!("../docs/schema/edit.schema.json"),
                    SchemaName::Erase => include_str!("../docs/schema/erase.schema.json"),
                    SchemaName::Curve => include_str!("../docs/schema/curve.schema.json"),
                    SchemaName::Lens => include_str!("../docs/schema/lens.schema.json"),
                    SchemaName::Heads => include_str!("../docs/schema/heads.schema.json"),
                    SchemaName::Diff => include_str!("../docs/schema/diff.schema.json"),
                    SchemaName::Scores => include_str!("../docs/schema/scores.schema.json"),
                }
            );
            Ok(())
        }
    }
}

/// The exit code and the one stderr line of a failed run: 1 for a failed gate, 70 for a bug, 2 for bad input.
fn failure(e: &anyhow::Error) -> (u8, String) {
    if let Some(g) = e.downcast_ref::<GateFailed>() {
        return (1, g.0.iter().map(|f| format!("kcirc: gate failed: {f}")).collect::<Vec<_>>().join("\n"));
    }
    let msg = format!("{e:#}");
    let line = msg.lines().next().unwrap_or("");
    if e.downcast_ref::<kcirc::Error>().is_some_and(kcirc::Error::is_bug) {
        return (70, format!("kcirc: internal error (a bug in kcirc, please report it): {line}"));
    }
    (2, format!("kcirc: error: {line}"))
}

/// A flag error as one line: clap's message and the lines that complete it (possible values, the missing
/// arguments), without the usage block.
fn usage_error(e: &clap::Error) -> String {
    let text = e.to_string();
    let parts: Vec<&str> = text
        .lines()
        .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("tip:"))
        .collect();
    format!("kcirc: {} (kcirc --help)", parts.join(" "))
}

fn main() -> ExitCode {
    use clap::error::ErrorKind;
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) =>
        {
            e.exit()
        }
        Err(e) => {
            eprintln!("{}", usage_error(&e));
            return ExitCode::from(2);
        }
    };
    kcirc::parallel::configure(cli.threads.unwrap_or_else(kcirc::parallel::available));
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let (code, line) = failure(&e);
            eprintln!("{line}");
            ExitCode::from(code)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bad input exits 2, a failed gate 1, a broken invariant inside kcirc 70 and says it is a bug.
    #[test]
    fn exit_codes_tell_bad_input_from_bugs() {
        let input = anyhow::Error::from(kcirc::Error::input("triples.jsonl: line 3: empty object"));
        assert_eq!(failure(&input), (2, "kcirc: error: triples.jsonl: line 3: empty object".into()));
        let bug = anyhow::Error::from(kcirc::Error::bug("blocks.3.attn.hook_result was not recorded by this run"));
        let (code, line) = failure(&bug);
        assert_eq!(code, 70);
        assert!(line.contains("a bug in kcirc") && line.contains("hook_result"), "{line}");
        let tensor = anyhow::Error::from(kcirc::Error::from(candle_core::Error::Msg("shape mismatch".into())));
        assert_eq!(failure(&tensor).0, 70);
        let gates = GateFailed(vec!["faithfulness 0.100 < --min-faithfulness 0.5".into(), "circuit Hit@1 0.2 < --min-hit1 0.3".into()]);
        let (code, lines) = failure(&anyhow::Error::from(gates));
        assert_eq!(code, 1);
        assert_eq!(lines.lines().count(), 2, "every failed gate on its own line: {lines}");
        // An I/O error says its cause once.
        let io = anyhow::Error::from(kcirc::Error::io("x.jsonl", std::io::Error::from(std::io::ErrorKind::NotFound)));
        let line = failure(&io).1;
        assert_eq!(line.matches("not found").count(), 1, "{line}");
    }
}
