//! The plain matmul's tile choice and its autotuner, on the GPU (CI: lavapipe), with the tiny
//! checkpoint (small shapes, a few seconds):
//!
//! * a forced table: the planner runs exactly its tiles, per row bucket (two batch sizes run
//!   two different plans on the same pool), and the embeddings still match the CPU engine;
//! * the tuner's cache: a table cached under a stale key (another kernel set, another
//!   driver) is ignored and measured again, and the file then holds the current key; a valid
//!   one is used without measuring anything; the engine reads it (`Reason::Cached`).
//!
//! Without a Vulkan adapter the tests say so and pass; CLIP_WGPU_REQUIRE_GPU=1 (CI) makes that
//! a failure.

mod common;
use common::gpu::vulkan;
use common::reference::*;

use clip_wgpu::cpu;
use clip_wgpu::gpu::matmul::MatmulKey;
use clip_wgpu::gpu::tiles::{self, AdapterKey, Bucket, Entry, PrecisionName, Table};
use clip_wgpu::gpu::tune::{self, TuneOptions};
use clip_wgpu::gpu::{GpuEncoder, GpuOptions, KernelKey, Precision, Reason, Tile, TilePolicy, Tiles};
use clip_wgpu::model::{self, Input, LoadOptions, Op, Program, Tower};

fn pixels(n: usize) -> Vec<f32> {
    (0..n * 3 * 224 * 224).map(|i| (1.7 * (0.0013 * i as f64).sin()) as f32).collect()
}

/// The tile each linear layer of `keys` runs (in op order; `None` for other ops).
fn tiles_of(program: &Program, keys: &[KernelKey]) -> Vec<Option<(usize, Tile)>> {
    program
        .ops
        .iter()
        .zip(keys)
        .map(|(op, k)| match (op, k) {
            (Op::Linear { lin, .. }, KernelKey::Matmul(MatmulKey { tile, .. })) => Some((lin.n_out, *tile)),
            _ => None,
        })
        .collect()
}

fn entry(p: Precision, n: usize, k: usize, rows: usize, tile: Tile) -> Entry {
    Entry {
        bucket: Bucket { precision: PrecisionName::from(p), n, k, rows },
        tile: tile.name(),
        timed_rows: rows,
        timings: vec![],
    }
}

