//! `info` and `validate`: the adapters, the checkpoint, and the GPU engine against the CPU one.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use serde_json::json;

use clip_wgpu::cosine;
use clip_wgpu::gpu::Precision;

use super::{exit_code, resolve_model, ModelArgs};

#[derive(Args)]
pub struct InfoArgs {
    /// A checkpoint to describe too.
    #[arg(long, env = "CLIP_WGPU_MODEL")]
    model: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// With --model: open the GPU engine on the adapter `--device gpu` would use and report
    /// its start-up (pipeline cache), and per tower at batches 1 and 32 the dispatches and
    /// the CPU time to write, record and submit one batch (median of 3, after one warm-up).
    #[arg(long, requires = "model")]
    gpu_stats: bool,
}

#[derive(Args)]
pub struct ValidateArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Batch sizes to compare at.
    #[arg(long, num_args = 1.., default_values_t = [1, 7, 32])]
    batch_sizes: Vec<usize>,
}

pub fn info(a: InfoArgs) -> Result<ExitCode, clip_wgpu::Error> {
    let adapters = clip_wgpu::gpu::adapters(None).unwrap_or_default();
    let auto = adapters.iter().find(|r| r.device_type != "Cpu" && r.backend != "gl");
    let mut cpu_auto = None;
    let mut gpu_stats = None;
    let mut programs = None;
    let model = match &a.model {
        Some(p) => {
            let ck = clip_wgpu::model::load(p, &Default::default())?;
            if a.gpu_stats {
                gpu_stats = Some(measure_gpu(&ck));
            }
            // what `--precision auto` runs on this CPU for this checkpoint, and why (measured
            // once, then cached)
            let (v, t) = (
                clip_wgpu::model::Program::new(clip_wgpu::model::Tower::Vision, &ck.config, &ck.weights),
                clip_wgpu::model::Program::new(clip_wgpu::model::Tower::Text, &ck.config, &ck.weights),
            );
            cpu_auto = Some(clip_wgpu::cpu::auto::choose(&ck.weights.params, &ck.config, &v, &t));
            programs = Some((v, t));
            Some(json!({
                "checkpoint": ck.path.display().to_string(),
                "layout": ck.layout,
                "config": ck.config,
                "parameters": ck.weights.params.numel(),
            }))
        }
        None => None,
    };
    let isa = clip_wgpu::cpu::Isa::from_env();
    let kernels: Vec<String> = clip_wgpu::cpu::CpuPrecision::ALL
        .iter()
        .map(|&p| format!("{p}: {}", clip_wgpu::cpu::Prepared::kernels_for(p, isa)))
        .collect();
    let cpu = json!({"threads": rayon::current_num_threads(), "precision": "f32", "gemm": "gemm crate (runtime AVX-512/AVX2/NEON dispatch)",
        "cpu": clip_wgpu::cpu::auto::cpu_identity(), "isa": isa, "kernels": kernels, "auto": cpu_auto});
    // the plain matmul's tile per bucket on each adapter at its default precision
    let tiles_setting = clip_wgpu::gpu::Tiles::from_env().map_err(clip_wgpu::Error::Invalid)?;
    let tile_rows: Vec<Vec<TileRun>> = adapters
        .iter()
        .map(|r| match &programs {
            Some((v, t)) => tile_runs(r, &tiles_setting, &[v, t]),
            None => Vec::new(),
        })
        .collect();
    if a.json {
        let tiles: Vec<serde_json::Value> =
            adapters.iter().zip(&tile_rows).map(|(r, t)| json!({"adapter": r.index, "matmul_tiles": t})).collect();
        let v = json!({"adapters": adapters, "auto": auto.map(|r| r.index), "cpu": cpu, "model": model,
            "tiles": tiles, "gpu_stats": gpu_stats});
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "CPU engine: {} threads, kernels chosen at run time from this CPU's instruction sets",
        rayon::current_num_threads()
    );
    println!("    CPU: {}", clip_wgpu::cpu::auto::cpu_identity());
    println!("    kernel level {isa} (CLIP_WGPU_CPU_ISA): {}", kernels.join("; "));
    {
        use clip_wgpu::{cpu::Split, model::Tower};
        let threads = rayon::current_num_threads();
        let splits: Vec<String> = clip_wgpu::cpu::CpuPrecision::ALL
            .into_iter()
            .filter(|p| p.supported())
            .map(|p| {
                let s = |t| Split::choose(t, p, 32, threads).describe();
                format!("{p}: images in {}, texts in {}", s(Tower::Vision), s(Tower::Text))
            })
            .collect();
        println!("    a batch of 32 (CLIP_WGPU_CPU_SUB): {}", splits.join("; "));
    }
    match &cpu_auto {
        Some(c) => println!(
            "    --precision auto on the CPU: {} — {}{}",
            c.precision,
            c.reason,
            if c.cache.is_empty() { String::new() } else { format!(" [cached in {}]", c.cache) }
        ),
        None => println!("    --precision auto on the CPU: measured per checkpoint (give --model to see the choice)"),
    }
    if adapters.is_empty() {
        println!("GPU adapters: none found (--device auto runs on the CPU)");
    }
    for r in &adapters {
        let path =
            if r.shader_f16 { "f16 storage + f32 accumulation (default) or f32" } else { "f32 only (no SHADER_F16)" };
        let ln = if r.subgroup { "subgroup layernorm" } else { "workgroup-memory layernorm" };
        let coop = if r.cooperative_matrix.is_empty() { "none".to_string() } else { r.cooperative_matrix.join(", ") };
        println!("[{}] {} — {}, {}, driver {} {}", r.index, r.name, r.backend, r.device_type, r.driver, r.driver_info);
        println!(
            "    features: SHADER_F16 {}, SUBGROUP {} (sizes {}–{}), TIMESTAMP_QUERY {}, cooperative matrix: {coop}",
            yes(r.shader_f16),
            yes(r.subgroup),
            r.subgroup_min_size,
            r.subgroup_max_size,
            yes(r.timestamp_query)
        );
        println!(
            "    limits: storage binding {} MiB, buffer {} MiB, workgroup memory {} KiB, {} invocations",
            r.max_storage_buffer_binding_size >> 20,
            r.max_buffer_size >> 20,
            r.max_compute_workgroup_storage_size >> 10,
            r.max_compute_invocations_per_workgroup
        );
        let chosen = if auto.is_some_and(|x| x.index == r.index) {
            "chosen by --device auto"
        } else if r.device_type == "Cpu" {
            "software adapter: --device auto prefers the CPU engine; --device gpu uses it"
        } else {
            "select with --adapter"
        };
        println!("    would run: {path}, {ln}; {chosen}");
        println!("    matmul: {}", r.matmul_path);
        let runs = &tile_rows[r.index.min(tile_rows.len().saturating_sub(1))];
        if programs.is_none() {
            println!("    matmul tiles: per layer shape and row bucket (give --model to see them)");
        } else {
            let policy = clip_wgpu::gpu::TilePolicy::resolve(r, r.default_precision, &tiles_setting);
            let from = policy.cache.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "no cache file".into());
            println!("    matmul tiles ({}, cache {from}):", r.default_precision);
            for t in runs {
                println!(
                    "      {:<6} {:>10} rows {:>5}–{:<5} {} ({})",
                    t.tower, t.shape, t.rows.0, t.rows.1, t.tile, t.reason
                );
            }
        }
    }
    if let Some(m) = model {
        println!("model: {}", serde_json::to_string_pretty(&m).unwrap_or_default());
    }
    if let Some(g) = &gpu_stats {
        print_gpu_stats(g);
    }
    Ok(ExitCode::SUCCESS)
}

