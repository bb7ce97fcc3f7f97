//! Batch runs across processes and machines: `discover --shard I/N` runs a deterministic share of the relations,
//! `kcirc merge` makes the summary one run prints (byte for byte), `--resume` finishes a killed run without
//! discovering its completed relations again. On the tiny random GPT-2 with three small relations.
mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::SystemTime;

use common::*;
use kcirc::batch::Shard;

const RELATIONS: [&str; 3] = ["country_capital_city", "country_currency", "country_language"];

fn kcirc(args: &[&str], quiet: bool) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kcirc"));
    c.args(args);
    if quiet {
        c.arg("--quiet");
    }
    c.output().unwrap()
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn ok(o: &Output) -> String {
    assert!(o.status.success(), "exit {:?}: {}", o.status.code(), err(o));
    out(o)
}

/// Exit 2 with one `kcirc: error:` line containing `needle`, nothing on stdout.
fn refused(o: &Output, needle: &str) {
    assert_eq!(o.status.code(), Some(2), "{}", err(o));
    assert_eq!(err(o).trim().lines().count(), 1, "{}", err(o));
    assert!(err(o).contains(needle), "expected {needle:?} in {}", err(o));
    assert!(o.stdout.is_empty(), "{}", out(o));
}

/// A folder with the three relations' files (and `extra`: name, content).
fn relations(dir: &Path, extra: &[(&str, &str)]) -> PathBuf {
    let rel = dir.join("relations");
    std::fs::create_dir_all(&rel).unwrap();
    for r in RELATIONS {
        std::fs::copy(root().join(format!("data/{r}.jsonl")), rel.join(format!("{r}.jsonl"))).unwrap();
    }
    for (name, text) in extra {
        std::fs::write(rel.join(name), text).unwrap();
    }
    rel
}

/// `kcirc discover` over the folder `rel` into `out_dir`, with `extra` flags (fast settings: EAP, 10 edges, 3
/// discovery facts, one random circuit).
fn batch(rel: &Path, out_dir: &Path, extra: &[&str], quiet: bool) -> Output {
    let model = fixture("gpt2-tiny");
    let mut args = vec!["discover", "--model", model.to_str().unwrap(), "--relations", rel.to_str().unwrap()];
    args.extend_from_slice(&["--method", "eap", "--top-n", "10", "--examples", "3", "--no-filter", "--random", "1"]);
    args.extend_from_slice(&["--scores", "--dot", "--svg", "--out-dir", out_dir.to_str().unwrap()]);
    args.extend_from_slice(extra);
    kcirc(&args, quiet)
}

fn merge(rel: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["merge", "--relations", rel.to_str().unwrap()];
    args.extend_from_slice(extra);
    kcirc(&args, true)
}

/// Every file of a folder: its bytes and modification time.
fn snapshot(dir: &Path) -> BTreeMap<String, (Vec<u8>, SystemTime)> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_str().unwrap().to_string();
            (name, (std::fs::read(&p).unwrap(), std::fs::metadata(&p).unwrap().modified().unwrap()))
        })
        .collect()
}

fn relations_of(summary: &str) -> Vec<String> {
    summary.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["relation"].as_str().unwrap_or("").to_string()).collect()
}

#[test]
fn shards_pick_every_relation_once_in_order() {
    for n in 1..6 {
        for len in 0..12 {
            let all: Vec<usize> = (0..len).collect();
            let mut seen: Vec<usize> = (1..=n).flat_map(|i| Shard { index: i, count: n }.pick(&all)).collect();
            for i in 1..=n {
                let mine = Shard { index: i, count: n }.pick(&all);
                assert!(mine.windows(2).all(|w| w[0] < w[1]), "{mine:?}");
                assert!(mine.iter().all(|x| x % n == i - 1), "shard {i}/{n}: {mine:?}");
            }
            seen.sort();
            assert_eq!(seen, all, "{n} shards of {len}");
        }
    }
    assert_eq!("2/3".parse::<Shard>().unwrap(), Shard { index: 2, count: 3 });
    for bad in ["0/2", "3/2", "x/y", "1/0", "2", "1/2/3", "-1/2", ""] {
        assert!(bad.parse::<Shard>().is_err_and(|e| !e.is_bug()), "{bad}");
    }
}

