//! `cargo xtask bench`: clip-wgpu's encoders against PyTorch and ONNX Runtime, measured in
//! the same run, on the same checkpoint, shapes and thread count; every figure comes with
//! its ratio to the baselines.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use serde_json::{json, Value};

use clip_wgpu::{Clip, ClipOptions, Device};

#[derive(Parser)]
struct Xtask {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Benchmark the encoders against PyTorch and ONNX Runtime.
    Bench(Bench),
}

#[derive(Parser)]
struct Bench {
    /// Batch sizes (image tower).
    #[arg(long, num_args = 1.., default_values_t = [32])]
    batch_sizes: Vec<usize>,
    /// Texts per batch for the text tower.
    #[arg(long, default_value_t = 32)]
    text_batch: usize,
    /// Timed runs per configuration.
    #[arg(long, default_value_t = 5)]
    num_runs: usize,
    /// Untimed runs first.
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Towers to measure.
    #[arg(long, value_delimiter = ',', default_values_t = ["image".to_string(), "text".to_string()])]
    towers: Vec<String>,
    /// HF checkpoint directory; default: a full-size random ViT-B/32 made by
    /// scripts/make_fixtures.py into tests/fixtures/full (speed does not depend on the values).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Baselines measured in the same run.
    #[arg(long, value_delimiter = ',', default_values_t = ["torch".to_string(), "ort".to_string()])]
    compare: Vec<String>,
    /// CPU threads for every engine.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Where results go (results.json, results.md).
    #[arg(long, default_value = "target/bench")]
    output_dir: PathBuf,
}

