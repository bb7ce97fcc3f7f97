//! SVG writers: the circuit (standalone for a paper, or inline in the report page) and the line charts of the
//! report. Every string that reaches the markup goes through [`esc`]; numbers are printed with a fixed rule
//! ([`num`]), so the same data gives the same bytes.
use std::collections::BTreeMap;
use std::fmt::Write;

use super::layout::{strength, Kind, Layout, CHAR_W, NODE_H};

/// Estimated width of a character of legend and chart text (10–11 px sans-serif), px: how far the next legend
/// entry or axis label must stay. Deliberately generous (a proportional font's average is nearer 5.5), so that
/// text never overlaps; no font metrics are available to an offline page.
const TEXT_CHAR_W: f64 = 6.0;
use crate::analysis::heads::{HeadReport, Role};
use crate::circuit::CircuitFile;

/// The only URL in any output: the SVG namespace (a name, never fetched).
pub const SVG_NS: &str = "http://www.w3.org/2000/svg";

/// Text for markup, in element content and in attribute values alike.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // Control characters are not allowed in XML 1.0 documents: shown as the replacement character.
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\t') => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// A number for people: about four significant digits, plain notation between 1e-3 and 1e6, no `-0`.
pub fn num(x: f64) -> String {
    if !x.is_finite() {
        return if x.is_nan() {
            "NaN".into()
        } else if x > 0.0 {
            "∞".into()
        } else {
            "−∞".into()
        };
    }
    if x == 0.0 {
        return "0".into();
    }
    let a = x.abs();
    if !(1e-3..1e6).contains(&a) {
        return format!("{x:.2e}");
    }
    let decimals = (3 - a.log10().floor() as i32).clamp(0, 6) as usize;
    let s = format!("{x:.decimals$}");
    let s = if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_string() } else { s };
    if s == "-0" {
        "0".into()
    } else {
        s
    }
}

/// A coordinate, one decimal.
fn c(x: f64) -> String {
    let s = format!("{x:.1}");
    s.strip_suffix(".0").map(str::to_string).unwrap_or(s)
}

/// A node's fill class and its words for the hover text: by kind, or by role when a head report is given.
fn node_class(kind: Kind, role: Option<Role>) -> (&'static str, &'static str) {
    match (kind, role) {
        (Kind::Head { .. }, Some(Role::Mover)) => ("r-mover", "mover head"),
        (Kind::Head { .. }, Some(Role::Relation)) => ("r-relation", "relation head"),
        (Kind::Head { .. }, Some(Role::Mixed)) => ("r-mixed", "mixed head"),
        (Kind::Head { .. }, Some(Role::Other)) => ("k-head", "head (role: other)"),
        (Kind::Head { .. }, None) => ("k-head", "attention head"),
        (Kind::Kv { .. }, _) => ("k-kv", "key/value port"),
        (Kind::Mlp { .. }, _) => ("k-mlp", "MLP"),
        (Kind::Input | Kind::Logits, _) => ("k-io", "embedding / output"),
        (Kind::Other, _) => ("k-other", "node"),
    }
}

/// The circuit picture's style sheet (inside the `<svg>`, so a standalone file keeps it).
const CIRCUIT_CSS: &str = ".edge{fill:none}.edge:hover{stroke-opacity:1}\
.pos{stroke:#2166ac}.neg{stroke:#c0392b}.nil{stroke:#999}.off{display:none}\
.node rect{stroke:#555;stroke-width:.7}.node:hover rect{stroke:#000;stroke-width:1.6}\
.node text,.lg text{font-family:'DejaVu Sans Mono',Menlo,Consolas,monospace;font-size:11px}\
.node text{fill:#111;text-anchor:middle;dominant-baseline:central;pointer-events:none}\
.row,.cap{font-family:'DejaVu Sans',Helvetica,Arial,sans-serif;font-size:10px;fill:#666}\
.cap{font-size:12px;fill:#222}.grid{stroke:#eee}\
.k-io{fill:#dcdcdc}.k-head{fill:#fff2b8}.k-kv{fill:#fbf7e6}.k-mlp{fill:#c9e0f5}.k-other{fill:#eee}\
.r-mover{fill:#f4a261}.r-relation{fill:#8fd17a}.r-mixed{fill:#c6a7e8}\
.focus .edge{stroke-opacity:.05}.focus .edge.hl{stroke-opacity:1}";