/// Deterministic inputs of `n` sequences: smooth pixel patterns, and texts of lengths
/// 2..=context (`validate`'s and `info --gpu-stats`').
fn test_inputs(cfg: &clip_wgpu::model::ClipConfig, n: usize) -> (Vec<f32>, Vec<Vec<u32>>) {
    let s = cfg.vision.image_size;
    let px: Vec<f32> = (0..n * 3 * s * s).map(|i| (2.0 * (0.001 * i as f64).sin()) as f32).collect();
    let ids: Vec<Vec<u32>> = (0..n)
        .map(|b| {
            let len = 2 + (b * 11) % (cfg.text.context_length - 1);
            let mut t: Vec<u32> = (0..len).map(|j| (320 + 37 * (b + j)) as u32 % 49000).collect();
            t[0] = 49406;
            t[len - 1] = 49407;
            t
        })
        .collect();
    (px, ids)
}

/// `info --gpu-stats`: the GPU engine's start-up and, per tower and batch size, what one
/// batch costs the CPU (see `GpuEncoder::last_chunk_cost`).
fn measure_gpu(ck: &clip_wgpu::model::Checkpoint) -> serde_json::Value {
    use clip_wgpu::gpu::{Context, GpuEncoder};
    use clip_wgpu::model::{Input, Tower};
    use std::time::Instant;
    let t = Instant::now();
    let ctx = match Context::new(&Default::default()) {
        Ok(c) => c,
        Err(e) => return json!({"error": e.to_string()}),
    };
    let context_ms = t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    let enc = match GpuEncoder::from_checkpoint(&ctx, ck, ctx.default_precision()) {
        Ok(g) => g,
        Err(e) => return json!({"adapter": ctx.report.name, "error": e.to_string()}),
    };
    let engine_ms = t.elapsed().as_secs_f64() * 1e3;
    let (px, ids) = test_inputs(&ck.config, 32);
    let px_per = 3 * ck.config.vision.image_size * ck.config.vision.image_size;
    let mut rows = Vec::new();
    for tower in [Tower::Vision, Tower::Text] {
        for b in [1, 32] {
            let input = match tower {
                Tower::Vision => Input::Pixels { data: &px[..b * px_per], n: b },
                Tower::Text => Input::Tokens(&ids[..b]),
            };
            let mut costs = Vec::new();
            let mut first_ms = 0.0;
            for run in 0..4 {
                let t = Instant::now();
                if let Err(e) = enc.encode(tower, &input) {
                    return json!({"adapter": ctx.report.name, "error": e.to_string()});
                }
                if run == 0 {
                    first_ms = t.elapsed().as_secs_f64() * 1e3;
                } else if let Some(c) = enc.last_chunk_cost(tower) {
                    costs.push((c, t.elapsed().as_secs_f64() * 1e3));
                }
            }
            let median = |f: &dyn Fn(&(clip_wgpu::gpu::ChunkCost, f64)) -> f64| {
                let mut v: Vec<f64> = costs.iter().map(f).collect();
                v.sort_by(f64::total_cmp);
                v.get(v.len() / 2).copied().unwrap_or(0.0)
            };
            let last = costs.last().map(|c| c.0).unwrap_or_default();
            rows.push(json!({
                "tower": format!("{tower:?}").to_lowercase(),
                "batch": b,
                "ops": enc.program(tower).ops.len(),
                "dispatches": last.dispatches,
                "bind_groups_per_batch": last.bind_groups,
                "uniform_bytes_per_batch": last.uniform_bytes,
                "write_us": median(&|c| c.0.write_us),
                "record_us": median(&|c| c.0.record_us),
                "submit_us": median(&|c| c.0.submit_us),
                "cpu_us": median(&|c| c.0.write_us + c.0.record_us + c.0.submit_us),
                "wait_ms": median(&|c| c.0.wait_us / 1e3),
                "batch_ms": median(&|c| c.1),
                "first_batch_ms": first_ms,
            }));
        }
    }
    json!({
        "adapter": ctx.report.name,
        "backend": ctx.report.backend,
        "driver": format!("{} {}", ctx.report.driver, ctx.report.driver_info),
        "precision": enc.precision().name(),
        "matmul": enc.matmul_description(),
        "context_ms": context_ms,
        "engine_build_ms": engine_ms,
        "pipelines": enc.stats().pipelines_created,
        "pipeline_cache": enc.pipeline_cache(),
        "towers": rows,
    })
}

