//! Every kernel variant of `gpu::shader::catalog()` run on the GPU (CI: lavapipe) against the
//! CPU engine's op (`cpu::run_op`), one op at a time, not only through whole towers: each
//! variant gets a one-op program built here for which the planner picks exactly that variant
//! (asserted), random inputs and weights (rounded to f16 for the CPU where the GPU stores
//! f16, so only the arithmetic differs), and its output compared element by element.
//!
//! Shapes: odd row counts and ragged sequences everywhere; attention on 197- and 257-token
//! sequences (ViT-B/16 at 224 px, ViT-L/14 at 224 px) beside a 5-token one; the patch
//! embedding at patch sizes 32, 16 (vec4 loads), 14 and 7 (scalar loads) and image sizes 224
//! and 336 (ViT-L/14@336: 577 tokens); the token table split in parts under a forced small binding limit, and the
//! whole tiny text tower run that way. The cooperative-matrix variants cannot run here
//! (lavapipe has no cooperative matrices): they are naga-validated by tests/shaders.rs and
//! guarded at run time by the self-check (tests/gpu_coop.rs).
//!
//! Tolerance: |gpu − cpu| ≤ tol·(1 + |cpu|) with tol 1e-5 for f32 outputs (measured ≤ 2.5e-6,
//! the patch embedding's 3072-term sums) and 1e-3 for f16 ones (measured ≤ 3.2e-4: half an f16
//! ulp is 2.4e-4 relative); whole towers: max abs 1e-5 (f32) and 2e-3 (f16), as tests/gpu.rs.
//! Every matmul tile candidate (`matmul::Tile::CANDIDATES`, register and workgroup-memory
//! tiles) is a catalog variant with every epilogue, forced through `GpuOptions::tiles`; they
//! also run on a product of several workgroups each way with ragged edges and a K that is no
//! multiple of the staged K steps. About 55 s on lavapipe (2 shared cores, 190 variants; the
//! build not counted). Without a Vulkan adapter the tests say so and pass;
//! CLIP_WGPU_REQUIRE_GPU=1 (CI) makes that a failure.

mod common;
use common::gpu::vulkan;
use common::reference::*;

use clip_wgpu::cpu::{self, Prepared};
use clip_wgpu::gpu::embed::EmbedKey;
use clip_wgpu::gpu::executor::run_program;
use clip_wgpu::gpu::head::HeadKey;
use clip_wgpu::gpu::matmul::{MatmulKey, Tile};
use clip_wgpu::gpu::norm::NormKey;
use clip_wgpu::gpu::patch::PatchKey;
use clip_wgpu::gpu::shader::{self, KernelKey};
use clip_wgpu::gpu::weights::WeightStore;
use clip_wgpu::gpu::{Context, Dt, GpuEncoder, GpuError, GpuOptions, Precision, Tiles};
use clip_wgpu::model::{
    self, Act, ClipConfig, Input, LayerNormW, LinearW, LoadOptions, Op, Params, PoolAt, Program, Rows, Tower,
};
use std::collections::HashMap;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
    fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.next() * scale).collect()
    }
}

/// Rounds to what the GPU stores in `dt`.
fn stored(mut v: Vec<f32>, dt: Dt) -> Vec<f32> {
    if dt == Dt::F16 {
        v.iter_mut().for_each(|x| *x = half::f16::from_f32(*x).to_f32());
    }
    v
}

/// A one-op program and everything to run it.
struct Case {
    label: String,
    cfg: ClipConfig,
    params: Params,
    program: Program,
    precision: Precision,
    pixels: Vec<f32>,
    texts: Vec<Vec<u32>>,
    /// Activations written before the op (already rounded to their storage type).
    init: Vec<(Act, Vec<f32>)>,
    /// The activation compared afterwards.
    out: Act,
    opts: GpuOptions,
}

