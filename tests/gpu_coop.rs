//! The cooperative-matrix (tensor core) matmul's selection and fallback, on the adapters
//! present (CI: lavapipe, which has no EXPERIMENTAL_COOPERATIVE_MATRIX): `auto` runs the plain
//! kernel, forcing `coop` is a clear error with `--device gpu` and a notice plus the plain
//! kernel with `--device auto`, `info` names the path; the self-check harness that guards the
//! kernel at engine build passes a correct kernel and catches a wrong one (run here with the
//! plain kernel, the only one lavapipe can run). The coop kernel itself never ran here: see
//! scripts/device_coop.md. Without a Vulkan adapter the tests say so and pass
//! (CLIP_WGPU_REQUIRE_GPU=1 makes that a failure).

mod common;
use common::gpu::vulkan;
use common::reference::*;

use std::process::Command;

use clip_wgpu::gpu::matmul::{MatmulKey, Tile};
use clip_wgpu::gpu::matmul_coop::{self, CoopKey};
use clip_wgpu::gpu::selfcheck::{check_matmul, SELF_CHECK_SHAPE};
use clip_wgpu::gpu::{Context, Dt, GpuEncoder, GpuError, GpuOptions, KernelKey, MatmulPath, Precision};
use clip_wgpu::model::{self, Activation, Epilogue, LoadOptions};
use clip_wgpu::{Clip, ClipOptions, Device};

/// Adapters with the coop kernel available would take the other branch of these tests; the
/// CI adapter (lavapipe) must not be one.
fn without_coop(ctx: &Context) -> bool {
    if matmul_coop::unavailable(&ctx.report).is_none() {
        eprintln!("SKIPPED: {} offers cooperative matrices; these tests are for adapters without", ctx.report.name);
        return false;
    }
    true
}

#[test]
fn auto_runs_the_plain_kernel_and_forced_coop_is_a_clear_error() {
    let Some(ctx) = vulkan() else { return };
    if !without_coop(&ctx) || !ctx.has_f16() {
        return;
    }
    assert!(!ctx.has_coop(), "device opened with EXPERIMENTAL_COOPERATIVE_MATRIX on {}", ctx.report.name);
    assert!(ctx.report.matmul_path.starts_with("plain ("), "{}", ctx.report.matmul_path);
    let ck = model::load(&tiny_dir().join("hf"), &LoadOptions::default()).unwrap();
    let build = |matmul| {
        GpuEncoder::with_options(
            &ctx,
            &ck.config,
            &ck.weights,
            Precision::F16,
            GpuOptions { matmul, ..Default::default() },
        )
    };
    for path in [MatmulPath::Auto, MatmulPath::Plain] {
        let g = build(path).unwrap();
        assert!(!g.uses_coop());
        assert!(g.matmul_description().starts_with("plain ("), "{}", g.matmul_description());
    }
    let e = build(MatmulPath::Coop).err().expect("forcing coop on an adapter without it must fail");
    let msg = e.to_string();
    assert!(matches!(e, GpuError::Unsupported(_)), "{e:?}");
    assert!(msg.contains("--gpu-matmul coop") && msg.contains(&ctx.report.name), "{msg}");
    assert!(msg.contains("EXPERIMENTAL_COOPERATIVE_MATRIX") || msg.contains("configuration"), "{msg}");
    // f32 precision never runs the coop kernel, even where it exists.
    let e = GpuEncoder::with_options(
        &ctx,
        &ck.config,
        &ck.weights,
        Precision::F32,
        GpuOptions { matmul: MatmulPath::Coop, ..Default::default() },
    )
    .err()
    .unwrap();
    assert!(e.to_string().contains("--gpu-matmul coop"), "{e}");
}

#[test]
fn clip_with_device_auto_falls_back_to_the_plain_kernel() {
    let Some(ctx) = vulkan() else { return };
    if !without_coop(&ctx) || !ctx.has_f16() {
        return;
    }
    let opts = |device| ClipOptions {
        device,
        adapter: Some("0".into()),
        backend: Some(clip_wgpu::Backend::Vulkan),
        gpu_matmul: MatmulPath::Coop,
        notices: false,
        ..Default::default()
    };
    let clip = Clip::load(tiny_dir().join("hf"), &opts(Device::Auto)).unwrap();
    let g = clip.gpu().expect("the GPU runs, with the plain matmul");
    assert!(!g.uses_coop());
    let e = Clip::load(tiny_dir().join("hf"), &opts(Device::Gpu)).err().expect("--device gpu --gpu-matmul coop fails");
    assert!(e.to_string().contains("--gpu-matmul coop"), "{e}");
}