fn print_gpu_stats(g: &serde_json::Value) {
    if let Some(e) = g.get("error") {
        println!("GPU engine: error: {}", e.as_str().unwrap_or_default());
        return;
    }
    let s = |k: &str| g[k].as_str().unwrap_or_default().to_string();
    let f = |k: &str| g[k].as_f64().unwrap_or(0.0);
    println!(
        "GPU engine on {} ({}, {}): {}, matmul {}",
        s("adapter"),
        s("backend"),
        s("driver"),
        s("precision"),
        s("matmul")
    );
    println!(
        "    start-up: device {:.0} ms, weights and {} pipelines {:.0} ms; pipeline cache: {}",
        f("context_ms"),
        g["pipelines"],
        f("engine_build_ms"),
        if g["pipeline_cache"].is_null() { "none".to_string() } else { g["pipeline_cache"].to_string() }
    );
    println!(
        "    {:<7} {:>5} {:>4} {:>10} {:>11} {:>10} {:>9} {:>9} {:>9} {:>9} {:>10} {:>12}",
        "tower",
        "batch",
        "ops",
        "dispatches",
        "bind groups",
        "uniforms B",
        "write µs",
        "record µs",
        "submit µs",
        "CPU µs",
        "batch ms",
        "1st batch ms"
    );
    for r in g["towers"].as_array().into_iter().flatten() {
        let x = |k: &str| r[k].as_f64().unwrap_or(0.0);
        let n = |k: &str| r[k].as_u64().unwrap_or(0);
        println!(
            "    {:<7} {:>5} {:>4} {:>10} {:>11} {:>10} {:>9.0} {:>9.0} {:>9.0} {:>9.0} {:>10.1} {:>12.1}",
            r["tower"].as_str().unwrap_or_default(),
            n("batch"),
            n("ops"),
            n("dispatches"),
            n("bind_groups_per_batch"),
            n("uniform_bytes_per_batch"),
            x("write_us"),
            x("record_us"),
            x("submit_us"),
            x("cpu_us"),
            x("batch_ms"),
            x("first_batch_ms")
        );
    }
}

