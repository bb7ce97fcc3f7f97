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
    // Qwen2 by brief §1's rule with native grouped-query attention, L layers of H query and K key/value heads:
    // receivers of layer l read 1 + l(H + 1) senders (H + 2K attention ports each), m{l} reads 1 + (l + 1)H + l,
    // logits 1 + L(H + 1); Qwen2.5-0.5B (L 24, H 14, K 2): 74,952 + 4,500 + 361 = 79,813 edges; the fixture
    // (L 2, H 4, K 2): 56 + 15 + 11 = 82.
    for (cfg, edges, nodes) in [
        ("configs/gpt2", 32491, 158),
        ("configs/gpt2-medium", 231877, 410),
        ("configs/smollm2-135m", 70651, 302),
        ("configs/qwen2.5-0.5b", 79813, 362),
        ("qwen2-tiny", 82, 12),
    ] {
        let o = kcirc(&["graph", "--model", fixture(cfg).to_str().unwrap(), "--json"]);
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
    let o =
        kcirc(&["predict", "--model", m.to_str().unwrap(), "--prompt", "The capital city of France is", "--prompt", "Hi", "--top-k", "4"]);
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
    assert_input_error(
        &kcirc(&["predict", "--model", fixture("gpt2-tiny").to_str().unwrap(), "--prompt", "Hi", "--top-k", "0"]),
        "--top-k",
    );
}

