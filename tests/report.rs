//! `kcirc report` and the standalone SVG: deterministic bytes, one element per node and per drawn edge,
//! escaping of odd names, old-format / empty / 20,000-edge circuits, every section from real command outputs,
//! and bad input refused (exit 2) with no file written.
mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;
use kcirc::circuit::{CircuitFile, ModelShape, RunInfo};
use kcirc::discover::Circuit;
use kcirc::graph::Graph;
use kcirc::report::{Options, Sections};

fn kcirc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kcirc")).args(args).arg("--quiet").output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Elements of the circuit picture: `<g class="node">` and `<path class="edge …">`.
fn count(markup: &str, what: &str) -> usize {
    markup.matches(if what == "node" { "<g class=\"node\"" } else { "<path class=\"edge " }).count()
}

/// Well-formed markup: every tag closed in order (void HTML elements and `/>` excepted), every `&` an entity
/// this writer emits. Enough to catch a name that breaks out of its attribute or element.
fn assert_well_formed(markup: &str) {
    let mut stack: Vec<String> = vec![];
    let mut rest = markup;
    while let Some(i) = rest.find('<') {
        let text = &rest[..i];
        for (j, _) in text.match_indices('&') {
            let ent = &text[j..];
            assert!(
                ["&amp;", "&lt;", "&gt;", "&quot;", "&#39;"].iter().any(|e| ent.starts_with(e)),
                "bare & in {:?}",
                &ent[..ent.len().min(30)]
            );
        }
        rest = &rest[i..];
        let end = rest.find('>').expect("unclosed tag");
        let tag = &rest[1..end];
        rest = &rest[end + 1..];
        if tag.starts_with('?') || tag.starts_with('!') {
            continue;
        }
        // Inside a script or style element, text runs to its closing tag.
        if tag == "script" || tag == "style" {
            let close = format!("</{tag}>");
            let k = rest.find(&close).expect("unclosed script/style");
            rest = &rest[k + close.len()..];
            continue;
        }
        assert!(!tag.contains('<'), "< inside a tag: {tag}");
        let quotes = tag.matches('"').count();
        assert_eq!(quotes % 2, 0, "unbalanced quotes in <{tag}>");
        let name: String = tag.trim_start_matches('/').chars().take_while(|c| c.is_ascii_alphanumeric()).collect();
        if let Some(closing) = tag.strip_prefix('/') {
            let closing: String = closing.chars().take_while(|c| c.is_ascii_alphanumeric()).collect();
            assert_eq!(stack.pop().as_deref(), Some(closing.as_str()), "mismatched </{closing}>");
        } else if !tag.ends_with('/') && !["meta", "input", "br", "link"].contains(&name.as_str()) {
            stack.push(name);
        }
    }
    assert!(stack.is_empty(), "unclosed: {stack:?}");
}

fn run_info(model: &str, shape: ModelShape, relation: &str) -> RunInfo {
    RunInfo {
        model: model.into(),
        model_shape: shape,
        relation: relation.into(),
        triples: None,
        method: "eap-ig".into(),
        ablation: kcirc::intervene::Ablation::Mean,
        metric: kcirc::metric::Metric::Kl,
        threshold: None,
        signed: None,
        ig_steps: Some(5),
        selection: None,
        candidates: None,
        seed: 0,
        k: 10,
        filter_known: true,
        n_examples: 0,
        kcirc_version: "test".into(),
        stability: None,
        demonstrations: None,
        edits: None,
        mean_over: None,
        n_reference: None,
        examples: vec![],
        reference: vec![],
    }
}