/// Consecutive row buckets of one layer shape that run the same tile for the same reason.
#[derive(serde::Serialize)]
struct TileRun {
    tower: String,
    shape: String,
    /// First and last row bucket.
    rows: (usize, usize),
    tile: String,
    reason: clip_wgpu::gpu::Reason,
}

fn tile_runs(
    r: &clip_wgpu::gpu::AdapterReport,
    setting: &clip_wgpu::gpu::Tiles,
    programs: &[&clip_wgpu::model::Program],
) -> Vec<TileRun> {
    use clip_wgpu::gpu::tiles;
    let policy = clip_wgpu::gpu::TilePolicy::resolve(r, r.default_precision, setting);
    let mut out: Vec<TileRun> = Vec::new();
    for p in programs {
        let tower = format!("{:?}", p.tower).to_lowercase();
        for (n, k) in tiles::linear_shapes(p) {
            let shape = format!("{n}x{k}");
            for rows in tiles::row_buckets(256 * 77) {
                let c = policy.choose(n, k, rows);
                let tile = c.tile.name();
                match out.last_mut() {
                    Some(l) if l.tower == tower && l.shape == shape && l.tile == tile && l.reason == c.reason => {
                        l.rows.1 = rows
                    }
                    _ => out.push(TileRun {
                        tower: tower.clone(),
                        shape: shape.clone(),
                        rows: (rows, rows),
                        tile,
                        reason: c.reason,
                    }),
                }
            }
        }
    }
    out
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

pub fn validate(a: ValidateArgs) -> Result<ExitCode, clip_wgpu::Error> {
    use clip_wgpu::gpu::{Context, GpuEncoder};
    use clip_wgpu::model::{Input, Program, Tower};
    let path = resolve_model(&a.model.model, false)?;
    let ck = clip_wgpu::model::load(&path, &Default::default())?;
    let cfg = &ck.config;
    let s = cfg.vision.image_size;
    let max_b = a.batch_sizes.iter().copied().max().unwrap_or(1);
    let (px, ids) = test_inputs(cfg, max_b);
    let programs = [Program::new(Tower::Vision, cfg, &ck.weights), Program::new(Tower::Text, cfg, &ck.weights)];
    let mut reference = Vec::new();
    for p in &programs {
        let input = match p.tower {
            Tower::Vision => Input::Pixels { data: &px, n: max_b },
            Tower::Text => Input::Tokens(&ids),
        };
        reference.push(clip_wgpu::cpu::run(p, cfg, &ck.weights.params, &input));
    }
    let e = cfg.embed_dim;
    println!(
        "{:<40} {:<6} {:<8} {:>5} {:>12} {:>12}",
        "adapter", "prec", "tower", "batch", "max abs err", "min cosine"
    );
    let mut worst_failed = false;
    // every adapter: the primary backends (Vulkan, Metal, DX12) and GL
    let mut contexts = Context::all();
    contexts.extend(Context::all_of("gl"));
    if contexts.is_empty() {
        println!("no GPU adapter found: nothing to validate");
    }
    for ctx in contexts {
        let ctx = match ctx {
            Ok(c) => c,
            Err(err) => {
                println!("(adapter skipped: {err})");
                continue;
            }
        };
        let precisions: Vec<Precision> =
            if ctx.has_f16() { vec![Precision::F32, Precision::F16] } else { vec![Precision::F32] };
        for prec in precisions {
            let enc = match GpuEncoder::from_checkpoint(&ctx, &ck, prec) {
                Ok(g) => g,
                Err(err) => {
                    println!("{:<40} {:<6} error: {err}", ctx.report.name, prec.name());
                    worst_failed = true;
                    continue;
                }
            };
            for (p, want) in programs.iter().zip(&reference) {
                for &b in &a.batch_sizes {
                    let input = match p.tower {
                        Tower::Vision => Input::Pixels { data: &px[..b * 3 * s * s], n: b },
                        Tower::Text => Input::Tokens(&ids[..b]),
                    };
                    match enc.encode(p.tower, &input) {
                        Ok(got) => {
                            let err = got.iter().zip(want).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
                            let cos = (0..b)
                                .map(|i| cosine(&got[i * e..(i + 1) * e], &want[i * e..(i + 1) * e]))
                                .fold(1f32, f32::min);
                            let name: String =
                                format!("[{}] {}", ctx.report.backend, ctx.report.name).chars().take(40).collect();
                            let tower = format!("{:?}", p.tower).to_lowercase();
                            println!("{name:<40} {:<6} {tower:<8} {b:>5} {err:>12.3e} {cos:>12.7}", prec.name());
                        }
                        Err(err) => {
                            println!("{:<40} {:<6} batch {b}: error: {err}", ctx.report.name, prec.name());
                            worst_failed = true;
                        }
                    }
                }
            }
        }
    }
    Ok(exit_code(worst_failed as usize))
}
