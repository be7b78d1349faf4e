//! The tiny checkpoint on the first Vulkan adapter (lavapipe in CI), for the fault tests.
#![allow(dead_code)]

use super::reference::tiny_dir;
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