impl Case {
    fn input(&self) -> Input<'_> {
        if self.texts.is_empty() {
            Input::Pixels { data: &self.pixels, n: self.pixels.len() / (3 * self.cfg.vision.image_size.pow(2)) }
        } else {
            Input::Tokens(&self.texts)
        }
    }
}

/// Ragged sequences of the given lengths (each text's highest id last, so that it computes
/// all its positions).
fn texts(lens: &[usize], vocab: usize, rng: &mut Rng) -> Vec<Vec<u32>> {
    lens.iter()
        .map(|&l| {
            let mut t: Vec<u32> = (0..l).map(|_| ((rng.next() * 0.5 + 0.5) * (vocab - 1) as f32) as u32).collect();
            *t.last_mut().unwrap() = vocab as u32 - 1;
            t
        })
        .collect()
}

fn program(ops: Vec<Op>, widths: Vec<(Act, usize, Rows)>) -> Program {
    Program { tower: Tower::Text, ops, widths, output: Act::X, embed_dim: 4 }
}

fn base_cfg() -> ClipConfig {
    let mut cfg = ClipConfig::vit_b_32();
    cfg.text.vocab_size = 1000;
    cfg
}

/// The lengths of a ragged batch: odd token and sequence counts.
const LENS: [usize; 3] = [5, 8, 20];

/// A case whose one op the planner maps to `key`, or `None` for variants this file does not
/// run (cooperative matrices).
fn case(key: &KernelKey, rng: &mut Rng) -> Option<Case> {
    let mut params = Params::default();
    let mut cfg = base_cfg();
    let tiny_text = texts(&LENS, cfg.text.vocab_size, rng);
    let mut opts = GpuOptions::default();
    let (precision, prog, init, out, texts_in, pixels) = match *key {
        KernelKey::MatmulCoop(_) => return None,
        KernelKey::Matmul(MatmulKey { w, epi, tile, .. }) => {
            let p = precision_of(w);
            opts.tiles = Tiles::Force(tile);
            let (prog, init) = matmul_case(&mut params, p, epi, &LENS, (38, 72), rng);
            (p, prog, init, Act::Mlp, tiny_text, vec![])
        }
        KernelKey::Patch(PatchKey { w, vec4, .. }) => {
            // One patch/image size per variant; `patch_embedding_at_every_patch_and_image_size`
            // runs the others.
            let p = precision_of(w);
            let (patch, image) = if vec4 { (16, 224) } else { (14, 336) };
            let (c, prog, px) = patch_case(&mut params, &mut cfg, p, patch, image, 2, rng);
            cfg = c;
            (p, prog, vec![], Act::X, vec![], px)
        }
        KernelKey::Attention(a) => {
            let p = precision_of(a.qkv);
            let (heads, hd) = (2, a.hd4 as usize * 4);
            let width = heads * hd;
            let lens = [197, 257, 5];
            let tokens: usize = lens.iter().sum();
            let op = Op::Attention { qkv: Act::Qkv, out: Act::Attn, heads, head_dim: hd, causal: a.causal };
            let prog = program(vec![op], vec![(Act::Qkv, 3 * width, Rows::Tokens), (Act::Attn, width, Rows::Tokens)]);
            let init = vec![(Act::Qkv, stored(rng.vec(tokens * 3 * width, 1.5), p.tokens()))];
            let t = texts(&lens, cfg.text.vocab_size, rng);
            (p, prog, init, Act::Attn, t, vec![])
        }
        KernelKey::Norm(NormKey { g, inplace, subgroup, .. }) => {
            let p = precision_of(g);
            opts.subgroups = subgroup;
            let w = 200;
            let gamma = params.push("g", vec![w], stored(rng.vec(w, 1.0), g));
            let beta = params.push("b", vec![w], stored(rng.vec(w, 0.5), g));
            let ln = LayerNormW { gamma, beta };
            let out = if inplace { Act::X } else { Act::H };
            let op = Op::LayerNorm { x: Act::X, ln, eps: 1e-5, out };
            let prog = program(vec![op], vec![(Act::X, w, Rows::Tokens), (Act::H, w, Rows::Tokens)]);
            let v = offset_rows(LENS.iter().sum(), w, rng);
            (p, prog, vec![(Act::X, stored(v, p.tokens()))], out, tiny_text, vec![])
        }
        KernelKey::Embed(EmbedKey { table, .. }) => {
            let p = precision_of(table);
            let w = 32;
            let vocab = cfg.text.vocab_size;
            let t = params.push("token", vec![vocab, w], stored(rng.vec(vocab * w, 1.0), table));
            let pos = params.push("pos", vec![77, w], stored(rng.vec(77 * w, 1.0), table));
            let op = Op::TokenEmbed { table: t, pos, out: Act::X };
            let prog = program(vec![op], vec![(Act::X, w, Rows::Tokens)]);
            (p, prog, vec![], Act::X, tiny_text, vec![])
        }
        KernelKey::Head(HeadKey { x, w: wt }) => {
            let p = precision_of(wt);
            let (w, d) = (200, 300);
            let at = if rng.next() > 0.0 { PoolAt::Last } else { PoolAt::First };
            let op = head_op(&mut params, p, (w, d), wt == Dt::F32, at, rng);
            let prog = program(vec![op], vec![(Act::X, w, Rows::Tokens), (Act::Embed, d, Rows::Seqs)]);
            let v = offset_rows(LENS.iter().sum(), w, rng);
            (p, prog, vec![(Act::X, stored(v, x))], Act::Embed, tiny_text, vec![])
        }
    };
    Some(Case { label: key.name(), cfg, params, program: prog, precision, pixels, texts: texts_in, init, out, opts })
}

