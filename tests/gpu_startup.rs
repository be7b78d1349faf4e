//! The GPU engine's start-up and per-batch costs on Vulkan adapter 0 (lavapipe in CI), the tiny
//! checkpoint, f32, against the CPU engine:
//!
//! * the persisted pipeline cache: a cold start writes it, a warm start uses it and writes
//!   nothing, and a file that is truncated, corrupted, or that passes the checksum but is not
//!   wgpu's data for this adapter (another wgpu, another adapter, garbage) is ignored, or
//!   refused by wgpu and replaced by an empty cache: every start gives the CPU engine's
//!   embeddings;
//! * one batch is one dispatch per op with work and makes no bind group once the tower's pool
//!   exists.
//!
//! Without a Vulkan adapter the tests say so and pass (CLIP_WGPU_REQUIRE_GPU=1: they fail).

mod common;
use common::gpu::{compare, vulkan};
use common::reference::*;

use std::path::{Path, PathBuf};

use clip_wgpu::cpu;
use clip_wgpu::gpu::pipeline_cache::{self, CacheReport, Loaded};
use clip_wgpu::gpu::{Context, GpuEncoder, GpuOptions, Precision};
use clip_wgpu::model::{self, Checkpoint, Input, LoadOptions, Program, Tower};

fn tiny() -> Checkpoint {
    model::load(&tiny_dir().join("hf"), &LoadOptions::default()).unwrap()
}

fn texts() -> Vec<Vec<u32>> {
    vec![vec![49406, 320, 1125, 539, 320, 2368, 49407], vec![49406, 1929, 49407], vec![49406, 49407]]
}

/// An engine on `ctx` with its pipeline cache in `dir`; checks both towers against the CPU
/// engine (f32: max abs ≤ 1e-5) and returns what became of the cache.
fn start(ctx: &Context, ck: &Checkpoint, dir: &Path) -> Option<CacheReport> {
    let cfg = &ck.config;
    let opts = GpuOptions { pipeline_cache: Some(dir.to_path_buf()), ..Default::default() };
    let enc = GpuEncoder::with_options(ctx, cfg, &ck.weights, Precision::F32, opts).unwrap();
    let px = synthetic_pixels(2, cfg.vision.image_size);
    let ids = texts();
    for (tower, input) in [(Tower::Vision, Input::Pixels { data: &px, n: 2 }), (Tower::Text, Input::Tokens(&ids))] {
        let want = cpu::run(&Program::new(tower, cfg, &ck.weights), cfg, &ck.weights.params, &input);
        let got = enc.encode(tower, &input).unwrap();
        let (err, _) = compare(&got, &want, cfg.embed_dim);
        assert!(err <= 1e-5, "{tower:?} against the CPU engine: max abs {err}");
    }
    enc.pipeline_cache().cloned()
}

fn cache_file(dir: &Path) -> PathBuf {
    let files: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(files.len(), 1, "one cache file (no temporary left behind): {files:?}");
    files[0].clone()
}

#[test]
fn pipeline_cache_cold_warm_and_damaged() {
    let Some(ctx) = vulkan() else { return };
    let ck = tiny();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cache");

    let Some(cold) = start(&ctx, &ck, &dir) else {
        // wgpu keeps a pipeline cache on Vulkan only, with Features::PIPELINE_CACHE
        assert!(!ctx.device.features().contains(wgpu::Features::PIPELINE_CACHE), "the feature, but no cache");
        eprintln!("SKIPPED: {} has no PIPELINE_CACHE", ctx.report.name);
        return;
    };
    eprintln!("cold: {cold:?}");
    assert_eq!(cold.loaded, Loaded::Missing);
    assert_eq!(cold.write_error, None);
    let Some(saved) = cold.saved_bytes else {
        eprintln!("the driver ({}) returned no pipeline cache data: nothing to persist", ctx.report.driver);
        assert!(!dir.exists() || std::fs::read_dir(&dir).unwrap().next().is_none());
        return;
    };
    let file = cache_file(&dir);
    assert_eq!(file, cold.path);
    assert!(file.file_name().unwrap().to_string_lossy().starts_with("pipelines-"), "{}", file.display());
    let bytes = std::fs::read(&file).unwrap();
    let data = pipeline_cache::decode(&bytes).unwrap().to_vec();
    assert_eq!(data.len(), saved);

    // warm: the data is used, and nothing new is written
    let warm = start(&ctx, &ck, &dir).unwrap();
    eprintln!("warm: {warm:?}");
    assert_eq!(warm.loaded, Loaded::Used { bytes: saved });
    assert_eq!(warm.saved_bytes, None);
    assert_eq!(std::fs::read(&file).unwrap(), bytes, "a warm start rewrote the cache");

    // damaged files: ignored by the checksum, then replaced by a good one
    let mut flipped = bytes.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x5a;
    for (what, damaged) in [("truncated", bytes[..bytes.len() - 7].to_vec()), ("corrupted", flipped)] {
        std::fs::write(&file, &damaged).unwrap();
        let r = start(&ctx, &ck, &dir).unwrap();
        eprintln!("{what}: {r:?}");
        assert!(matches!(&r.loaded, Loaded::Ignored { why } if why.contains("checksum")), "{what}: {r:?}");
        assert!(r.saved_bytes.is_some(), "{what}: not replaced");
        assert!(pipeline_cache::decode(&std::fs::read(&file).unwrap()).is_ok(), "{what}: replaced by a bad file");
    }
    std::fs::write(&file, b"not a cache").unwrap();
    assert!(matches!(start(&ctx, &ck, &dir).unwrap().loaded, Loaded::Ignored { .. }));

    // data that passes the checksum but that wgpu must refuse and replace by an empty cache:
    // its header altered (magic, then the backend and adapter key: bytes 16..32 of wgpu's
    // 64-byte header), or garbage; and wgpu's header intact over garbage, which the driver
    // must refuse by its own header (Vulkan's pipeline cache header: vendor, device, UUID)
    let mut magic = data.clone();
    magic[0] ^= 0xff;
    let mut adapter = data.clone();
    for b in adapter.iter_mut().skip(16).take(16) {
        *b ^= 0xff;
    }
    let garbage: Vec<u8> = (0..data.len().max(64)).map(|i| (i * 131 % 251) as u8).collect();
    let mut driver = data.clone();
    for (i, b) in driver.iter_mut().enumerate().skip(64) {
        *b = (i * 131 % 251) as u8;
    }
    let cases = [("wgpu magic", magic), ("adapter key", adapter), ("garbage", garbage), ("driver's data", driver)];
    for (what, d) in cases {
        std::fs::write(&file, pipeline_cache::encode(&d)).unwrap();
        let r = start(&ctx, &ck, &dir).unwrap();
        eprintln!("{what}: {r:?}");
        let handed = Loaded::Used { bytes: d.len() };
        assert!(r.loaded == handed || matches!(r.loaded, Loaded::Refused { .. }), "{what}: {r:?}");
        assert_eq!(r.write_error, None);
    }
}

