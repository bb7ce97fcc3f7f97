//! The `kcirc` binary end to end: outputs, exit codes, and one-line errors on bad input.
mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;

fn kcirc(args: &[&str]) -> Output {
    kcirc_env(args, &[])
}

fn kcirc_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kcirc"));
    c.args(args).arg("--quiet");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Exit code 2, a single `kcirc: error:` line on stderr, no panic, nothing on stdout.
fn assert_input_error(o: &Output, needle: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(2), "stderr: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line expected: {err}");
    assert!(err.contains(needle), "expected {needle:?} in {err}");
    assert!(o.stdout.is_empty());
}

#[test]
fn graph_counts_match_the_reference() {
    for (cfg, edges, nodes) in [("gpt2", 32491, 158), ("gpt2-medium", 231877, 410), ("smollm2-135m", 70651, 302)] {
        let o = kcirc(&["graph", "--model", fixture(&format!("configs/{cfg}")).to_str().unwrap(), "--json"]);
        assert!(o.status.success(), "{}", stderr(&o));
        let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
        assert_eq!(v["edges"], edges, "{cfg}");
        assert_eq!(v["nodes"], nodes, "{cfg}");
    }
}

#[test]
fn graph_reads_gguf_metadata() {
    let o = kcirc(&["graph", "--model", smollm2_path().to_str().unwrap(), "--json"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["edges"], 70651);
    assert_eq!(v["senders"], 301);
    assert_eq!(v["receivers"], 481);
}

#[test]
fn predict_prints_one_sorted_json_object_per_prompt() {
    let m = fixture("gpt2-tiny");
    let o = kcirc(&["predict", "--model", m.to_str().unwrap(), "--prompt", "The capital city of France is", "--prompt", "Hi", "--top-k", "4"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let lines: Vec<serde_json::Value> = stdout(&o).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    let r = reference("gpt2-tiny");
    assert_eq!(lines[0]["prompt"], "The capital city of France is");
    let ids: Vec<u32> = lines[0]["tokens"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
    assert_eq!(ids, r.prompts[0].1);
    let top = lines[0]["top"].as_array().unwrap();
    assert_eq!(top.len(), 4);
    assert_eq!(top[0]["id"], r.json["prompts"][0]["top1_id"]);
    let logits: Vec<f64> = top.iter().map(|t| t["logit"].as_f64().unwrap()).collect();
    assert!(logits.windows(2).all(|w| w[0] >= w[1]), "{logits:?}");
}

fn copy_dir(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn truncated_or_corrupt_safetensors_is_a_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixture("gpt2-tiny"), dir.path());
    let st = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&st).unwrap();
    std::fs::write(&st, &bytes[..bytes.len() / 2]).unwrap();
    assert_input_error(&kcirc(&["predict", "--model", dir.path().to_str().unwrap(), "--prompt", "Hi"]), "bad checkpoint");
    std::fs::write(&st, b"this is not a safetensors file at all").unwrap();
    assert_input_error(&kcirc(&["predict", "--model", dir.path().to_str().unwrap(), "--prompt", "Hi"]), "bad checkpoint");
}

#[test]
fn truncated_gguf_is_a_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(smollm2_path()).unwrap();
    for (name, len) in [("head.gguf", 4096), ("half.gguf", bytes.len() / 2)] {
        let p = dir.path().join(name);
        std::fs::write(&p, &bytes[..len]).unwrap();
        assert_input_error(&kcirc(&["predict", "--model", p.to_str().unwrap(), "--prompt", "Hi"]), "bad checkpoint");
    }
}

#[test]
fn missing_files_and_unknown_architectures_are_one_line_errors() {
    assert_input_error(&kcirc(&["predict", "--model", "/nonexistent/model.gguf", "--prompt", "Hi"]), "no such file");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), r#"{"model_type": "mamba", "architectures": ["MambaForCausalLM"]}"#).unwrap();
    assert_input_error(&kcirc(&["graph", "--model", dir.path().to_str().unwrap()]), "unsupported architecture `mamba`");
    // A folder with a config but no weights can still be graphed, not run.
    let o = kcirc(&["predict", "--model", fixture("configs/gpt2").to_str().unwrap(), "--prompt", "Hi"]);
    assert_input_error(&o, "no *.safetensors");
    assert_input_error(&kcirc(&["predict", "--model", fixture("gpt2-tiny").to_str().unwrap(), "--prompt", "Hi", "--top-k", "0"]), "--top-k");
}

