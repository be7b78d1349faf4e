//! Faults on the GPU path: a device lost mid-run. Under `auto` the batch is redone on the
//! CPU and the results are the CPU's; with a forced GPU the caller gets a clear error.
//! Also: a device lost mid-stream, a batch bigger than one buffer, buffer reuse across batches
//! (no leak), and the CLI with no Vulkan driver at all.
//! Runs on every Vulkan adapter present (lavapipe in CI); says SKIPPED where there is none.

mod common;
use common::reference::*;

use clip_wgpu::{Clip, ClipOptions, Device};

fn gpu_clip(device: Device) -> Option<Clip> {
    common::gpu::gpu_clip(&common::gpu::gpu_options(device))
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

#[test]
fn device_lost_mid_stream_under_auto_loses_nothing() {
    // images through the streaming pipeline, the device destroyed after the first batch:
    // every image still gets the CPU's embedding, in order
    if gpu_clip(Device::Auto).is_none() {
        return;
    }
    // no embedding cache: every repeat of an image is really encoded again
    let opts = ClipOptions { cache_entries: 0, ..common::gpu::gpu_options(Device::Auto) };
    let clip = Clip::load(tiny_dir().join("hf"), &opts).unwrap();
    let r = load(&tiny_dir().join("reference.json"));
    let files: Vec<std::path::PathBuf> = r.image_files.iter().map(|f| root().join(f)).collect();
    let want: Vec<Vec<f32>> = r.image_embeds[r.n_synthetic..].to_vec();
    let items: Vec<usize> = (0..files.len()).chain(0..files.len()).chain(0..files.len()).collect();
    let mut got = Vec::new();
    let mut batches = 0;
    clip_wgpu::pipeline::Pipeline::new(&clip, 2)
        .run(
            items.into_iter(),
            |&i| clip.prepare_file(&files[i]),
            |batch| {
                batches += 1;
                if batches == 1 {
                    assert_eq!(clip.device(), Device::Gpu, "the first batch ran on the GPU");
                    clip.gpu().unwrap().context().device.destroy();
                }
                for (i, e) in batch {
                    got.push((i, e.map_err(|e| e.to_string())));
                }
                Ok::<(), ()>(())
            },
        )
        .unwrap();
    assert_eq!(clip.device(), Device::Cpu, "the CPU took over");
    assert_eq!(got.len(), 3 * files.len(), "nothing lost");
    for (k, (i, e)) in got.iter().enumerate() {
        assert_eq!(*i, k % files.len(), "order kept");
        let e = e.as_ref().unwrap_or_else(|m| panic!("{m}"));
        // GPU batches (the first) within the GPU tolerance, the rest exactly the CPU's
        let tol = if k < 2 { 2e-3 } else { 1e-5 };
        assert!(max_abs(e, std::slice::from_ref(&want[*i])) <= tol, "item {k}");
    }
}

#[test]
fn a_batch_larger_than_one_buffer_is_chunked_not_failed() {
    // 300 images = 180 MB of f32 pixels in one call, more than lavapipe's max_storage_buffer_
    // binding_size (128 MiB): the encoder cuts it into chunks, with a forced GPU too
    let Some(clip) = gpu_clip(Device::Gpu) else { return };
    let r = load(&tiny_dir().join("reference.json"));
    let n = 300;
    let px = alternating_pixels(n, 224);
    let opts = ClipOptions { batch_size: n, ..common::gpu::gpu_options(Device::Gpu) };
    let big = Clip::load(tiny_dir().join("hf"), &opts).unwrap();
    let emb = big.encode_pixels(&px, n).unwrap();
    assert_eq!(big.device(), Device::Gpu, "no fallback needed");
    let d = big.embed_dim();
    for i in [0, 1, 150, 299] {
        assert!(max_abs(&emb[i * d..(i + 1) * d], &r.image_embeds[i % 2..i % 2 + 1]) <= 2e-3, "image {i}");
    }
    drop(clip);
}

#[test]
fn gpu_buffers_are_reused_across_batches() {
    // after the first batches have grown the pools, a long run creates no more buffers
    let Some(clip) = gpu_clip(Device::Gpu) else { return };
    let px = synthetic_pixels(4, 224);
    let g = clip.gpu().unwrap();
    for _ in 0..2 {
        clip.encode_pixels(&px, 4).unwrap();
        clip.encode_texts(&["a photo of a dog", "a cat"]).unwrap();
    }
    let (s0, b0) = (g.stats(), g.pool_bytes());
    for _ in 0..20 {
        clip.encode_pixels(&px, 4).unwrap();
        clip.encode_texts(&["a photo of a dog", "a cat"]).unwrap();
    }
    let (s1, b1) = (g.stats(), g.pool_bytes());
    eprintln!(
        "buffers {} -> {}, bind groups {} -> {}, pool {b0} -> {b1} bytes",
        s0.buffers_created, s1.buffers_created, s0.bind_groups_created, s1.bind_groups_created
    );
    assert_eq!(s1.buffers_created, s0.buffers_created, "no buffer created after warm-up");
    assert_eq!(s1.pipelines_created, s0.pipelines_created);
    assert_eq!(b1, b0, "the pools did not grow");
    assert!(s1.submits > s0.submits);
}

/// The CLI with no Vulkan driver at all: a forced GPU is a clear error, `auto` runs on the CPU.
#[test]
fn no_adapter_cli() {
    use std::process::Command;
    let model = tiny_dir().join("hf").display().to_string();
    let img = root().join("tests/fixtures/images/CLIP.png").display().to_string();
    let run = |device: &str| {
        Command::new(env!("CARGO_BIN_EXE_clip-wgpu"))
            .args(["score", "--model", &model, "--device", device, "--backend", "vulkan", "--image", &img])
            .args(["--text", "a photo of a dog", "--format", "json"])
            .env("VK_ICD_FILENAMES", "/nonexistent/icd.json")
            .env("VK_DRIVER_FILES", "/nonexistent/icd.json")
            .env("XDG_RUNTIME_DIR", "/tmp")
            .env_remove("CLIP_WGPU_DEVICE")
            .env_remove("CLIP_WGPU_ADAPTER")
            .output()
            .unwrap()
    };
    let out = run("gpu");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("GPU") && stderr.to_lowercase().contains("adapter"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let out = run("auto");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("running on the CPU"), "a one-line notice: {stderr}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let r = load(&tiny_dir().join("reference.json"));
    let i = r.image_files.iter().position(|f| f.ends_with("CLIP.png")).unwrap();
    let cos = v["scores"][0]["cosine"].as_f64().unwrap() as f32;
    let t = clip_wgpu::Clip::load(
        tiny_dir().join("hf"),
        &ClipOptions { device: Device::Cpu, notices: false, ..Default::default() },
    )
    .unwrap()
    .encode_texts(&["a photo of a dog"])
    .unwrap();
    let want = clip_wgpu::cosine(&r.image_embeds[r.n_synthetic + i], &t);
    assert!((cos - want).abs() < 1e-5, "{cos} vs {want}");
}