#[test]
fn the_cache_directory_follows_the_environment() {
    let p = |s: &str| Some(PathBuf::from(s));
    let dir = pipeline_cache::dir_from;
    assert_eq!(dir(p("/x/y"), p("/xdg"), p("/home/u")), p("/x/y"));
    for off in ["", "off", "0", "false", "no"] {
        assert_eq!(dir(p(off), p("/xdg"), p("/home/u")), None, "{off:?}");
    }
    assert_eq!(dir(None, p("/xdg"), p("/home/u")), p("/xdg/clip-wgpu"));
    assert_eq!(dir(None, p(""), p("/home/u")), p("/home/u/.cache/clip-wgpu"));
    assert_eq!(dir(None, None, p("/home/u")), p("/home/u/.cache/clip-wgpu"));
    assert_eq!(dir(None, None, None), None);
}

#[test]
fn the_cache_file_checksum_refuses_truncated_and_altered_files() {
    let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 251) as u8).collect();
    let file = pipeline_cache::encode(&data);
    assert_eq!(pipeline_cache::decode(&file), Ok(&data[..]));
    assert!(pipeline_cache::decode(&file[..file.len() - 1]).unwrap_err().contains("checksum"));
    assert!(pipeline_cache::decode(&file[..20]).unwrap_err().contains("truncated"));
    let mut flipped = file.clone();
    flipped[500] ^= 1;
    assert!(pipeline_cache::decode(&flipped).unwrap_err().contains("checksum"));
    let mut other = file.clone();
    other[7] ^= 1;
    assert!(pipeline_cache::decode(&other).unwrap_err().contains("version"));
    assert_eq!(pipeline_cache::decode(&pipeline_cache::encode(&[])), Ok(&[][..]));
}

/// A batch is one dispatch per op (every op of the tiny model has work at these sizes), and
/// its bind groups are the pool's: made with the first batch, none for the next batches of
/// the same or a smaller shape, made again only when a larger batch grows the pool. Its
/// uniform blocks are written only when its shape differs from the previous batch's; the
/// embeddings of a batch that reuses them are those of one that wrote them.
#[test]
fn one_dispatch_per_op_and_bind_groups_made_once_per_pool() {
    let Some(ctx) = vulkan() else { return };
    let ck = tiny();
    let cfg = &ck.config;
    let opts = GpuOptions { pipeline_cache: None, ..Default::default() };
    let enc = GpuEncoder::with_options(&ctx, cfg, &ck.weights, Precision::F32, opts).unwrap();
    let px = synthetic_pixels(8, cfg.vision.image_size);
    let ops = enc.program(Tower::Vision).ops.len();
    assert!(enc.last_chunk_cost(Tower::Vision).is_none());
    let (mut made, mut uniforms, mut out) = (Vec::new(), Vec::new(), Vec::new());
    for n in [2, 2, 1, 8, 8, 2] {
        let e = enc.encode(Tower::Vision, &Input::Pixels { data: &px[..n * 3 * cfg.vision.image_size.pow(2)], n });
        out.push(e.unwrap());
        let c = enc.last_chunk_cost(Tower::Vision).unwrap();
        assert_eq!(c.dispatches, ops, "batch of {n}: {c:?}");
        made.push(c.bind_groups);
        uniforms.push(c.uniform_bytes);
    }
    assert_eq!(made, [ops, 0, 0, ops, 0, 0], "bind groups made per batch");
    let all = ops * 256;
    assert_eq!(uniforms, [all, 0, all, all, 0, all], "uniform bytes written per batch");
    // same shape, blocks reused: the same embeddings as the batch that wrote them, and the
    // batch of 2 after the batches of 8 (blocks rewritten) as the first batch of 2
    assert_eq!(out[1], out[0]);
    assert_eq!(out[4], out[3]);
    assert_eq!(out[5], out[0]);
    let ids = texts();
    enc.encode(Tower::Text, &Input::Tokens(&ids)).unwrap();
    let c = enc.last_chunk_cost(Tower::Text).unwrap();
    assert_eq!((c.dispatches, c.bind_groups), (enc.program(Tower::Text).ops.len(), enc.program(Tower::Text).ops.len()));
}
