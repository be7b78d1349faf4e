//! Plots (SVG and PNG through plotters): throughput, time and memory against the batch size,
//! one panel per tower, one series per engine, device and precision. Text is drawn with a TTF
//! font found on the system at run time (DejaVu Sans or any `fc-match sans`).

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Result};
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::results::Row;

const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
];

const FONT: &str = "sans-serif";

/// A TTF/OTF sans font on this system.
pub fn find_font() -> Option<PathBuf> {
    let known = [
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/TTF/DejaVuSans.ttf",
        "/usr/share/fonts/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
        "/usr/share/fonts/liberation/LiberationSans-Regular.ttf",
        "/System/Library/Fonts/Supplemental/Arial.ttf",
        "/Library/Fonts/Arial.ttf",
        "C:\\Windows\\Fonts\\arial.ttf",
    ];
    if let Some(p) = known.iter().map(PathBuf::from).find(|p| p.is_file()) {
        return Some(p);
    }
    let o = std::process::Command::new("fc-match").args(["-f", "%{file}", "sans"]).output().ok()?;
    let p = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
    (p.extension().is_some_and(|e| e == "ttf" || e == "otf") && p.is_file()).then_some(p)
}

fn register_font() -> Result<()> {
    static DONE: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    DONE.get_or_init(|| {
        let p = find_font().ok_or("no TTF font found (install fonts-dejavu-core)")?;
        let bytes: &'static [u8] = Box::leak(std::fs::read(&p).map_err(|e| e.to_string())?.into_boxed_slice());
        plotters::style::register_font(FONT, FontStyle::Normal, bytes)
            .map_err(|_| format!("{} is not a usable font", p.display()))
    })
    .clone()
    .map_err(|e| anyhow!(e))
}

/// One figure: what it plots.
struct Metric {
    file: &'static str,
    title: &'static str,
    y: &'static str,
    log: bool,
}

const METRICS: [Metric; 3] = [
    Metric { file: "throughput", title: "Throughput", y: "items/s (median run, log scale)", log: true },
    Metric { file: "time", title: "Time per batch", y: "median time per batch (ms, log scale)", log: true },
    Metric { file: "memory", title: "Memory", y: "MiB (log scale)", log: true },
];

/// (series name, color index, dashed, points (batch, value)) of one panel.
type Series = (String, usize, bool, Vec<(f64, f64)>);

fn series(rows: &[Row], tower: &str, metric: &str, names: &[String]) -> Vec<Series> {
    let mut out: Vec<Series> = Vec::new();
    let mut push = |name: String, color: usize, dashed: bool, x: f64, y: f64| {
        if !(y.is_finite() && y > 0.0) {
            return;
        }
        match out.iter_mut().find(|s| s.0 == name) {
            Some(s) => s.3.push((x, y)),
            None => out.push((name, color, dashed, vec![(x, y)])),
        }
    };
    for r in rows.iter().filter(|r| r.tower == tower) {
        let name = r.series();
        let color = names.iter().position(|n| *n == name).unwrap_or(0) % COLORS.len();
        // x: log2 of the batch on a linear axis, so that every power of two gets its label
        let x = (r.batch as f64).log2();
        match metric {
            "throughput" => push(name, color, false, x, r.items_per_s),
            "time" => push(name, color, false, x, r.median_s * 1e3),
            _ => {
                if let Some(b) = r.peak_rss_bytes.0 {
                    push(format!("{name}: peak RSS"), color, false, x, b as f64 / 1048576.0);
                }
                if let Some(b) = r.gpu_pool_bytes.0 {
                    push(format!("{name}: GPU pool"), color, true, x, b as f64 / 1048576.0);
                }
            }
        }
    }
    for s in &mut out {
        s.3.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    out
}

fn err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("plotting: {e:?}")
}

