//! Faults on the GPU path: an out-of-memory batch, provoked for real. The process's address
//! space is capped (`RLIMIT_AS`, soft limit) a little above what it uses after warming up, so
//! the buffers a large batch needs cannot be allocated: lavapipe's device memory is host memory,
//! its `vkAllocateMemory` fails and wgpu reports an out-of-memory error. The cap leaves room for
//! the CPU to redo the batch (its im2col copy of the pixels, about 60% of what the GPU pool
//! asks), so under `auto` the batch finishes on the CPU with the CPU's results, and a forced
//! GPU gets a clear error. A test binary of its own: the cap applies to the whole process.
//! Runs on the first Vulkan adapter (lavapipe in CI); says SKIPPED where there is none.
#![cfg(target_os = "linux")]

mod common;
use common::gpu::{gpu_clip, gpu_options};
use common::reference::*;

use clip_wgpu::{Clip, ClipOptions, Device};
use rlimit::Resource;

/// Bytes of address space the process holds now (`VmSize` in /proc/self/status).
fn vm_size() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = s.lines().find(|l| l.starts_with("VmSize:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

#[test]
fn out_of_memory_batch_finishes_on_the_cpu_under_auto_and_is_an_error_when_forced() {
    // 129 images: the GPU pool is rounded up to 222 image slots (lavapipe's 128 MiB binding
    // limit), 134 MB of input buffer alone; the CPU needs 78 MB for its im2col copy.
    let n = 129;
    let r = load(&tiny_dir().join("reference.json"));
    let two = synthetic_pixels(2, 224);
    let px = alternating_pixels(n, 224);
    let opts = |device| ClipOptions { batch_size: n, cache_entries: 0, ..gpu_options(device) };
    let Some(auto) = gpu_clip(&opts(Device::Auto)) else { return };
    let forced = gpu_clip(&opts(Device::Gpu)).unwrap();
    let cpu = Clip::load(tiny_dir().join("hf"), &opts(Device::Cpu)).unwrap();
    // warm up: pipelines compiled, pools made for small batches, the CPU's threads and
    // allocator arenas in place, the CPU's answer for the big batch
    for c in [&auto, &forced, &cpu] {
        c.encode_pixels(&two, 2).unwrap();
        c.encode_texts(&r.texts).unwrap();
    }
    let want = cpu.encode_pixels(&px, n).unwrap();
    let d = cpu.embed_dim();
    assert!(max_abs(&want[..2 * d], &r.image_embeds[..2]) <= 1e-5, "the CPU matches transformers");
    assert_eq!((auto.device(), forced.device()), (Device::Gpu, Device::Gpu));

    let (soft, hard) = rlimit::getrlimit(Resource::AS).unwrap();
    let cap = vm_size() + (112 << 20);
    rlimit::setrlimit(Resource::AS, cap, hard).unwrap();
    let forced_res = forced.encode_pixels(&px, n);
    let auto_res = auto.encode_pixels(&px, n);
    rlimit::setrlimit(Resource::AS, soft, hard).unwrap();

    let err = forced_res.expect_err("the batch must not fit under the cap").to_string();
    eprintln!("forced GPU: {err}");
    assert!(err.starts_with("GPU") && err.contains("out of memory"), "{err}");
    let got = auto_res.expect("auto finishes the batch on the CPU");
    assert_eq!(auto.device(), Device::Cpu, "the CPU took over");
    assert_eq!(got.len(), want.len(), "nothing lost");
    assert_eq!(got, want, "the CPU's results, bit for bit");
    // a forced GPU is not broken by the refusal: with the cap lifted the same batch runs
    let emb = forced.encode_pixels(&px, n).unwrap();
    assert_eq!(forced.device(), Device::Gpu);
    assert!(max_abs(&emb, &want.chunks(d).map(|c| c.to_vec()).collect::<Vec<_>>()) <= 2e-3);
}