#[test]
fn self_check_passes_a_right_kernel_and_catches_a_wrong_one() {
    let Some(ctx) = vulkan() else { return };
    if !ctx.has_f16() {
        eprintln!("SKIPPED: no SHADER_F16");
        return;
    }
    let (quick, gelu) = (Some(Activation::QuickGelu), Some(Activation::Gelu));
    for (y, act, accumulate) in [(Dt::F16, quick, false), (Dt::F16, None, true), (Dt::F32, gelu, false)] {
        let epi = Epilogue { bias: true, act, accumulate };
        let key = KernelKey::Matmul(MatmulKey { x: Dt::F16, w: Dt::F16, y, epi, tile: Tile::REG32 });
        let err = check_matmul(&ctx, &key, epi, SELF_CHECK_SHAPE).unwrap();
        eprintln!("self-check harness, {}: max relative error {err:.2e}", key.name());
        assert!(err < 5e-3);
        // The same kernel held to another epilogue is caught.
        let wrong = Epilogue { act: if act == quick { gelu } else { quick }, ..epi };
        let e = check_matmul(&ctx, &key, wrong, SELF_CHECK_SHAPE).unwrap_err();
        assert!(e.contains("reference"), "{e}");
        let wrong = Epilogue { accumulate: !accumulate, ..epi };
        assert!(check_matmul(&ctx, &key, wrong, SELF_CHECK_SHAPE).is_err());
    }
    // The coop kernel on a device without the feature: an error, not a panic or a lost device.
    if !ctx.has_coop() {
        let epi = Epilogue { bias: true, act: quick, accumulate: false };
        let key = KernelKey::MatmulCoop(CoopKey { y: Dt::F16, epi });
        let e = check_matmul(&ctx, &key, epi, SELF_CHECK_SHAPE).unwrap_err();
        eprintln!("coop kernel where it cannot run: {e}");
        // The device is still usable afterwards.
        let key = KernelKey::Matmul(MatmulKey { x: Dt::F16, w: Dt::F16, y: Dt::F16, epi, tile: Tile::REG32 });
        check_matmul(&ctx, &key, epi, (33, 40, 64)).unwrap();
    }
}

fn cli(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_clip-wgpu"))
        .args(args)
        .env_remove("CLIP_WGPU_MODEL")
        .env_remove("CLIP_WGPU_GPU_MATMUL")
        .env("HF_HOME", "/nonexistent-hf-home")
        .output()
        .unwrap()
}

#[test]
fn cli_flag_help_info_and_errors() {
    let help = String::from_utf8_lossy(&cli(&["embed", "--help"]).stdout).into_owned();
    assert!(help.contains("--gpu-matmul") && help.contains("cooperative matrices"), "{help}");
    let bad = cli(&["embed", "--model", "x", "--gpu-matmul", "tensor-ish", "--text", "a"]);
    assert_eq!(bad.status.code(), Some(1), "a usage error");
    assert!(String::from_utf8_lossy(&bad.stderr).contains("plain"), "the choices are listed");

    let Some(ctx) = vulkan() else { return };
    let info = String::from_utf8_lossy(&cli(&["info"]).stdout).into_owned();
    assert!(info.contains("    matmul: "), "{info}");
    if !without_coop(&ctx) || !ctx.has_f16() {
        return;
    }
    assert!(info.contains("matmul: plain (no EXPERIMENTAL_COOPERATIVE_MATRIX)"), "{info}");
    let json: serde_json::Value = serde_json::from_slice(&cli(&["info", "--json"]).stdout).unwrap();
    assert!(json["adapters"][0]["matmul_path"].as_str().unwrap().starts_with("plain"), "{json}");

    let model = tiny_dir().join("hf").display().to_string();
    let base =
        ["embed", "--model", &model, "--adapter", "0", "--backend", "vulkan", "--text", "a photo", "--format", "json"];
    let forced = cli(&[&base[..], &["--device", "gpu", "--gpu-matmul", "coop"][..]].concat());
    let err = String::from_utf8_lossy(&forced.stderr).into_owned();
    assert_eq!(forced.status.code(), Some(1), "{err}");
    assert!(err.contains("--gpu-matmul coop") && !err.contains("panicked"), "{err}");
    let auto = cli(&[&base[..], &["--device", "auto", "--gpu-matmul", "coop"][..]].concat());
    let err = String::from_utf8_lossy(&auto.stderr).into_owned();
    assert_eq!(auto.status.code(), Some(0), "{err}");
    assert!(err.contains("using the plain matmul"), "{err}");
    let plain = cli(&[&base[..], &["--device", "gpu", "--gpu-matmul", "plain"][..]].concat());
    assert_eq!(plain.status.code(), Some(0), "{}", String::from_utf8_lossy(&plain.stderr));
}