/// The precision whose weights are stored as `dt`.
fn precision_of(dt: Dt) -> Precision {
    if dt == Dt::F16 {
        Precision::F16
    } else {
        Precision::F32
    }
}

/// `m` random rows of `w`, row `r` offset by `0.1·r`, so that a layernorm's mean and variance
/// matter.
fn offset_rows(m: usize, w: usize, rng: &mut Rng) -> Vec<f32> {
    rng.vec(m * w, 2.0).iter().enumerate().map(|(i, x)| x + (i / w) as f32 * 0.1).collect()
}

/// A head op over `w`-wide token rows `Act::X` into `d`-wide embeddings `Act::Embed`:
/// layernorm and projection parameters in the storage type of `p`, with a projection bias if
/// asked (CLIP's projections have none; the kernel takes one).
fn head_op(params: &mut Params, p: Precision, (w, d): (usize, usize), bias: bool, at: PoolAt, rng: &mut Rng) -> Op {
    let wt = p.weights();
    let gamma = params.push("g", vec![w], stored(rng.vec(w, 1.0), wt));
    let beta = params.push("b", vec![w], stored(rng.vec(w, 0.5), wt));
    let weight = params.push("proj", vec![d, w], stored(rng.vec(d * w, 0.3), wt));
    let bias = bias.then(|| params.push("proj_b", vec![d], stored(rng.vec(d, 0.5), wt)));
    let proj = LinearW { weight, bias, n_in: w, n_out: d };
    Op::Head { x: Act::X, at, ln: LayerNormW { gamma, beta }, eps: 1e-5, proj, out: Act::Embed }
}

