//! The shape of the library, checked: no module imports another that imports it back (top-level modules form
//! a DAG, and no two sibling files import each other), and the library's core names no CLI or terminal crate.
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every library source file (the binary's `main.rs` and `commands.rs` excluded), relative to `src/`.
fn library_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let mut files = vec![];
    walk(&src(), &mut files);
    let src = src();
    let mut rel: Vec<PathBuf> = files.iter().map(|f| f.strip_prefix(&src).unwrap().to_path_buf()).collect();
    rel.retain(|f| f != Path::new("main.rs") && f != Path::new("commands.rs"));
    rel.sort();
    rel
}

/// The source without `//` comments (doc comments mention modules freely).
fn code(path: &Path) -> String {
    std::fs::read_to_string(src().join(path))
        .unwrap()
        .lines()
        .map(|l| match l.find("//") {
            Some(i) if !l[..i].contains('"') => &l[..i],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Identifiers following `prefix` in `text`: `crate::graph::Block` gives `graph`; `crate::{a, b::c}` gives `a`
/// and `b`.
fn after(text: &str, prefix: &str) -> Vec<String> {
    let ident = |s: &str| s.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect::<String>();
    let mut out = vec![];
    for (i, _) in text.match_indices(prefix) {
        let rest = &text[i + prefix.len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for part in group[..end].split(',') {
                out.push(ident(part.trim()));
            }
        } else {
            out.push(ident(rest));
        }
    }
    out.retain(|s| !s.is_empty());
    out
}

/// The top-level module a file belongs to (`discover/acdc.rs` → `discover`, `lib.rs` → `lib`).
fn top(f: &Path) -> String {
    let first = f.components().next().unwrap().as_os_str().to_str().unwrap();
    first.trim_end_matches(".rs").to_string()
}

#[test]
fn top_level_modules_form_a_dag() {
    let files = library_files();
    let modules: BTreeSet<String> = files.iter().map(|f| top(f)).filter(|m| m != "lib").collect();
    let mut deps: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in &files {
        let m = top(f);
        if m == "lib" {
            continue;
        }
        let text = code(f);
        for target in after(&text, "crate::") {
            // `crate::{Error, Result}` and `crate::VERSION` are the crate root's re-exports of `error`.
            let target = match target.as_str() {
                "Error" | "Result" => "error".to_string(),
                other => other.to_string(),
            };
            if modules.contains(&target) && target != m {
                deps.entry(m.clone()).or_default().insert(target);
            }
        }
    }
    // Depth-first search for a cycle, reporting its path.
    fn visit(m: &str, deps: &BTreeMap<String, BTreeSet<String>>, state: &mut BTreeMap<String, u8>, path: &mut Vec<String>) {
        match state.get(m) {
            Some(2) => return,
            Some(1) => {
                let start = path.iter().position(|p| p == m).unwrap();
                panic!("import cycle: {} -> {m}", path[start..].join(" -> "));
            }
            _ => {}
        }
        state.insert(m.to_string(), 1);
        path.push(m.to_string());
        for d in deps.get(m).into_iter().flatten() {
            visit(d, deps, state, path);
        }
        path.pop();
        state.insert(m.to_string(), 2);
    }
    let mut state = BTreeMap::new();
    for m in &modules {
        visit(m, &deps, &mut state, &mut vec![]);
    }
    // The pipeline is the top: it uses the others, nothing uses it but `batch`, which runs it for many relations
    // and which nothing uses.
    assert!(deps.iter().all(|(m, d)| m == "batch" || !d.contains("pipeline")), "{deps:?}");
    assert!(deps.values().all(|d| !d.contains("batch")), "{deps:?}");
    assert!(deps["pipeline"].contains("discover") && deps["pipeline"].contains("eval"));
}

#[test]
fn no_two_sibling_files_import_each_other() {
    let files = library_files();
    let by_dir: BTreeMap<PathBuf, Vec<&PathBuf>> = files.iter().fold(BTreeMap::new(), |mut m, f| {
        m.entry(f.parent().unwrap().to_path_buf()).or_insert_with(Vec::new).push(f);
        m
    });
    for (dir, fs) in by_dir {
        if dir.as_os_str().is_empty() {
            continue; // top level: the DAG test
        }
        let name = |f: &Path| f.file_stem().unwrap().to_str().unwrap().to_string();
        let siblings: BTreeSet<String> = fs.iter().map(|f| name(f)).filter(|n| n != "mod").collect();
        let parent = dir.to_str().unwrap().replace('/', "::");
        let mut deps: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for f in &fs {
            let me = name(f);
            let text = code(f);
            let mut refs = after(&text, "super::");
            refs.extend(after(&text, &format!("crate::{parent}::")));
            for r in refs {
                if siblings.contains(&r) && r != me {
                    deps.entry(me.clone()).or_default().insert(r);
                }
            }
        }
        for (a, ds) in &deps {
            for b in ds {
                assert!(!deps.get(b).is_some_and(|d| d.contains(a)), "{parent}::{a} and {parent}::{b} import each other");
            }
        }
    }
}

#[test]
fn the_library_core_names_no_cli_or_terminal_crate() {
    for f in library_files() {
        let text = code(&f);
        for krate in ["clap", "indicatif"] {
            assert!(!text.contains(&format!("{krate}::")), "{}: uses {krate}", f.display());
        }
    }
}