/// Heights of the caption band and of the legend under it, above the drawing, px.
const CAPTION_H: f64 = 22.0;
const LEGEND_H: f64 = 40.0;

/// What the circuit picture shows beside the layout.
pub struct CircuitStyle<'a> {
    /// Per head name, its row of the head report (role colours and hover numbers).
    pub heads: Option<&'a BTreeMap<String, &'a HeadReport>>,
    /// Drawn edges of rank ≥ this start hidden (class `off`, for the page's control).
    pub shown: usize,
    /// One line above the drawing.
    pub caption: String,
}

/// The circuit as one `<svg>` element: a caption, row labels, one `<g class="node">` per node and one
/// `<path class="edge">` per drawn edge (each with a `<title>` for hover), and a legend.
pub fn circuit(file: &CircuitFile, lay: &Layout, style: &CircuitStyle) -> String {
    let max = lay.max_effect;
    let (legend, legend_w) = legend(max, style.heads.is_some());
    let caption_w = 16.0 + style.caption.chars().count() as f64 * 6.6;
    let width = lay.width.max(legend_w + 16.0).max(caption_w);
    let height = CAPTION_H + LEGEND_H + lay.height;
    let mut s = String::with_capacity(400 * lay.edges.len() + 300 * lay.nodes.len() + 4096);
    let _ = write!(
        s,
        "<svg xmlns=\"{SVG_NS}\" class=\"circuit\" width=\"{}\" height=\"{}\" viewBox=\"0 0 {} {}\" role=\"img\">\n\
         <style>{CIRCUIT_CSS}</style>\n<rect width=\"100%\" height=\"100%\" fill=\"#fff\"/>\n\
         <text class=\"cap\" x=\"8\" y=\"15\">{}</text>\n<g class=\"lg\" transform=\"translate(8,{})\">\n{legend}</g>\n<g transform=\"translate(0,{})\">\n",
        c(width),
        c(height),
        c(width),
        c(height),
        esc(&style.caption),
        c(CAPTION_H + 8.0),
        c(CAPTION_H + LEGEND_H)
    );
    for r in &lay.rows {
        let _ = writeln!(s, "<line class=\"grid\" x1=\"{}\" x2=\"{}\" y1=\"{y}\" y2=\"{y}\"/>", c(8.0), c(width - 8.0), y = c(r.y));
        let _ = writeln!(s, "<text class=\"row\" x=\"8\" y=\"{}\">{}</text>", c(r.y + 3.5), esc(&r.text));
    }
    // Per node: edges in and out, and their summed effect, for the hover text.
    let mut degree = vec![(0usize, 0.0f64, 0usize, 0.0f64); lay.nodes.len()];
    let ends: BTreeMap<usize, (usize, usize)> = lay.edges.iter().map(|e| (e.index, (e.from, e.to))).collect();
    for (i, e) in file.edges.iter().enumerate() {
        if let Some(&(from, to)) = ends.get(&i) {
            let x = e.effect.unwrap_or(0.0);
            degree[from].2 += 1;
            degree[from].3 += x;
            degree[to].0 += 1;
            degree[to].1 += x;
        }
    }
    s.push_str("<g class=\"edges\">\n");
    for e in &lay.edges {
        let rec = &file.edges[e.index];
        let sign = match rec.effect {
            Some(x) if x > 0.0 => "pos",
            Some(x) if x < 0.0 => "neg",
            _ => "nil",
        };
        // Square root: attribution effects are heavy-tailed, and one edge (often `input->m0`) would make every
        // other hairline-thin on a linear scale.
        let rel = if max > 0.0 { (strength(rec) / max).sqrt() } else { 0.0 };
        let off = if e.rank >= style.shown { " off" } else { "" };
        let [p0, p1, p2, p3] = e.points;
        let effect = rec.effect.map(num).unwrap_or_else(|| "not measured".into());
        let _ = writeln!(
            s,
            "<path class=\"edge {sign}{off}\" d=\"M{} {}C{} {} {} {} {} {}\" stroke-width=\"{:.2}\" stroke-opacity=\"{:.2}\" data-rank=\"{}\" data-s=\"{}\" data-t=\"{}\"><title>{}\neffect {effect} (rank {} of {})</title></path>",
            c(p0.0),
            c(p0.1),
            c(p1.0),
            c(p1.1),
            c(p2.0),
            c(p2.1),
            c(p3.0),
            c(p3.1),
            0.5 + 4.5 * rel,
            0.25 + 0.65 * rel,
            e.rank,
            e.from,
            e.to,
            esc(&rec.name),
            e.rank + 1,
            file.edges.len()
        );
    }
    s.push_str("</g>\n<g class=\"nodes\">\n");
    for (i, n) in lay.nodes.iter().enumerate() {
        let head = style.heads.and_then(|h| h.get(&n.name));
        let (class, what) = node_class(n.kind, head.map(|h| h.role));
        let (n_in, sum_in, n_out, sum_out) = degree[i];
        let mut title = format!("{}: {what}\n{n_in} drawn edges in (Σ effect {}), {n_out} out (Σ {})", n.name, num(sum_in), num(sum_out));
        if let Some(h) = head {
            let _ = write!(
                title,
                "\nattention: subject {}, relation {}, other {}\nDLA to the target {} (from subject {})",
                num(h.attention.subject),
                num(h.attention.relation),
                num(h.attention.other),
                num(h.dla),
                num(h.dla_by_source.subject)
            );
            if !h.top_tokens.is_empty() {
                let top: Vec<String> = h.top_tokens.iter().take(5).map(|t| format!("{:?}", t.token)).collect();
                let _ = write!(title, "\ntop tokens: {}", top.join(", "));
            }
        }
        let label_w = n.name.chars().count() as f64 * CHAR_W;
        let _ = writeln!(
            s,
            "<g class=\"node\" data-node=\"{}\" data-i=\"{i}\"><title>{}</title><rect class=\"{class}\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{NODE_H}\" rx=\"4\"/><text x=\"{}\" y=\"{}\"{}>{}</text></g>",
            esc(&n.name),
            esc(&title),
            c(n.x - n.w / 2.0),
            c(n.y - NODE_H / 2.0),
            c(n.w),
            c(n.x),
            c(n.y),
            // A label longer than its box (names past 24 characters) is squeezed into it.
            if label_w > n.w - 6.0 { format!(" textLength=\"{}\" lengthAdjust=\"spacingAndGlyphs\"", c(n.w - 6.0)) } else { String::new() },
            esc(&n.name)
        );
    }
    s.push_str("</g>\n");
    if lay.nodes.is_empty() {
        let _ = writeln!(
            s,
            "<text class=\"cap\" x=\"{}\" y=\"{}\" text-anchor=\"middle\">empty circuit: no edges</text>",
            c(width / 2.0),
            c(lay.height / 2.0)
        );
    }
    s.push_str("</g>\n");
    s.push_str("</svg>\n");
    s
}

