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
    let mut programs = None;
    let model = match &a.model {
        Some(p) => {
            let ck = clip_wgpu::model::load(p, &Default::default())?;
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
        let v =
            json!({"adapters": adapters, "auto": auto.map(|r| r.index), "cpu": cpu, "model": model, "tiles": tiles});
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(ExitCode::SUCCESS);
    }
    println!("CPU engine: f32, {} threads, gemm crate with runtime ISA dispatch", rayon::current_num_threads());
    println!("    CPU: {}", clip_wgpu::cpu::auto::cpu_identity());
    println!("    kernel level {isa} (CLIP_WGPU_CPU_ISA): {}", kernels.join("; "));
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
    Ok(ExitCode::SUCCESS)
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
    // deterministic inputs: smooth pixel patterns, and texts of lengths 2..=context
    let px: Vec<f32> = (0..max_b * 3 * s * s).map(|i| (2.0 * (0.001 * i as f64).sin()) as f32).collect();
    let ids: Vec<Vec<u32>> = (0..max_b)
        .map(|b| {
            let len = 2 + (b * 11) % (cfg.text.context_length - 1);
            let mut t: Vec<u32> = (0..len).map(|j| (320 + 37 * (b + j)) as u32 % 49000).collect();
            t[0] = 49406;
            t[len - 1] = 49407;
            t
        })
        .collect();
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
