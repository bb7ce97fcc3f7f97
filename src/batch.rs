//! Batch runs: many relations, one circuit file each in one folder, and a JSON Lines summary with one line per
//! relation. Spread over processes or machines with the tools people have (GNU parallel, a Slurm job array):
//! `--shard I/N` runs a deterministic share of the relation list, `--resume` skips relations whose circuit file
//! is complete, and [`merge`] puts the shards' summaries back into the summary one run prints, byte for byte.
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::circuit::{to_dot, write_atomic, CircuitFile};
use crate::data::Relation;
use crate::eval::EvalOptions;
use crate::intervene::Ablation;
use crate::model::Model;
use crate::pipeline::{discover, kept_line, write, Outputs, Settings};
use crate::progress::Progress;
use crate::scores::ScoresFile;
use crate::split::MeanOver;
use crate::tokenizer::Tokenizer;
use crate::{Error, Result};

/// The relation files of a batch run in the order it runs them and prints their lines: every file of
/// `triples` as given, then the relation files (`*.json`, `*.jsonl`) of `dir`, sorted by path. Shards split
/// this list, and [`merge`] restores it.
pub fn relation_files(triples: &[PathBuf], dir: Option<&Path>) -> Result<Vec<PathBuf>> {
    let mut files = triples.to_vec();
    if let Some(dir) = dir {
        let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| Error::io(dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json" || x == "jsonl"))
            .collect();
        found.sort();
        if found.is_empty() {
            return Err(Error::input(format!("{}: no relation files (*.json, *.jsonl)", dir.display())));
        }
        files.extend(found);
    }
    Ok(files)
}

/// One share of a batch run (`--shard I/N`, `1 ≤ I ≤ N`): the relation files at positions `I−1`, `I−1+N`,
/// `I−1+2N`, … of the run's list ([`relation_files`]). Round-robin rather than contiguous blocks, so that
/// relations of similar size (neighbours in sorted order) spread over the shards. Every shard given the same
/// flags computes the same list, so the N shards cover every relation exactly once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// 1-based.
    pub index: usize,
    pub count: usize,
}

impl FromStr for Shard {
    type Err = Error;

    /// `I/N`; the messages say what is wrong without repeating the value (the command line adds it).
    fn from_str(s: &str) -> Result<Shard> {
        let (i, n) = s.split_once('/').ok_or_else(|| Error::input("expected I/N (share I of N), e.g. 1/4"))?;
        let (Ok(index), Ok(count)) = (i.parse::<usize>(), n.parse::<usize>()) else {
            return Err(Error::input("I and N must be whole numbers, e.g. 1/4"));
        };
        if count == 0 {
            return Err(Error::input("N must be at least 1"));
        }
        if index == 0 || index > count {
            return Err(Error::input(format!("I must be between 1 and {count} (shards are numbered from 1)")));
        }
        Ok(Shard { index, count })
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl Shard {
    /// This shard's items of `all`, in their order.
    pub fn pick<T: Clone>(&self, all: &[T]) -> Vec<T> {
        all.iter().skip(self.index - 1).step_by(self.count).cloned().collect()
    }
}

/// One relation's line in a batch run's JSON Lines summary (stdout of `kcirc discover --out-dir`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SummaryLine {
    Done {
        relation: String,
        circuit: PathBuf,
        n_edges: usize,
        n_edges_total: usize,
        n_triples: Option<usize>,
        full_hit_at_k: Option<f64>,
        circuit_hit_at_k: Option<f64>,
        random_hit_at_k: Option<f64>,
        faithfulness: Option<f64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        scores: Option<PathBuf>,
    },
    Failed {
        file: PathBuf,
        error: String,
    },
}

impl SummaryLine {
    /// The line of a relation whose circuit `file` went to `out`. Every number comes from the file (its
    /// held-out report, `eval`), so the line printed right after a discovery and the one made later from the
    /// file on disk (`--resume`, `kcirc merge --out-dir`) are the same bytes.
    pub fn done(file: &CircuitFile, out: &Outputs) -> SummaryLine {
        let eval = file.eval.as_ref();
        let at = |path: &[&str]| eval.and_then(|v| path.iter().try_fold(v, |v, k| v.get(*k)));
        let num = |path: &[&str]| at(path).and_then(Value::as_f64);
        SummaryLine::Done {
            relation: file.run.relation.clone(),
            circuit: out.circuit.clone().unwrap_or_default(),
            n_edges: file.n_edges,
            n_edges_total: file.n_edges_total,
            n_triples: at(&["n_triples"]).and_then(Value::as_u64).map(|n| n as usize),
            full_hit_at_k: num(&["full", "hit_at_k"]),
            circuit_hit_at_k: num(&["circuit", "hit_at_k"]),
            random_hit_at_k: num(&["random", "mean", "hit_at_k"]),
            faithfulness: num(&["faithfulness"]),
            scores: out.scores.clone(),
        }
    }

