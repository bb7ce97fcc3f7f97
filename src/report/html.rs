//! The report page: inline CSS, inline SVG, a few lines of inline script (the edge-count control and node
//! highlighting; the page reads fully without it). Sections appear only when their data was given.
use std::fmt::Write;

use serde::Deserialize;

use super::svg::{self, chart, esc, num, Chart, Series, YScale};
use super::{caption, layout, model_key, Options, Sections};
use crate::analysis::heads::{self, Role};
use crate::analysis::lens;
use crate::curve::Curve;
use crate::edit::measure;
use crate::eval;
use crate::rank::Metrics;

/// A fraction as a percentage with three significant digits (`0.582%`, `36.4%`, `100%`).
pub fn percent(f: f64) -> String {
    let p = 100.0 * f;
    if p == 0.0 || !p.is_finite() {
        return format!("{}%", num(p));
    }
    let decimals = (2 - p.abs().log10().floor() as i32).clamp(0, 4) as usize;
    let s = format!("{p:.decimals$}");
    let s = if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.') } else { &s };
    format!("{s}%")
}

/// Three decimals, without a `-0.000`.
fn f3(x: f64) -> String {
    let s = format!("{x:.3}");
    if s == "-0.000" {
        "0.000".into()
    } else {
        s
    }
}

const CSS: &str = "*{box-sizing:border-box}\
body{margin:0;font-family:'DejaVu Sans',Helvetica,Arial,sans-serif;font-size:13px;color:#222;background:#f6f6f4}\
header{padding:10px 18px;background:#fff;border-bottom:1px solid #ddd}\
h1{font-size:19px;margin:0 0 3px}h1 small{font-weight:normal;color:#666;font-size:14px}\
h2{font-size:15px;margin:0 0 8px}h3{font-size:13px;margin:10px 0 4px}\
.meta{color:#555;margin:0}.note{color:#666;font-size:12px;margin:4px 0}.warn{color:#a33}\
main{display:grid;grid-template-columns:minmax(0,1fr) minmax(540px,42%);gap:12px;padding:12px;align-items:start}\
@media (max-width:1100px){main{grid-template-columns:1fr}}\
section{background:#fff;border:1px solid #ddd;border-radius:6px;padding:10px 12px;margin-bottom:12px;overflow-x:auto}\
.side{min-width:0}\
table{border-collapse:collapse;font-size:12px;margin:4px 0}\
th,td{padding:2px 7px;border-bottom:1px solid #eee;text-align:right;white-space:nowrap}\
th{background:#f3f3f0;font-weight:600}\
.wrap td:last-child,.wrap th:last-child{white-space:normal;text-align:left;min-width:150px}\
.wrap-first td:first-child{white-space:normal;min-width:220px}details{margin:4px 0}summary{cursor:pointer;color:#555;font-size:12px}td.l,th.l{text-align:left}tr.hi td{font-weight:600}\
.chip{display:inline-block;padding:0 5px;border-radius:3px;border:1px solid #999}\
.mover{background:#f4a261}.relation{background:#8fd17a}.mixed{background:#c6a7e8}.other{background:#fff2b8}\
#circuit-box{overflow:auto;max-height:86vh;border:1px solid #eee}\
#circuit-box svg.circuit{display:block;max-width:100%;height:auto}#circuit-box.fit svg.circuit{height:80vh;width:auto}\
.controls{margin:0 0 6px;font-size:12px}.controls input[type=range]{width:220px;vertical-align:middle}\
svg.chart{display:block;margin:4px 0}\
svg.chart .ct{font-size:12px;font-weight:600;fill:#222}svg.chart .tk{font-size:10px;fill:#555}\
svg.chart .gl{stroke:#eee}svg.chart .ax{stroke:#888}\
footer{color:#888;font-size:11px;padding:0 18px 14px}";