#[test]
fn unreachable_hub_says_so_and_suggests_a_local_path() {
    let cache = tempfile::tempdir().unwrap();
    let home = cache.path().to_str().unwrap();
    // Offline with an empty cache.
    let o = kcirc_env(&["graph", "--model", "gpt2-medium"], &[("HF_HOME", home), ("HF_HUB_OFFLINE", "1")]);
    assert_input_error(&o, "local");
    // Online, but the endpoint refuses connections.
    let o = kcirc_env(&["graph", "--model", "gpt2"], &[("HF_HOME", home), ("HF_ENDPOINT", "http://127.0.0.1:9")]);
    assert_input_error(&o, "hub");
}

#[test]
fn hub_cache_is_used_offline() {
    // A model already in the hub cache (hub layout: models--org--name/snapshots/<rev>/ + refs/main) resolves offline.
    let cache = tempfile::tempdir().unwrap();
    let repo = cache.path().join("hub/models--openai-community--gpt2");
    let snap = repo.join("snapshots/0123456789abcdef");
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), "0123456789abcdef").unwrap();
    std::fs::copy(fixture("configs/gpt2/config.json"), snap.join("config.json")).unwrap();
    let o = kcirc_env(&["graph", "--model", "gpt2", "--json"], &[("HF_HOME", cache.path().to_str().unwrap()), ("HF_HUB_OFFLINE", "1")]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("\"edges\":32491"));
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

/// Discovery on the tiny random GPT-2 (it knows no facts, so `--no-filter`), zero ablation, logit metric.
fn tiny_discover(dir: &Path, out: &str, extra: &[&str]) -> Output {
    let model = fixture("gpt2-tiny");
    let triples = root().join("data/country_capital_city.jsonl");
    let mut args = vec![
        "discover", "--model", model.to_str().unwrap(), "--triples", triples.to_str().unwrap(), "--examples", "3",
        "--threshold", "0.3", "--no-filter", "--random", "2", "--out",
    ];
    let out = dir.join(out);
    args.push(out.to_str().unwrap());
    // ACDC with zero ablation unless the caller says otherwise.
    if !extra.contains(&"--method") {
        args.extend_from_slice(&["--method", "acdc"]);
    }
    if !extra.contains(&"--ablation") {
        args.extend_from_slice(&["--ablation", "zero"]);
    }
    args.extend_from_slice(extra);
    kcirc(&args)
}