    /// A row of the batch table printed at the end.
    pub fn table_row(&self) -> String {
        let num = |v: Option<f64>| v.map_or("-".to_string(), |x| format!("{x:.3}"));
        match self {
            SummaryLine::Done {
                relation, n_edges, n_edges_total, full_hit_at_k, circuit_hit_at_k, random_hit_at_k, faithfulness, ..
            } => format!(
                "{:<30} {:>6} {:>8.2}% {:>8} {:>8} {:>8} {:>9}",
                relation,
                n_edges,
                100.0 * *n_edges as f64 / (*n_edges_total).max(1) as f64,
                num(*full_hit_at_k),
                num(*circuit_hit_at_k),
                num(*random_hit_at_k),
                num(*faithfulness)
            ),
            SummaryLine::Failed { file, error } => {
                format!("{:<30} failed: {error}", file.file_stem().and_then(|x| x.to_str()).unwrap_or("?"))
            }
        }
    }

    /// The header of the batch table.
    pub const TABLE_HEADER: &'static str = "relation                       edges    %edges  full@10  circ@10  rand@10  faithful";

    /// The header of the tab-separated summary ([`SummaryLine::tsv_row`]).
    pub const TSV_HEADER: &'static str =
        "relation\tstatus\tcircuit\tn_edges\tn_edges_total\tn_triples\tfull_hit_at_k\tcircuit_hit_at_k\trandom_hit_at_k\tfaithfulness\terror";

    /// The line as tab-separated values (empty fields where a value does not apply; tabs in an error become
    /// spaces).
    pub fn tsv_row(&self) -> String {
        let num = |v: &Option<f64>| v.map(|x| x.to_string()).unwrap_or_default();
        match self {
            SummaryLine::Done {
                relation,
                circuit,
                n_edges,
                n_edges_total,
                n_triples,
                full_hit_at_k,
                circuit_hit_at_k,
                random_hit_at_k,
                faithfulness,
                ..
            } => {
                format!(
                    "{relation}\tok\t{}\t{n_edges}\t{n_edges_total}\t{}\t{}\t{}\t{}\t{}\t",
                    circuit.display(),
                    n_triples.map(|n| n.to_string()).unwrap_or_default(),
                    num(full_hit_at_k),
                    num(circuit_hit_at_k),
                    num(random_hit_at_k),
                    num(faithfulness)
                )
            }
            SummaryLine::Failed { file, error } => {
                let name = file.file_stem().and_then(|x| x.to_str()).unwrap_or("?");
                format!("{name}\tfailed\t\t\t\t\t\t\t\t\t{}", error.replace('\t', " "))
            }
        }
    }
}

/// A batch run's outputs: one circuit per relation in `out_dir` (`<relation>.json`, and `.dot` and
/// `.svg` and `.scores.jsonl` when asked for).
#[derive(Debug, Clone)]
pub struct BatchOutputs {
    pub out_dir: PathBuf,
    pub dot: bool,
    pub svg: bool,
    pub scores: bool,
    /// Keep the relations whose circuit file in `out_dir` is complete and was made by the same run: their
    /// summary lines come from the files, and they are not discovered again (`--resume`).
    pub resume: bool,
}

impl BatchOutputs {
    /// Fails when the output folder is there but is not a folder (it is made, parents too, when missing).
    pub fn check(&self) -> Result<()> {
        if self.out_dir.exists() && !self.out_dir.is_dir() {
            return Err(Error::input(format!("{}: the output folder is a file", self.out_dir.display())));
        }
        Ok(())
    }