/// A one-linear-layer program: `n × k` weights in the storage type of `p`, X of the token rows
/// of `lens` and, with `accumulate`, an old Y.
fn matmul_case(
    params: &mut Params,
    p: Precision,
    epi: model::Epilogue,
    lens: &[usize],
    (n, k): (usize, usize),
    rng: &mut Rng,
) -> (Program, Vec<(Act, Vec<f32>)>) {
    let w = p.weights();
    let weight = params.push("w", vec![n, k], stored(rng.vec(n * k, 0.3), w));
    let bias = epi.bias.then(|| params.push("b", vec![n], stored(rng.vec(n, 0.5), w)));
    let lin = LinearW { weight, bias, n_in: k, n_out: n };
    let m: usize = lens.iter().sum();
    let dt = p.tokens();
    let mut init = vec![(Act::H, stored(rng.vec(m * k, 1.0), dt))];
    if epi.accumulate {
        init.push((Act::Mlp, stored(rng.vec(m * n, 1.0), dt)));
    }
    let op = Op::Linear { x: Act::H, lin, act: epi.act, accumulate: epi.accumulate, out: Act::Mlp };
    (program(vec![op], vec![(Act::H, k, Rows::Tokens), (Act::Mlp, n, Rows::Tokens)]), init)
}

/// A patch-embedding program: `images` images of `image`² pixels, patches of `patch`², width 32.
#[allow(clippy::too_many_arguments)]
fn patch_case(
    params: &mut Params,
    cfg: &mut ClipConfig,
    p: Precision,
    patch: usize,
    image: usize,
    images: usize,
    rng: &mut Rng,
) -> (ClipConfig, Program, Vec<f32>) {
    let mut cfg = cfg.clone();
    cfg.vision.image_size = image;
    cfg.vision.patch_size = patch;
    let (w, k, t) = (32, 3 * patch * patch, cfg.vision.tokens());
    let wt = p.weights();
    let weight = params.push("patch", vec![w, k], stored(rng.vec(w * k, 2.0 / (k as f32).sqrt()), wt));
    let class = params.push("class", vec![w], stored(rng.vec(w, 1.0), wt));
    let pos = params.push("pos", vec![t, w], stored(rng.vec(t * w, 1.0), wt));
    let op = Op::PatchEmbed { patch: LinearW { weight, bias: None, n_in: k, n_out: w }, class, pos, out: Act::X };
    let mut prog = program(vec![op], vec![(Act::X, w, Rows::Tokens)]);
    prog.tower = Tower::Vision;
    let px = rng.vec(images * 3 * image * image, 1.0);
    (cfg, prog, px)
}

/// Runs a case on the GPU and the CPU; returns the largest relative error and the planned keys.
fn run(ctx: &Context, c: &Case) -> Result<(f32, Vec<KernelKey>), GpuError> {
    let init: Vec<(Act, &[f32])> = c.init.iter().map(|(a, v)| (*a, &v[..])).collect();
    let input = c.input();
    let (keys, got) = run_program(ctx, &c.cfg, &c.params, &c.program, c.precision, &c.opts, &input, &init, &[c.out])?;
    // The CPU engine's op, on the same (rounded) values.
    let seqs = model::Seqs::of(&input, &c.cfg);
    let mut acts: HashMap<Act, Vec<f32>> = c
        .program
        .widths
        .iter()
        .map(|&(a, w, rows)| {
            let r = if rows == Rows::Tokens { seqs.tokens() } else { seqs.count() };
            (a, vec![0f32; r * w])
        })
        .collect();
    for (a, v) in &c.init {
        acts.insert(*a, v.clone());
    }
    let prep = Prepared::new(&c.params, &[&c.program]);
    for op in &c.program.ops {
        cpu::run_op(op, &c.program, &c.cfg, &c.params, &prep, &input, &seqs, &mut acts);
    }
    let want = &acts[&c.out];
    let got = &got[0];
    assert_eq!(got.len(), want.len(), "{}: output size", c.label);
    let out_dt = if c.program.rows(c.out) == Rows::Tokens { c.precision.tokens() } else { Dt::F32 };
    let tol = if out_dt == Dt::F16 { 1e-3 } else { 1e-5 };
    let mut worst = (0f32, 0usize);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let e = (g - w).abs() / (1.0 + w.abs());
        let e = if e.is_nan() { f32::INFINITY } else { e };
        if e > worst.0 {
            worst = (e, i);
        }
    }
    let i = worst.1;
    assert!(
        worst.0 <= tol,
        "{}: element {i}: gpu {} vs cpu {} (relative error {:.2e} > {tol:.0e})",
        c.label,
        got[i],
        want[i],
        worst.0
    );
    Ok((worst.0, keys))
}