/// A circuit of `n` edges of SmolLM2's graph, spread evenly over it, with seeded effects of both signs.
fn synthetic(n: usize, seed: u64) -> CircuitFile {
    let cfg = kcirc::model::load_config(fixture("configs/smollm2-135m").to_str().unwrap()).unwrap();
    let g = Graph::new(&cfg);
    let mut rng = kcirc::data::SplitMix64(seed);
    let mut removed = vec![true; g.edges.len()];
    let mut effect = vec![None; g.edges.len()];
    for e in (0..n).map(|i| i * g.edges.len() / n) {
        removed[e] = false;
        let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        effect[e] = Some((u - 0.3) * 10f64.powf(-4.0 * u));
    }
    let c = Circuit { removed, effect, metric: 0.1, chosen: None };
    CircuitFile::new(run_info("models/SmolLM2-135M-Instruct.Q4_1.gguf", ModelShape::from(&cfg), "synthetic"), &g, &c)
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

#[test]
fn same_circuit_same_bytes_and_one_element_per_node_and_drawn_edge() {
    let file = synthetic(1200, 7);
    let s = Sections::new(file.clone(), "c.json").unwrap();
    let opts = Options { edges: 300, max_edges: 1000 };
    let (html, svg) = (s.html(&opts), s.circuit_svg(&opts));
    assert_eq!(html, Sections::new(file.clone(), "c.json").unwrap().html(&opts), "same input, same page");
    assert_eq!(svg, s.circuit_svg(&opts));
    assert_eq!(count(&html, "node"), file.nodes.len());
    assert_eq!(count(&svg, "node"), file.nodes.len());
    assert_eq!(count(&html, "edge"), 1000, "max_edges drawn in the page");
    assert_eq!(html.matches("<path class=\"edge pos off\"").count() + html.matches("<path class=\"edge neg off\"").count(), 700);
    assert_eq!(count(&svg, "edge"), 300, "the SVG draws the strongest --edges");
    assert!(html.contains("The 200 weakest edges are not drawn"), "says what is left out");
    assert_well_formed(&html);
    assert_well_formed(&svg);
    // The drawn edges are the strongest: every drawn |effect| ≥ every undrawn one.
    let lay = kcirc::report::layout::layout(&file, 300);
    let drawn: std::collections::BTreeSet<usize> = lay.edges.iter().map(|e| e.index).collect();
    let weakest_drawn = drawn.iter().map(|&i| file.edges[i].effect.unwrap().abs()).fold(f64::INFINITY, f64::min);
    let strongest_left =
        (0..file.edges.len()).filter(|i| !drawn.contains(i)).map(|i| file.edges[i].effect.unwrap().abs()).fold(0.0, f64::max);
    assert!(weakest_drawn >= strongest_left);
    // Rows bottom to top: input lowest, logits highest, layer l's heads below its MLP and above layer l-1's.
    let y = |n: &str| lay.nodes.iter().find(|b| b.name == n).map(|b| b.y);
    let (input, logits) = (y("input").unwrap(), y("logits").unwrap());
    for b in &lay.nodes {
        assert!(b.y <= input && b.y >= logits, "{} outside input..logits", b.name);
    }
    let heads: Vec<&kcirc::report::layout::NodeBox> =
        lay.nodes.iter().filter(|b| matches!(b.kind, kcirc::report::layout::Kind::Head { .. })).collect();
    for a in &heads {
        for b in &heads {
            if let (kcirc::report::layout::Kind::Head { layer: la, head: ha }, kcirc::report::layout::Kind::Head { layer: lb, head: hb }) =
                (a.kind, b.kind)
            {
                assert_eq!(la < lb, a.y > b.y, "{} vs {}", a.name, b.name);
                assert_eq!(ha == hb, a.x == b.x, "one column per head index: {} vs {}", a.name, b.name);
            }
        }
    }
}

#[test]
fn odd_names_are_escaped_everywhere() {
    let mut file = synthetic(30, 1);
    file.run.relation = "cap</title><script>alert(1)</script>".into();
    file.run.model = "m\"odel' & <b>".into();
    let odd = ["<script>alert(2)</script>", "a&b\"c'd", "x<y", "]]>--></svg>"];
    for (i, name) in odd.iter().enumerate() {
        file.edges[i].sender = name.to_string();
        file.edges[i].name = format!("{name}->logits");
        file.nodes.push(name.to_string());
    }
    let s = Sections::new(file.clone(), "odd.json").unwrap();
    let opts = Options::default();
    for markup in [s.html(&opts), s.circuit_svg(&opts)] {
        assert_well_formed(&markup);
        assert!(!markup.contains("<script>alert"), "a name became markup");
        assert!(!markup.contains("<b>"));
        assert!(markup.contains("&lt;script&gt;alert(2)&lt;/script&gt;"));
        assert!(markup.contains("a&amp;b&quot;c&#39;d"));
        assert_eq!(count(&markup, "node"), file.nodes.len(), "odd nodes drawn once each");
        assert_eq!(markup.matches("<script>").count(), usize::from(markup.starts_with("<!DOCTYPE")), "only the page's own script");
    }
}

#[test]
fn old_format_empty_and_20000_edge_circuits_give_valid_reports() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Format 1, as kcirc 0.1 wrote it: no run parameters beyond threshold and signed, no metric_empty.
    let mut v = serde_json::to_value(synthetic(50, 3)).unwrap();
    let obj = v.as_object_mut().unwrap();
    for key in ["triples", "k", "filter_known", "n_examples", "kcirc_version", "metric_empty", "ig_steps"] {
        obj.remove(key);
    }
    obj.insert("format".into(), 1.into());
    let old = write(d, "old.json", &serde_json::to_string_pretty(&v).unwrap());
    let out = d.join("old.html");
    let o = kcirc(&["report", "--circuit", &old, "--out", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let html = std::fs::read_to_string(&out).unwrap();
    assert!(html.contains("circuit file format 1"));
    assert_eq!(count(&html, "node"), v["nodes"].as_array().unwrap().len());
    assert_eq!(count(&html, "edge"), 50);
    assert_well_formed(&html);

    // Empty: a page that says so, no node or edge elements.
    let mut empty = synthetic(0, 0);
    assert!(empty.edges.is_empty() && empty.nodes.is_empty());
    empty.n_edges = 0;
    let e = write(d, "empty.json", &empty.to_json().unwrap());
    let (out, svg) = (d.join("empty.html"), d.join("empty.svg"));
    let o = kcirc(&["report", "--circuit", &e, "--out", out.to_str().unwrap(), "--svg", svg.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    for p in [&out, &svg] {
        let text = std::fs::read_to_string(p).unwrap();
        assert!(text.contains("empty circuit: no edges"));
        assert_eq!((count(&text, "node"), count(&text, "edge")), (0, 0));
        assert_well_formed(&text);
    }

    // 20,000 edges: the default draws the strongest 5,000 and shows 500; a few MB.
    let big = synthetic(20_000, 11);
    assert_eq!(big.edges.len(), 20_000);
    let b = write(d, "big.json", &big.to_json().unwrap());
    let (out, svg) = (d.join("big.html"), d.join("big.svg"));
    let o = kcirc(&["report", "--circuit", &b, "--out", out.to_str().unwrap(), "--svg", svg.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let html = std::fs::read_to_string(&out).unwrap();
    assert!(html.len() < 4_000_000, "{} bytes", html.len());
    assert_eq!(count(&html, "edge"), 5000);
    assert_eq!(html.matches(" off\" d=").count(), 4500, "edges past the first 500 start hidden");
    assert_eq!(count(&html, "node"), big.nodes.len());
    assert!(html.contains("The 15000 weakest edges are not drawn"));
    assert_well_formed(&html);
    let svg = std::fs::read_to_string(&svg).unwrap();
    assert_eq!(count(&svg, "edge"), 500);
    assert!(svg.len() < 1_000_000, "{} bytes", svg.len());
}

/// Discovery, curve, lens, heads and a ROME edit on the tiny random GPT-2 (it knows no facts: `--no-filter`), as the
/// commands write them; returns the circuit's path.
fn tiny_outputs(d: &Path) -> String {
    let model = fixture("gpt2-tiny");
    let m = model.to_str().unwrap();
    let triples = root().join("data/country_capital_city.jsonl");
    let t = triples.to_str().unwrap();
    let c = d.join("c.json");
    let svg = d.join("discover.svg");
    let common = ["--examples", "4", "--no-filter", "--ablation", "mean", "--seed", "1"];
    let o = kcirc(
        &[
            &["discover", "--model", m, "--triples", t, "--top-n", "40", "--random", "2"][..],
            &common,
            &["--out", c.to_str().unwrap(), "--svg", svg.to_str().unwrap()],
        ]
        .concat(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let run = |args: &[&str], out: &str| {
        let o = kcirc(args);
        assert!(o.status.success(), "{}", stderr(&o));
        std::fs::write(d.join(out), &o.stdout).unwrap();
    };
    let cs = c.to_str().unwrap();
    run(&[&["curve", "--model", m, "--triples", t, "--sizes", "0.01,0.1,1", "--random", "2"][..], &common].concat(), "curve.json");
    run(&["lens", "--model", m, "--triples", t, "--circuit", cs, "--max-facts", "4"], "lens.json");
    run(&["heads", "--model", m, "--triples", t, "--circuit", cs, "--no-filter", "--all", "--random", "2"], "heads.json");
    let edit = ["--subject", "France", "--template", "The capital of {} is the city of", "--object", "Paris", "--new-object", "Rome"];
    run(&[&["edit", "--model", m, "--triples", t, "--lens", "--circuit", cs][..], &edit].concat(), "edit.json");
    cs.to_string()
}

#[test]
fn every_section_from_real_outputs_and_discover_svg_matches_report_svg() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let c = tiny_outputs(d);
    let p = |n: &str| d.join(n).to_str().unwrap().to_string();
    let (out, svg) = (p("r.html"), p("r.svg"));
    let args = [
        "report",
        "--circuit",
        &c,
        "--curve",
        &p("curve.json"),
        "--lens",
        &p("lens.json"),
        "--heads",
        &p("heads.json"),
        "--edit",
        &p("edit.json"),
    ];
    let o = kcirc(&[&args[..], &["--out", &out, "--svg", &svg]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    let html = std::fs::read_to_string(&out).unwrap();
    let file = CircuitFile::read(Path::new(&c)).unwrap();
    for id in ["circuit", "held-out", "curve", "lens", "heads", "edit", "run"] {
        assert!(html.contains(&format!("<section id=\"{id}\">")), "section {id}");
    }
    assert!(html.contains("The relation's circuit rediscovered on the edited model"), "the edit's circuit change");
    assert_eq!(count(&html, "node"), file.nodes.len());
    assert_eq!(count(&html, "edge"), file.edges.len());
    assert_well_formed(&html);
    // Offline: no URL but the SVG namespace.
    let urls = html.matches("http").count();
    assert_eq!(urls, html.matches(kcirc::report::svg::SVG_NS).count(), "only the SVG namespace");
    assert_eq!(html.matches(kcirc::report::svg::SVG_NS).count(), html.matches("<svg ").count());
    // Held-out numbers from the file's own report.
    let ev = file.eval.as_ref().unwrap();
    assert!(html.contains(&format!("<td><b>{:.3}</b></td>", ev["circuit"]["hit_at_k"].as_f64().unwrap())));
    // The curve's table ends each row with the circuit's Hit@k on the discovery facts.
    let curve: kcirc::curve::Curve = serde_json::from_str(&std::fs::read_to_string(p("curve.json")).unwrap()).unwrap();
    assert!(html.contains("<th>discovery Hit@10</th>") && html.contains(">discovery Hit@10</text>"));
    for pt in &curve.points {
        let d = pt.discovery.unwrap().hit_at_k;
        assert!(html.contains(&format!("<td>{d:.3}</td></tr>")), "size {}: discovery Hit@10 {d}", pt.size);
    }
    assert!(html.contains("The circuit&#39;s Hit@10 on held-out and on discovery facts</text>"));
    // A curve without held-out facts (`curve --no-eval`) titles that chart by what it draws.
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(p("curve.json")).unwrap()).unwrap();
    v["n_held_out"] = 0.into();
    for pt in v["points"].as_array_mut().unwrap() {
        pt.as_object_mut().unwrap().remove("held_out");
        let r = pt["random"].as_object_mut().unwrap();
        for key in ["held_out_mean", "held_out_sd", "held_out_faithfulness_mean"] {
            r.remove(key);
        }
    }
    std::fs::write(p("no-eval.json"), serde_json::to_string(&v).unwrap()).unwrap();
    let o = kcirc(&["report", "--circuit", &c, "--curve", &p("no-eval.json"), "--out", &p("no-eval.html")]);
    assert!(o.status.success(), "{}", stderr(&o));
    let no_eval = std::fs::read_to_string(p("no-eval.html")).unwrap();
    assert!(no_eval.contains("The circuit&#39;s Hit@10 on the discovery facts</text>"));
    assert!(!no_eval.contains("held-out Hit@10</text>") && no_eval.contains(">discovery Hit@10</text>"));
    // The same again: same bytes; `discover --svg` draws what `report --svg` draws.
    let o = kcirc(&[&args[..], &["--out", &p("r2.html")]].concat());
    assert!(o.status.success());
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(p("r2.html")).unwrap());
    // A section appears only when its data is given.
    let plain = p("plain.svg");
    assert!(kcirc(&["report", "--circuit", &c, "--svg", &plain, "--out", &p("plain.html")]).status.success());
    let bare = std::fs::read_to_string(p("plain.html")).unwrap();
    for id in ["curve", "lens", "heads", "edit"] {
        assert!(!bare.contains(&format!("<section id=\"{id}\">")), "section {id} without its file");
    }
    assert_eq!(std::fs::read(p("discover.svg")).unwrap(), std::fs::read(&plain).unwrap());
    let svg_text = std::fs::read_to_string(&svg).unwrap();
    assert!(svg_text.starts_with("<?xml"));
    assert_eq!(count(&svg_text, "node"), file.nodes.len());
    assert_well_formed(&svg_text);
}

/// Exit 2, one line naming the file, and neither output written.
#[test]
fn bad_input_exits_2_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let good = synthetic(20, 2);
    let c = write(d, "c.json", &good.to_json().unwrap());
    let out = d.join("r.html");
    let svg = d.join("r.svg");
    let curve = |relation: &str, model: &str| {
        serde_json::json!({"format": 1, "model": model, "relation": relation, "method": "eap-ig", "ablation": "mean", "seed": 0,
            "k": 10, "n_examples": 4, "n_held_out": 4, "n_edges_total": 70651, "random_runs": 0,
            "points": [{"size": 0.0, "n_edges": 0, "faithfulness": {"logit": 0.0, "kl": 0.0}}],
            "areas": {"logit": {"cpr": 0.0, "cmd": 0.0}, "kl": {"cpr": 0.0, "cmd": 0.0}}})
        .to_string()
    };
    let ok_curve = write(d, "ok-curve.json", &curve("synthetic", "/elsewhere/SmolLM2-135M-Instruct.Q4_1.gguf"));
    let o = kcirc(&["report", "--circuit", &c, "--curve", &ok_curve, "--out", out.to_str().unwrap()]);
    assert!(o.status.success(), "the same model by another path matches: {}", stderr(&o));
    std::fs::remove_file(&out).unwrap();
    let mut eval_bad = serde_json::to_value(&good).unwrap();
    eval_bad["eval"] = serde_json::json!({"full": 1});
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["--circuit".into(), write(d, "nojson.json", "{ not json")], "nojson.json: not JSON"),
        (vec!["--circuit".into(), d.join("missing.json").to_str().unwrap().into()], "missing.json"),
        (vec!["--circuit".into(), write(d, "noformat.json", "{\"edges\": []}")], "noformat.json: not a circuit file"),
        (vec!["--circuit".into(), write(d, "evalbad.json", &eval_bad.to_string())], "evalbad.json: `eval` is not a held-out report"),
        (vec!["--circuit".into(), c.clone(), "--curve".into(), c.clone()], "c.json: not a curve"),
        (
            vec!["--circuit".into(), c.clone(), "--curve".into(), write(d, "rel.json", &curve("other", "SmolLM2-135M-Instruct.Q4_1.gguf"))],
            "rel.json: this curve is for relation `other`",
        ),
        (
            vec!["--circuit".into(), c.clone(), "--curve".into(), write(d, "mod.json", &curve("synthetic", "gpt2"))],
            "mod.json: this curve is for model `gpt2`",
        ),
        (vec!["--circuit".into(), c.clone(), "--lens".into(), ok_curve.clone()], "ok-curve.json: not a lens report"),
        (vec!["--circuit".into(), c.clone(), "--heads".into(), write(d, "h.json", "[]")], "h.json: not a head report"),
        (vec!["--circuit".into(), c.clone(), "--edit".into(), write(d, "e.json", "{}")], "e.json: not an edit report"),
    ];
    for (args, needle) in cases {
        let mut all: Vec<&str> = vec!["report"];
        all.extend(args.iter().map(String::as_str));
        all.extend(["--out", out.to_str().unwrap(), "--svg", svg.to_str().unwrap()]);
        let o = kcirc(&all);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{needle}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert!(err.contains(needle), "expected {needle:?} in {err}");
        assert!(!err.contains("panicked"));
        assert!(!out.exists() && !svg.exists(), "{needle}: no output file after bad input");
        let leftovers: Vec<_> =
            std::fs::read_dir(d).unwrap().filter_map(|e| e.ok()).filter(|e| e.file_name().to_string_lossy().contains(".tmp-")).collect();
        assert!(leftovers.is_empty());
    }
    // No output asked for: a flag error.
    let o = kcirc(&["report", "--circuit", &c]);
    assert_eq!(o.status.code(), Some(2));
}

/// A circuit file without a held-out report: the page says so; with --model and --triples it measures the one
/// `kcirc eval` prints (same k, seed and random circuits).
#[test]
fn model_and_triples_measure_the_held_out_table() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let model = fixture("gpt2-tiny");
    let m = model.to_str().unwrap();
    let triples = root().join("data/country_capital_city.jsonl");
    let t = triples.to_str().unwrap();
    let c = d.join("c.json");
    let cs = c.to_str().unwrap();
    let o = kcirc(&["discover", "--model", m, "--triples", t, "--top-n", "20", "--examples", "4", "--no-filter", "--no-eval", "--out", cs]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = d.join("r.html");
    let o = kcirc(&["report", "--circuit", cs, "--out", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(std::fs::read_to_string(&out).unwrap().contains("has no held-out report"));
    let o = kcirc(&["report", "--circuit", cs, "--model", m, "--triples", t, "--random", "2", "--out", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let html = std::fs::read_to_string(&out).unwrap();
    let e = kcirc(&["eval", "--model", m, "--circuit", cs, "--triples", t, "--random", "2", "--no-filter"]);
    assert!(e.status.success(), "{}", stderr(&e));
    let ev: serde_json::Value = serde_json::from_slice(&e.stdout).unwrap();
    for v in ["full", "circuit", "empty"] {
        let logit = ev[v]["target_logit"].as_f64().unwrap();
        assert!(html.contains(&format!("{logit:.3}")), "{v} target logit {logit:.3}");
    }
    assert!(html.contains(&format!("{} held-out facts", ev["n_triples"])));
    assert!(html.contains("random ×2"));
}

/// Curves of 20 to 40 sizes: x labels are thinned so that no two drawn ones overlap, and the first and last stay.
#[test]
fn chart_x_labels_never_overlap() {
    use kcirc::report::svg::{chart, Chart, Series, YScale};
    for n in 20..=40 {
        let labels: Vec<String> =
            (0..n).map(|i| if i + 1 == n { "100%".into() } else { format!("{:.3}%", 0.05 * 1.25f64.powi(i)) }).collect();
        let values = (0..n).map(|i| Some(i as f64 / n as f64)).collect();
        let svg = chart(&Chart {
            title: "t".into(),
            x_labels: labels.clone(),
            x_title: "x".into(),
            y_title: "y".into(),
            y: YScale::Linear { lo: 0.0, hi: 1.0 },
            series: vec![Series { name: "s".into(), color: "#000", dashed: false, values, band: None }],
            width: 500.0,
            height: 250.0,
        });
        let drawn: Vec<(f64, String)> = svg
            .lines()
            .filter(|l| l.starts_with("<text class=\"tk\" x=\"") && l.contains("text-anchor=\"middle\""))
            .map(|l| {
                let x = l.split("x=\"").nth(1).unwrap().split('"').next().unwrap().parse().unwrap();
                (x, l.split('>').nth(1).unwrap().split('<').next().unwrap().to_string())
            })
            .filter(|(_, text)| labels.contains(text))
            .collect();
        assert_eq!(drawn.first().unwrap().1, labels[0]);
        assert_eq!(drawn.last().unwrap().1, "100%");
        let longest = labels.iter().map(|l| l.chars().count()).max().unwrap() as f64;
        for w in drawn.windows(2) {
            assert!(w[1].0 - w[0].0 >= longest * 6.0, "{n} labels: {:?} and {:?} overlap", w[0], w[1]);
        }
    }
}

/// A legend too long for one row wraps onto more, each entry inside the chart, and the chart grows by the rows.
#[test]
fn chart_legend_wraps_inside_the_chart() {
    use kcirc::report::svg::{chart, Chart, Series, YScale};
    let names = ["held-out Hit@10", "held-out Hit@1", "discovery Hit@10", "random, held-out Hit@10 (± sd)"];
    let series = names
        .iter()
        .map(|n| Series { name: n.to_string(), color: "#000", dashed: false, values: vec![Some(0.1), Some(0.9)], band: None })
        .collect();
    let svg = chart(&Chart {
        title: "t".into(),
        x_labels: vec!["0".into(), "100%".into()],
        x_title: "x".into(),
        y_title: "y".into(),
        y: YScale::Linear { lo: 0.0, hi: 1.0 },
        series,
        width: 500.0,
        height: 230.0,
    });
    let mut rows = std::collections::BTreeSet::new();
    for name in names {
        let line = svg.lines().find(|l| l.ends_with(&format!(">{name}</text>"))).unwrap_or_else(|| panic!("{name}"));
        let attr = |a: &str| -> f64 { line.split(&format!(" {a}=\"")).last().unwrap().split('"').next().unwrap().parse().unwrap() };
        assert!(attr("x") + 6.0 * name.chars().count() as f64 <= 500.0 - 12.0, "{name} runs past the edge");
        rows.insert(attr("y") as i64);
    }
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(svg.contains("height=\"244\""), "one extra row of 14 px");
}