    /// Where `relation`'s files go.
    pub fn of(&self, relation: &str) -> Outputs {
        let at = |ext: &str| self.out_dir.join(format!("{relation}{ext}"));
        Outputs {
            circuit: Some(at(".json")),
            dot: self.dot.then(|| at(".dot")),
            svg: self.svg.then(|| at(".svg")),
            scores: self.scores.then(|| at(".scores.jsonl")),
        }
    }
}

/// Every relation file read, refusing two files that hold the same relation: their circuits would have one
/// name (`<relation>.json`) and their summary lines one key.
fn read_distinct(files: &[PathBuf]) -> Result<Vec<Result<Relation>>> {
    let relations: Vec<Result<Relation>> = files.iter().map(|f| crate::data::read(f)).collect();
    let mut seen: std::collections::HashMap<&str, &Path> = std::collections::HashMap::new();
    for (f, r) in files.iter().zip(&relations) {
        if let Ok(r) = r {
            if let Some(first) = seen.insert(&r.name, f) {
                return Err(Error::input(format!(
                    "{} and {} both hold relation `{}`: one circuit file and one summary line per relation",
                    first.display(),
                    f.display(),
                    r.name
                )));
            }
        }
    }
    Ok(relations)
}

/// Discovers every relation of `files` into `outputs.out_dir`. A relation that fails on its input (a bad file,
/// too few known facts) is reported in its summary line and the others go on; `on_line` sees each line as its
/// relation ends. With `outputs.resume`, a relation whose circuit file is complete ([`prior_circuit`]) is not
/// discovered again and its line comes from that file. Returns every line; errors when the output folder
/// cannot be made, when two files hold one relation, when `--resume` finds a circuit file of another run, or
/// on a bug.
#[allow(clippy::too_many_arguments)]
pub fn discover_batch(
    model: &Model,
    tok: &Tokenizer,
    model_name: &str,
    files: &[PathBuf],
    settings: &Settings,
    eval: Option<&EvalOptions>,
    outputs: &BatchOutputs,
    progress: &dyn Progress,
    on_line: &mut dyn FnMut(&SummaryLine),
) -> Result<Vec<SummaryLine>> {
    outputs.check()?;
    let relations = read_distinct(files)?;
    // Every resume decision is taken before anything runs, so a file of another run stops the batch at once.
    let mut prior = Vec::with_capacity(files.len());
    for r in &relations {
        prior.push(match (outputs.resume, r) {
            (true, Ok(rel)) => prior_circuit(model, tok, model_name, rel, settings, eval, &outputs.of(&rel.name), progress)?,
            _ => None,
        });
    }
    if outputs.resume {
        let done = prior.iter().filter(|p| p.is_some()).count();
        progress.info(&format!(
            "resume: {done} of {} relations complete in {}, {} to discover",
            files.len(),
            outputs.out_dir.display(),
            files.len() - done
        ));
    }
    std::fs::create_dir_all(&outputs.out_dir).map_err(|e| Error::io(&outputs.out_dir, e))?;
    let mut lines = vec![];
    for ((f, relation), prior) in files.iter().zip(relations).zip(prior) {
        let result = relation.and_then(|relation| {
            let out = outputs.of(&relation.name);
            if let Some(file) = prior {
                // Pictures lost with the killed run are drawn again from the complete circuit file.
                if let Some(dot) = out.dot.as_ref().filter(|p| !p.exists()) {
                    write_atomic(dot, &to_dot(&file))?;
                }
                if let Some(svg) = out.svg.as_ref().filter(|p| !p.exists()) {
                    write_atomic(svg, &crate::report::circuit_svg(&file, None, &crate::report::Options::default()))?;
                }
                progress.info(&format!(
                    "{}: complete in {}, not discovered again",
                    relation.name,
                    out.circuit.as_ref().map_or(String::new(), |p| p.display().to_string())
                ));
                return Ok(SummaryLine::done(&file, &out));
            }
            let d = discover(model, tok, model_name, &relation, settings, eval, progress)?;
            write(&d, &out)?;
            progress.info(&format!("{}: {}", relation.name, kept_line(&d.file)));
            Ok(SummaryLine::done(&d.file, &out))
        });
        let line = match result {
            Ok(line) => line,
            Err(e) => {
                if e.is_bug() {
                    return Err(e);
                }
                let msg = e.to_string().lines().next().unwrap_or("").to_string();
                SummaryLine::Failed { file: f.clone(), error: msg }
            }
        };
        on_line(&line);
        lines.push(line);
    }
    Ok(lines)
}

/// The circuit file an earlier run left at `out` for `relation`, if it is complete and that run was this one.
/// Complete: it reads as a circuit file (files are written atomically, so only a file cut by something other
/// than kcirc fails here), its scores file (when asked for) reads too, and it holds a held-out report unless
/// this run evaluates nothing. This run: the same model, relation file (path and digest), method and every
/// setting that made the circuit (the kcirc version aside). `Ok(None)`: none there, or an incomplete one (said
/// on `progress`): discover again. A complete file of another run is an error: mixing runs in one summary would
/// be wrong, and overwriting the file would lose it.
#[allow(clippy::too_many_arguments)]
pub fn prior_circuit(
    model: &Model,
    tok: &Tokenizer,
    model_name: &str,
    relation: &Relation,
    settings: &Settings,
    eval: Option<&EvalOptions>,
    out: &Outputs,
    progress: &dyn Progress,
) -> Result<Option<CircuitFile>> {
    let Some(path) = out.circuit.as_ref().filter(|p| p.exists()) else { return Ok(None) };
    let again = |why: String| {
        progress.warn(&format!("{why}: discovering `{}` again", relation.name));
        Ok(None)
    };
    let file = match CircuitFile::read(path) {
        Ok(f) => f,
        Err(e) => return again(e.to_string().lines().next().unwrap_or("").to_string()),
    };
    let mut want = settings.run_info(model_name, model, relation, vec![], vec![]);
    let mut got = file.run.clone();
    got.examples.clear();
    // Which facts the split took (discovery and reference) is compared below, by splitting again.
    if got.ablation == Ablation::Mean && got.mean_over.is_none() {
        // A file from before the choice: its means as `RunInfo::mean_over` reads them, except that a run over
        // the relation's prompts also lists no reference facts when the split finds none (the re-split below
        // compares the facts).
        got.mean_over = Some(match (got.mean_over(), want.mean_over) {
            (MeanOver::Discovery, Some(MeanOver::Relation)) => MeanOver::Relation,
            (m, _) => m,
        });
    }
    let file_reference = std::mem::take(&mut got.reference);
    got.n_reference = want.n_reference;
    got.kcirc_version.clone_from(&want.kcirc_version);
    let mut other_facts = false;
    want.n_examples = match settings.examples {
        Some(n) => n,
        // How many facts an automatic split takes depends on the facts the model knows: split again (one
        // forward pass over the facts) and compare the discovery facts themselves.
        None => match crate::split::prepare(model, tok, relation, &settings.split_rule()) {
            Ok(p) => {
                other_facts = !p.discovery.iter().map(|e| &e.triple).eq(file.run.examples.iter())
                    || !p.reference.iter().map(|e| &e.triple).eq(file_reference.iter());
                p.discovery.len()
            }
            // This run cannot split the relation: discovering again reports why in its summary line.
            Err(_) => return Ok(None),
        },
    };
    let other_run = |what: String| {
        Err(Error::input(format!(
            "{}: made by another run ({what}); --resume only continues the same run: remove the file or use another --out-dir",
            path.display()
        )))
    };
    if got != want {
        let (g, w) = (serde_json::to_value(&got).unwrap_or_default(), serde_json::to_value(&want).unwrap_or_default());
        let keys: std::collections::BTreeSet<&String> = g.as_object().into_iter().chain(w.as_object()).flat_map(|o| o.keys()).collect();
        let diff = keys
            .into_iter()
            .find(|k| g.get(k.as_str()) != w.get(k.as_str()))
            .map(|k| {
                let show = |v: Option<&Value>| v.map_or("none".to_string(), Value::to_string);
                format!("{k} {} there, {} here", show(g.get(k.as_str())), show(w.get(k.as_str())))
            })
            .unwrap_or_else(|| "other settings".into());
        return other_run(diff);
    }
    if other_facts {
        return other_run("other discovery or reference facts".into());
    }
    match (eval, &file.eval) {
        (None, Some(_)) => return other_run("it has a held-out report, this run evaluates nothing".into()),
        (Some(o), Some(v)) if v.pointer("/random/runs").and_then(Value::as_u64) != Some(o.random as u64) => {
            return other_run(format!("{} random circuits there, {} here", v.pointer("/random/runs").unwrap_or(&Value::Null), o.random));
        }
        // A run without held-out facts has no report either: discovering again tells the two apart.
        (Some(_), None) => return again(format!("{}: no held-out report", path.display())),
        _ => {}
    }
    if let Some(scores) = &out.scores {
        if let Err(e) = ScoresFile::read(scores) {
            return again(e.to_string().lines().next().unwrap_or("").to_string());
        }
    }
    Ok(Some(file))
}

/// The summary one batch run over `files` prints, put together from the summaries of its shards (`summaries`:
/// a label for messages, and the JSON Lines text), given in any order: one line per relation file, in the
/// order of `files`. A relation no summary has (a shard missing or unfinished), one that two lines have (a
/// shard given twice, or overlapping shards), or a line of no relation in `files` is an error naming it.
/// Lines match their relation by name (a failed one by its file's path, as given to the shards).
pub fn merge(files: &[PathBuf], summaries: &[(String, String)]) -> Result<Vec<SummaryLine>> {
    let relations = read_distinct(files)?;
    let same_file = |a: &Path, b: &Path| a == b || matches!((std::fs::canonicalize(a), std::fs::canonicalize(b)), (Ok(x), Ok(y)) if x == y);
    let mut slots: Vec<Option<(SummaryLine, String)>> = vec![None; files.len()];
    for (label, text) in summaries {
        for (n, row) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let at = format!("{label}: line {}", n + 1);
            let line: SummaryLine = serde_json::from_str(row)
                .map_err(|e| Error::input(format!("{at}: not a summary line of `kcirc discover` (JSON Lines, --format jsonl): {e}")))?;
            let slot = match &line {
                SummaryLine::Done { relation, .. } => relations
                    .iter()
                    .position(|r| r.as_ref().is_ok_and(|r| &r.name == relation))
                    .ok_or_else(|| Error::input(format!("{at}: relation `{relation}` is not one of the relation files given to merge")))?,
                SummaryLine::Failed { file, .. } => files
                    .iter()
                    .position(|f| same_file(f, file))
                    .ok_or_else(|| Error::input(format!("{at}: {} is not one of the relation files given to merge", file.display())))?,
            };
            if let Some((_, first)) = &slots[slot] {
                return Err(Error::input(format!(
                    "relation `{}` is in two summary lines ({first} and {at}): a shard given twice, or shards of different splits?",
                    name_of(&files[slot], &relations[slot])
                )));
            }
            slots[slot] = Some((line, at));
        }
    }
    let missing: Vec<String> =
        slots.iter().enumerate().filter(|(_, s)| s.is_none()).map(|(i, _)| format!("`{}`", name_of(&files[i], &relations[i]))).collect();
    if !missing.is_empty() {
        return Err(Error::input(format!(
            "{} of {} relations have no summary line: {} (a shard missing or unfinished? rerun it with --resume)",
            missing.len(),
            files.len(),
            missing.join(", ")
        )));
    }
    Ok(slots.into_iter().flatten().map(|(l, _)| l).collect())
}

