//! `tune`: times the plain matmul's tile candidates on a GPU for the linear layers of a
//! model's both towers at the given batch sizes, prints the table and caches the fastest
//! per bucket (read back by every later run on the same adapter, driver and kernel set).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use clip_wgpu::gpu::tiles::{self, Entry};
use clip_wgpu::gpu::tune::{self, TuneOptions};
use clip_wgpu::gpu::{Context, ContextOptions, Precision, Tile};
use clip_wgpu::model::{Program, Tower};
use clip_wgpu::Backend;

use super::resolve_model;

#[derive(Args)]
#[command(long_about = "Tune the GPU matmul's tiles for this adapter.

For every linear layer shape of the model's vision and text towers at each batch size (rows:
batch × 50 image tokens for ViT-B/32, batch × 77 text positions), every tile candidate of the
plain matmul (register tiles reg32x32, reg64x64; workgroup-memory tiles wg64x64k16,
wg64x64k32, wg64x64k16db, wg128x64k16) that fits the adapter's limits is run on the device
and timed (wall clock around submits of back-to-back dispatches, after a warm-up). The
fastest per bucket (precision, n_out × n_in, rows rounded up to a power of two) is written to
the cache file, keyed by the adapter's name, vendor and device ids, driver, driver info,
backend and a hash of the kernels' WGSL: a new driver or changed kernels make it stale, and
the next `tune` measures again. Buckets already cached for the same key are not measured
again unless --force.

Every later run on this adapter reads the table (`clip-wgpu info` shows, per bucket, the
tile and why: forced, cached, tuned or default). Without a table the shipped default runs;
the engine never tunes on its own. CLIP_WGPU_GPU_TILES / --gpu-tiles force a tile or a table
file instead.

Expect seconds on a GPU; on lavapipe (a CPU) the full-size towers take minutes.")]
pub struct TuneArgs {
    /// The checkpoint whose layer shapes are tuned (an HF directory, an OpenAI/open_clip
    /// safetensors file, a preset or Hub name; default as the other commands).
    #[arg(long, env = "CLIP_WGPU_MODEL")]
    model: Option<PathBuf>,
    /// GPU adapter: a substring of its name or its index in `clip-wgpu info`.
    #[arg(long, env = "CLIP_WGPU_ADAPTER")]
    adapter: Option<String>,
    /// GPU backend.
    #[arg(long, value_enum, env = "CLIP_WGPU_BACKEND")]
    backend: Option<Backend>,
    /// Batch sizes (images, or texts of 77 positions) whose row counts are tuned.
    #[arg(long, value_delimiter = ',', num_args = 1.., default_values_t = [1, 32, 256])]
    batch_sizes: Vec<usize>,
    /// Storage precision to tune: f16 or f32 (default: what the engine runs on this adapter,
    /// f16 where it has SHADER_F16).
    #[arg(long, value_parser = parse_precision)]
    precision: Option<Precision>,
    /// Only these towers (vision, text; default both).
    #[arg(long, value_delimiter = ',', value_parser = parse_tower)]
    tower: Vec<Tower>,
    /// Measure every bucket again, even those cached for this adapter, driver and kernels.
    #[arg(long)]
    force: bool,
    /// The cache file (default: $CLIP_WGPU_GPU_TUNE_CACHE, else
    /// $XDG_CACHE_HOME/clip-wgpu/gpu-tune.json, else ~/.cache/clip-wgpu/gpu-tune.json).
    #[arg(long, value_name = "FILE")]
    cache: Option<PathBuf>,
    /// Measure and print only: read and write no cache.
    #[arg(long)]
    no_cache: bool,
    /// Shorter measurements (one timed submit per candidate): for smoke tests.
    #[arg(long)]
    quick: bool,
    /// Print the table as JSON (the cache file's rows) instead of text.
    #[arg(long)]
    json: bool,
}

fn parse_precision(s: &str) -> Result<Precision, String> {
    Precision::parse(s).ok_or_else(|| format!("{s:?}: expected f16 or f32"))
}

fn parse_tower(s: &str) -> Result<Tower, String> {
    match s.to_ascii_lowercase().as_str() {
        "vision" | "image" => Ok(Tower::Vision),
        "text" => Ok(Tower::Text),
        _ => Err(format!("{s:?}: expected vision or text")),
    }
}