/// GEMM timing for the device session (scripts/device_coop.md): the plain kernel and, where
/// the adapter has it, the cooperative-matrix one, at f16 on `CLIP_WGPU_GEMM=MxKxN` (default
/// 12800x768x3072, the image tower's fc1 at batch 256), bias + QuickGELU, f16 output. Each
/// kernel is first checked by the self-check harness, then run `CLIP_WGPU_GEMM_RUNS` times
/// (default 20) in one submit each; prints the median wall time and TFLOP/s. Ignored by
/// default (on lavapipe the default shape takes minutes); no figure from it is quoted anywhere
/// yet.
#[test]
#[ignore]
fn gemm_timing() {
    use std::time::Instant;
    use wgpu::util::DeviceExt;
    let Some(ctx) = vulkan() else { return };
    assert!(ctx.has_f16(), "needs SHADER_F16");
    let shape = std::env::var("CLIP_WGPU_GEMM").unwrap_or_else(|_| "12800x768x3072".into());
    let d: Vec<usize> = shape.split('x').map(|v| v.parse().expect("CLIP_WGPU_GEMM=MxKxN")).collect();
    let (m, k, n) = (d[0], d[1], d[2]);
    let runs: usize = std::env::var("CLIP_WGPU_GEMM_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    let epi = Epilogue { bias: true, act: Some(Activation::QuickGelu), accumulate: false };
    let mut keys = vec![KernelKey::Matmul(MatmulKey { x: Dt::F16, w: Dt::F16, y: Dt::F16, epi, tile: Tile::REG32 })];
    if ctx.has_coop() && matmul_coop::unavailable(&ctx.report).is_none() {
        keys.push(KernelKey::MatmulCoop(CoopKey { y: Dt::F16, epi }));
    } else {
        eprintln!("{}: no cooperative matrices; timing the plain kernel only", ctx.report.name);
    }
    let dev = &ctx.device;
    use wgpu::BufferUsages as U;
    let buf = |bytes: usize, usage| {
        dev.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: None,
            contents: &vec![0x3c_u8; bytes], // 0x3c3c ≈ 1.06 in f16
            usage,
        })
    };
    let (x, w, b, y) =
        (buf(m * k * 2, U::STORAGE), buf(n * k * 2, U::STORAGE), buf(n * 2, U::STORAGE), buf(m * n * 2, U::STORAGE));
    for key in keys {
        let check = check_matmul(&ctx, &key, epi, SELF_CHECK_SHAPE);
        eprintln!("{}: self-check {check:?}", key.name());
        if check.is_err() {
            continue;
        }
        let kernel = clip_wgpu::gpu::pipeline::create_kernel(dev, &key);
        let disp = match key {
            KernelKey::MatmulCoop(_) => matmul_coop::dispatch(m, n),
            _ => clip_wgpu::gpu::matmul::dispatch(m, n),
        };
        let u = dev.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: None,
            contents: bytemuck::bytes_of(&clip_wgpu::gpu::matmul::params(m, n, k)),
            usage: U::UNIFORM,
        });
        // The linear layer's slots, in order: uniform, x, w, bias, y.
        let bufs = [&u, &x, &w, &b, &y].map(|b| b.as_entire_binding()).to_vec();
        let bg = clip_wgpu::gpu::pipeline::bind_all(dev, &kernel, &key, bufs);
        let mut times = Vec::new();
        for i in 0..runs + 1 {
            let mut enc = dev.create_command_encoder(&Default::default());
            {
                let mut pass = enc.begin_compute_pass(&Default::default());
                pass.set_pipeline(&kernel.pipeline);
                pass.set_bind_group(0, &bg, &[]);
                pass.dispatch_workgroups(disp[0], disp[1], disp[2]);
            }
            let t = Instant::now();
            ctx.queue.submit([enc.finish()]);
            dev.poll(wgpu::PollType::wait_indefinitely()).unwrap();
            if i > 0 {
                times.push(t.elapsed().as_secs_f64());
            }
        }
        times.sort_by(f64::total_cmp);
        let med = times[times.len() / 2];
        eprintln!(
            "{} {}: {m}x{k}x{n}: median {:.3} ms over {runs} runs, {:.1} TFLOP/s (wall time of submit + wait)",
            ctx.report.name,
            key.name(),
            med * 1e3,
            2.0 * (m * n * k) as f64 / med / 1e12
        );
    }
}
