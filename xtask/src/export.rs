//! Result exports: JSON (the rows as they are), CSV (one flat row each), Markdown and LaTeX
//! tables (the figures that matter, with the ratios to the baselines).

use anyhow::Result;
use serde_json::Value;

use crate::results::{baselines, Row, CLIP};

/// Export formats (`--export-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Csv,
    Json,
    Markdown,
    Latex,
    All,
}

impl Format {
    /// The concrete formats `list` names (`all` expands to the four).
    pub fn expand(list: &[Format]) -> Vec<Format> {
        let mut v = Vec::new();
        for f in list {
            let add: &[Format] = match f {
                Format::All => &[Format::Csv, Format::Json, Format::Markdown, Format::Latex],
                one => std::slice::from_ref(one),
            };
            for a in add {
                if !v.contains(a) {
                    v.push(*a);
                }
            }
        }
        v
    }
    pub fn file(self) -> &'static str {
        match self {
            Format::Csv => "results.csv",
            Format::Json => "results.json",
            Format::Markdown => "results.md",
            Format::Latex => "results.tex",
            Format::All => unreachable!("expanded first"),
        }
    }
}

pub fn json(rows: &[Row]) -> Result<String> {
    Ok(serde_json::to_string_pretty(rows)? + "\n")
}

/// One line per row, the columns of the JSON objects in their order; `times_s` joined by `;`.
pub fn csv(rows: &[Row]) -> Result<String> {
    let vals: Vec<Value> = rows.iter().map(serde_json::to_value).collect::<Result<_, _>>()?;
    let mut cols: Vec<String> = Vec::new();
    for v in &vals {
        for k in v.as_object().into_iter().flat_map(|o| o.keys()) {
            if !cols.contains(k) {
                cols.push(k.clone());
            }
        }
    }
    let mut w = ::csv::Writer::from_writer(Vec::new());
    w.write_record(&cols)?;
    for v in &vals {
        let rec: Vec<String> = cols
            .iter()
            .map(|c| match &v[c] {
                Value::Null => String::new(),
                Value::String(s) => s.clone(),
                Value::Array(a) => a.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(";"),
                other => other.to_string(),
            })
            .collect();
        w.write_record(&rec)?;
    }
    Ok(String::from_utf8(w.into_inner()?)?)
}