/// A relation's name for messages: the one its file holds, else the file's stem.
fn name_of(file: &Path, relation: &Result<Relation>) -> String {
    match relation {
        Ok(r) => r.name.clone(),
        Err(_) => file.file_stem().and_then(|s| s.to_str()).unwrap_or("?").to_string(),
    }
}

/// The summary of a batch run over `files` rebuilt from its circuit files in `outputs.out_dir` (the shards'
/// folders gathered in one): each relation's line as `--resume` makes it, naming its scores file when one is
/// there. A relation without a readable circuit file (it failed, or its shard has not finished) or with one
/// made from another version of its relation file is an error.
pub fn summary_of_folder(files: &[PathBuf], outputs: &BatchOutputs) -> Result<Vec<SummaryLine>> {
    if !outputs.out_dir.is_dir() {
        let what = if outputs.out_dir.exists() { "not a folder" } else { "no such folder" };
        return Err(Error::input(format!("{}: {what} (give the folder of the shards' circuit files)", outputs.out_dir.display())));
    }
    let relations = read_distinct(files)?;
    let mut lines = vec![];
    for (f, r) in files.iter().zip(relations) {
        let r = r?;
        let mut out = outputs.of(&r.name);
        let path = out.circuit.clone().unwrap_or_default();
        if !path.exists() {
            return Err(Error::input(format!(
                "{}: no circuit file for relation `{}` (it failed, or its shard has not finished: merge the summaries instead, or rerun the shard with --resume)",
                path.display(),
                r.name
            )));
        }
        let file = CircuitFile::read(&path)?;
        let digest = |s: &Option<crate::data::Source>| s.as_ref().map(|s| s.digest.clone());
        if file.run.relation != r.name || digest(&file.run.triples) != digest(&r.source) {
            return Err(Error::input(format!("{}: not made from {} as it is now", path.display(), f.display())));
        }
        let scores = r.name.clone() + ".scores.jsonl";
        out.scores = Some(outputs.out_dir.join(scores)).filter(|p| p.exists());
        lines.push(SummaryLine::done(&file, &out));
    }
    Ok(lines)
}