#[test]
fn two_shards_and_merge_give_one_runs_summary_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let rel = relations(dir.path(), &[]);
    let out_dir = dir.path().join("circuits");
    let one = ok(&batch(&rel, &out_dir, &[], true));
    assert_eq!(relations_of(&one), RELATIONS);
    let whole = snapshot(&out_dir);
    assert_eq!(whole.len(), 12, "circuit, DOT, SVG and scores per relation: {:?}", whole.keys());
    std::fs::remove_dir_all(&out_dir).unwrap();

    // Each shard as on its own machine: the same flags and folder name, a share of the relations each.
    let s1 = ok(&batch(&rel, &out_dir, &["--shard", "1/2"], true));
    let s2 = ok(&batch(&rel, &out_dir, &["--shard", "2/2"], true));
    assert_eq!(relations_of(&s1), ["country_capital_city", "country_language"]);
    assert_eq!(relations_of(&s2), ["country_currency"]);
    let (p1, p2) = (dir.path().join("shard-1.jsonl"), dir.path().join("shard-2.jsonl"));
    std::fs::write(&p1, &s1).unwrap();
    std::fs::write(&p2, &s2).unwrap();
    let merged = ok(&merge(&rel, &[p2.to_str().unwrap(), p1.to_str().unwrap()]));
    assert_eq!(merged, one, "merged summaries differ from one run's");
    let files: BTreeMap<_, _> = snapshot(&out_dir).into_iter().map(|(k, (b, _))| (k, b)).collect();
    assert_eq!(files, whole.into_iter().map(|(k, (b, _))| (k, b)).collect::<BTreeMap<_, _>>(), "shard files differ");
    // The same summary from the circuit files.
    assert_eq!(ok(&merge(&rel, &["--out-dir", out_dir.to_str().unwrap()])), one);

    // A shard missing, a shard given twice, a summary in another format, a circuit file missing.
    refused(&merge(&rel, &[p1.to_str().unwrap()]), "1 of 3 relations have no summary line: `country_currency`");
    refused(&merge(&rel, &[p1.to_str().unwrap(), p2.to_str().unwrap(), p1.to_str().unwrap()]), "in two summary lines");
    let tsv = dir.path().join("shard.tsv");
    std::fs::write(&tsv, "relation\tstatus\n").unwrap();
    refused(&merge(&rel, &[tsv.to_str().unwrap()]), "line 1: not a summary line");
    std::fs::remove_file(out_dir.join("country_language.json")).unwrap();
    refused(&merge(&rel, &["--out-dir", out_dir.to_str().unwrap()]), "no circuit file for relation `country_language`");
    // A summary line of a relation the merge was not given.
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::copy(rel.join("country_currency.jsonl"), other.join("country_currency.jsonl")).unwrap();
    refused(&merge(&other, &[p1.to_str().unwrap()]), "relation `country_capital_city` is not one of the relation files");
}

#[test]
fn failed_relations_keep_their_lines_through_shards_and_merge() {
    let dir = tempfile::tempdir().unwrap();
    let rel = relations(dir.path(), &[("a_bad.jsonl", "{oops\n")]);
    let out_dir = dir.path().join("circuits");
    let one = batch(&rel, &out_dir, &[], true);
    assert_eq!(one.status.code(), Some(2), "a relation failed: {}", err(&one));
    let one = out(&one);
    assert_eq!(relations_of(&one), ["", "country_capital_city", "country_currency", "country_language"]);
    let mut paths = vec![];
    for i in 1..=3 {
        let s = batch(&rel, &out_dir, &["--shard", &format!("{i}/3")], true);
        assert_eq!(s.status.code(), Some(if i == 1 { 2 } else { 0 }), "{}", err(&s));
        let p = dir.path().join(format!("s{i}.jsonl"));
        std::fs::write(&p, out(&s)).unwrap();
        paths.push(p.to_str().unwrap().to_string());
    }
    let args: Vec<&str> = paths.iter().rev().map(String::as_str).collect();
    let merged = merge(&rel, &args);
    assert_eq!(merged.status.code(), Some(2), "the merged run has a failed relation too: {}", err(&merged));
    assert_eq!(out(&merged), one);
}