#[test]
fn every_catalog_variant_matches_the_cpu_op() {
    let Some(ctx) = vulkan() else { return };
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let catalog = shader::catalog(&[4, 16, 64]);
    let (mut ran, mut coop, mut skipped) = (0, 0, Vec::new());
    for key in &catalog {
        let Some(c) = case(key, &mut rng) else {
            coop += 1;
            continue;
        };
        if c.precision == Precision::F16 && !ctx.has_f16() {
            skipped.push(format!("{} (no SHADER_F16)", key.name()));
            continue;
        }
        if matches!(key, KernelKey::Norm(n) if n.subgroup) && !ctx.has_subgroup() {
            skipped.push(format!("{} (no SUBGROUP)", key.name()));
            continue;
        }
        let (err, keys) = run(&ctx, &c).unwrap_or_else(|e| panic!("{}: {e}", key.name()));
        assert_eq!(keys, vec![*key], "the case built for {} planned another variant", key.name());
        eprintln!("{}: max relative error {err:.1e}", key.name());
        ran += 1;
    }
    eprintln!(
        "{ran} variants run against the CPU op on {}; {coop} cooperative-matrix variants not runnable here; skipped: {skipped:?}",
        ctx.report.name
    );
    if std::env::var("CLIP_WGPU_REQUIRE_GPU").is_ok_and(|v| v == "1") {
        assert!(skipped.is_empty(), "CI's adapter must run every variant: {skipped:?}");
    }
    assert!(ran + coop + skipped.len() == catalog.len() && ran > 0);
}

/// Every matmul tile candidate on a product of several workgroups in both directions, ragged
/// at every edge (281 rows, 200 columns: not multiples of any block) and with K = 136, not a
/// multiple of the staged kernels' K steps (16, 32: the last slice is staged with zeros):
/// against the CPU op, at both precisions, with the full epilogue.
#[test]
fn every_tile_on_ragged_multi_block_shapes() {
    let Some(ctx) = vulkan() else { return };
    let mut rng = Rng(0x6a09_e667_f3bc_c908);
    let lens = [77, 77, 77, 50];
    for p in [Precision::F32, Precision::F16] {
        if p == Precision::F16 && !ctx.has_f16() {
            continue;
        }
        for tile in Tile::CANDIDATES {
            let epi = model::Epilogue { bias: true, act: Some(model::Activation::QuickGelu), accumulate: true };
            let mut params = Params::default();
            let (prog, init) = matmul_case(&mut params, p, epi, &lens, (200, 136), &mut rng);
            let c = Case {
                label: format!("{tile} {p} 281×200×136"),
                cfg: base_cfg(),
                params,
                program: prog,
                precision: p,
                pixels: vec![],
                texts: texts(&lens, 1000, &mut rng),
                init,
                out: Act::Mlp,
                opts: GpuOptions { tiles: Tiles::Force(tile), ..Default::default() },
            };
            let (err, keys) = run(&ctx, &c).unwrap_or_else(|e| panic!("{}: {e}", c.label));
            let t = p.tokens();
            assert_eq!(keys, vec![KernelKey::Matmul(MatmulKey { x: t, w: p.weights(), y: t, epi, tile })]);
            let d = tile.dispatch(281, 200);
            assert!(d[0] >= 2 && d[1] >= 3, "{tile}: {d:?} workgroups: more than one each way");
            eprintln!("{}: {:?} workgroups, max relative error {err:.1e}", c.label, d);
        }
    }
}