#[test]
fn a_forced_table_is_planned_exactly_and_matches_the_cpu() {
    let Some(ctx) = vulkan() else { return };
    let ck = model::load(&tiny_dir().join("hf"), &LoadOptions::default()).unwrap();
    let cfg = &ck.config;
    let vision = Program::new(Tower::Vision, cfg, &ck.weights);
    // The tiny vision tower: 50 tokens per image; qkv 96×32, out 32×32, fc1 64×32, fc2 32×64.
    // One image: 50 rows (bucket 64); eight: 400 rows (bucket 512).
    for p in [Precision::F32, Precision::F16] {
        if p == Precision::F16 && !ctx.has_f16() {
            continue;
        }
        let mut table = Table::default();
        table.set(entry(p, 64, 32, 64, Tile::WG128X64_K16));
        table.set(entry(p, 64, 32, 512, Tile::WG64_K16_DB));
        table.set(entry(p, 96, 32, 512, Tile::WG64_K32));
        table.set(entry(p, 32, 64, 64, Tile::REG64));
        // through a file, as --gpu-tiles / CLIP_WGPU_GPU_TILES take it
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("table.json");
        std::fs::write(&file, serde_json::to_vec(&table).unwrap()).unwrap();
        let setting = Tiles::parse(file.to_str().unwrap()).unwrap();
        assert_eq!(setting, Tiles::Table(table.clone()));
        let opts = GpuOptions { tiles: setting, ..Default::default() };
        let enc = GpuEncoder::with_options(&ctx, cfg, &ck.weights, p, opts).unwrap();

        let small = tiles_of(&vision, enc.kernels_for(Tower::Vision, 50));
        let large = tiles_of(&vision, enc.kernels_for(Tower::Vision, 400));
        // Each layer's tile: the table's row of its bucket, else the nearest row of the same
        // layer (qkv at 64 rows takes its 512-row choice; fc2 at 512 its 64-row one), else
        // the default (out 32×32 has no row; the projection of pooled rows is always reg32).
        let want = |n: usize, small: bool| match (n, small) {
            (64, true) => Tile::WG128X64_K16,
            (64, false) => Tile::WG64_K16_DB,
            (96, _) => Tile::WG64_K32,
            (_, _) => Tile::REG32,
        };
        let mut seen = 0;
        for (i, op) in vision.ops.iter().enumerate() {
            let Op::Linear { lin, x, .. } = op else { continue };
            let pooled = vision.rows(*x) == model::Rows::Seqs;
            for (plan, is_small) in [(&small, true), (&large, false)] {
                let (n, tile) = plan[i].unwrap();
                let expect = if pooled {
                    Tile::REG32
                } else if (lin.n_out, lin.n_in) == (32, 64) {
                    Tile::REG64
                } else {
                    want(n, is_small)
                };
                assert_eq!(
                    tile,
                    expect,
                    "{p}: op {i} ({}x{}) at {} rows",
                    lin.n_out,
                    lin.n_in,
                    if is_small { 50 } else { 400 }
                );
                seen += 1;
            }
        }
        assert!(seen >= 16, "{seen} linear layers checked");
        assert_ne!(small, large, "two row buckets, two plans");
        // the reasons `info` shows
        let choices = enc.tile_choices(Tower::Vision);
        let c = |n, k, rows| choices.iter().find(|x| (x.0, x.1, x.2) == (n, k, rows)).unwrap().3;
        assert_eq!(c(64, 32, 64).reason, Reason::Forced);
        assert_eq!(c(64, 32, 512).tile, Tile::WG64_K16_DB);
        assert_eq!(c(32, 32, 64).reason, Reason::Default);

        // Both plans on one pool (the batch of 8 first makes the pool; the single image then
        // runs the other plan on its bind groups), against the CPU engine.
        let tol = if p == Precision::F16 { 2e-3 } else { 1e-5 };
        for n in [8, 1, 8] {
            let px = pixels(n);
            let input = Input::Pixels { data: &px, n };
            let want = cpu::run(&vision, cfg, &ck.weights.params, &input);
            let got = enc.encode(Tower::Vision, &input).unwrap();
            let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(worst <= tol, "{p}, {n} images: max abs {worst}");
            eprintln!("forced table, {p}, {n} images: max abs {worst:.1e} against the CPU engine");
        }
    }
}

fn quick() -> TuneOptions {
    TuneOptions { min_runs: 1, max_runs: 1, min_time: std::time::Duration::ZERO, ..Default::default() }
}

/// Two buckets of the tiny vision tower: fc1 (64×32) at 400 rows, qkv (96×32) at 50 rows.
const SHAPES: [(usize, usize, usize); 2] = [(64, 32, 400), (96, 32, 50)];

