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