/// The patch embedding at the CLIP family's patch and image sizes (and an odd patch size):
/// ViT-B/32 and B/16 at 224 px, L/14 at 224 and 336 px, 7-pixel patches (K = 147, not a
/// multiple of 4).
#[test]
fn patch_embedding_at_every_patch_and_image_size() {
    let Some(ctx) = vulkan() else { return };
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    for p in [Precision::F32, Precision::F16] {
        if p == Precision::F16 && !ctx.has_f16() {
            continue;
        }
        for (patch, image, images) in [(32, 224, 3), (16, 224, 2), (14, 224, 1), (14, 336, 1), (7, 28, 3)] {
            let mut params = Params::default();
            let (cfg, program, pixels) = patch_case(&mut params, &mut base_cfg(), p, patch, image, images, &mut rng);
            let c = Case {
                label: format!("patch {patch}, image {image}, {images} images, {p}"),
                cfg,
                params,
                program,
                precision: p,
                pixels,
                texts: vec![],
                init: vec![],
                out: Act::X,
                opts: GpuOptions::default(),
            };
            let (err, keys) = run(&ctx, &c).unwrap();
            let vec4 = patch % 4 == 0;
            assert_eq!(keys, vec![KernelKey::Patch(PatchKey { w: p.weights(), y: p.tokens(), vec4 })]);
            eprintln!("{}: {} tokens per image, max relative error {err:.1e}", c.label, c.cfg.vision.tokens());
        }
    }
}

/// A token table larger than the (forced) binding limit is uploaded in parts and gathered
/// from them; a linear layer's weight over the limit is refused with its name and sizes.
#[test]
fn tables_over_the_binding_limit_are_split() {
    let Some(ctx) = vulkan() else { return };
    let mut rng = Rng(0x1234_5678_9abc_def1);
    for p in [Precision::F32, Precision::F16] {
        if p == Precision::F16 && !ctx.has_f16() {
            continue;
        }
        let key = KernelKey::Embed(EmbedKey { tokens: p.tokens(), table: p.weights() });
        let mut c = case(&key, &mut rng).unwrap();
        // 1000 rows of 32: parts of 400 rows.
        let row = 32 * p.weights().size();
        let limit = 400 * row;
        c.opts.max_binding = Some(limit);
        let store = WeightStore::upload(&ctx, &c.params, p.weights(), limit).unwrap();
        assert_eq!(store.part_count(model::ParamId(0)), 3, "the table in 3 parts");
        assert_eq!(store.part_rows[0], 400);
        assert!(store.parts[0].iter().all(|s| s.size <= limit));
        // ids from every part
        c.texts = vec![vec![0, 399, 400, 401, 799, 800, 998, 999], vec![5, 999], vec![999]];
        let (err, _) = run(&ctx, &c).unwrap();
        eprintln!("token table in 3 parts of 400 rows ({p}): max relative error {err:.1e}");

        // A linear layer cannot bind parts: a clear error.
        let mut params = Params::default();
        let weight = params.push("blocks.0.fc1.weight", vec![600, 32], vec![0.5; 600 * 32]);
        let lin = LinearW { weight, bias: None, n_in: 32, n_out: 600 };
        let op = Op::Linear { x: Act::H, lin, act: None, accumulate: false, out: Act::Mlp };
        let prog = program(vec![op], vec![(Act::H, 32, Rows::Tokens), (Act::Mlp, 600, Rows::Tokens)]);
        let opts = GpuOptions { max_binding: Some(limit), ..Default::default() };
        let input = Input::Tokens(&c.texts);
        let e = run_program(&ctx, &c.cfg, &params, &prog, p, &opts, &input, &[], &[Act::Mlp]).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, GpuError::Unsupported(_)), "{e:?}");
        assert!(msg.contains("blocks.0.fc1.weight") && msg.contains("exceeds the largest storage binding"), "{msg}");
        eprintln!("{msg}");
    }
}