#[test]
fn the_tuner_cache_stale_keys_are_retuned_and_valid_ones_used() {
    let Some(ctx) = vulkan() else { return };
    let p = Precision::F32;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gpu-tune.json");
    let key = AdapterKey::of(&ctx.report);
    let buckets: Vec<Bucket> = SHAPES.iter().map(|&(n, k, m)| Bucket::of(p, n, k, m)).collect();

    // A table under another kernel set's key (every bucket present, tiles the tuner is
    // unlikely to pick all of): ignored, measured again.
    let mut stale_table = Table::default();
    for b in &buckets {
        stale_table.set(entry(p, b.n, b.k, b.rows, Tile::WG128X64_K16));
    }
    let stale = AdapterKey { kernels: "0123456789abcdef".into(), ..key.clone() };
    tiles::write_cache(&path, &stale, &stale_table).unwrap();
    assert_eq!(tiles::cached_table(&path, &key), None);
    let mut rows = Vec::new();
    let t = tune::ensure(&ctx, p, &SHAPES, Some(&path), false, &quick(), &mut |e| rows.push(e.clone())).unwrap();
    assert_eq!(t.measured, 2, "a stale table is measured again");
    assert!(t.written);
    assert_eq!(t.policy.table.as_ref().unwrap().1, Reason::Tuned);
    for e in &rows {
        // every candidate fits lavapipe (32 KiB, 1024 invocations) and was timed
        assert_eq!(e.timings.len(), Tile::CANDIDATES.len());
        assert!(e.timings.iter().all(|x| x.ms.is_some_and(|ms| ms > 0.0)), "{:?}", e.timings);
        let best = e.timings.iter().filter_map(|x| x.ms).fold(f64::INFINITY, f64::min);
        let chosen = e.timings.iter().find(|x| x.tile == e.tile).unwrap().ms.unwrap();
        assert_eq!(chosen, best, "the fastest is chosen");
        eprintln!("{}: {} ({:?})", e.bucket, e.tile, e.timings.iter().map(|x| (&x.tile, x.ms)).collect::<Vec<_>>());
    }
    let file = tiles::read_cache(&path);
    assert_eq!(file.adapters.len(), 1, "the stale table was replaced, not kept beside");
    assert_eq!(file.adapters[0].key, key, "the file holds the current key");
    assert_eq!(file.adapters[0].key.kernels, tiles::kernel_set_hash());
    let tuned = file.adapters[0].table.clone();
    assert_eq!(tuned.entries.iter().map(|e| e.bucket).collect::<Vec<_>>(), {
        let mut b = buckets.clone();
        b.sort();
        b
    });

    // The same key: used as is, nothing measured.
    let again = tune::ensure(&ctx, p, &SHAPES, Some(&path), false, &quick(), &mut |_| panic!("measured")).unwrap();
    assert_eq!(again.measured, 0);
    assert!(!again.written);
    assert_eq!(again.policy.table, Some((tuned.clone(), Reason::Cached)));

    // --force measures these buckets again and keeps the file's other rows.
    let mut extra = tiles::read_cache(&path);
    extra.adapters[0].table.set(entry(p, 8, 8, 16, Tile::REG64));
    std::fs::write(&path, serde_json::to_vec(&extra).unwrap()).unwrap();
    let forced = tune::ensure(&ctx, p, &SHAPES, Some(&path), true, &quick(), &mut |_| {}).unwrap();
    assert_eq!(forced.measured, 2);
    assert_eq!(tiles::read_cache(&path).adapters[0].table.entries.len(), 3, "the other bucket's row is kept");

    // Another driver version: stale again.
    let mut f = tiles::read_cache(&path);
    f.adapters[0].key.driver_info.push_str(" (older)");
    std::fs::write(&path, serde_json::to_vec(&f).unwrap()).unwrap();
    let redo = tune::ensure(&ctx, p, &SHAPES, Some(&path), false, &quick(), &mut |_| {}).unwrap();
    assert_eq!(redo.measured, 2, "another driver: measured again");
    assert_eq!(tiles::read_cache(&path).adapters[0].key, key);

    // The engine reads the cached table (Auto): those buckets run the cached tiles, for that
    // reason; the others the default. CLIP_WGPU_GPU_TUNE_CACHE is set in this test only (no
    // other test of this file reads the cache).
    let cached = tiles::read_cache(&path).adapters[0].table.clone();
    std::env::set_var("CLIP_WGPU_GPU_TUNE_CACHE", &path);
    let policy = TilePolicy::resolve(&ctx.report, p, &Tiles::Auto);
    assert_eq!(policy.table, Some((cached.clone(), Reason::Cached)));
    let ck = model::load(&tiny_dir().join("hf"), &LoadOptions::default()).unwrap();
    let enc = GpuEncoder::with_options(&ctx, &ck.config, &ck.weights, p, GpuOptions::default()).unwrap();
    std::env::remove_var("CLIP_WGPU_GPU_TUNE_CACHE");
    let choices = enc.tile_choices(Tower::Vision);
    for e in &cached.entries {
        let c = choices.iter().find(|x| (x.0, x.1, x.2) == (e.bucket.n, e.bucket.k, e.bucket.rows)).unwrap().3;
        assert_eq!((c.tile.name(), c.reason), (e.tile.clone(), Reason::Cached), "{}", e.bucket);
    }
    assert!(choices.iter().any(|x| (x.0, x.1) == (32, 32) && x.3.reason == Reason::Default));
    let vision = Program::new(Tower::Vision, &ck.config, &ck.weights);
    let px = pixels(8);
    let input = Input::Pixels { data: &px, n: 8 };
    let want = cpu::run(&vision, &ck.config, &ck.weights.params, &input);
    let got = enc.encode(Tower::Vision, &input).unwrap();
    let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(worst <= 1e-5, "tuned tiles: max abs {worst}");
}