#[test]
fn discover_writes_a_circuit_that_eval_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let o = tiny_discover(dir.path(), "c.json", &["--dot", dir.path().join("c.dot").to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let c: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.path().join("c.json")).unwrap()).unwrap();
    for key in ["format", "model", "relation", "method", "ablation", "metric", "threshold", "seed", "examples", "metric_full", "metric_circuit", "edges", "nodes", "n_edges_total", "eval"] {
        assert!(c.get(key).is_some(), "missing {key}");
    }
    assert_eq!(c["relation"], "country_capital_city");
    assert_eq!(c["examples"].as_array().unwrap().len(), 3);
    let n_edges = c["edges"].as_array().unwrap().len();
    assert!(n_edges > 0 && n_edges < 190, "{n_edges}");
    assert!(std::fs::read_to_string(dir.path().join("c.dot")).unwrap().starts_with("digraph"));
    // eval on the same relation agrees with discover's own held-out report.
    let model = fixture("gpt2-tiny");
    let triples = root().join("data/country_capital_city.jsonl");
    let o = kcirc(&["eval", "--model", model.to_str().unwrap(), "--circuit", dir.path().join("c.json").to_str().unwrap(), "--triples", triples.to_str().unwrap(), "--no-filter", "--random", "2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let r: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(r, c["eval"], "eval and discover's held-out report differ");
    for key in ["model", "relation", "k", "n_triples", "full", "circuit", "random", "faithfulness", "n_edges", "n_edges_total", "n_nodes"] {
        assert!(r.get(key).is_some(), "missing {key}");
    }
    assert_eq!(r["n_skipped_discovery"], 3);
    // Gates: an impossible one fails with exit 1 and says which.
    let o = kcirc(&["eval", "--model", model.to_str().unwrap(), "--circuit", dir.path().join("c.json").to_str().unwrap(), "--triples", triples.to_str().unwrap(), "--no-filter", "--random", "1", "--min-faithfulness", "1000"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("faithfulness"), "{}", stderr(&o));
    let o = kcirc(&["eval", "--model", model.to_str().unwrap(), "--circuit", dir.path().join("c.json").to_str().unwrap(), "--triples", triples.to_str().unwrap(), "--no-filter", "--random", "1", "--min-faithfulness", "-1000"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

#[test]
fn discover_is_byte_identical_whatever_the_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    let a = tiny_discover(dir.path(), "a.json", &["--threads", "1", "--ablation", "mean"]);
    let b = tiny_discover(dir.path(), "b.json", &["--threads", "2", "--ablation", "mean"]);
    assert!(a.status.success() && b.status.success(), "{}", stderr(&a));
    assert_eq!(std::fs::read(dir.path().join("a.json")).unwrap(), std::fs::read(dir.path().join("b.json")).unwrap());
}

#[test]
fn bad_discovery_flags_fail_with_exit_2_and_no_output_file() {
    let dir = tempfile::tempdir().unwrap();
    for (flags, needle) in [
        (vec!["--threshold", "-1"], "threshold"),
        (vec!["--threshold", "NaN"], "threshold"),
        (vec!["--examples", "0"], "examples"),
        (vec!["--metric", "bogus"], "bogus"),
        (vec!["--method", "bogus"], "bogus"),
    ] {
        let o = tiny_discover(dir.path(), "x.json", &flags);
        assert_eq!(o.status.code(), Some(2), "{flags:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(needle), "{flags:?}: {}", stderr(&o));
        assert!(!dir.path().join("x.json").exists());
    }
}

#[test]
fn bad_triples_fail_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let model = fixture("gpt2-tiny");
    let m = model.to_str().unwrap();
    let good = r#"{"subject":"France","relation":"capital","object":"Paris","template":"The capital of {} is"}"#;
    let cases = [
        (format!("{good}\n{{not json\n"), "line 2"),
        (format!("{good}\n{{\"subject\":\"Peru\",\"object\":\"Lima\"}}\n"), "line 2"),
        (format!("{good}\n{{\"subject\":\"Peru\",\"object\":\"Lima\",\"template\":\"no placeholder\"}}\n"), "has no `{}`"),
        (String::new(), "no triples"),
        (format!("{good}\n{{\"subject\":\"Peru\",\"object\":\"\",\"template\":\"The capital of {{}} is\"}}\n"), "empty object"),
    ];
    for (i, (text, needle)) in cases.iter().enumerate() {
        let f = write(dir.path(), &format!("t{i}.jsonl"), text);
        let out = dir.path().join(format!("o{i}.json"));
        let o = kcirc(&["discover", "--model", m, "--triples", &f, "--no-filter", "--examples", "1", "--out", out.to_str().unwrap()]);
        assert_input_error(&o, needle);
        assert!(!out.exists());
    }
}

#[test]
fn data_convert_turns_lre_into_json_lines() {
    let lre = r#"{"name": "country capital city", "prompt_templates": ["The capital city of {} is"], "prompt_templates_zs": ["The capital of {} is the city of"], "properties": {}, "samples": [{"subject": "France", "object": "Paris"}, {"subject": "Peru", "object": "Lima"}]}"#;
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "r.json", lre);
    let o = kcirc(&["data", "convert", &f]);
    assert!(o.status.success(), "{}", stderr(&o));
    let lines: Vec<serde_json::Value> = stdout(&o).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["template"], "The capital of {} is the city of");
    assert_eq!(lines[1]["subject"], "Peru");
    assert_eq!(lines[1]["relation"], "country_capital_city");
}

/// On the real model: a circuit found by exact ablation (hybrid: EAP-IG candidates, then ACDC), evaluated again
/// from its file, reproduces the metric the run reported.
#[test]
fn smollm2_circuit_file_reproduces_its_metric() {
    use kcirc::discover::setup::{prepare, Settings};
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("c.json");
    let triples = root().join("data/country_capital_city.jsonl");
    let model_path = smollm2_path();
    let o = kcirc(&[
        "discover", "--model", model_path.to_str().unwrap(), "--triples", triples.to_str().unwrap(), "--method", "hybrid",
        "--candidates", "300", "--examples", "4", "--ablation", "mean", "--threshold", "0.1", "--no-eval", "--out", out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let file = kcirc::circuit::CircuitFile::read(&out).unwrap();
    assert_eq!(file.method, "hybrid");
    assert!(file.n_edges > 0 && file.n_edges <= 300, "{}", file.n_edges);
    let (model, tok) = smollm2();
    let rel = kcirc::data::read(&triples).unwrap();
    let s = Settings { examples: 4, ablation: kcirc::intervene::Ablation::Mean, ..Default::default() };
    let prep = prepare(&model, &tok, &rel, &s).unwrap();
    assert_eq!(prep.discovery.iter().map(|e| e.triple.clone()).collect::<Vec<_>>(), file.examples);
    let task = kcirc::discover::Task::new(&model, prep.discovery, s.ablation, None, s.metric).unwrap();
    let removed = file.removed(&task.graph, &model.cfg).unwrap();
    let again = task.score(&removed).unwrap();
    assert!((again - file.metric_circuit).abs() < 1e-4, "file says {}, evaluated again {again}", file.metric_circuit);
}