/// A config with a zero size names it (it printed the whole config struct); a context of 0 is one of them.
#[test]
fn zero_sized_configs_name_the_size() {
    let dir = tempfile::tempdir().unwrap();
    let base = read_json(&fixture("configs/smollm2-135m/config.json"));
    for (key, needle) in
        [("num_attention_heads", "query heads: 0"), ("num_hidden_layers", "layers: 0"), ("max_position_embeddings", "context positions: 0")]
    {
        let mut c = base.clone();
        c[key] = 0.into();
        std::fs::write(dir.path().join("config.json"), c.to_string()).unwrap();
        assert_input_error(&kcirc(&["graph", "--model", dir.path().to_str().unwrap()]), &format!("bad model configuration: {needle}"));
    }
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

/// `kcirc eval` of `circuit` on the tiny random GPT-2 and the capitals (every fact kept).
fn tiny_eval(circuit: &Path, extra: &[&str]) -> Output {
    let model = fixture("gpt2-tiny");
    let triples = root().join("data/country_capital_city.jsonl");
    let mut args = vec!["eval", "--model", model.to_str().unwrap(), "--circuit", circuit.to_str().unwrap()];
    args.extend_from_slice(&["--triples", triples.to_str().unwrap(), "--no-filter"]);
    args.extend_from_slice(extra);
    kcirc(&args)
}

/// Discovery on the tiny random GPT-2 (it knows no facts, so `--no-filter`), zero ablation, logit metric.
fn tiny_discover(dir: &Path, out: &str, extra: &[&str]) -> Output {
    let model = fixture("gpt2-tiny");
    let triples = root().join("data/country_capital_city.jsonl");
    let mut args = vec![
        "discover",
        "--model",
        model.to_str().unwrap(),
        "--triples",
        triples.to_str().unwrap(),
        "--examples",
        "3",
        "--threshold",
        "0.3",
        "--no-filter",
        "--random",
        "2",
        "--out",
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
    // `--dot` without a file name writes beside the circuit; `--svg FILE` where it is told.
    let svg = dir.path().join("picture.svg");
    let o = tiny_discover(dir.path(), "c.json", &["--dot", "--svg", svg.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(std::fs::read_to_string(&svg).unwrap().contains("<svg"));
    assert!(!dir.path().join("c.svg").exists());
    // Beside standard output there is nowhere to write: refused before anything runs.
    let (model, triples) = (fixture("gpt2-tiny"), root().join("data/country_capital_city.jsonl"));
    let o = kcirc(&["discover", "--model", model.to_str().unwrap(), "--triples", triples.to_str().unwrap(), "--svg"]);
    assert_input_error(&o, "--svg without a file name writes beside the circuit");
    let c: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.path().join("c.json")).unwrap()).unwrap();
    for key in [
        "format",
        "model",
        "relation",
        "method",
        "ablation",
        "metric",
        "threshold",
        "seed",
        "examples",
        "metric_full",
        "metric_circuit",
        "edges",
        "nodes",
        "n_edges_total",
        "eval",
    ] {
        assert!(c.get(key).is_some(), "missing {key}");
    }
    assert_eq!(c["relation"], "country_capital_city");
    assert_eq!(c["examples"].as_array().unwrap().len(), 3);
    let n_edges = c["edges"].as_array().unwrap().len();
    assert!(n_edges > 0 && n_edges < 190, "{n_edges}");
    assert!(std::fs::read_to_string(dir.path().join("c.dot")).unwrap().starts_with("digraph"));
    // eval on the same relation agrees with discover's own held-out report.
    let o = tiny_eval(&dir.path().join("c.json"), &["--random", "2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let r: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(r, c["eval"], "eval and discover's held-out report differ");
    for key in ["model", "relation", "k", "n_triples", "full", "circuit", "random", "faithfulness", "n_edges", "n_edges_total", "n_nodes"] {
        assert!(r.get(key).is_some(), "missing {key}");
    }
    assert_eq!(r["n_skipped_discovery"], 3);
    // Gates: an impossible one fails with exit 1 and says which.
    let o = tiny_eval(&dir.path().join("c.json"), &["--random", "1", "--min-faithfulness", "1000"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("faithfulness"), "{}", stderr(&o));
    let o = tiny_eval(&dir.path().join("c.json"), &["--random", "1", "--min-faithfulness", "-1000"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(!stderr(&o).contains("cannot separate"), "{}", stderr(&o));
    // With k at least the number of distinct answers, Hit@k says nothing: the report says so.
    let distinct = r["n_distinct_targets"].as_u64().unwrap();
    assert!(distinct > 10, "{distinct}");
    let k = distinct.to_string();
    let o = tiny_eval(&dir.path().join("c.json"), &["--random", "1", "--k", &k]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains(&format!("has only {distinct} distinct answers")), "{}", stderr(&o));
}

#[test]
fn discover_is_byte_identical_whatever_the_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    let a = tiny_discover(dir.path(), "a.json", &["--threads", "1", "--ablation", "mean"]);
    let b = tiny_discover(dir.path(), "b.json", &["--threads", "2", "--ablation", "mean"]);
    assert!(a.status.success() && b.status.success(), "{}", stderr(&a));
    assert_eq!(std::fs::read(dir.path().join("a.json")).unwrap(), std::fs::read(dir.path().join("b.json")).unwrap());
    // EAP-IG: integration steps spread over the workers, the size search's rounds; its scores and circuit file
    // (sizes searched included) are the same bytes with 1, 2 and 3 workers.
    let read = |name: &str| std::fs::read(dir.path().join(name)).unwrap();
    for threads in ["1", "2", "3"] {
        let scores = dir.path().join(format!("ig{threads}.scores.jsonl"));
        let o = tiny_discover(
            dir.path(),
            &format!("ig{threads}.json"),
            &["--threads", threads, "--method", "eap-ig", "--ablation", "mean", "--scores", scores.to_str().unwrap()],
        );
        assert!(o.status.success(), "{}", stderr(&o));
    }
    for threads in ["2", "3"] {
        assert_eq!(read("ig1.json"), read(&format!("ig{threads}.json")), "{threads} workers");
        assert_eq!(read("ig1.scores.jsonl"), read(&format!("ig{threads}.scores.jsonl")), "{threads} workers");
    }
}

/// Mean ablation over the reference set (the tiny random GPT-2 "knows" about half the capitals at k = 25,000:
/// the others are reference facts): the same seed gives the same bytes, whatever the thread count, and
/// `--no-reference` takes the means over the discovery facts alone.
#[test]
fn reference_set_circuits_are_byte_identical_and_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("k.json");
    std::fs::write(&config, r#"{"k": 25000, "method": "eap", "top_n": 20, "ablation": "mean", "mean_over": "relation"}"#).unwrap();
    let (model, triples) = (fixture("gpt2-tiny"), root().join("data/country_capital_city.jsonl"));
    let run = |out: &str, extra: &[&str]| {
        let out = dir.path().join(out);
        let mut args = vec!["discover", "--model", model.to_str().unwrap(), "--triples", triples.to_str().unwrap()];
        args.extend_from_slice(&["--config", config.to_str().unwrap(), "--examples", "3", "--random", "2", "--out", out.to_str().unwrap()]);
        args.extend_from_slice(extra);
        let o = kcirc(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        std::fs::read(out).unwrap()
    };
    let a = run("a.json", &["--threads", "1"]);
    assert_eq!(a, run("b.json", &["--threads", "2"]));
    let file: serde_json::Value = serde_json::from_slice(&a).unwrap();
    let n_ref = file["reference"].as_array().unwrap().len();
    assert!(n_ref > 0);
    assert_eq!(file["n_reference"], 3 + n_ref);
    assert_eq!(file["eval"]["n_reference"], 3 + n_ref);
    let off_bytes = run("c.json", &["--no-reference"]);
    let off: serde_json::Value = serde_json::from_slice(&off_bytes).unwrap();
    assert!(off.get("reference").is_none());
    assert_eq!(off["n_reference"], 3);
    assert_eq!(off["mean_over"], "discovery");
    // `--mean-over` overrides the preset: `discovery` is `--no-reference`, `corpus` the shipped corpus without
    // the capitals (115 prompts), the means over nothing else.
    let discovery = run("d.json", &["--mean-over", "discovery"]);
    assert_eq!(String::from_utf8_lossy(&discovery).replace("d.json", "c.json"), String::from_utf8_lossy(&off_bytes));
    let corpus: serde_json::Value = serde_json::from_slice(&run("e.json", &["--mean-over", "corpus"])).unwrap();
    assert_eq!(corpus["mean_over"], "corpus");
    let refs = corpus["reference"].as_array().unwrap();
    assert_eq!(refs.len(), 115);
    assert!(refs.iter().all(|t| t["relation"] != "country_capital_city"));
    assert_eq!(corpus["n_reference"], 115);
    assert_eq!(corpus["eval"]["n_reference"], 115);
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
        (format!("{good}\n{{\"subject\":\" \",\"object\":\"Lima\",\"template\":\"The capital of {{}} is\"}}\n"), "line 2: empty subject"),
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

/// A malformed LRE file is refused with the file and the sample, or where its JSON breaks (read as JSON Lines,
/// a file cut short used to be blamed on its first line); samples with an empty subject or object too (they were
/// converted into lines that no command reads).
#[test]
fn data_convert_refuses_malformed_lre() {
    let dir = tempfile::tempdir().unwrap();
    let head = r#"{"name": "x", "prompt_templates": ["The capital of {} is"], "samples": ["#;
    let cases = [
        (
            format!("{head}{{\"subject\": \"France\", \"object\": \"Paris\"}}, {{\"subject\": \" \", \"object\": \"Lima\"}}]}}"),
            "sample 2: empty subject",
        ),
        (format!("{head}{{\"subject\": \"France\", \"object\": \"\"}}]}}"), "sample 1: empty object"),
        (
            format!("{head}\n{{\"subject\": \"France\", \"object\": \"Paris\"}},\n{{\"subject\": \"Peru\"\n"),
            "not an LRE relation file: EOF while parsing an object at line 4",
        ),
        (format!("{head}{{\"subject\": \"France\"}}]}}"), "not an LRE relation file: missing field `object`"),
    ];
    for (i, (text, needle)) in cases.iter().enumerate() {
        let f = write(dir.path(), &format!("r{i}.json"), text);
        assert_input_error(&kcirc(&["data", "convert", &f]), &format!("r{i}.json: {needle}"));
    }
}

/// On the real model: a circuit found by exact ablation (hybrid: EAP-IG candidates, then ACDC), evaluated again
/// from its file, reproduces the metric the run reported.
#[test]
fn smollm2_circuit_file_reproduces_its_metric() {
    use kcirc::pipeline::Settings;
    use kcirc::split::prepare;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("c.json");
    let triples = root().join("data/country_capital_city.jsonl");
    let model_path = smollm2_path();
    let o = kcirc(&[
        "discover",
        "--model",
        model_path.to_str().unwrap(),
        "--triples",
        triples.to_str().unwrap(),
        "--method",
        "hybrid",
        "--candidates",
        "300",
        "--examples",
        "4",
        "--ablation",
        "mean",
        "--threshold",
        "0.1",
        "--no-eval",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let file = kcirc::circuit::CircuitFile::read(&out).unwrap();
    assert_eq!(file.run.method, "hybrid");
    assert!(file.n_edges > 0 && file.n_edges <= 300, "{}", file.n_edges);
    let (model, tok) = smollm2();
    let rel = kcirc::data::read(&triples).unwrap();
    let s = Settings { examples: Some(4), ablation: kcirc::intervene::Ablation::Mean, ..Default::default() };
    let prep = prepare(&model, &tok, &rel, &s.split_rule()).unwrap();
    assert_eq!(prep.discovery.iter().map(|e| e.triple.clone()).collect::<Vec<_>>(), file.run.examples);
    let task = kcirc::discover::Task::new(&model, prep.discovery, s.ablation, None, s.metric).unwrap();
    let removed = file.removed(&task.graph, &model.cfg).unwrap();
    let again = task.score(&removed).unwrap();
    assert!((again - file.metric_circuit).abs() < 1e-4, "file says {}, evaluated again {again}", file.metric_circuit);
}

fn read_json(p: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// Names of a circuit file's kept edges.
fn edge_names(c: &serde_json::Value) -> Vec<String> {
    c["edges"].as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap().to_string()).collect()
}

/// A scores file's lines: the header and the edge lines.
fn read_scores(p: &Path) -> (serde_json::Value, Vec<serde_json::Value>) {
    let text = std::fs::read_to_string(p).unwrap();
    let mut lines = text.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap());
    let header = lines.next().unwrap();
    (header, lines.collect())
}

/// `kcirc select` on the tiny GPT-2, with the relation for its held-out evaluation.
fn tiny_select(scores: &Path, out: &Path, extra: &[&str]) -> Output {
    let model = fixture("gpt2-tiny");
    let triples = root().join("data/country_capital_city.jsonl");
    let mut args = vec!["select", "--model", model.to_str().unwrap(), "--scores", scores.to_str().unwrap(), "--out", out.to_str().unwrap()];
    if !extra.contains(&"--no-eval") && !extra.contains(&"--triples") {
        args.extend_from_slice(&["--triples", triples.to_str().unwrap(), "--random", "2"]);
    }
    args.extend_from_slice(extra);
    kcirc(&args)
}

#[test]
fn select_rebuilds_the_circuit_discover_kept_from_its_scores() {
    let dir = tempfile::tempdir().unwrap();
    let (s, a, b) = (dir.path().join("s.jsonl"), dir.path().join("a.json"), dir.path().join("b.json"));
    let o = tiny_discover(dir.path(), "a.json", &["--method", "eap-ig", "--top-n", "40", "--scores", s.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    // The scores file: a header with the run's settings, then one line per edge of the graph.
    let (header, lines) = read_scores(&s);
    assert_eq!(header["kcirc_scores"], 1);
    assert_eq!(header["relation"], "country_capital_city");
    assert_eq!(header["method"], "eap-ig");
    assert_eq!(header["ablation"], "zero");
    assert_eq!(header["ig_steps"], 5);
    assert_eq!(header["n_edges_total"], 110);
    assert_eq!(lines.len(), 110);
    let names: std::collections::BTreeSet<&str> = lines.iter().map(|l| l["name"].as_str().unwrap()).collect();
    assert_eq!(names.len(), 110, "every edge once");
    assert_eq!(lines[0]["sender"], "input");
    let c = read_json(&a);
    assert_eq!(header["examples"], c["examples"]);
    // select with the same top-n: the same edges; with the same relation and random circuits, the same file.
    let o = tiny_select(&s, &b, &["--top-n", "40"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let (ca, cb) = (read_json(&a), read_json(&b));
    assert!(!edge_names(&ca).is_empty());
    assert_eq!(edge_names(&ca), edge_names(&cb));
    assert_eq!(std::fs::read_to_string(&a).unwrap(), std::fs::read_to_string(&b).unwrap());
    // Without triples: the same circuit, no held-out report, and stderr says so.
    let model = fixture("gpt2-tiny");
    let c2 = dir.path().join("c.json");
    let o = kcirc(&[
        "select",
        "--model",
        model.to_str().unwrap(),
        "--scores",
        s.to_str().unwrap(),
        "--top-n",
        "40",
        "--out",
        c2.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("evaluation skipped"), "{}", stderr(&o));
    let cc = read_json(&c2);
    assert_eq!(edge_names(&cc), edge_names(&ca));
    assert_eq!(cc["metric_circuit"], ca["metric_circuit"]);
    assert!(cc.get("eval").is_none());
    // A score threshold (mean ablation this time): select agrees with discover run with the same threshold.
    let sm = dir.path().join("sm.jsonl");
    let o = tiny_discover(dir.path(), "m0.json", &["--method", "eap-ig", "--ablation", "mean", "--scores", sm.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let mut abs: Vec<f64> = read_scores(&sm).1.iter().map(|l| l["score"].as_f64().unwrap().abs()).collect();
    abs.sort_by(|x, y| y.total_cmp(x));
    let x = format!("{}", abs[29]);
    let o = tiny_discover(dir.path(), "m1.json", &["--method", "eap-ig", "--ablation", "mean", "--score-threshold", &x, "--no-eval"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = tiny_select(&sm, &dir.path().join("m2.json"), &["--score-threshold", &x, "--no-eval"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let (m1, m2) = (read_json(&dir.path().join("m1.json")), read_json(&dir.path().join("m2.json")));
    assert!(!edge_names(&m1).is_empty());
    assert_eq!(edge_names(&m1), edge_names(&m2));
    assert_eq!(std::fs::read_to_string(dir.path().join("m1.json")).unwrap(), std::fs::read_to_string(dir.path().join("m2.json")).unwrap());
    assert!(edge_names(&m1).len() <= 30, "at most the 30 edges with |score| ≥ the 30th largest (ties aside)");
    // Hybrid writes its EAP-IG scores: selecting its candidate count gives the candidate set, which holds every
    // edge exact ablation kept (the logit metric, under which τ 0.05 keeps edges of this tiny model).
    let sh = dir.path().join("sh.jsonl");
    let args = ["--method", "hybrid", "--metric", "logit", "--candidates", "30", "--no-eval", "--scores", sh.to_str().unwrap()];
    let o = tiny_discover(dir.path(), "h.json", &args);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(read_scores(&sh).0["method"], "eap-ig");
    let o = tiny_select(&sh, &dir.path().join("cand.json"), &["--top-n", "30", "--no-eval"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let cand = edge_names(&read_json(&dir.path().join("cand.json")));
    let kept = edge_names(&read_json(&dir.path().join("h.json")));
    assert!(!kept.is_empty() && kept.iter().all(|e| cand.contains(e)), "{kept:?} ⊄ {cand:?}");
}

#[test]
fn select_refuses_malformed_scores_and_other_models() {
    let dir = tempfile::tempdir().unwrap();
    let s = dir.path().join("s.jsonl");
    let o = tiny_discover(dir.path(), "a.json", &["--method", "eap", "--no-eval", "--scores", s.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = std::fs::read_to_string(&s).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let join = |ls: &[&str]| ls.join("\n") + "\n";
    let mut garbled = lines.clone();
    garbled[2] = "{not json";
    let mut renamed = lines.clone();
    let bogus = lines[5].replacen("\"name\":\"", "\"name\":\"x", 1);
    renamed[5] = &bogus;
    let cases = [
        (join(&garbled), "line 3"),
        (join(&lines[1..]), "line 1: no kcirc scores header"),
        (join(&lines[..lines.len() - 1]), "1 of 110 edges have no score"),
        (join(&renamed), "line 6: edge `xinput"),
        (join(&[lines[0], lines[1], lines[1]]), "line 3: edge `input->a0.h0<q>` scored twice"),
        (String::new(), "empty scores file"),
    ];
    for (i, (text, needle)) in cases.iter().enumerate() {
        let bad = dir.path().join(format!("bad{i}.jsonl"));
        std::fs::write(&bad, text).unwrap();
        let out = dir.path().join(format!("o{i}.json"));
        assert_input_error(&tiny_select(&bad, &out, &["--top-n", "10"]), needle);
        assert!(!out.exists());
    }
    // A scores file of the tiny GPT-2 against GPT-2 small's graph (config only: refused before any weights load).
    let out = dir.path().join("other.json");
    let o = kcirc(&[
        "select",
        "--model",
        fixture("configs/gpt2").to_str().unwrap(),
        "--scores",
        s.to_str().unwrap(),
        "--top-n",
        "10",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_input_error(&o, "not this one (12 layers");
    assert!(!out.exists());
    // Bad selections and a method without scores.
    let out = dir.path().join("sel.json");
    assert_input_error(&tiny_select(&s, &out, &["--top-n", "0"]), "--top-n");
    assert_input_error(&tiny_select(&s, &out, &["--score-threshold", "-1"]), "--score-threshold");
    assert_eq!(tiny_select(&s, &out, &["--top-n", "3", "--score-threshold", "1"]).status.code(), Some(2));
    assert!(!out.exists());
    let o = tiny_discover(dir.path(), "x.json", &["--scores", dir.path().join("x.jsonl").to_str().unwrap()]);
    assert_input_error(&o, "acdc computes no edge scores");
    assert!(!dir.path().join("x.json").exists());
    // Another relation's facts as the held-out set: select and curve would label them as the scored relation's.
    let other = root().join("data/country_language.jsonl");
    let o = tiny_select(&s, &out, &["--top-n", "3", "--triples", other.to_str().unwrap()]);
    assert_input_error(&o, "relation `country_language`, but the scores are for relation `country_capital_city`");
    assert!(!out.exists());
    let (m, s, t) = (fixture("gpt2-tiny"), s.to_str().unwrap(), other.to_str().unwrap());
    let o = kcirc(&["curve", "--model", m.to_str().unwrap(), "--scores", s, "--triples", t, "--sizes", "0.5"]);
    assert_input_error(&o, "but the scores are for relation `country_capital_city`");
}

#[test]
fn batch_discovery_writes_one_scores_file_per_relation() {
    let dir = tempfile::tempdir().unwrap();
    let model = fixture("gpt2-tiny");
    let out_dir = dir.path().join("circuits");
    let rels = ["country_capital_city", "country_language"];
    let files: Vec<String> = rels.iter().map(|r| root().join(format!("data/{r}.jsonl")).to_str().unwrap().to_string()).collect();
    let mut args = vec![
        "discover",
        "--model",
        model.to_str().unwrap(),
        "--method",
        "eap-ig",
        "--top-n",
        "10",
        "--ablation",
        "zero",
        "--examples",
        "3",
    ];
    args.extend_from_slice(&[
        "--no-filter",
        "--random",
        "1",
        "--out-dir",
        out_dir.to_str().unwrap(),
        "--triples",
        &files[0],
        "--triples",
        &files[1],
    ]);
    // A file name makes no sense for several relations.
    let mut named = args.clone();
    named.extend_from_slice(&["--scores", "s.jsonl"]);
    assert_input_error(&kcirc(&named), "one scores file per relation");
    assert!(!out_dir.exists());
    args.push("--scores");
    // As --dot: in a batch run a flag, each picture beside its circuit.
    let mut named = args.clone();
    named.extend_from_slice(&["--svg", "each.svg"]);
    assert_input_error(&kcirc(&named), "--svg takes no file name in a batch run");
    assert!(!out_dir.exists());
    args.push("--svg");
    let o = kcirc(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let summary: Vec<serde_json::Value> = stdout(&o).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(summary.len(), 2);
    let mut examples = vec![];
    for (r, line) in rels.iter().zip(&summary) {
        let p = out_dir.join(format!("{r}.scores.jsonl"));
        assert_eq!(line["scores"], p.to_str().unwrap());
        let (header, scores) = read_scores(&p);
        assert_eq!(header["relation"], *r);
        assert_eq!(scores.len(), 110);
        assert_eq!(header["examples"], read_json(&out_dir.join(format!("{r}.json")))["examples"]);
        examples.push(header["examples"].clone());
    }
    assert_ne!(examples[0], examples[1]);
    // Each one rebuilds its relation's circuit.
    let b = dir.path().join("b.json");
    let b_svg = dir.path().join("b.svg");
    let o = kcirc(&[
        "select",
        "--svg",
        b_svg.to_str().unwrap(),
        "--model",
        model.to_str().unwrap(),
        "--scores",
        out_dir.join("country_language.scores.jsonl").to_str().unwrap(),
        "--top-n",
        "10",
        "--triples",
        &files[1],
        "--random",
        "1",
        "--out",
        b.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(&b).unwrap(), std::fs::read_to_string(out_dir.join("country_language.json")).unwrap());
    let svg = std::fs::read_to_string(&b_svg).unwrap();
    assert!(svg.starts_with("<?xml") && svg.contains("<g class=\"node\" data-node=\"logits\""), "{svg}");
    assert_eq!(svg, std::fs::read_to_string(out_dir.join("country_language.svg")).unwrap());
    // Single relation, --scores without a file: beside --out.
    let o = tiny_discover(dir.path(), "one.json", &["--method", "eap", "--no-eval", "--scores"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(read_scores(&dir.path().join("one.scores.jsonl")).0["method"], "eap");
}

/// [`capitals_with_a_long_subject`] as a JSON Lines file.
fn capitals_file(dir: &Path) -> String {
    let text: String = capitals_with_a_long_subject().triples.iter().map(|t| serde_json::to_string(t).unwrap() + "\n").collect();
    write(dir, "capitals.jsonl", &text)
}

#[test]
fn resample_ablation_drops_and_counts_facts_without_a_same_length_partner() {
    let dir = tempfile::tempdir().unwrap();
    let triples = capitals_file(dir.path());
    let model = fixture("gpt2-tiny");
    let (a, s) = (dir.path().join("a.json"), dir.path().join("s.jsonl"));
    let o = kcirc(&[
        "discover",
        "--model",
        model.to_str().unwrap(),
        "--triples",
        &triples,
        "--method",
        "eap-ig",
        "--top-n",
        "30",
        "--ablation",
        "resample",
        "--examples",
        "3",
        "--no-filter",
        "--random",
        "2",
        "--out",
        a.to_str().unwrap(),
        "--scores",
        s.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("1 without a same-length partner for resample ablation skipped"), "{err}");
    assert!(err.contains("1 without a same-length partner for resample ablation dropped"), "{err}");
    let c = read_json(&a);
    assert_eq!(c["eval"]["n_dropped_no_partner"], 1);
    assert_eq!(c["eval"]["n_skipped_discovery"], 3);
    assert_eq!(c["eval"]["n_triples"], 11 - 3 - 1);
    assert!(c["examples"].as_array().unwrap().iter().all(|e| e["subject"] != "Bosnia and Herzegovina"));
    // The scores header carries each discovery example's partner, so select measures the same circuit again.
    let (header, _) = read_scores(&s);
    let partners = header["corrupted"].as_array().unwrap();
    assert_eq!(partners.len(), 3);
    for (e, p) in c["examples"].as_array().unwrap().iter().zip(partners) {
        assert_ne!(e["subject"], p["subject"]);
        assert_ne!(p["subject"], "Bosnia and Herzegovina");
    }
    let b = dir.path().join("b.json");
    let o = kcirc(&[
        "select",
        "--model",
        model.to_str().unwrap(),
        "--scores",
        s.to_str().unwrap(),
        "--top-n",
        "30",
        "--triples",
        &triples,
        "--random",
        "2",
        "--out",
        b.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(&a).unwrap(), std::fs::read_to_string(&b).unwrap());
    // kcirc eval agrees; when the only held-out fact has no partner, nothing is left to score: an error.
    let ev = |t: &str| {
        kcirc(&[
            "eval",
            "--model",
            model.to_str().unwrap(),
            "--circuit",
            a.to_str().unwrap(),
            "--triples",
            t,
            "--no-filter",
            "--random",
            "2",
        ])
    };
    let o = ev(&triples);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(serde_json::from_str::<serde_json::Value>(&stdout(&o)).unwrap(), c["eval"]);
    let text = std::fs::read_to_string(&triples).unwrap();
    let subjects: Vec<&str> = c["examples"].as_array().unwrap().iter().map(|e| e["subject"].as_str().unwrap()).collect();
    let only: String = text
        .lines()
        .filter(|l| l.contains("Bosnia") || subjects.iter().any(|s| l.contains(&format!("\"{s}\""))))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(only.lines().count(), 4);
    assert_input_error(&ev(&write(dir.path(), "only.jsonl", &only)), "none of the 1 held-out triples has a same-length partner");
    // Discovery needs partners too: asking for all 11 facts leaves 10 with one, fewer than asked.
    let o = kcirc(&[
        "discover",
        "--model",
        model.to_str().unwrap(),
        "--triples",
        &triples,
        "--method",
        "eap",
        "--ablation",
        "resample",
        "--examples",
        "11",
        "--no-filter",
        "--no-eval",
        "--out",
        dir.path().join("x.json").to_str().unwrap(),
    ]);
    assert_input_error(&o, "1 of them without a same-length partner");
}

/// `discover --rerun` makes the same file again, byte for byte, for exact, attribution and hybrid circuits; the
/// file records each method's own parameters only; `--quiet` leaves stderr empty on a clean run.
#[test]
fn rerun_reproduces_circuit_files_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, Vec<&str>); 4] = [
        ("acdc", vec!["--method", "acdc", "--signed"]),
        ("eap-ig", vec!["--method", "eap-ig", "--top-n", "30", "--ablation", "mean"]),
        ("eap", vec!["--method", "eap", "--no-eval"]),
        ("hybrid", vec!["--method", "hybrid", "--candidates", "30", "--ablation", "resample"]),
    ];
    for (method, flags) in cases {
        let a = format!("{method}.json");
        let o = tiny_discover(dir.path(), &a, &flags);
        assert!(o.status.success(), "{method}: {}", stderr(&o));
        assert_eq!(stderr(&o), "", "{method}: --quiet and nothing to warn about");
        let a = dir.path().join(a);
        let c = read_json(&a);
        assert_eq!(c["format"], 2);
        assert_eq!(c["method"], method);
        assert_eq!(c["kcirc_version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(c["n_examples"], 3);
        assert_eq!(c["k"], 10);
        assert_eq!(c["filter_known"], false);
        assert_eq!(c["triples"]["path"], root().join("data/country_capital_city.jsonl").to_str().unwrap());
        assert!(c["triples"]["digest"].as_str().unwrap().starts_with("fnv1a64:"));
        assert_eq!(c["metric_full"], 0.0);
        let empty = c["metric_empty"].as_f64().unwrap();
        assert!(empty.is_finite() && empty.abs() > 1e-6, "{method}: the empty circuit differs from the full model ({empty})");
        let exact = method == "acdc" || method == "hybrid";
        assert_eq!(c.get("threshold").is_some(), exact, "{method}");
        assert_eq!(c.get("signed").is_some(), exact, "{method}");
        assert_eq!(c.get("ig_steps").is_some(), method == "eap-ig" || method == "hybrid", "{method}");
        assert_eq!(c.get("candidates").is_some(), method == "hybrid", "{method}");
        assert_eq!(c.get("selection").is_some(), method.starts_with("eap"), "{method}");
        match method {
            "acdc" => assert_eq!(c["signed"], true),
            "eap-ig" => assert_eq!(c["selection"], serde_json::json!({"top_n": 30})),
            "eap" => {
                assert_eq!(c["selection"], serde_json::json!({"target_faithfulness": 0.85}));
                assert!(c["chosen_size"]["faithfulness"].as_f64().unwrap() >= 0.85, "{c}");
            }
            _ => assert_eq!(c["candidates"], 30),
        }
        let b = dir.path().join(format!("{method}.again.json"));
        let o = kcirc(&["discover", "--rerun", a.to_str().unwrap(), "--out", b.to_str().unwrap()]);
        assert!(o.status.success(), "{method}: {}", stderr(&o));
        assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap(), "{method}: rerun differs");
    }
    // Settings come from the file: a discovery flag beside --rerun is refused.
    let a = dir.path().join("acdc.json");
    let o = kcirc(&["discover", "--rerun", a.to_str().unwrap(), "--method", "eap", "--out", dir.path().join("x.json").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(!dir.path().join("x.json").exists());
    // A relation file that changed since is refused; one that moved is found with --triples.
    let moved = write(dir.path(), "moved.jsonl", &std::fs::read_to_string(root().join("data/country_capital_city.jsonl")).unwrap());
    let o = tiny_discover(dir.path(), "m.json", &["--method", "eap", "--no-eval", "--triples", &moved]);
    assert!(!o.status.success(), "two --triples make a batch run without --out-dir");
    let m = dir.path().join("m.json");
    let o = kcirc(&[
        "discover",
        "--model",
        fixture("gpt2-tiny").to_str().unwrap(),
        "--triples",
        &moved,
        "--method",
        "eap",
        "--examples",
        "3",
        "--no-filter",
        "--no-eval",
        "--out",
        m.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    std::fs::write(&moved, std::fs::read_to_string(&moved).unwrap().replace("Paris", "Lyon")).unwrap();
    let o = kcirc(&["discover", "--rerun", m.to_str().unwrap(), "--out", dir.path().join("y.json").to_str().unwrap()]);
    assert_input_error(&o, "has changed since");
    assert!(!dir.path().join("y.json").exists());
    // The original (the same bytes as the copy was) is accepted: the same circuit, its new place recorded.
    let y = dir.path().join("y.json");
    let original = root().join("data/country_capital_city.jsonl");
    let o = kcirc(&["discover", "--rerun", m.to_str().unwrap(), "--triples", original.to_str().unwrap(), "--out", y.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let (was, now) = (read_json(&m), read_json(&y));
    assert_eq!(edge_names(&was), edge_names(&now));
    assert_eq!(now["triples"]["path"], original.to_str().unwrap());
}

/// A circuit file of the first format still reads; a newer one is refused by name.
#[test]
fn circuit_files_of_format_1_read_and_newer_ones_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let o = tiny_discover(dir.path(), "c.json", &["--no-eval"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let mut c = read_json(&dir.path().join("c.json"));
    let ev = |p: &Path| tiny_eval(p, &["--random", "1"]);
    let now = ev(&dir.path().join("c.json"));
    assert!(now.status.success(), "{}", stderr(&now));
    // As kcirc 0.1 wrote it: format 1, no run parameters beyond threshold and signed.
    let obj = c.as_object_mut().unwrap();
    for key in ["triples", "k", "filter_known", "n_examples", "kcirc_version", "metric_empty"] {
        obj.remove(key);
    }
    obj.insert("format".into(), 1.into());
    let old = dir.path().join("old.json");
    std::fs::write(&old, serde_json::to_string_pretty(&c).unwrap()).unwrap();
    let o = ev(&old);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), stdout(&now), "the same circuit, the same report");
    c["format"] = 3.into();
    let newer = dir.path().join("newer.json");
    std::fs::write(&newer, serde_json::to_string_pretty(&c).unwrap()).unwrap();
    assert_input_error(&ev(&newer), "circuit format 3 is newer than this kcirc reads");
}

/// `lens`, `heads` and `diff` end to end on the tiny GPT-2: JSON whose numbers hold together, and bad input
/// (an empty object, a subject not in the prompt, a circuit of another model) as one-line errors.
#[test]
fn lens_heads_and_diff_run_and_refuse_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let o = tiny_discover(dir.path(), "c.json", &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let c = dir.path().join("c.json");
    let model = fixture("gpt2-tiny");
    let (m, cs) = (model.to_str().unwrap(), c.to_str().unwrap());
    let triples = root().join("data/country_capital_city.jsonl");
    let t = triples.to_str().unwrap();
    let prompt = ["--prompt", "The capital of France is", "--subject", "France"];
    let o = kcirc(&[&["lens", "--model", m, "--circuit", cs, "--object", "Paris", "--compare-object", "London"][..], &prompt].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let f = &v["facts"][0];
    assert_eq!(f["subject_positions"], serde_json::json!([3]));
    assert_eq!(f["full"]["points"].as_array().unwrap().len(), 5, "embed + 2 layers × (attention, MLP)");
    assert!(f["circuit"]["points"][4]["rank"].is_u64() && f["full"]["points"][0]["compare_rank"].is_u64());
    let o = kcirc(&["heads", "--model", m, "--circuit", cs, "--triples", t, "--no-filter", "--all", "--random", "2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["heads"].as_array().unwrap().len(), 8);
    assert_eq!(v["n_facts"], 24);
    let o = kcirc(&["diff", cs, cs]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["pairs"][0]["edges"]["jaccard"], 1.0);
    assert_eq!(v["pairs"][0]["nodes"]["only_b"], 0);
    // Bad input.
    let o = kcirc(&[&["lens", "--model", m, "--object", " "][..], &prompt].concat());
    assert_input_error(&o, "tokenizes to nothing");
    let o = kcirc(&["lens", "--model", m, "--prompt", "The capital of France is", "--subject", "Spain", "--object", "Paris"]);
    assert_input_error(&o, "not found in the prompt");
    let smol = smollm2_path();
    let o = kcirc(&["heads", "--model", smol.to_str().unwrap(), "--circuit", cs, "--triples", t]);
    assert_input_error(&o, "circuit is for model");
    let o = kcirc(&["lens", "--model", smol.to_str().unwrap(), "--circuit", cs, "--triples", t]);
    assert_input_error(&o, "circuit is for model");
    let o = kcirc(&["diff", cs]);
    assert_eq!(o.status.code(), Some(2));
}

/// In-context discovery: the circuit file records its demonstrations, `--rerun` reproduces it byte for byte,
/// `eval` scores it with them by default (the same report discovery attached), and too many demonstrations for
/// the discovery split is a one-line error with no file.
#[test]
fn discovery_with_demonstrations_is_recorded_and_reproduced() {
    let dir = tempfile::tempdir().unwrap();
    let flags = ["--method", "eap-ig", "--top-n", "40", "--ablation", "mean", "--demonstrations", "2"];
    let o = tiny_discover(dir.path(), "icl.json", &flags);
    assert!(o.status.success(), "{}", stderr(&o));
    let a = dir.path().join("icl.json");
    let c = read_json(&a);
    assert_eq!(c["demonstrations"], 2);
    let b = dir.path().join("icl.again.json");
    let o = kcirc(&["discover", "--rerun", a.to_str().unwrap(), "--out", b.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap(), "rerun differs");
    let o = tiny_eval(&a, &["--random", "2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let report: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(report["circuit"], c["eval"]["circuit"], "eval with the recorded demonstrations = discovery's report");
    let zero_shot: serde_json::Value = serde_json::from_str(&stdout(&tiny_eval(&a, &["--random", "2", "--demonstrations", "0"]))).unwrap();
    assert_ne!(zero_shot["full"], report["full"], "demonstrations change the prompts");
    let o = tiny_discover(dir.path(), "x.json", &["--method", "eap", "--demonstrations", "3"]);
    assert_input_error(&o, "3 demonstrations asked for, but only 2");
    assert!(!dir.path().join("x.json").exists());
}

/// `kcirc edit` and `kcirc erase` refuse bad input with one line, exit 2, and write no model folder.
#[test]
fn edit_and_erase_refuse_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let model = fixture("gpt2-tiny");
    let m = model.to_str().unwrap();
    let out = dir.path().join("edited");
    let o_ = out.to_str().unwrap();
    let one = |extra: &[&str]| -> Output {
        let mut args = vec!["edit", "--model", m, "--subject", "France", "--template", "The capital of {} is", "--out", o_];
        args.extend_from_slice(extra);
        kcirc(&args)
    };
    assert_input_error(&one(&["--object", "Paris", "--new-object", " "]), "tokenizes to nothing");
    assert_input_error(&one(&["--object", " ", "--new-object", "Rome"]), "tokenizes to nothing");
    assert_input_error(&one(&["--object", "Paris", "--new-object", "Rome", "--layer", "2"]), "out of range");
    assert_input_error(&one(&["--object", "Paris", "--new-object", "Rome", "--method", "memit"]), "unknown edit method");
    let reqs = write(
        dir.path(),
        "r.jsonl",
        "{\"subject\":\"France\",\"template\":\"The capital is\",\"object\":\"Paris\",\"new_object\":\"Rome\"}\n",
    );
    assert_input_error(&kcirc(&["edit", "--model", m, "--requests", &reqs, "--out", o_]), "line 1");
    let para = write(dir.path(), "p.jsonl", "{\"template\": \"{} is\"}\n{\"subject\": \"Spain\", \"prompt\": \"France is\"}\n");
    assert_input_error(&one(&["--object", "Paris", "--new-object", "Rome", "--paraphrases", &para]), "p.jsonl: line 2: subject");
    assert_input_error(&one(&["--object", "Paris", "--new-object", "Rome", "--mode", "independent"]), "--mode sequential");
    assert!(!out.exists(), "no model folder after a failed edit");
    // A good edit writes the folder; a second one into it is refused.
    let o = one(&["--object", "Paris", "--new-object", "Rome", "--steps", "2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(out.join("model.safetensors").is_file() && out.join("config.json").is_file());
    assert_input_error(&one(&["--object", "Paris", "--new-object", "Rome"]), "already exists");
    // erase: a resample-ablated circuit is refused.
    let o = tiny_discover(dir.path(), "res.json", &["--method", "eap", "--ablation", "resample", "--no-eval"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let triples = root().join("data/country_capital_city.jsonl");
    let c = dir.path().join("res.json");
    let o = kcirc(&["erase", "--model", m, "--circuit", c.to_str().unwrap(), "--triples", triples.to_str().unwrap()]);
    assert_input_error(&o, "resample");
}

/// `--edits` applies edit requests in memory: discover and eval give what `kcirc edit --out DIR` followed by
/// `--model DIR` gives (the same edges and effects, the same report), the circuit file records the edits and
/// `--rerun` repeats it byte for byte; a malformed or changed requests file is refused with one line.
#[test]
fn edits_in_memory_equal_an_edited_model_folder() {
    let dir = tempfile::tempdir().unwrap();
    let model = fixture("gpt2-tiny");
    let m = model.to_str().unwrap();
    let triples = root().join("data/country_capital_city.jsonl");
    let t = triples.to_str().unwrap();
    let reqs = write(
        dir.path(),
        "r.jsonl",
        "{\"subject\":\"France\",\"template\":\"The capital of {} is\",\"object\":\"Paris\",\"new_object\":\"Rome\"}\n\
         {\"subject\":\"Japan\",\"template\":\"The capital of {} is\",\"object\":\"Tokyo\",\"new_object\":\"Berlin\"}\n",
    );
    let folder = dir.path().join("edited");
    let o = kcirc(&["edit", "--model", m, "--requests", &reqs, "--steps", "3", "--out", folder.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let discover = |model: &str, out: &str, extra: &[&str]| -> Output {
        let out = dir.path().join(out);
        let mut args = vec!["discover", "--model", model, "--triples", t, "--examples", "3", "--no-filter", "--random", "2"];
        args.extend_from_slice(&["--method", "eap", "--top-n", "40", "--out", out.to_str().unwrap()]);
        args.extend_from_slice(extra);
        kcirc(&args)
    };
    // The default layer (0 of the tiny model's 2: ROME at the last layer cannot reach the last position).
    let edit_flags = ["--edits", reqs.as_str(), "--edit-steps", "3"];
    let o = discover(m, "in-memory.json", &edit_flags);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = discover(folder.to_str().unwrap(), "folder.json", &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let a = read_json(&dir.path().join("in-memory.json"));
    let b = read_json(&dir.path().join("folder.json"));
    assert_eq!(a["edges"], b["edges"], "the same circuit, edge for edge and effect for effect");
    assert_eq!(a["eval"]["circuit"], b["eval"]["circuit"]);
    assert_eq!(a["eval"]["full"], b["eval"]["full"]);
    let e = &a["edits"];
    assert_eq!(
        (e["method"].as_str(), e["layer"].as_u64(), e["steps"].as_u64(), e["n_requests"].as_u64()),
        (Some("rome"), Some(0), Some(3), Some(2))
    );
    assert_eq!(e["requests"]["path"].as_str(), Some(reqs.as_str()));
    assert!(b.get("edits").is_none(), "an unedited run records no edits");
    let plain = discover(m, "plain.json", &[]);
    assert!(plain.status.success());
    assert_ne!(read_json(&dir.path().join("plain.json"))["eval"]["full"], a["eval"]["full"], "the edits change the model");
    // --rerun applies the recorded edits again: byte for byte.
    let again = dir.path().join("again.json");
    let o = kcirc(&["discover", "--rerun", dir.path().join("in-memory.json").to_str().unwrap(), "--out", again.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read(dir.path().join("in-memory.json")).unwrap(), std::fs::read(&again).unwrap(), "rerun differs");
    // eval --edits = eval on the folder.
    let eval = |model: &str, extra: &[&str]| -> serde_json::Value {
        let c = dir.path().join("in-memory.json");
        let mut args = vec!["eval", "--model", model, "--circuit", c.to_str().unwrap(), "--triples", t, "--no-filter", "--random", "2"];
        args.extend_from_slice(extra);
        let o = kcirc(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        serde_json::from_str(&stdout(&o)).unwrap()
    };
    let (x, y) = (eval(m, &edit_flags), eval(folder.to_str().unwrap(), &[]));
    for key in ["full", "circuit", "random", "empty", "faithfulness"] {
        assert_eq!(x[key], y[key], "eval {key}");
    }
    assert_eq!(x["edits"], a["edits"]);
    // Bad requests: one line naming the file and the line, exit 2, no circuit file.
    let bad = write(
        dir.path(),
        "bad.jsonl",
        "{\"subject\":\"France\",\"template\":\"The capital of {} is\",\"object\":\"Paris\",\"new_object\":\"Rome\"}\n{\"subject\": 3}\n",
    );
    assert_input_error(&discover(m, "bad.json", &["--edits", &bad]), "bad.jsonl: line 2");
    assert!(!dir.path().join("bad.json").exists());
    let empty = write(
        dir.path(),
        "empty.jsonl",
        "\n{\"subject\":\"France\",\"template\":\"The capital of {} is\",\"object\":\"Paris\",\"new_object\":\" \"}\n",
    );
    assert_input_error(&discover(m, "bad.json", &["--edits", &empty]), "empty.jsonl: line 2: object \" \" tokenizes to nothing");
    let o = kcirc(&["edit", "--model", m, "--requests", &empty, "--out", folder.join("x").to_str().unwrap()]);
    assert_input_error(&o, "empty.jsonl: line 2: object \" \" tokenizes to nothing");
    assert_input_error(&discover(m, "bad.json", &["--edits", &reqs, "--edit-method", "memit"]), "unknown edit method");
    assert_input_error(&discover(m, "bad.json", &["--edits", &reqs, "--edit-layer", "7"]), "out of range");
    assert!(!dir.path().join("bad.json").exists());
    // A changed requests file is noticed by --rerun.
    std::fs::write(&reqs, "{\"subject\":\"France\",\"template\":\"The capital of {} is\",\"object\":\"Paris\",\"new_object\":\"Oslo\"}\n")
        .unwrap();
    let o = kcirc(&["discover", "--rerun", dir.path().join("in-memory.json").to_str().unwrap(), "--out", again.to_str().unwrap()]);
    assert_input_error(&o, "have changed");
}

/// Every output path is checked before the run: a missing folder, a folder where a file should go, or a file
/// where the batch's folder should go fail at once with one line naming the path, and no other output of the
/// run (DOT, SVG, scores) is left behind.
#[test]
fn bad_output_paths_fail_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let at = |name: &str| dir.path().join(name);
    let (dot, svg, scores) = (at("c.dot"), at("c.svg"), at("c.scores.jsonl"));
    let pictures =
        ["--method", "eap", "--dot", dot.to_str().unwrap(), "--svg", svg.to_str().unwrap(), "--scores", scores.to_str().unwrap()];
    assert_input_error(&tiny_discover(dir.path(), "missing/c.json", &pictures), "missing/c.json: cannot write there");
    assert!(!dot.exists() && !svg.exists() && !scores.exists() && !at("missing").exists());
    // The circuit file fine, a picture's folder missing: no circuit file either.
    let o = tiny_discover(dir.path(), "c.json", &["--dot", at("missing/c.dot").to_str().unwrap()]);
    assert_input_error(&o, "missing does not exist");
    assert!(!at("c.json").exists());
    std::fs::create_dir(at("folder")).unwrap();
    assert_input_error(&tiny_discover(dir.path(), "folder", &[]), "is a folder");
    let file = write(dir.path(), "file.txt", "not a folder\n");
    assert_input_error(&tiny_discover(dir.path(), "file.txt/c.json", &[]), "file.txt is not a folder");
    // A batch run's output folder that is a file.
    let (model, relations) = (fixture("gpt2-tiny"), root().join("data"));
    let o = kcirc(&["discover", "--model", model.to_str().unwrap(), "--relations", relations.to_str().unwrap(), "--out-dir", &file]);
    assert_input_error(&o, "the output folder is a file");
    // select and report: the same, and report's SVG is not written when its page cannot be.
    let o = tiny_discover(dir.path(), "ok.json", &["--method", "eap", "--no-eval", "--scores", scores.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_input_error(&tiny_select(&scores, &at("missing/s.json"), &["--top-n", "3"]), "missing/s.json: cannot write there");
    let (ok, page) = (at("ok.json"), at("missing/r.html"));
    let (ok, svg_s, page) = (ok.to_str().unwrap(), svg.to_str().unwrap(), page.to_str().unwrap());
    let o = kcirc(&["report", "--circuit", ok, "--svg", svg_s, "--out", page]);
    assert_input_error(&o, "missing/r.html: cannot write there");
    assert!(!svg.exists() && !at("missing").exists());
}

/// Bytes that are not UTF-8 are refused with the file and the line they are on, whatever the file: triples,
/// edit requests, batch summaries.
#[test]
fn non_utf8_input_names_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let bad = |name: &str, first: &str, second: &[u8]| -> String {
        let p = dir.path().join(name);
        std::fs::write(&p, [format!("{first}\n").as_bytes(), second, b"\n"].concat()).unwrap();
        p.to_str().unwrap().to_string()
    };
    let good = r#"{"subject":"France","relation":"capital","object":"Paris","template":"The capital of {} is"}"#;
    let triples = bad("t.jsonl", good, b"{\"subject\":\"Per\xffu\",\"object\":\"Lima\",\"template\":\"The capital of {} is\"}");
    let out = dir.path().join("o.json");
    assert_input_error(
        &tiny_eap(&["--triples", &triples, "--out", out.to_str().unwrap()]),
        "t.jsonl: line 2: not UTF-8 text (byte 0xff at column 16)",
    );
    assert!(!out.exists());
    let m = fixture("gpt2-tiny");
    let m = m.to_str().unwrap();
    let request = r#"{"subject":"France","template":"The capital of {} is","object":"Paris","new_object":"Rome"}"#;
    let requests = bad("r.jsonl", request, b"\xfe");
    assert_input_error(&kcirc(&["edit", "--model", m, "--requests", &requests]), "r.jsonl: line 2: not UTF-8 text");
    let summary = bad("s.jsonl", "", b"{\"relation\":\"x\xff\"}");
    let relations = root().join("data");
    assert_input_error(&kcirc(&["merge", "--relations", relations.to_str().unwrap(), &summary]), "s.jsonl: line 2: not UTF-8 text");
}

/// A circuit file whose edge list does not hold together (an edge named for other ends than it lists, an edge
/// twice, `n_edges` that does not count the edges, an edge field kcirc does not write) is refused with the file
/// (and the edge), by every reader: it used to be read as another circuit than it said (the name decided, a
/// mistyped `effect` read as never tested) and `diff` counted it as it was.
#[test]
fn inconsistent_circuit_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let o = tiny_discover(dir.path(), "c.json", &["--no-eval"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let c = read_json(&dir.path().join("c.json"));
    let first = c["edges"][0].clone();
    let name = first["name"].as_str().unwrap().to_string();
    let variant = |file: &str, change: &dyn Fn(&mut serde_json::Value)| -> std::path::PathBuf {
        let mut v = c.clone();
        change(&mut v);
        let p = dir.path().join(file);
        std::fs::write(&p, serde_json::to_string_pretty(&v).unwrap()).unwrap();
        p
    };
    let moved = variant("moved.json", &|v| v["edges"][0]["sender"] = "m1".into());
    let twice = variant("twice.json", &|v| {
        v["edges"].as_array_mut().unwrap().push(first.clone());
        v["n_edges"] = v["edges"].as_array().unwrap().len().into();
    });
    let miscounted = variant("miscounted.json", &|v| v["n_edges"] = 1.into());
    let mistyped = variant("mistyped.json", &|v| {
        let effect = v["edges"][0]["effect"].take();
        v["edges"][0].as_object_mut().unwrap().remove("effect");
        v["edges"][0]["efect"] = effect;
    });
    let n = c["edges"].as_array().unwrap().len();
    for (p, needle) in [
        (&moved, format!("moved.json: edge 1 `{name}` does not run from `m1`")),
        (&mistyped, "mistyped.json: not a circuit file: unknown field `efect`".to_string()),
        (&twice, format!("twice.json: edge {} `{name}` is listed twice", n + 1)),
        (&miscounted, format!("miscounted.json: n_edges is 1 but {n} edges are listed")),
    ] {
        assert_input_error(&tiny_eval(p, &["--random", "1"]), &needle);
        let good = dir.path().join("c.json");
        assert_input_error(&kcirc(&["diff", good.to_str().unwrap(), p.to_str().unwrap()]), &needle);
    }
}

/// A prompt longer than the model's context is refused at once, naming the fact's file and line, for learned
/// positions (GPT-2) and rotary ones (the context a config or GGUF file records: a rotary model used to run
/// any length, minutes on the CPU for a prompt past SmolLM2's 8192 tokens).
#[test]
fn prompts_longer_than_the_context_are_refused_by_line() {
    let dir = tempfile::tempdir().unwrap();
    let good = r#"{"subject":"France","relation":"capital","object":"Paris","template":"The capital of {} is"}"#;
    let long =
        format!(r#"{{"subject":"Peru","relation":"capital","object":"Lima","template":"{}The capital of {{}} is"}}"#, "very ".repeat(80));
    let f = write(dir.path(), "long.jsonl", &format!("{good}\n{good}\n{long}\n"));
    let out = dir.path().join("o.json");
    let o = tiny_eap(&["--triples", &f, "--out", out.to_str().unwrap()]);
    assert_input_error(&o, "long.jsonl: line 3 (Peru): prompt of 85 tokens exceeds the model's 64 positions");
    assert!(!out.exists());
    // Rotary: the Qwen2 fixture's max_position_embeddings (64), SmolLM2's GGUF context_length (8192).
    let qwen = fixture("qwen2-tiny");
    assert_input_error(
        &kcirc(&["predict", "--model", qwen.to_str().unwrap(), "--prompt", &"Paris ".repeat(100)]),
        "exceeds the model's 64 positions",
    );
    let smol = smollm2_path();
    let o = kcirc(&["predict", "--model", smol.to_str().unwrap(), "--prompt", &"Paris ".repeat(8200)]);
    assert_input_error(&o, "exceeds the model's 8192 positions");
}

/// `lens` and `heads` refuse `--k 0` (the known-fact filter then kept nothing and said "rank < 0") and a
/// circuit of another model before filtering facts (it used to say the model knows none of them); `erase`
/// refuses a --tolerance that is no drop of Hit@k and an --others folder without relation files.
#[test]
fn analysis_and_erase_flags_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let o = tiny_discover(dir.path(), "c.json", &["--no-eval"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let c = dir.path().join("c.json");
    let (m, t) = (fixture("gpt2-tiny"), root().join("data/country_capital_city.jsonl"));
    let (m, t, cs) = (m.to_str().unwrap(), t.to_str().unwrap(), c.to_str().unwrap());
    let prompt = ["--prompt", "The capital of France is", "--subject", "France", "--object", "Paris"];
    assert_input_error(&kcirc(&[&["lens", "--model", m, "--k", "0"][..], &prompt].concat()), "--k must be at least 1");
    assert_input_error(&kcirc(&["heads", "--model", m, "--circuit", cs, "--triples", t, "--k", "0"]), "--k must be at least 1");
    let mut other = read_json(&c);
    other["model_shape"]["n_layers"] = 3.into();
    let other_path = write(dir.path(), "other.json", &serde_json::to_string(&other).unwrap());
    // The tiny model knows none of the capitals: the filter would have emptied the facts first.
    assert_input_error(&kcirc(&["heads", "--model", m, "--circuit", &other_path, "--triples", t]), "circuit is for model");
    assert_input_error(&kcirc(&["lens", "--model", m, "--circuit", &other_path, "--triples", t, "--known-only"]), "circuit is for model");
    let erase = |extra: &[&str]| kcirc(&[&["erase", "--model", m, "--circuit", cs, "--triples", t][..], extra].concat());
    let others = root().join("data/country_language.jsonl");
    for bad in ["NaN", "-0.5", "2"] {
        let flag = format!("--tolerance={bad}");
        assert_input_error(&erase(&["--others", others.to_str().unwrap(), &flag]), "--tolerance must be in [0, 1]");
    }
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    assert_input_error(&erase(&["--others", empty.to_str().unwrap()]), "no relation files (*.jsonl) in the folder");
}

/// A folder `rels` in `dir` holding the capitals and one more relation file `name` with `text`; its path and
/// the other file's.
fn capitals_and(dir: &Path, name: &str, text: &str) -> (std::path::PathBuf, String) {
    let rels = dir.join("rels");
    std::fs::create_dir(&rels).unwrap();
    std::fs::copy(root().join("data/country_capital_city.jsonl"), rels.join("capitals.jsonl")).unwrap();
    let other = write(&rels, name, text);
    (rels, other)
}

/// `kcirc discover` on the tiny GPT-2 by EAP, two discovery facts, no filter and no held-out report.
fn tiny_eap(extra: &[&str]) -> Output {
    let model = fixture("gpt2-tiny");
    let base = ["discover", "--model", model.to_str().unwrap(), "--no-filter", "--examples", "2", "--method", "eap", "--no-eval"];
    kcirc(&[&base[..], extra].concat())
}

/// `merge --out-dir` says when the folder is missing or a file (it named a circuit file inside it), a scores
/// header without discovery facts names the file and line, and a batch run names a failed relation's file once.
#[test]
fn merge_scores_and_batch_name_their_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let relations = root().join("data");
    let merge = |out_dir: &str| kcirc(&["merge", "--relations", relations.to_str().unwrap(), "--out-dir", out_dir]);
    assert_input_error(&merge(dir.path().join("none").to_str().unwrap()), "none: no such folder");
    let file = write(dir.path(), "file.txt", "x\n");
    assert_input_error(&merge(&file), "file.txt: not a folder");
    // A scores header without discovery facts.
    let s = dir.path().join("s.jsonl");
    let o = tiny_discover(dir.path(), "a.json", &["--method", "eap", "--no-eval", "--scores", s.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = std::fs::read_to_string(&s).unwrap();
    let (head, rest) = text.split_once('\n').unwrap();
    let mut header: serde_json::Value = serde_json::from_str(head).unwrap();
    header["examples"] = serde_json::json!([]);
    let bare = write(dir.path(), "bare.jsonl", &format!("{header}\n{rest}"));
    let out = dir.path().join("o.json");
    assert_input_error(&tiny_select(Path::new(&bare), &out, &["--top-n", "3"]), "bare.jsonl: line 1: bad header: no discovery examples");
    // A batch run: the failed relation's line names its file once, the good relation is written.
    let (rels, bad) =
        capitals_and(dir.path(), "bad.jsonl", "{\"subject\":\" \",\"relation\":\"bad\",\"object\":\"Paris\",\"template\":\"{} is\"}\n");
    let out_dir = dir.path().join("out");
    let o = tiny_eap(&["--relations", rels.to_str().unwrap(), "--out-dir", out_dir.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains(&format!("kcirc: error: {bad}: line 1: empty subject\n")), "{err}");
    assert!(!err.contains(&format!("{bad}: {bad}")), "{err}");
    assert!(out_dir.join("country_capital_city.json").is_file(), "the other relation is not lost");
}

/// A tokenizer whose ids run past the model's embedding rows (another model's tokenizer) is refused when the
/// model loads: `lens` panicked on the out-of-range id and `predict` called it a bug in kcirc.
#[test]
fn a_tokenizer_of_another_model_is_refused_at_load() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixture("gpt2-tiny"), dir.path());
    let path = dir.path().join("tokenizer.json");
    let mut tok = read_json(&path);
    tok["model"]["vocab"]["ĠParis"] = 70000.into();
    std::fs::write(&path, tok.to_string()).unwrap();
    let m = dir.path().to_str().unwrap();
    let needle = "token ids run to 70000, past the model's 50257 embedding rows";
    assert_input_error(&kcirc(&["predict", "--model", m, "--prompt", "The capital of France is Paris"]), needle);
    let o = kcirc(&["lens", "--model", m, "--prompt", "The capital of France is", "--subject", "France", "--object", "Paris"]);
    assert_input_error(&o, needle);
}

/// Discovery facts whose mean-ablated prompts equal the prompts (every fact alike) leave the empty circuit
/// losing nothing: no size reaches a faithfulness target. That is the input's doing, one line and exit 2; it
/// was an internal error (exit 70) that also stopped a batch run, losing the other relations' lines.
#[test]
fn facts_that_leave_nothing_to_explain_are_bad_input_not_a_bug() {
    let dir = tempfile::tempdir().unwrap();
    let fact = r#"{"subject":"France","relation":"alike","object":"Paris","template":"The capital of {} is"}"#;
    let (rels, alike) = capitals_and(dir.path(), "alike.jsonl", &format!("{fact}\n").repeat(6));
    let run = tiny_eap;
    let out = dir.path().join("o.json");
    assert_input_error(
        &run(&["--triples", &alike, "--out", out.to_str().unwrap()]),
        "the empty circuit loses nothing on the discovery facts",
    );
    assert!(!out.exists());
    let out_dir = dir.path().join("out");
    let o = run(&["--relations", rels.to_str().unwrap(), "--out-dir", out_dir.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("alike.jsonl: the empty circuit loses nothing"), "{}", stderr(&o));
    assert!(out_dir.join("country_capital_city.json").is_file(), "the other relation is not lost");
    assert_eq!(stdout(&o).lines().count(), 2, "a summary line for each relation: {}", stdout(&o));
}

/// `data counterfactuals --count 0` is refused (it printed nothing and succeeded).
#[test]
fn counterfactuals_refuse_count_0() {
    let (m, t) = (fixture("gpt2-tiny"), root().join("data/country_capital_city.jsonl"));
    let o = kcirc(&["data", "counterfactuals", "--model", m.to_str().unwrap(), "--triples", t.to_str().unwrap(), "--count", "0"]);
    assert_input_error(&o, "--count must be at least 1");
}