#[test]
fn resume_after_a_killed_run_discovers_only_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let rel = relations(dir.path(), &[]);
    let out_dir = dir.path().join("circuits");
    let one = ok(&batch(&rel, &out_dir, &[], true));
    let before = snapshot(&out_dir);

    // The run "killed": currency's circuit file never renamed into place, language's cut short (by something
    // other than kcirc, which writes atomically), a temporary file left behind, capital's DOT and SVG pictures lost.
    std::fs::remove_file(out_dir.join("country_currency.json")).unwrap();
    let cut = &before["country_language.json"].0[..100];
    std::fs::write(out_dir.join("country_language.json"), cut).unwrap();
    std::fs::write(out_dir.join(".country_capital_city.json.tmp-12345"), "{\"format\": 2, \"mod").unwrap();
    std::fs::remove_file(out_dir.join("country_capital_city.dot")).unwrap();
    std::fs::remove_file(out_dir.join("country_capital_city.svg")).unwrap();

    let resumed = batch(&rel, &out_dir, &["--resume"], false);
    assert_eq!(ok(&resumed), one, "the resumed run's summary differs from the full run's");
    let e = err(&resumed);
    assert!(e.contains("resume: 1 of 3 relations complete"), "{e}");
    assert!(e.contains("country_capital_city: complete in"), "{e}");
    assert!(!e.contains("country_capital_city: kept"), "capital discovered again: {e}");
    assert!(e.contains("country_currency: kept") && e.contains("country_language: kept"), "{e}");
    assert!(e.contains("country_language.json: not JSON"), "the cut file is named: {e}");
    let after = snapshot(&out_dir);
    for (name, (bytes, modified)) in &before {
        assert_eq!(&after[name].0, bytes, "{name}: not the full run's bytes");
        let redrawn = ["country_capital_city.dot", "country_capital_city.svg"];
        if name.starts_with("country_capital_city.") && !redrawn.contains(&name.as_str()) {
            assert_eq!(&after[name].1, modified, "{name} was written again");
        }
    }

    // Resuming a finished run discovers nothing and writes nothing.
    let again = snapshot(&out_dir);
    assert_eq!(ok(&batch(&rel, &out_dir, &["--resume"], true)), one);
    assert_eq!(snapshot(&out_dir), again);
    // Other settings are refused, naming the difference, before anything is written.
    refused(&batch(&rel, &out_dir, &["--resume", "--seed", "1"], true), "made by another run (seed 0 there, 1 here)");
    refused(&batch(&rel, &out_dir, &["--resume", "--no-eval"], true), "it has a held-out report, this run evaluates nothing");
    assert_eq!(snapshot(&out_dir), again);
}

#[test]
fn bad_shard_specs_and_flags_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let rel = relations(dir.path(), &[]);
    let out_dir = dir.path().join("circuits");
    for (spec, why) in [
        ("0/2", "I must be between 1 and 2"),
        ("3/2", "I must be between 1 and 2"),
        ("x/y", "whole numbers"),
        ("1/0", "N must be at least 1"),
        ("2", "expected I/N"),
    ] {
        let o = batch(&rel, &out_dir, &["--shard", spec], true);
        refused(&o, why);
        assert!(err(&o).contains(&format!("'{spec}' for '--shard")), "{}", err(&o));
    }
    assert!(!out_dir.exists());
    let model = fixture("gpt2-tiny");
    let m = model.to_str().unwrap();
    let r = rel.to_str().unwrap();
    refused(&kcirc(&["discover", "--model", m, "--relations", r, "--shard", "1/2"], true), "--out-dir");
    refused(&kcirc(&["discover", "--model", m, "--relations", r, "--resume"], true), "--out-dir");
    refused(&kcirc(&["merge", "--relations", r], true), "SUMMARY");
    // More shards than relations: the extra ones have nothing to do.
    let o = batch(&rel, &out_dir, &["--shard", "4/4"], true);
    assert_eq!(ok(&o), "");
}

/// `--resume` over circuits whose mean ablation took reference facts (the tiny random GPT-2 "knows" about half
/// the facts at k = 25,000; the others are reference facts): the same run resumes, one that takes its means over
/// the discovery facts alone (`--no-reference`) or over the corpus is refused, automatic split or not.
#[test]
fn resume_refuses_a_run_with_other_reference_facts() {
    let dir = tempfile::tempdir().unwrap();
    let rel = relations(dir.path(), &[]);
    let out_dir = dir.path().join("circuits");
    let config = dir.path().join("k.json");
    std::fs::write(&config, r#"{"k": 25000, "method": "eap", "top_n": 10, "ablation": "mean", "mean_over": "relation"}"#).unwrap();
    let model = fixture("gpt2-tiny");
    let run = |extra: &[&str]| {
        let mut args = vec!["discover", "--model", model.to_str().unwrap(), "--relations", rel.to_str().unwrap()];
        args.extend_from_slice(&["--config", config.to_str().unwrap(), "--random", "1", "--out-dir", out_dir.to_str().unwrap()]);
        args.extend_from_slice(extra);
        kcirc(&args, true)
    };
    let one = ok(&run(&[]));
    let file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("country_capital_city.json")).unwrap()).unwrap();
    assert!(!file["reference"].as_array().unwrap().is_empty());
    assert_eq!(ok(&run(&["--resume"])), one);
    let other_means = r#"mean_over "relation" there, "discovery" here"#;
    refused(&run(&["--resume", "--no-reference"]), other_means);
    refused(&run(&["--resume", "--no-reference", "--examples", &file["n_examples"].to_string()]), other_means);
    refused(&run(&["--resume", "--mean-over", "corpus"]), r#"mean_over "relation" there, "corpus" here"#);
}