/// Edge colours and widths, node colours (roles when known): the legend's markup and its width.
fn legend(max: f64, roles: bool) -> (String, f64) {
    let mut s = String::new();
    let mut widest = 0.0f64;
    let mut item = |s: &mut String, swatch: String, label: &str, x: &mut f64, y: f64| {
        let _ = writeln!(s, "{swatch}<text x=\"{}\" y=\"{}\" class=\"row\">{}</text>", c(*x + 26.0), c(y + 4.0), esc(label));
        *x += 30.0 + label.chars().count() as f64 * TEXT_CHAR_W + 14.0;
        widest = widest.max(*x);
    };
    let mut x = 0.0;
    for (class, label) in [("pos", "effect > 0"), ("neg", "effect < 0"), ("nil", "not measured")] {
        let sw = format!("<line class=\"{class}\" x1=\"{}\" x2=\"{}\" y1=\"0\" y2=\"0\" stroke-width=\"2.5\"/>", c(x), c(x + 22.0));
        item(&mut s, sw, label, &mut x, 0.0);
    }
    let sw = format!(
        "<line class=\"nil\" x1=\"{}\" x2=\"{}\" y1=\"0\" y2=\"0\" stroke-width=\"0.4\"/><line class=\"nil\" x1=\"{}\" x2=\"{}\" y1=\"0\" y2=\"0\" stroke-width=\"5\"/>",
        c(x),
        c(x + 10.0),
        c(x + 12.0),
        c(x + 22.0)
    );
    item(&mut s, sw, &format!("width ∝ √|effect|, widest {}", num(max)), &mut x, 0.0);
    let mut nodes = vec![("k-io", "input / logits"), ("k-head", "head"), ("k-mlp", "MLP"), ("k-kv", "key/value port")];
    if roles {
        nodes.extend([("r-mover", "mover head"), ("r-relation", "relation head"), ("r-mixed", "mixed head")]);
    }
    let mut x = 0.0;
    for (class, label) in nodes {
        let sw = format!(
            "<rect class=\"{class}\" x=\"{}\" y=\"14\" width=\"22\" height=\"12\" rx=\"3\" stroke=\"#555\" stroke-width=\".7\"/>",
            c(x)
        );
        item(&mut s, sw, label, &mut x, 20.0);
    }
    (s, widest)
}