fn draw<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, rows: &[Row], m: &Metric, subtitle: &str) -> Result<()> {
    root.fill(&WHITE).map_err(err)?;
    let mut towers: Vec<String> = Vec::new();
    let mut names: Vec<String> = Vec::new();
    for r in rows {
        if !towers.contains(&r.tower) {
            towers.push(r.tower.clone());
        }
        if !names.contains(&r.series()) {
            names.push(r.series());
        }
    }
    let (w, _) = root.dim_in_pixel();
    let title_font = (FONT, (w as f64 / 50.0).clamp(18.0, 26.0) as u32).into_font();
    let root = root.titled(&format!("{} vs batch size — {subtitle}", m.title), title_font).map_err(err)?;
    // the legend: one strip under the panels, never over the data
    let mut legend: Vec<(String, usize, bool)> = Vec::new();
    for tower in &towers {
        for (name, ci, dashed, _) in series(rows, tower, m.file, &names) {
            if !legend.iter().any(|l| l.0 == name) {
                legend.push((name, ci, dashed));
            }
        }
    }
    let cols = if legend.iter().map(|l| l.0.chars().count()).max().unwrap_or(0) > 48 { 1 } else { 2 };
    let (_, h) = root.dim_in_pixel();
    let strip = 36 + 24 * legend.len().div_ceil(cols) as u32;
    let (top, bottom) = root.split_vertically(h.saturating_sub(strip));
    let (bw, _) = bottom.dim_in_pixel();
    for (i, (name, ci, dashed)) in legend.iter().enumerate() {
        // column-major: read down the first column, then the second
        let per_col = legend.len().div_ceil(cols);
        let x = 80 + (i / per_col) as i32 * (bw as i32 - 80) / cols as i32;
        let y = 12 + (i % per_col) as i32 * 24;
        let style = ShapeStyle { color: COLORS[*ci].to_rgba(), filled: true, stroke_width: 3 };
        if *dashed {
            bottom.draw(&PathElement::new(vec![(x, y + 8), (x + 10, y + 8)], style)).map_err(err)?;
            bottom.draw(&PathElement::new(vec![(x + 16, y + 8), (x + 26, y + 8)], style)).map_err(err)?;
            bottom.draw(&TriangleMarker::new((x + 13, y + 8), 6, style)).map_err(err)?;
        } else {
            bottom.draw(&PathElement::new(vec![(x, y + 8), (x + 26, y + 8)], style)).map_err(err)?;
            bottom.draw(&Circle::new((x + 13, y + 8), 4, style)).map_err(err)?;
        }
        bottom.draw(&Text::new(name.clone(), (x + 36, y), (FONT, 16).into_font())).map_err(err)?;
    }
    let panels = top.split_evenly((1, towers.len().max(1)));
    let xs: Vec<f64> = rows.iter().map(|r| (r.batch as f64).log2()).collect();
    let (x0, x1) = xs.iter().fold((f64::MAX, f64::MIN), |(a, b), &x| (a.min(x), b.max(x)));
    let (x0, x1) = if xs.is_empty() { (-0.5, 0.5) } else { (x0 - 0.5, x1 + 0.5) };
    for (panel, tower) in panels.iter().zip(&towers) {
        let ss = series(rows, tower, m.file, &names);
        let ys: Vec<f64> = ss.iter().flat_map(|s| s.3.iter().map(|p| p.1)).collect();
        let (lo, hi) = ys.iter().fold((f64::MAX, f64::MIN), |(a, b), &y| (a.min(y), b.max(y)));
        let (lo, hi) = if ys.is_empty() { (1.0, 10.0) } else { (lo, hi) };
        let mut chart = ChartBuilder::on(panel);
        chart.caption(tower.as_str(), (FONT, 20)).margin(12).x_label_area_size(48).y_label_area_size(72);
        let x_fmt = |x: &f64| {
            let r = x.round();
            if (x - r).abs() < 1e-6 && r >= 0.0 {
                format!("{}", 2f64.powf(r))
            } else {
                String::new()
            }
        };
        let y_fmt = |y: &f64| {
            if *y == 0.0 {
                "0".to_string()
            } else if *y >= 100.0 {
                format!("{y:.0}")
            } else if *y >= 1.0 {
                format!("{y:.1}")
            } else {
                format!("{y:.2}")
            }
        };
        macro_rules! body {
            ($chart:expr) => {{
                let mut c = $chart;
                c.configure_mesh()
                    .x_desc("batch size (log scale)")
                    .y_desc(m.y)
                    .x_labels(((x1 - x0) * 2.0) as usize + 2)
                    .x_label_formatter(&x_fmt)
                    .y_label_formatter(&y_fmt)
                    .label_style((FONT, 15))
                    .axis_desc_style((FONT, 16))
                    .light_line_style(RGBColor(235, 235, 235))
                    .bold_line_style(RGBColor(210, 210, 210))
                    .draw()
                    .map_err(err)?;
                for (_, ci, dashed, pts) in &ss {
                    let color = COLORS[*ci];
                    let style = ShapeStyle { color: color.to_rgba(), filled: true, stroke_width: 2 };
                    if *dashed {
                        c.draw_series(DashedLineSeries::new(pts.iter().copied(), 8, 5, style)).map_err(err)?;
                    } else {
                        c.draw_series(LineSeries::new(pts.iter().copied(), style)).map_err(err)?;
                    }
                    if *dashed {
                        c.draw_series(pts.iter().map(|&p| TriangleMarker::new(p, 6, style))).map_err(err)?;
                    } else {
                        c.draw_series(pts.iter().map(|&p| Circle::new(p, 4, style))).map_err(err)?;
                    }
                }
            }};
        }
        if m.log {
            body!(chart.build_cartesian_2d(x0..x1, (lo / 2.0..hi * 3.0).log_scale()).map_err(err)?);
        } else {
            body!(chart.build_cartesian_2d(x0..x1, 0.0..hi * 1.3).map_err(err)?);
        }
    }
    root.present().map_err(err)?;
    Ok(())
}

/// Writes `throughput`, `time` and `memory` as `.svg` and `.png` into `dir`; returns the files.
pub fn plots(rows: &[Row], dir: &Path, subtitle: &str) -> Result<Vec<PathBuf>> {
    register_font()?;
    let mut towers: Vec<&str> = Vec::new();
    let mut names: Vec<String> = Vec::new();
    for r in rows {
        if !towers.contains(&r.tower.as_str()) {
            towers.push(&r.tower);
        }
        if !names.contains(&r.series()) {
            names.push(r.series());
        }
    }
    let gpu_series = rows
        .iter()
        .filter(|r| r.gpu_pool_bytes.0.is_some())
        .map(|r| r.series())
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    let mut files = Vec::new();
    for m in &METRICS {
        // memory plots have a second (dashed) series per GPU engine: the pool
        let entries = names.len() + if m.file == "memory" { gpu_series } else { 0 };
        let size = (620 * (towers.len() as u32).max(2), 520 + 16 + 24 * entries as u32);
        let svg = dir.join(format!("{}.svg", m.file));
        draw(SVGBackend::new(&svg, size).into_drawing_area(), rows, m, subtitle)?;
        let png = dir.join(format!("{}.png", m.file));
        draw(BitMapBackend::new(&png, size).into_drawing_area(), rows, m, subtitle)?;
        files.push(svg);
        files.push(png);
    }
    Ok(files)
}