const SCRIPT: &str = "(function(){\
var svg=document.querySelector('svg.circuit');if(!svg)return;\
var edges=svg.querySelectorAll('path.edge');\
var r=document.getElementById('shown'),o=document.getElementById('shown-n');\
if(r)r.addEventListener('input',function(){var v=+r.value;o.textContent=v;\
for(var i=0;i<edges.length;i++)edges[i].classList.toggle('off',+edges[i].getAttribute('data-rank')>=v);});\
var nodes=svg.querySelectorAll('g.node');\
for(var j=0;j<nodes.length;j++){(function(n){var i=n.getAttribute('data-i');\
n.addEventListener('mouseenter',function(){svg.classList.add('focus');\
for(var k=0;k<edges.length;k++){var e=edges[k];if(e.getAttribute('data-s')===i||e.getAttribute('data-t')===i)e.classList.add('hl');}});\
n.addEventListener('mouseleave',function(){svg.classList.remove('focus');\
for(var k=0;k<edges.length;k++)edges[k].classList.remove('hl');});})(nodes[j]);}\
var f=document.getElementById('fit');\
if(f)f.addEventListener('change',function(){document.getElementById('circuit-box').classList.toggle('fit',f.checked);});\
})();";

/// A table: header cells, then rows of cells (already markup). A header starting with `<` is taken as is.
fn table(out: &mut String, head: &[&str], rows: &[Vec<String>], left: usize) {
    out.push_str("<table><tr>");
    for (i, h) in head.iter().enumerate() {
        let class = if i < left { " class=\"l\"" } else { "" };
        let _ = write!(out, "<th{class}>{}</th>", esc(h));
    }
    out.push_str("</tr>\n");
    for r in rows {
        out.push_str("<tr>");
        for (i, cell) in r.iter().enumerate() {
            let class = if i < left { " class=\"l\"" } else { "" };
            let _ = write!(out, "<td{class}>{cell}</td>");
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</table>\n");
}

fn opt(x: Option<f64>) -> String {
    x.map(num).unwrap_or_else(|| "—".into())
}

/// The page.
pub fn page(s: &Sections, opts: &Options) -> String {
    let f = &s.circuit;
    let run = &f.run;
    let mut out = String::with_capacity(1 << 20);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>kcirc report: {} · {}</title>\n<style>{CSS}</style></head>\n<body>\n",
        esc(&run.relation),
        esc(model_key(&run.model))
    );
    let faith = f.metric_empty.filter(|m| *m != 0.0).map(|m| 1.0 - f.metric_circuit / m);
    let _ = write!(
        out,
        "<header><h1>{} <small>{}</small></h1><p class=\"meta\">{} edges ({} of {}), {} nodes · {} · {} ablation · {} metric{}{}</p></header>\n<main>\n",
        esc(&run.relation),
        esc(&run.model),
        f.n_edges,
        percent(f.n_edges as f64 / f.n_edges_total.max(1) as f64),
        f.n_edges_total,
        f.nodes.len(),
        esc(&run.method),
        esc(&format!("{:?}", run.ablation).to_lowercase()),
        esc(&format!("{:?}", run.metric).to_lowercase()),
        faith.map(|x| format!(" · faithfulness on the discovery facts {}", num(x))).unwrap_or_default(),
        s.eval.as_ref().map(|e| format!(" · held-out Hit@{} {:.3} (full {:.3})", e.k, e.circuit.hit_at_k, e.full.hit_at_k)).unwrap_or_default()
    );
    circuit_section(&mut out, s, opts);
    out.push_str("<div class=\"side\">\n");
    match &s.eval {
        Some(e) => held_out_section(&mut out, e),
        None => out.push_str(
            "<section id=\"held-out\"><h2>Held-out facts</h2><p class=\"note\">This circuit file has no held-out report \
             (discovered with --no-eval): give --model and --triples to measure one.</p></section>\n",
        ),
    }
    if let Some(c) = &s.curve {
        curve_section(&mut out, c, f.n_edges as f64 / f.n_edges_total.max(1) as f64);
    }
    if let Some(l) = &s.lens {
        lens_section(&mut out, l);
    }
    if let Some(h) = &s.heads {
        heads_section(&mut out, h);
    }
    if let Some(e) = &s.edit {
        edit_section(&mut out, e);
    }
    run_section(&mut out, s);
    out.push_str("</div>\n</main>\n");
    let _ = write!(
        out,
        "<footer>kcirc {} report; circuit file format {}{}. Hover a node or an edge for its numbers.</footer>\n<script>{SCRIPT}</script>\n</body></html>\n",
        esc(crate::VERSION),
        f.format,
        if run.kcirc_version.is_empty() { String::new() } else { format!(", made by kcirc {}", esc(&run.kcirc_version)) }
    );
    out
}

fn circuit_section(out: &mut String, s: &Sections, opts: &Options) {
    let f = &s.circuit;
    let lay = layout::layout(f, opts.max_edges.max(opts.edges));
    let drawn = lay.edges.len();
    let shown = opts.edges.min(drawn);
    let rows = s.heads.as_ref().map(super::head_rows);
    let style = svg::CircuitStyle { heads: rows.as_ref(), shown, caption: caption(f, &lay, shown) };
    out.push_str("<section id=\"circuit\"><h2>Circuit</h2>\n");
    if f.edges.is_empty() {
        out.push_str("<p class=\"note\">The circuit is empty: no edge was kept.</p>\n");
    } else {
        let _ = writeln!(
            out,
            "<p class=\"controls\"><label>show the strongest <input type=\"range\" id=\"shown\" min=\"0\" max=\"{drawn}\" value=\"{shown}\"> \
             <output id=\"shown-n\">{shown}</output> of {drawn} drawn edges</label> · <label><input type=\"checkbox\" id=\"fit\"> fit to window</label></p>"
        );
        let mut notes = vec![
            "Layers bottom (input) to top (logits); one column per head index. Edge width and opacity by √|effect|, colour by sign (Δ metric when the edge is removed: above 0, the edge carries the model's answer)."
                .to_string(),
        ];
        if lay.n_not_drawn > 0 {
            notes.push(format!("The {} weakest edges are not drawn (--max-edges {}).", lay.n_not_drawn, opts.max_edges.max(opts.edges)));
        }
        if s.heads.is_some() {
            notes.push("Head colours: roles from the head report.".into());
        }
        let _ = writeln!(out, "<p class=\"note\">{}</p>", esc(&notes.join(" ")));
    }
    out.push_str("<div id=\"circuit-box\">\n");
    out.push_str(&svg::circuit(f, &lay, &style));
    out.push_str("</div></section>\n");
}

fn held_out_section(out: &mut String, e: &eval::Report) {
    out.push_str("<section id=\"held-out\"><h2>Held-out facts</h2>\n");
    type Get = fn(&Metrics) -> f64;
    let metrics: [(String, Get); 5] = [
        ("Hit@1".into(), |m| m.hit_at_1),
        (format!("Hit@{}", e.k), |m| m.hit_at_k),
        ("MRR".into(), |m| m.mrr),
        ("target logit".into(), |m| m.target_logit),
        ("p(target)".into(), |m| m.target_prob),
    ];
    let rows: Vec<Vec<String>> = metrics
        .iter()
        .map(|(name, get)| {
            vec![
                esc(name),
                f3(get(&e.full)),
                format!("<b>{}</b>", f3(get(&e.circuit))),
                format!("{} ± {}", f3(get(&e.random.mean)), f3(get(&e.random.sd))),
                f3(get(&e.empty)),
            ]
        })
        .collect();
    let random = format!("random ×{}", e.random.runs);
    table(out, &["", "full model", "circuit", &random, "empty circuit"], &rows, 1);
    let _ = writeln!(
        out,
        "<p class=\"note\">Faithfulness (target logit) {}. {} held-out facts ({} used for discovery skipped, {} the model does not know dropped{}); {} distinct answers. Random: mean ± sd over circuits of as many edges ({}). Hit@{}, 95% intervals over these facts (Wilson): {}.</p>",
        num(e.faithfulness),
        e.n_triples,
        e.n_skipped_discovery,
        e.n_dropped_unknown,
        if e.n_dropped_no_partner > 0 { format!(", {} without a resample partner dropped", e.n_dropped_no_partner) } else { String::new() },
        e.n_distinct_targets,
        e.n_edges,
        e.k,
        e.intervals_text()
    );
    for w in e.warnings() {
        let _ = writeln!(out, "<p class=\"note warn\">{}</p>", esc(&w));
    }
    out.push_str("</section>\n");
}

fn curve_section(out: &mut String, c: &Curve, own: f64) {
    let _ = writeln!(
        out,
        "<section id=\"curve\"><h2>Faithfulness curve</h2><p class=\"note\">Edges ranked by {} and cut at each size ({} ablation, {} discovery facts, {} held-out, {} random circuits per size). This circuit: {} of the edges.</p>",
        esc(&c.method),
        esc(&format!("{:?}", c.ablation).to_lowercase()),
        c.n_examples,
        c.n_held_out,
        c.random_runs,
        percent(own)
    );
    let labels: Vec<String> = c.points.iter().map(|p| if p.size == 0.0 { "0".into() } else { percent(p.size) }).collect();
    let all = |f: &dyn Fn(&crate::curve::Point) -> Option<f64>| -> Vec<Option<f64>> { c.points.iter().map(f).collect() };
    let band = |f: &dyn Fn(&crate::curve::Point) -> Option<(f64, f64)>| -> Option<Vec<Option<(f64, f64)>>> {
        let v: Vec<Option<(f64, f64)>> = c.points.iter().map(f).collect();
        v.iter().any(Option::is_some).then_some(v)
    };
    let rand = |p: &crate::curve::Point, kl: bool| {
        p.random.as_ref().map(|r| {
            let (m, sd) =
                if kl { (r.faithfulness_mean.kl, r.faithfulness_sd.kl) } else { (r.faithfulness_mean.logit, r.faithfulness_sd.logit) };
            (m - sd, m + sd)
        })
    };
    let mut series = vec![
        Series { name: "circuit, KL".into(), color: "#1f5fa8", dashed: false, values: all(&|p| Some(p.faithfulness.kl)), band: None },
        Series { name: "circuit, logit".into(), color: "#d9822b", dashed: false, values: all(&|p| Some(p.faithfulness.logit)), band: None },
    ];
    if c.points.iter().any(|p| p.random.is_some()) {
        series.push(Series {
            name: "random, KL (± sd)".into(),
            color: "#1f5fa8",
            dashed: true,
            values: all(&|p| p.random.as_ref().map(|r| r.faithfulness_mean.kl)),
            band: band(&|p| rand(p, true)),
        });
        series.push(Series {
            name: "random, logit".into(),
            color: "#d9822b",
            dashed: true,
            values: all(&|p| p.random.as_ref().map(|r| r.faithfulness_mean.logit)),
            band: band(&|p| rand(p, false)),
        });
    }
    let values = series.iter().flat_map(|s| s.values.iter().flatten().copied()).filter(|v| v.is_finite());
    let (lo, hi) = values.fold((0.0f64, 1.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    out.push_str(&chart(&Chart {
        title: "Faithfulness on the discovery facts".into(),
        x_labels: labels.clone(),
        x_title: "circuit size (share of all edges)".into(),
        y_title: "faithfulness".into(),
        y: YScale::Linear { lo: lo.max(-1.0), hi: hi.min(2.0) },
        series,
        width: 500.0,
        height: 250.0,
    }));
    let (has_held_out, has_discovery) = (c.points.iter().any(|p| p.held_out.is_some()), c.points.iter().any(|p| p.discovery.is_some()));
    if has_held_out || has_discovery {
        let k = c.k;
        let mut series = vec![];
        if has_held_out {
            series.push(Series {
                name: format!("held-out Hit@{k}"),
                color: "#1f5fa8",
                dashed: false,
                values: all(&|p| p.held_out.map(|h| h.metrics.hit_at_k)),
                band: None,
            });
            series.push(Series {
                name: "held-out Hit@1".into(),
                color: "#2a9d8f",
                dashed: false,
                values: all(&|p| p.held_out.map(|h| h.metrics.hit_at_1)),
                band: None,
            });
        }
        // What the circuit keeps on the facts it was found on: the gap to the held-out line is what does not
        // carry over.
        if has_discovery {
            series.push(Series {
                name: format!("discovery Hit@{k}"),
                color: "#8e44ad",
                dashed: false,
                values: all(&|p| p.discovery.map(|d| d.hit_at_k)),
                band: None,
            });
        }
        if c.points.iter().any(|p| p.random.as_ref().is_some_and(|r| r.held_out_mean.is_some())) {
            series.push(Series {
                name: format!("random, held-out Hit@{k} (± sd)"),
                color: "#777",
                dashed: true,
                values: all(&|p| p.random.as_ref().and_then(|r| r.held_out_mean.map(|m| m.hit_at_k))),
                band: band(&|p| {
                    let r = p.random.as_ref()?;
                    let (m, sd) = (r.held_out_mean?, r.held_out_sd?);
                    Some((m.hit_at_k - sd.hit_at_k, m.hit_at_k + sd.hit_at_k))
                }),
            });
        }
        out.push_str(&chart(&Chart {
            // Say only what is drawn: a `--no-eval` curve has no held-out line.
            title: match (has_held_out, has_discovery) {
                (true, true) => format!("The circuit's Hit@{k} on held-out and on discovery facts"),
                (true, false) => format!("The circuit's Hit@{k} on held-out facts"),
                _ => format!("The circuit's Hit@{k} on the discovery facts"),
            },
            x_labels: labels.clone(),
            x_title: "circuit size (share of all edges)".into(),
            y_title: "fraction of facts".into(),
            y: YScale::Linear { lo: 0.0, hi: 1.0 },
            series,
            width: 500.0,
            height: 230.0,
        }));
    }
    let hk = format!("Hit@{}", c.k);
    let rhk = format!("random Hit@{}", c.k);
    let rows: Vec<Vec<String>> = c
        .points
        .iter()
        .zip(&labels)
        .map(|(p, l)| {
            let r = p.random.as_ref();
            vec![
                esc(l),
                p.n_edges.to_string(),
                f3(p.faithfulness.kl),
                f3(p.faithfulness.logit),
                r.map(|r| format!("{} ± {}", f3(r.faithfulness_mean.kl), f3(r.faithfulness_sd.kl))).unwrap_or_else(|| "—".into()),
                p.held_out.map(|h| f3(h.metrics.hit_at_1)).unwrap_or_else(|| "—".into()),
                p.held_out.map(|h| f3(h.metrics.hit_at_k)).unwrap_or_else(|| "—".into()),
                r.and_then(|r| r.held_out_mean).map(|m| f3(m.hit_at_k)).unwrap_or_else(|| "—".into()),
                p.discovery.map(|d| f3(d.hit_at_k)).unwrap_or_else(|| "—".into()),
            ]
        })
        .collect();
    let dhk = format!("discovery Hit@{}", c.k);
    table(out, &["size", "edges", "f (KL)", "f (logit)", "random f (KL)", "Hit@1", &hk, &rhk, &dhk], &rows, 1);
    let a = &c.areas;
    let area = |x: Option<crate::curve::Areas>| x.map(|a| format!("{} / {}", f3(a.cpr), f3(a.cmd))).unwrap_or_else(|| "—".into());
    table(
        out,
        &["CPR / CMD", "KL", "logit", "held-out"],
        &[
            vec!["circuit".into(), area(Some(a.kl)), area(Some(a.logit)), area(a.held_out)],
            vec!["random".into(), area(a.random_kl), area(a.random_logit), area(a.random_held_out)],
        ],
        1,
    );
    out.push_str(
        "<p class=\"note\">CPR: area under the faithfulness curve (higher is better); CMD: area under |1 − f| (0 is best).</p></section>\n",
    );
}

fn lens_section(out: &mut String, l: &lens::Report) {
    let _ = writeln!(
        out,
        "<section id=\"lens\"><h2>Logit lens</h2><p class=\"note\">The target's rank at the last position after the embedding, each attention block (a) and each MLP (m); mean over {} fact{}.</p>",
        l.n_facts,
        if l.n_facts == 1 { "" } else { "s" }
    );
    let labels: Vec<String> = l.summary.iter().map(|p| p.point.clone()).collect();
    let mut series = vec![Series {
        name: "full model".into(),
        color: "#1f5fa8",
        dashed: false,
        values: l.summary.iter().map(|p| Some(p.mean_rank)).collect(),
        band: None,
    }];
    if l.summary.iter().any(|p| p.circuit_mean_rank.is_some()) {
        series.push(Series {
            name: "circuit".into(),
            color: "#d9822b",
            dashed: false,
            values: l.summary.iter().map(|p| p.circuit_mean_rank).collect(),
            band: None,
        });
    }
    if let [fact] = l.facts.as_slice() {
        if let Some(name) = &fact.compare {
            if fact.full.points.len() == labels.len() {
                series.push(Series {
                    name: format!("rival {name:?}"),
                    color: "#c0392b",
                    dashed: true,
                    values: fact.full.points.iter().map(|p| p.compare_rank.map(|r| r as f64)).collect(),
                    band: None,
                });
            }
        }
    }
    let max = series.iter().flat_map(|s| s.values.iter().flatten().copied()).fold(1.0f64, f64::max);
    out.push_str(&chart(&Chart {
        title: "Target's rank (0 = top-1), log scale".into(),
        x_labels: labels,
        x_title: "after".into(),
        y_title: "mean rank".into(),
        y: YScale::Rank { max },
        series,
        width: 500.0,
        height: 240.0,
    }));
    let mut rows = vec![];
    let circuit = l.circuit_emergence.as_deref().unwrap_or(&[]);
    let mut points: Vec<&str> = l.emergence.iter().map(|(p, _)| p.as_str()).collect();
    for (p, _) in circuit {
        if !points.contains(&p.as_str()) {
            points.push(p);
        }
    }
    for p in points {
        let count = |v: &[(String, usize)]| v.iter().find(|(q, _)| q == p).map(|(_, n)| n.to_string()).unwrap_or_else(|| "0".into());
        let mut r = vec![esc(p), count(&l.emergence)];
        if l.circuit_emergence.is_some() {
            r.push(count(circuit));
        }
        rows.push(r);
    }
    if l.circuit_emergence.is_some() {
        table(out, &["answer emerges at", "facts (full)", "facts (circuit)"], &rows, 1);
    } else {
        table(out, &["answer emerges at", "facts"], &rows, 1);
    }
    out.push_str("<p class=\"note\">Emerges: becomes top-1 there and stays top-1 to the end.</p></section>\n");
}

fn role_chip(r: Role) -> String {
    let name = match r {
        Role::Mover => "mover",
        Role::Relation => "relation",
        Role::Mixed => "mixed",
        Role::Other => "other",
    };
    format!("<span class=\"chip {name}\">{name}</span>")
}

fn heads_section(out: &mut String, h: &heads::Report) {
    let _ = writeln!(
        out,
        "<section id=\"heads\"><h2>Heads</h2><p class=\"note\">{} heads over {} facts: the last position's attention to the subject and relation, direct logit attribution (DLA) to the target, top tokens; roles first, then by DLA.</p>",
        h.heads.len(),
        h.n_facts
    );
    let order = |r: Role| match r {
        Role::Mover => 0,
        Role::Relation => 1,
        Role::Mixed => 2,
        Role::Other => 3,
    };
    let mut heads: Vec<&heads::HeadReport> = h.heads.iter().collect();
    heads.sort_by(|a, b| order(a.role).cmp(&order(b.role)).then(b.dla.total_cmp(&a.dla)).then(a.name.cmp(&b.name)));
    let rows = |heads: &[&heads::HeadReport]| -> Vec<Vec<String>> {
        heads
            .iter()
            .map(|x| {
                let top: Vec<String> = x.top_tokens.iter().take(4).map(|t| format!("{:?}", t.token)).collect();
                vec![
                    esc(&x.name),
                    role_chip(x.role),
                    f3(x.attention.subject),
                    f3(x.attention.relation),
                    format!("{:+.3}", x.dla),
                    format!("{:+.3}", x.dla_by_source.subject),
                    esc(&top.join(", ")),
                ]
            })
            .collect()
    };
    let head = ["head", "role", "subject", "relation", "DLA", "from subject", "top tokens"];
    let split = heads.iter().position(|x| x.role == Role::Other).unwrap_or(heads.len());
    out.push_str("<div class=\"wrap\">\n");
    if split > 0 {
        table(out, &head, &rows(&heads[..split]), 2);
    } else {
        out.push_str("<p class=\"note\">No head has a role.</p>\n");
    }
    if split < heads.len() {
        let _ = writeln!(out, "<details><summary>{} heads without a role</summary>", heads.len() - split);
        table(out, &head, &rows(&heads[split..]), 2);
        out.push_str("</details>\n");
    }
    out.push_str("</div>\n");
    if !h.checks.is_empty() {
        let _ = writeln!(out, "<h3>Ablation check ({} ablation; random: heads of the same layers)</h3>", esc(&h.ablation));
        let eff =
            |e: &heads::Effect| vec![num(e.mean_rank), f3(e.hit_at_1), f3(e.mean_target_prob), format!("{:+.3}", e.mean_delta_log_prob)];
        let mut rows = vec![];
        let mut full = vec!["nothing".to_string(), String::new()];
        full.extend(eff(&h.full));
        rows.push(full);
        for c in &h.checks {
            let mut r = vec![esc(&c.set), esc(&c.heads.join(" "))];
            r.extend(eff(&c.ablated));
            rows.push(r);
            let mut r = vec![format!("random ×{}", c.random_draws), format!("{} heads", c.heads.len())];
            r.extend(eff(&c.random));
            rows.push(r);
        }
        table(out, &["ablated", "heads", "mean rank", "Hit@1", "p(target)", "Δ log p"], &rows, 2);
    }
    out.push_str("</section>\n");
}

fn edit_section(out: &mut String, e: &measure::Report) {
    let _ = writeln!(
        out,
        "<section id=\"edit\"><h2>Edit: before and after</h2><p class=\"note\">{} at layer {}, {} request{} applied one after another.</p>",
        esc(&e.method),
        e.layer,
        e.requests.len(),
        if e.requests.len() == 1 { "" } else { "s" }
    );
    type Get = fn(&measure::Summary) -> Option<f64>;
    let measures: [(&str, Get); 6] = [
        ("reliability", |s| Some(s.reliability)),
        ("generalization", |s| s.generalization),
        ("locality, same relation", |s| s.locality_relation),
        ("locality, other relations", |s| s.locality_other),
        ("KL, same relation", |s| s.mean_kl_relation),
        ("KL, other relations", |s| s.mean_kl_other),
    ];
    let rows: Vec<Vec<String>> = measures
        .iter()
        .filter(|(_, get)| get(&e.after_each).is_some() || get(&e.at_end).is_some())
        .map(|(name, get)| vec![esc(name), opt(get(&e.after_each)), opt(get(&e.at_end))])
        .collect();
    table(out, &["", "after each edit", "after all edits"], &rows, 1);
    let rows: Vec<Vec<String>> = e
        .requests
        .iter()
        .map(|r| {
            let q = &r.request;
            let note = r.skipped.as_deref().map(|s| format!(" ({})", esc(s))).unwrap_or_default();
            vec![
                format!("{}: {} → <b>{}</b>{note}", esc(&q.template.replace("{}", &q.subject)), esc(&q.object), esc(&q.new_object)),
                format!("{} / {}", r.before.new_rank, r.before.old_rank),
                format!("{} / {}", r.after.reliability.new_rank, r.after.reliability.old_rank),
                format!("{} / {}", r.at_end.reliability.new_rank, r.at_end.reliability.old_rank),
                f3(r.after.reliability.new_prob),
            ]
        })
        .collect();
    out.push_str("<div class=\"wrap-first\">\n");
    table(out, &["request", "new / old rank before", "after", "final", "p(new)"], &rows, 1);
    out.push_str("</div>\n");
    if let Some(lenses) = &e.lens {
        for l in lenses.iter().take(4) {
            let labels: Vec<String> = l.points.iter().map(|p| p.point.clone()).collect();
            let col = |f: &dyn Fn(&crate::edit::circuit::LensStep) -> usize| -> Vec<Option<f64>> {
                l.points.iter().map(|p| Some(f(p) as f64)).collect()
            };
            let series = vec![
                Series { name: "new, before".into(), color: "#2a9d8f", dashed: true, values: col(&|p| p.new_before), band: None },
                Series { name: "new, after".into(), color: "#2a9d8f", dashed: false, values: col(&|p| p.new_after), band: None },
                Series { name: "old, before".into(), color: "#c0392b", dashed: true, values: col(&|p| p.old_before), band: None },
                Series { name: "old, after".into(), color: "#c0392b", dashed: false, values: col(&|p| p.old_after), band: None },
            ];
            let max = series.iter().flat_map(|s| s.values.iter().flatten().copied()).fold(1.0f64, f64::max);
            out.push_str(&chart(&Chart {
                title: format!("Lens of the edit on {:?}: rank of the new and old object", l.subject),
                x_labels: labels,
                x_title: "after".into(),
                y_title: "rank".into(),
                y: YScale::Rank { max },
                series,
                width: 500.0,
                height: 230.0,
            }));
            let _ = writeln!(
                out,
                "<p class=\"note\">Takes effect at {}; the new object is top-1 from {}.</p>",
                esc(l.takes_effect_at.as_deref().unwrap_or("—")),
                esc(l.new_top1_from.as_deref().unwrap_or("— (never)"))
            );
        }
        if lenses.len() > 4 {
            let _ = writeln!(out, "<p class=\"note\">Lens of the first 4 of {} requests shown.</p>", lenses.len());
        }
    }
    if let Some(change) = e.circuit.as_ref().and_then(|v| serde_json::from_value::<CircuitChange>(v.clone()).ok()) {
        let d = &change.diff;
        let _ = writeln!(
            out,
            "<h3>The relation's circuit rediscovered on the edited model</h3><p class=\"note\">{}: {} edges before, {} after; edge Jaccard {:.2}, node Jaccard {:.2}. Heads that join: {}. Heads that leave: {}.</p>",
            esc(&change.relation),
            change.edges_before,
            change.edges_after,
            d.edges.jaccard,
            d.nodes.jaccard,
            esc(&if d.heads_only_b.is_empty() { "none".into() } else { d.heads_only_b.join(" ") }),
            esc(&if d.heads_only_a.is_empty() { "none".into() } else { d.heads_only_a.join(" ") })
        );
    }
    out.push_str("</section>\n");
}

/// What `kcirc edit --circuit` records (the pipeline's `CircuitChange`, read back).
#[derive(Deserialize)]
struct CircuitChange {
    relation: String,
    edges_before: usize,
    edges_after: usize,
    diff: crate::analysis::diff::Pair,
}

fn run_section(out: &mut String, s: &Sections) {
    let f = &s.circuit;
    let r = &f.run;
    out.push_str("<section id=\"run\"><h2>Run</h2>\n");
    let mut rows: Vec<(&str, String)> = vec![("model", r.model.clone()), ("relation", r.relation.clone())];
    if let Some(t) = &r.triples {
        rows.push(("relation file", format!("{} (digest {})", t.path, t.digest)));
    }
    rows.push(("method", r.method.clone()));
    if let Some(sel) = &r.selection {
        rows.push(("selection", serde_json::to_string(sel).unwrap_or_default()));
    }
    if let Some(c) = &f.chosen_size {
        rows.push(("chosen size", format!("top {} edges reach faithfulness {} (target {})", c.top_n, num(c.faithfulness), num(c.target))));
    }
    for (name, v) in [
        ("ig_steps", r.ig_steps.map(|x| x.to_string())),
        ("threshold", r.threshold.map(num)),
        ("candidates", r.candidates.map(|x| x.to_string())),
    ] {
        if let Some(v) = v {
            rows.push((name, v));
        }
    }
    rows.push(("ablation / metric", format!("{:?} / {:?}", r.ablation, r.metric).to_lowercase()));
    rows.push(("metric: full / circuit / empty", format!("{} / {} / {}", num(f.metric_full), num(f.metric_circuit), opt(f.metric_empty))));
    rows.push(("discovery facts", format!("{} (seed {}, k {}, known only: {})", r.examples.len(), r.seed, r.k, r.filter_known)));
    if let Some(d) = r.demonstrations {
        rows.push(("demonstrations", d.to_string()));
    }
    if let Some(st) = &f.stability {
        rows.push((
            "stability",
            format!(
                "against {} edges from {} other facts: edge Jaccard {:.2}, node Jaccard {:.2}",
                st.n_edges_other, st.n_examples, st.edge_jaccard, st.node_jaccard
            ),
        ));
    }
    let rows: Vec<Vec<String>> = rows.into_iter().map(|(k, v)| vec![esc(k), esc(&v)]).collect();
    table(out, &["", ""], &rows, 2);
    out.push_str("</section>\n");
}