pub fn tune(a: TuneArgs) -> Result<ExitCode, clip_wgpu::Error> {
    let gpu_err = |e: clip_wgpu::gpu::GpuError| clip_wgpu::Error::Gpu(e.to_string());
    let path = resolve_model(&a.model, a.json)?;
    let ck = clip_wgpu::model::load(&path, &Default::default())?;
    let ctx =
        Context::new(&ContextOptions { adapter: a.adapter.clone(), backend: a.backend.map(|b| b.name().to_string()) })
            .map_err(gpu_err)?;
    let precision = a.precision.unwrap_or_else(|| ctx.default_precision());
    let towers = if a.tower.is_empty() { vec![Tower::Vision, Tower::Text] } else { a.tower.clone() };
    // (tower, n, k, m) of every linear layer on token rows at each batch size
    let mut shapes = Vec::new();
    for &tower in &towers {
        let program = Program::new(tower, &ck.config, &ck.weights);
        let per = match tower {
            Tower::Vision => ck.config.vision.tokens(),
            Tower::Text => ck.config.text.context_length,
        };
        for &b in &a.batch_sizes {
            for (n, k) in tiles::linear_shapes(&program) {
                shapes.push((tower, n, k, (b * per).max(1)));
            }
        }
    }
    let cache = if a.no_cache { None } else { a.cache.clone().or_else(tiles::cache_path) };
    let opts = if a.quick {
        TuneOptions { min_runs: 1, max_runs: 1, min_time: std::time::Duration::ZERO, ..Default::default() }
    } else {
        TuneOptions::default()
    };
    let r = &ctx.report;
    if !a.json {
        println!(
            "adapter: {} ({}, {}, driver {} {}, vendor {:#06x} device {:#06x}); precision {precision}; kernel set {}",
            r.name,
            r.backend,
            r.device_type,
            r.driver,
            r.driver_info,
            r.vendor,
            r.device,
            tiles::kernel_set_hash()
        );
        let names: Vec<String> = Tile::CANDIDATES.iter().map(|t| format!("{:>13}", t.name())).collect();
        println!(
            "{:<7} {:>11} {:>6} {:>6} {} → chosen (ms per product)",
            "tower",
            "n×k",
            "rows",
            "bucket",
            names.join("")
        );
    }
    let started = std::time::Instant::now();
    let mut rows: Vec<(Tower, Entry)> = Vec::new();
    let mut tuned = None;
    // tower by tower, so that each printed row names its tower (the cache has no towers)
    for &tower in &towers {
        let these: Vec<(usize, usize, usize)> =
            shapes.iter().filter(|s| s.0 == tower).map(|&(_, n, k, m)| (n, k, m)).collect();
        let mut print = |e: &Entry| {
            if !a.json {
                print_row(tower, e);
            }
            rows.push((tower, e.clone()));
        };
        let t = tune::ensure(&ctx, precision, &these, cache.as_deref(), a.force, &opts, &mut print).map_err(gpu_err)?;
        tuned = Some(t);
    }
    let Some(t) = tuned else { return Ok(ExitCode::SUCCESS) };
    if a.json {
        let table: Vec<serde_json::Value> = rows
            .iter()
            .map(|(tower, e)| {
                let mut v = serde_json::to_value(e).unwrap_or_default();
                v["tower"] = serde_json::json!(format!("{tower:?}").to_lowercase());
                v
            })
            .collect();
        let out = serde_json::json!({
            "adapter": tiles::AdapterKey::of(r),
            "precision": precision,
            "measured": table,
            "cache": cache.as_ref().map(|p| p.display().to_string()),
            "seconds": started.elapsed().as_secs_f64(),
        });
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        println!("every bucket is cached for this adapter, driver and kernel set (--force measures again):");
        for &(tower, n, k, m) in &shapes {
            let c = t.policy.choose(n, k, m);
            println!(
                "{:<7} {:>11} {:>6} {:>6} {} ({})",
                format!("{tower:?}").to_lowercase(),
                format!("{n}x{k}"),
                m,
                tiles::bucket_rows(m),
                c.tile,
                c.reason
            );
        }
    }
    let secs = started.elapsed().as_secs_f64();
    match (&cache, a.no_cache) {
        (_, true) => println!("{} buckets measured in {secs:.1} s; nothing written (--no-cache)", rows.len()),
        (Some(p), _) => println!("{} buckets measured in {secs:.1} s; table in {}", rows.len(), p.display()),
        (None, _) => {
            println!("{} buckets measured in {secs:.1} s; no cache directory (set HOME or --cache)", rows.len())
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_row(tower: Tower, e: &Entry) {
    let cells: Vec<String> = Tile::CANDIDATES
        .iter()
        .map(|t| {
            let name = t.name();
            let cell = match e.timings.iter().find(|x| x.tile == name).and_then(|x| x.ms) {
                Some(ms) if name == e.tile => format!("*{ms:.3}"),
                Some(ms) => format!("{ms:.3}"),
                None => "-".into(),
            };
            format!("{cell:>13}")
        })
        .collect();
    println!(
        "{:<7} {:>11} {:>6} {:>6} {} → {}",
        format!("{tower:?}").to_lowercase(),
        format!("{}x{}", e.bucket.n, e.bucket.k),
        e.timed_rows,
        e.bucket.rows,
        cells.join(""),
        e.tile
    );
}
