//! The tiny checkpoint on the first Vulkan adapter (lavapipe in CI), for the fault tests.
#![allow(dead_code)]

use super::reference::tiny_dir;
use clip_wgpu::gpu::{Context, ContextOptions};
use clip_wgpu::{Clip, ClipOptions, Device};

/// Options for the tiny model on Vulkan adapter 0 (naming the adapter makes `auto` use even
/// a software one).
pub fn gpu_options(device: Device) -> ClipOptions {
    ClipOptions {
        device,
        adapter: Some("0".into()),
        backend: Some(clip_wgpu::Backend::Vulkan),
        notices: false,
        ..Default::default()
    }
}

/// The tiny model on the GPU; `None` (with SKIPPED printed) where there is no Vulkan adapter,
/// a panic instead when `CLIP_WGPU_REQUIRE_GPU=1` (CI).
pub fn gpu_clip(opts: &ClipOptions) -> Option<Clip> {
    match Clip::load(tiny_dir().join("hf"), opts) {
        Ok(c) if c.gpu().is_some() => Some(c),
        other => {
            if std::env::var("CLIP_WGPU_REQUIRE_GPU").is_ok_and(|v| v == "1") {
                panic!("CLIP_WGPU_REQUIRE_GPU=1 but no Vulkan adapter: {:?}", other.err());
            }
            eprintln!("SKIPPED: no Vulkan adapter");
            None
        }
    }
}

/// A context on Vulkan adapter 0; `None` (with SKIPPED printed) where there is none, a panic
/// instead when `CLIP_WGPU_REQUIRE_GPU=1` (CI).
pub fn vulkan() -> Option<Context> {
    match Context::new(&ContextOptions { adapter: Some("0".into()), backend: Some("vulkan".into()) }) {
        Ok(c) => Some(c),
        Err(e) => {
            if std::env::var("CLIP_WGPU_REQUIRE_GPU").is_ok_and(|v| v == "1") {
                panic!("CLIP_WGPU_REQUIRE_GPU=1 but no Vulkan adapter: {e}");
            }
            eprintln!("SKIPPED: no Vulkan adapter ({e})");
            None
        }
    }
}

/// (max abs error, min cosine) between two sets of rows `dim` wide.
pub fn compare(got: &[f32], want: &[f32], dim: usize) -> (f32, f32) {
    assert_eq!(got.len(), want.len(), "row count differs");
    let mut err = 0f32;
    let mut cos = 1f32;
    for (g, w) in got.chunks(dim).zip(want.chunks(dim)) {
        let (mut d, mut ng, mut nw) = (0f64, 0f64, 0f64);
        for (&a, &b) in g.iter().zip(w) {
            err = err.max((a - b).abs());
            d += a as f64 * b as f64;
            ng += a as f64 * a as f64;
            nw += b as f64 * b as f64;
        }
        cos = cos.min((d / (ng.sqrt() * nw.sqrt())) as f32);
    }
    (err, cos)
}