/// The table's cells, shared by Markdown and LaTeX: a header and the rows.
fn table(rows: &[Row]) -> (Vec<String>, Vec<Vec<String>>) {
    let bs = baselines(rows);
    let gpu = rows.iter().any(|r| r.gpu_pool_bytes.0.is_some());
    let mut head: Vec<String> = ["tower", "batch", "tokens", "engine", "device", "precision", "median ms", "items/s"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    head.push("peak RSS MiB".into());
    if gpu {
        head.push("GPU pool MiB".into());
    }
    head.push("CPU util".into());
    for b in &bs {
        head.push(format!("÷ {b}"));
    }
    let mib = |b: Option<u64>| match b {
        Some(b) if b < 10 << 20 => format!("{:.1}", b as f64 / 1048576.0),
        Some(b) => format!("{:.0}", b as f64 / 1048576.0),
        None => "n/a".into(),
    };
    let body = rows
        .iter()
        .map(|r| {
            let tokens = match r.token_mode.as_str() {
                "captions" => format!("{:.1} (captions)", r.tokens),
                "padded-77" => "77 (padded)".into(),
                _ => format!("{}", r.tokens),
            };
            let device = if r.device == "gpu" { format!("gpu ({})", r.adapter) } else { "cpu".into() };
            let mut c = vec![
                r.tower.clone(),
                r.batch.to_string(),
                tokens,
                r.engine.clone(),
                device,
                r.precision.clone(),
                format!("{:.1}", r.median_s * 1e3),
                format!("{:.2}", r.items_per_s),
                mib(r.peak_rss_bytes.0),
            ];
            if gpu {
                c.push(mib(r.gpu_pool_bytes.0));
            }
            c.push(r.cpu_util.0.map(|u| format!("{u:.2}")).unwrap_or_else(|| "n/a".into()));
            for b in &bs {
                c.push(match r.ratios.get(&format!("ratio_vs_{b}")).and_then(|v| v.0) {
                    Some(x) if r.engine == CLIP => format!("{x:.2}×"),
                    _ => String::new(),
                });
            }
            c
        })
        .collect();
    (head, body)
}

/// A Markdown table after `caption` (a paragraph).
pub fn markdown(rows: &[Row], caption: &str) -> String {
    let (head, body) = table(rows);
    let mut s = format!("{caption}\n\n| {} |\n|{}\n", head.join(" | "), "---|".repeat(head.len()));
    for r in body {
        s += &format!("| {} |\n", r.join(" | "));
    }
    let e2e: Vec<String> = rows
        .iter()
        .filter_map(|r| r.overlap_efficiency.0.map(|o| format!("{} batch {}: {o:.2}", r.series(), r.batch)))
        .collect();
    if !e2e.is_empty() {
        s += &format!("\nOverlap efficiency (e2e ÷ min(decode+preprocess, encode)): {}.\n", e2e.join("; "));
    }
    s
}

/// `s` with LaTeX's special characters escaped.
pub fn latex_escape(s: &str) -> String {
    let mut o = String::new();
    for c in s.chars() {
        match c {
            '\\' => o += r"\textbackslash{}",
            '&' | '%' | '$' | '#' | '_' | '{' | '}' => {
                o.push('\\');
                o.push(c);
            }
            '~' => o += r"\textasciitilde{}",
            '^' => o += r"\textasciicircum{}",
            '×' => o += r"$\times$",
            '÷' => o += r"$\div$",
            _ => o.push(c),
        }
    }
    o
}

/// A `table` environment (booktabs) with `caption`.
pub fn latex(rows: &[Row], caption: &str) -> String {
    let (head, body) = table(rows);
    let align: String =
        head.iter().enumerate().map(|(i, _)| if i == 0 || (3..6).contains(&i) { 'l' } else { 'r' }).collect();
    let line = |cells: &[String]| cells.iter().map(|c| latex_escape(c)).collect::<Vec<_>>().join(" & ") + " \\\\\n";
    let mut s = String::from("% needs \\usepackage{booktabs}\n\\begin{table}[ht]\n\\centering\n\\small\n");
    s += &format!("\\begin{{tabular}}{{{align}}}\n\\toprule\n");
    s += &line(&head);
    s += "\\midrule\n";
    for r in &body {
        s += &line(r);
    }
    s += "\\bottomrule\n\\end{tabular}\n";
    s += &format!("\\caption{{{}}}\n\\end{{table}}\n", latex_escape(caption));
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::{add_ratios, Na};

    fn rows() -> Vec<Row> {
        let mut a = Row {
            engine: "clip-wgpu".into(),
            device: "cpu".into(),
            adapter: "AMD EPYC".into(),
            tower: "image".into(),
            precision: "f32".into(),
            batch: 8,
            tokens: 50.0,
            token_mode: "patches".into(),
            peak_rss_bytes: Na(Some(300 << 20)),
            cpu_util: Na(Some(1.9)),
            ..Default::default()
        };
        a.set_times(8, vec![0.5, 0.4, 0.6]);
        let mut b = Row { engine: "torch".into(), device: "cpu".into(), tower: "image".into(), batch: 8, ..a.clone() };
        b.set_times(8, vec![1.0, 0.8]);
        let mut rows = vec![a, b];
        add_ratios(&mut rows);
        rows
    }

    #[test]
    fn formats_expand() {
        assert_eq!(Format::expand(&[Format::All, Format::Csv]).len(), 4);
        assert_eq!(Format::expand(&[Format::Json, Format::Json]), vec![Format::Json]);
    }

    #[test]
    fn json_and_csv() {
        let r = rows();
        let v: Value = serde_json::from_str(&json(&r).unwrap()).unwrap();
        assert_eq!(v.as_array().unwrap().len(), 2);
        assert_eq!(v[0]["peak_rss_bytes"], 300 << 20);
        assert_eq!(v[0]["gpu_pool_bytes"], "n/a");
        assert!((v[0]["ratio_vs_torch"].as_f64().unwrap() - 1.8).abs() < 1e-9);
        let c = csv(&r).unwrap();
        let mut lines = c.lines();
        let head: Vec<&str> = lines.next().unwrap().split(',').collect();
        assert_eq!(&head[..6], &["engine", "device", "adapter", "tower", "precision", "batch"]);
        assert!(head.contains(&"ratio_vs_torch") && head.contains(&"times_s"));
        let first: Vec<&str> = lines.next().unwrap().split(',').collect();
        assert_eq!(first.len(), head.len());
        assert_eq!(first[head.iter().position(|h| *h == "times_s").unwrap()], "0.5;0.4;0.6");
        assert_eq!(first[head.iter().position(|h| *h == "gpu_pool_bytes").unwrap()], "n/a");
    }

    #[test]
    fn tables() {
        let r = rows();
        let md = markdown(&r, "caption");
        assert!(md.contains("| tower | batch | tokens | engine | device | precision | median ms | items/s |"));
        assert!(md.contains("| image | 8 | 50 | clip-wgpu | cpu | f32 | 500.0 | 16.00 | 300 | 1.90 | 1.80× |"), "{md}");
        assert!(md.contains("| image | 8 | 50 | torch | cpu | f32 | 900.0 | 8.89 | 300 | 1.90 |  |"), "{md}");
        let tex = latex(&r, "50% of_it");
        assert!(tex.contains("\\caption{50\\% of\\_it}"));
        assert!(tex.contains("1.80$\\times$ \\\\"));
        assert!(tex.contains("$\\div$ torch"));
        assert_eq!(latex_escape("a_b&c#"), "a\\_b\\&c\\#");
    }
}