/// How a chart's y axis maps values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum YScale {
    /// Linear from `lo` (bottom) to `hi` (top).
    Linear { lo: f64, hi: f64 },
    /// Ranks: log10(1 + rank), 0 at the bottom, up to `max`.
    Rank { max: f64 },
}

impl YScale {
    fn unit(self, v: f64) -> f64 {
        match self {
            YScale::Linear { lo, hi } => (v - lo) / (hi - lo).max(1e-12),
            YScale::Rank { max } => (1.0 + v.max(0.0)).log10() / (1.0 + max).log10().max(1e-12),
        }
    }
    fn ticks(self) -> Vec<(f64, String)> {
        match self {
            YScale::Linear { lo, hi } => {
                let span = (hi - lo).max(1e-12);
                let raw = span / 5.0;
                let mag = 10f64.powf(raw.log10().floor());
                let step = [1.0, 2.0, 2.5, 5.0, 10.0].iter().map(|m| m * mag).find(|s| *s >= raw).unwrap_or(10.0 * mag);
                let mut out = vec![];
                let mut t = (lo / step).ceil() * step;
                while t <= hi + step * 1e-9 {
                    out.push((t, num((t / step).round() * step)));
                    t += step;
                }
                out
            }
            YScale::Rank { max } => {
                let mut out = vec![(0.0, "0".to_string())];
                let mut t = 1.0;
                while t <= max.max(1.0) * 1.0001 {
                    out.push((t, if t >= 1000.0 { format!("{}k", t / 1000.0) } else { num(t) }));
                    t *= 10.0;
                }
                out
            }
        }
    }
}

/// One line of a chart: a value per x position (`None`: no point there), an optional band (lo, hi) around it.
pub struct Series {
    pub name: String,
    pub color: &'static str,
    pub dashed: bool,
    pub values: Vec<Option<f64>>,
    pub band: Option<Vec<Option<(f64, f64)>>>,
}

/// A line chart over categorical x positions (curve sizes, lens points).
pub struct Chart {
    pub title: String,
    pub x_labels: Vec<String>,
    pub x_title: String,
    pub y_title: String,
    pub y: YScale,
    pub series: Vec<Series>,
    pub width: f64,
    pub height: f64,
}