/// The whole tiny text tower (token table 49408 × 8) with a binding limit under the table's
/// size: the same embeddings as the CPU engine (and the vision tower still runs).
#[test]
fn tiny_model_under_a_small_binding_limit() {
    let Some(ctx) = vulkan() else { return };
    let ck = model::load(&tiny_dir().join("hf"), &LoadOptions::default()).unwrap();
    let r = load(&tiny_dir().join("reference.json"));
    let table = ck.weights.text.token;
    for p in [Precision::F32, Precision::F16] {
        if p == Precision::F16 && !ctx.has_f16() {
            continue;
        }
        let bytes = ck.weights.params.data(table).len() as u64 * p.weights().size();
        let limit = (bytes / 3).next_multiple_of(256);
        let opts = GpuOptions { max_binding: Some(limit), ..Default::default() };
        let enc = GpuEncoder::with_options(&ctx, &ck.config, &ck.weights, p, opts).unwrap();
        let text = Program::new(Tower::Text, &ck.config, &ck.weights);
        let want = cpu::run(&text, &ck.config, &ck.weights.params, &Input::Tokens(&r.ids));
        let got = enc.encode(Tower::Text, &Input::Tokens(&r.ids)).unwrap();
        let tol = if p == Precision::F16 { 2e-3 } else { 1e-5 };
        let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(worst <= tol, "{p}: text embeddings differ by {worst} (limit {limit} bytes)");
        eprintln!("tiny text tower, {p}, token table of {bytes} bytes under a {limit}-byte limit: max abs {worst:.1e}");
    }
}

/// A random one-block model of `cfg` (the towers' structure, any sizes).
fn random_weights(cfg: &ClipConfig, rng: &mut Rng) -> model::Weights {
    let mut params = Params::default();
    let lin = |params: &mut Params, rng: &mut Rng, name: &str, n_out: usize, n_in: usize, bias: bool| {
        let s = 1.0 / (n_in as f32).sqrt();
        let w = rng.vec(n_out * n_in, s);
        let weight = params.push(format!("{name}.weight"), vec![n_out, n_in], w);
        let bias = bias.then(|| params.push(format!("{name}.bias"), vec![n_out], rng.vec(n_out, 0.1)));
        LinearW { weight, bias, n_in, n_out }
    };
    let ln = |params: &mut Params, rng: &mut Rng, name: &str, w: usize| {
        let g: Vec<f32> = rng.vec(w, 0.2).into_iter().map(|x| x + 1.0).collect();
        LayerNormW {
            gamma: params.push(format!("{name}.gamma"), vec![w], g),
            beta: params.push(format!("{name}.beta"), vec![w], rng.vec(w, 0.1)),
        }
    };
    let blocks = |params: &mut Params, rng: &mut Rng, tower: &str, t: &model::TowerConfig| -> Vec<model::BlockW> {
        (0..t.layers)
            .map(|i| {
                let p = format!("{tower}.blocks.{i}");
                model::BlockW {
                    ln1: ln(params, rng, &format!("{p}.ln1"), t.width),
                    qkv: lin(params, rng, &format!("{p}.qkv"), 3 * t.width, t.width, true),
                    out: lin(params, rng, &format!("{p}.out"), t.width, t.width, true),
                    ln2: ln(params, rng, &format!("{p}.ln2"), t.width),
                    fc1: lin(params, rng, &format!("{p}.fc1"), t.mlp, t.width, true),
                    fc2: lin(params, rng, &format!("{p}.fc2"), t.width, t.mlp, true),
                }
            })
            .collect()
    };
    let (v, t) = (&cfg.vision, &cfg.text);
    let vw = v.tower.width;
    let k = 3 * v.patch_size * v.patch_size;
    let patch = LinearW {
        weight: params.push("vision.patch", vec![vw, k], rng.vec(vw * k, 1.0 / (k as f32).sqrt())),
        bias: None,
        n_in: k,
        n_out: vw,
    };
    let class = params.push("vision.class", vec![vw], rng.vec(vw, 1.0));
    let pos = params.push("vision.pos", vec![v.tokens(), vw], rng.vec(v.tokens() * vw, 0.5));
    let ln_pre = ln(&mut params, rng, "vision.ln_pre", vw);
    let vblocks = blocks(&mut params, rng, "vision", &v.tower);
    let ln_post = ln(&mut params, rng, "vision.ln_post", vw);
    let vproj = lin(&mut params, rng, "vision.proj", cfg.embed_dim, vw, false);
    let tw = t.tower.width;
    let token = params.push("text.token", vec![t.vocab_size, tw], rng.vec(t.vocab_size * tw, 1.0));
    let tpos = params.push("text.pos", vec![t.context_length, tw], rng.vec(t.context_length * tw, 0.5));
    let tblocks = blocks(&mut params, rng, "text", &t.tower);
    let ln_final = ln(&mut params, rng, "text.ln_final", tw);
    let tproj = lin(&mut params, rng, "text.proj", cfg.embed_dim, tw, false);
    model::Weights {
        params,
        vision: model::VisionW { patch, class, pos, ln_pre, blocks: vblocks, ln_post, proj: vproj },
        text: model::TextW { token, pos: tpos, blocks: tblocks, ln_final, proj: tproj },
        logit_scale: 4.6,
    }
}