fn main() -> Result<()> {
    match Xtask::parse().cmd {
        Cmd::Bench(b) => bench(b),
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn stats(times: &[f64]) -> (f64, f64, f64) {
    let mut t = times.to_vec();
    t.sort_by(|a, b| a.total_cmp(b));
    (t[0], t[t.len() / 2], t[t.len() - 1])
}

fn bench(b: Bench) -> Result<()> {
    let model = match b.model.clone() {
        Some(m) => m,
        None => {
            let dir = root().join("tests/fixtures/full");
            if !dir.join("model.safetensors").is_file() {
                eprintln!("xtask: generating a full-size random ViT-B/32 in {}", dir.display());
                let st = Command::new("python3")
                    .arg(root().join("scripts/make_fixtures.py"))
                    .args(["full"])
                    .arg(&dir)
                    .status()?;
                if !st.success() {
                    bail!("scripts/make_fixtures.py failed");
                }
            }
            dir
        }
    };
    rayon::ThreadPoolBuilder::new().num_threads(b.threads).build_global().ok();
    let clip = Clip::load(&model, &ClipOptions { device: Device::Cpu, batch_size: 1 << 20, ..Default::default() })
        .with_context(|| format!("loading {}", model.display()))?;

    // (tower, batch, tokens) configurations
    let mut configs = Vec::new();
    for t in &b.towers {
        match t.as_str() {
            "image" => configs.extend(b.batch_sizes.iter().map(|&n| ("image", n, 50))),
            // short prompts (what captions and labels mostly are) and the padded maximum
            "text" => configs.extend([("text", b.text_batch, 7), ("text", b.text_batch, 77)]),
            other => bail!("unknown tower {other:?} (image, text)"),
        }
    }
    let mut rows: Vec<Value> = Vec::new();
    for &(tower, n, tokens) in &configs {
        let times = if tower == "image" {
            let px: Vec<f32> = (0..n * 3 * 224 * 224).map(|i| ((i % 251) as f32 / 125.0) - 1.0).collect();
            time_it(b.warmup, b.num_runs, || {
                clip.encode_pixels(&px, n).unwrap();
            })
        } else {
            let mut ids = vec![320u32; tokens];
            ids[0] = 49406;
            ids[tokens - 1] = 49407;
            let batch = vec![ids; n];
            time_it(b.warmup, b.num_runs, || {
                clip.encode_ids(&batch).unwrap();
            })
        };
        rows.push(row("clip-wgpu", tower, n, tokens, &times));
        eprintln!("{}", rows.last().unwrap());
        for engine in &b.compare {
            // The baselines always run the text tower padded to 77, as their tokenizers do.
            let out = Command::new("python3")
                .arg(root().join("scripts/bench_baseline.py"))
                .args(["--model", &model.display().to_string(), "--engine", engine, "--tower", tower])
                .args(["--batch", &n.to_string(), "--runs", &b.num_runs.to_string()])
                .args(["--warmup", &b.warmup.to_string(), "--threads", &b.threads.to_string()])
                .args(["--tokens", &if tower == "text" { 77 } else { tokens }.to_string()])
                .env("OMP_NUM_THREADS", b.threads.to_string())
                .output()?;
            if !out.status.success() {
                eprintln!("xtask: baseline {engine} failed: {}", String::from_utf8_lossy(&out.stderr));
                continue;
            }
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                let v: Value = serde_json::from_str(line)?;
                let times: Vec<f64> = v["times_s"].as_array().unwrap().iter().filter_map(|t| t.as_f64()).collect();
                rows.push(row(engine, tower, n, v["tokens"].as_u64().unwrap_or(0) as usize, &times));
                eprintln!("{}", rows.last().unwrap());
            }
        }
    }
    std::fs::create_dir_all(&b.output_dir)?;
    std::fs::write(b.output_dir.join("results.json"), serde_json::to_string_pretty(&rows)?)?;
    let md = markdown(&rows, b.threads);
    std::fs::write(b.output_dir.join("results.md"), &md)?;
    println!("{md}");
    Ok(())
}

fn time_it(warmup: usize, runs: usize, mut f: impl FnMut()) -> Vec<f64> {
    for _ in 0..warmup {
        f();
    }
    (0..runs.max(1))
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect()
}

fn row(engine: &str, tower: &str, batch: usize, tokens: usize, times: &[f64]) -> Value {
    let (min, med, max) = stats(times);
    json!({
        "engine": engine, "device": "cpu", "tower": tower, "precision": "f32", "batch": batch,
        "tokens": tokens, "runs": times.len(), "min_s": min, "median_s": med, "max_s": max,
        "items_per_s": batch as f64 / med,
    })
}

fn markdown(rows: &[Value], threads: usize) -> String {
    let mut baselines: Vec<&str> = Vec::new();
    for e in rows.iter().filter_map(|r| r["engine"].as_str()) {
        if e != "clip-wgpu" && !baselines.contains(&e) {
            baselines.push(e);
        }
    }
    let mut s = format!(
        "CPU, {threads} threads, f32; items/s from the median run. The baselines run texts padded to 77 \
         tokens (as their tokenizers do); clip-wgpu computes only up to EOT, so its 7-token row is the \
         real-use figure and its 77-token row the like-for-like one. Ratio = clip-wgpu ÷ baseline.\n\n\
         | tower | batch | tokens | engine | median ms | items/s |{} \n|---|---|---|---|---|---|{}\n",
        baselines.iter().map(|b| format!(" ÷ {b} |")).collect::<String>(),
        "---|".repeat(baselines.len())
    );
    for r in rows {
        let mut line = format!(
            "| {} | {} | {} | {} | {:.1} | {:.2} |",
            r["tower"].as_str().unwrap_or(""),
            r["batch"],
            r["tokens"],
            r["engine"].as_str().unwrap_or(""),
            r["median_s"].as_f64().unwrap_or(0.0) * 1e3,
            r["items_per_s"].as_f64().unwrap_or(0.0),
        );
        for b in &baselines {
            let cell = if r["engine"] == "clip-wgpu" {
                rows.iter()
                    .find(|o| o["engine"] == *b && o["tower"] == r["tower"] && o["batch"] == r["batch"])
                    .and_then(|o| Some(r["items_per_s"].as_f64()? / o["items_per_s"].as_f64()?))
                    .map(|x| format!(" {x:.2}× |"))
                    .unwrap_or_else(|| " |".into())
            } else {
                " |".into()
            };
            line += &cell;
        }
        s += &line;
        s.push('\n');
    }
    s
}