/// The chart as one `<svg class="chart">`: axes, ticks, a legend, one `<path>` per series and a hoverable dot
/// per point.
pub fn chart(ch: &Chart) -> String {
    // Legend entries left to right, wrapping onto further 14-px rows when the next would run past the right
    // edge (text estimated at `TEXT_CHAR_W` a character): each entry's x and row. Extra rows make the chart taller.
    let (left, right) = (52.0, 12.0);
    let mut legend = Vec::with_capacity(ch.series.len());
    let (mut lx, mut row) = (left, 0usize);
    for se in &ch.series {
        let text = se.name.chars().count() as f64 * TEXT_CHAR_W;
        if lx > left && lx + 22.0 + text > ch.width - right {
            (lx, row) = (left, row + 1);
        }
        legend.push((lx, row));
        lx += 34.0 + text;
    }
    let extra = 14.0 * row as f64;
    let (top, bottom) = (40.0 + extra, 42.0);
    let (w, h) = (ch.width, ch.height + extra);
    let (pw, ph) = (w - left - right, h - top - bottom);
    let n = ch.x_labels.len().max(1);
    let x_at = |i: usize| left + if n == 1 { pw / 2.0 } else { pw * i as f64 / (n - 1) as f64 };
    let y_at = |v: f64| top + ph * (1.0 - ch.y.unit(v).clamp(-0.05, 1.05));
    let mut s = String::new();
    let _ = writeln!(
        s,
        "<svg xmlns=\"{SVG_NS}\" class=\"chart\" width=\"{}\" height=\"{}\" viewBox=\"0 0 {} {}\" role=\"img\"><rect width=\"100%\" height=\"100%\" fill=\"#fff\"/>",
        c(w),
        c(h),
        c(w),
        c(h)
    );
    let _ = writeln!(s, "<text class=\"ct\" x=\"{}\" y=\"14\">{}</text>", c(left), esc(&ch.title));
    for (v, label) in ch.y.ticks() {
        let y = y_at(v);
        let _ = writeln!(
            s,
            "<line class=\"gl\" x1=\"{}\" x2=\"{}\" y1=\"{y}\" y2=\"{y}\"/><text class=\"tk\" x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>",
            c(left),
            c(left + pw),
            c(left - 5.0),
            c(y + 3.5),
            esc(&label),
            y = c(y)
        );
    }
    // Every k-th x label and the last, so that they do not overlap: a k-th label too close to the last one
    // gives way to it.
    let longest = ch.x_labels.iter().map(|l| l.chars().count()).max().unwrap_or(1) as f64;
    let every = ((n as f64 * (longest * TEXT_CHAR_W + 8.0)) / pw).ceil().max(1.0) as usize;
    for (i, label) in ch.x_labels.iter().enumerate() {
        if i + 1 == n || (i % every == 0 && n - 1 - i >= every) {
            let _ = writeln!(
                s,
                "<text class=\"tk\" x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
                c(x_at(i)),
                c(top + ph + 14.0),
                esc(label)
            );
        }
    }
    let _ = writeln!(
        s,
        "<line class=\"ax\" x1=\"{l}\" x2=\"{l}\" y1=\"{}\" y2=\"{b}\"/><line class=\"ax\" x1=\"{l}\" x2=\"{}\" y1=\"{b}\" y2=\"{b}\"/>",
        c(top),
        c(left + pw),
        l = c(left),
        b = c(top + ph)
    );
    let _ = writeln!(
        s,
        "<text class=\"tk\" x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
        c(left + pw / 2.0),
        c(h - 6.0),
        esc(&ch.x_title)
    );
    let _ = writeln!(
        s,
        "<text class=\"tk\" transform=\"translate(12,{}) rotate(-90)\" text-anchor=\"middle\">{}</text>",
        c(top + ph / 2.0),
        esc(&ch.y_title)
    );
    // Legend.
    for (se, &(lx, row)) in ch.series.iter().zip(&legend) {
        let dash = if se.dashed { " stroke-dasharray=\"5 3\"" } else { "" };
        let y = 28.0 + 14.0 * row as f64;
        let _ = writeln!(
            s,
            "<line x1=\"{}\" x2=\"{}\" y1=\"{}\" y2=\"{}\" stroke=\"{}\" stroke-width=\"2\"{dash}/><text class=\"tk\" x=\"{}\" y=\"{}\">{}</text>",
            c(lx),
            c(lx + 18.0),
            c(y),
            c(y),
            se.color,
            c(lx + 22.0),
            c(y + 3.0),
            esc(&se.name)
        );
    }
    for se in &ch.series {
        if let Some(band) = &se.band {
            let pts: Vec<(usize, (f64, f64))> = band.iter().enumerate().filter_map(|(i, b)| b.map(|b| (i, b))).collect();
            if pts.len() > 1 {
                let mut d = String::new();
                for (k, (i, (_, hi))) in pts.iter().enumerate() {
                    let _ = write!(d, "{}{} {}", if k == 0 { "M" } else { "L" }, c(x_at(*i)), c(y_at(*hi)));
                }
                for (i, (lo, _)) in pts.iter().rev() {
                    let _ = write!(d, "L{} {}", c(x_at(*i)), c(y_at(*lo)));
                }
                let _ = writeln!(s, "<path d=\"{d}Z\" fill=\"{}\" fill-opacity=\".15\" stroke=\"none\"/>", se.color);
            }
        }
        let pts: Vec<(usize, f64)> =
            se.values.iter().enumerate().filter_map(|(i, v)| v.filter(|v| v.is_finite()).map(|v| (i, v))).collect();
        let mut d = String::new();
        for (k, (i, v)) in pts.iter().enumerate() {
            let _ = write!(d, "{}{} {}", if k == 0 { "M" } else { "L" }, c(x_at(*i)), c(y_at(*v)));
        }
        let dash = if se.dashed { " stroke-dasharray=\"5 3\"" } else { "" };
        let _ = writeln!(s, "<path d=\"{d}\" fill=\"none\" stroke=\"{}\" stroke-width=\"1.8\"{dash}/>", se.color);
        for (i, v) in pts {
            let band = se.band.as_ref().and_then(|b| b[i]).map(|(lo, hi)| format!(" [{} – {}]", num(lo), num(hi))).unwrap_or_default();
            let _ = writeln!(
                s,
                "<circle cx=\"{}\" cy=\"{}\" r=\"2.6\" fill=\"{}\"><title>{} at {}: {}{band}</title></circle>",
                c(x_at(i)),
                c(y_at(v)),
                se.color,
                esc(&se.name),
                esc(&ch.x_labels[i]),
                num(v)
            );
        }
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_and_numbers() {
        assert_eq!(esc("a<b>&\"c'\u{1}"), "a&lt;b&gt;&amp;&quot;c&#39;\u{fffd}");
        assert_eq!(num(0.0), "0");
        assert_eq!(num(-0.0), "0");
        assert_eq!(num(1.0), "1");
        assert_eq!(num(0.123456), "0.1235");
        assert_eq!(num(-2.5), "-2.5");
        assert_eq!(num(15396.2), "15396");
        assert_eq!(num(1.5e-5), "1.50e-5");
        assert_eq!(num(-0.0000001), "-1.00e-7");
        assert_eq!(c(3.0), "3");
        assert_eq!(c(2.26), "2.3");
    }

    #[test]
    fn scales_map_their_ends() {
        let l = YScale::Linear { lo: 0.0, hi: 2.0 };
        assert_eq!(l.unit(0.0), 0.0);
        assert_eq!(l.unit(2.0), 1.0);
        assert_eq!(l.ticks().first().unwrap().1, "0");
        assert_eq!(l.ticks().last().unwrap().1, "2");
        let r = YScale::Rank { max: 999.0 };
        assert_eq!(r.unit(0.0), 0.0);
        assert!((r.unit(999.0) - 1.0).abs() < 1e-12);
        let labels: Vec<String> = r.ticks().into_iter().map(|t| t.1).collect();
        assert_eq!(labels, ["0", "1", "10", "100"]);
    }
}