/// Whole towers of the CLIP family's shapes against the CPU engine, with configurations made
/// here (one block each, random weights): a ViT-L/14@336-like vision tower (patch 14, 336
/// px: 577 tokens) and a 768-wide text tower with the real vocabulary, whose f32 token table
/// (49408 × 768 × 4 = 152 MB) is over lavapipe's 128 MiB binding limit without forcing
/// anything; and a ViT-B/16-like vision tower (patch 16, 224 px: 197 tokens).
#[test]
fn clip_family_towers_match_the_cpu() {
    let Some(ctx) = vulkan() else { return };
    let mut rng = Rng(0x5851_f42d_4c95_7f2d);
    let mut cfg = ClipConfig::vit_b_32();
    cfg.vision.tower.width = 64;
    cfg.vision.tower.heads = 4;
    cfg.vision.tower.mlp = 128;
    cfg.vision.tower.layers = 1;
    cfg.text.tower.width = 768;
    cfg.text.tower.heads = 12;
    cfg.text.tower.mlp = 1024;
    cfg.text.tower.layers = 1;
    cfg.text.tower.activation = model::Activation::Gelu;
    cfg.embed_dim = 64;
    for (patch, image) in [(14, 336), (16, 224)] {
        cfg.vision.patch_size = patch;
        cfg.vision.image_size = image;
        let w = random_weights(&cfg, &mut rng);
        let pixels = rng.vec(2 * 3 * image * image, 1.0);
        let ids = texts(&[7, 77, 1], cfg.text.vocab_size, &mut rng);
        let inputs = [(Tower::Vision, Input::Pixels { data: &pixels, n: 2 }), (Tower::Text, Input::Tokens(&ids))];
        let want: Vec<Vec<f32>> =
            inputs.iter().map(|(t, i)| cpu::run(&Program::new(*t, &cfg, &w), &cfg, &w.params, i)).collect();
        for p in [Precision::F32, Precision::F16] {
            if p == Precision::F16 && !ctx.has_f16() {
                continue;
            }
            let enc = GpuEncoder::new(&ctx, &cfg, &w, p).unwrap_or_else(|e| panic!("patch {patch}, {p}: {e}"));
            for ((tower, input), want) in inputs.iter().zip(&want) {
                if *tower == Tower::Text && patch == 16 {
                    continue; // the same text tower as with patch 14
                }
                let got = enc.encode(*tower, input).unwrap();
                let worst = got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
                let tol = if p == Precision::F16 { 2e-3 } else { 1e-5 };
                assert!(worst <= tol, "patch {patch}, image {image}, {tower:?}, {p}: max abs {worst}");
                eprintln!("patch {patch}, image {image}, {tower:?}, {p}: max abs {worst:.1e} against the CPU engine");
            }
        }
    }
}
