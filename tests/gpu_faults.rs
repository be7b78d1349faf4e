//! Faults on the GPU path: a device lost mid-run. Under `auto` the batch is redone on the
//! CPU and the results are the CPU's; with a forced GPU the caller gets a clear error.
//! Runs on every Vulkan adapter present (lavapipe in CI); says SKIPPED where there is none.

mod common;
use common::reference::*;

use clip_wgpu::{Clip, ClipOptions, Device};

fn gpu_clip(device: Device) -> Option<Clip> {
    let opts = ClipOptions {
        device,
        // naming the adapter makes `auto` use even a software one
        adapter: Some("0".into()),
        backend: Some("vulkan".into()),
        notices: false,
        ..Default::default()
    };
    match Clip::load(tiny_dir().join("hf"), &opts) {
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

#[test]
fn device_lost_under_auto_finishes_on_the_cpu() {
    let Some(clip) = gpu_clip(Device::Auto) else { return };
    let r = load(&tiny_dir().join("reference.json"));
    let px = synthetic_pixels(2, 224);
    let before = clip.encode_pixels(&px, 2).unwrap();
    assert_eq!(clip.device(), Device::Gpu);
    clip.gpu().unwrap().context().device.destroy();
    let after = clip.encode_pixels(&px, 2).unwrap();
    assert_eq!(clip.device(), Device::Cpu, "the CPU took over");
    assert!(max_abs(&after, &r.image_embeds[..2]) <= 1e-5, "CPU results after the fallback");
    assert!(max_abs(&before, &r.image_embeds[..2]) <= 2e-3, "GPU results before the loss");
    let txt = clip.encode_texts(&r.texts).unwrap();
    assert!(max_abs(&txt, &r.text_embeds) <= 1e-5);
}

#[test]
fn device_lost_with_a_forced_gpu_is_a_clear_error() {
    let Some(clip) = gpu_clip(Device::Gpu) else { return };
    clip.gpu().unwrap().context().device.destroy();
    let err = clip.encode_texts(&["a photo of a dog"]).expect_err("a forced GPU must not fall back");
    let msg = err.to_string();
    assert!(msg.starts_with("GPU"), "{msg}");
    // image files: each good image gets the error, nothing panics
    let res = clip.encode_image_files(&[root().join("tests/fixtures/images/CLIP.png")]);
    assert!(res[0].as_ref().is_err_and(|e| e.to_string().contains("GPU")));
}
