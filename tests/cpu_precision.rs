//! The CPU engine's instruction-set levels and precisions:
//! - the tiny checkpoint against transformers (1e-5) at every level this machine has, each
//!   forced through `Prepared::with_isa` (no environment variable, so tests don't race);
//! - bf16 and int8 against f32 on the full-size random ViT-B/32 (min cosine ≥ 0.999, both
//!   towers; SKIPPED without tests/fixtures/full unless CLIP_WGPU_REQUIRE_FULL=1);
//! - a text computed alone equals the same text in a batch with 77-token and padded ones.

mod common;
use common::reference::*;

use clip_wgpu::cpu::{self, CpuPrecision, Isa, Prepared};
use clip_wgpu::model::{self, Checkpoint, Input, LoadOptions, Program, Tower};

fn isas() -> Vec<Isa> {
    for i in Isa::ALL.into_iter().filter(|i| !i.available()) {
        eprintln!("SKIPPED: level {i} (not on this machine)");
    }
    Isa::ALL.into_iter().filter(|i| i.available()).collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let d: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    d / (na * nb)
}

fn min_cosine(a: &[f32], b: &[f32], e: usize) -> f64 {
    a.chunks(e).zip(b.chunks(e)).map(|(x, y)| cosine(x, y)).fold(1.0, f64::min)
}

struct Towers {
    ck: Checkpoint,
    vision: Program,
    text: Program,
}

impl Towers {
    fn load(dir: &std::path::Path) -> Towers {
        let ck = model::load(dir, &LoadOptions::default()).unwrap();
        let vision = Program::new(Tower::Vision, &ck.config, &ck.weights);
        let text = Program::new(Tower::Text, &ck.config, &ck.weights);
        Towers { ck, vision, text }
    }
    fn prepare(&self, precision: CpuPrecision, isa: Isa) -> Prepared {
        Prepared::with_isa(&self.ck.weights.params, &[&self.vision, &self.text], precision, isa)
    }
    fn images(&self, prep: &Prepared, px: &[f32], n: usize) -> Vec<f32> {
        cpu::run_prepared(&self.vision, &self.ck.config, &self.ck.weights.params, prep, &Input::Pixels { data: px, n })
    }
    fn texts(&self, prep: &Prepared, ids: &[Vec<u32>]) -> Vec<f32> {
        cpu::run_prepared(&self.text, &self.ck.config, &self.ck.weights.params, prep, &Input::Tokens(ids))
    }
}

#[test]
fn tiny_matches_transformers_at_every_available_isa() {
    let r = load(&tiny_dir().join("reference.json"));
    for dir in ["hf", "hf-bf16"] {
        let t = Towers::load(&tiny_dir().join(dir));
        let px = synthetic_pixels(r.n_synthetic, t.ck.config.vision.image_size);
        for isa in isas() {
            let prep = t.prepare(CpuPrecision::F32, isa);
            assert_eq!(prep.isa(), isa);
            let img = t.images(&prep, &px, r.n_synthetic);
            let err = max_abs(&img, &r.image_embeds[..r.n_synthetic]);
            assert!(err <= 1e-5, "{dir} {isa}: image embeddings max abs error {err}");
            let txt = t.texts(&prep, &r.ids);
            let err = max_abs(&txt, &r.text_embeds);
            assert!(err <= 1e-5, "{dir} {isa}: text embeddings max abs error {err}");
            eprintln!("{dir} {isa}: f32 ok");
        }
    }
}

/// A run's image and text embeddings.
type Embeddings = (Vec<f32>, Vec<f32>);

#[test]
fn tiny_reduced_precisions_run_at_every_available_isa() {
    // The tiny model (width 8–16) is too narrow for quantisation to be accurate; this checks
    // that every (precision, level) pair runs, agrees across levels, and stays close.
    let r = load(&tiny_dir().join("reference.json"));
    let t = Towers::load(&tiny_dir().join("hf"));
    let px = synthetic_pixels(r.n_synthetic, t.ck.config.vision.image_size);
    let e = t.ck.config.embed_dim;
    for p in CpuPrecision::ALL.into_iter().filter(|p| p.supported()) {
        // the first level of each int8 weight range (AVX2's vpmaddubsw kernel quantises the
        // weights to 7 bits, the others to 8: the levels of one range must agree)
        let mut firsts: Vec<(i32, Embeddings)> = Vec::new();
        for isa in isas() {
            let range = isa.lowp_engine(cpu::gemm_lowp::Kind::Int8).map_or(127, |e| e.weight_qmax());
            let prep = t.prepare(p, isa);
            let (img, txt) = (t.images(&prep, &px, r.n_synthetic), t.texts(&prep, &r.ids));
            let want: Vec<f32> = r.image_embeds[..r.n_synthetic].concat();
            let (ci, ct) = (min_cosine(&img, &want, e), min_cosine(&txt, &r.text_embeds.concat(), e));
            eprintln!("tiny {p} {isa}: min cosine vs transformers: image {ci:.6}, text {ct:.6}");
            assert!(ci > 0.99 && ct > 0.99, "tiny {p} {isa}: image {ci}, text {ct}");
            match firsts.iter().find(|f| f.0 == range || p != CpuPrecision::Int8).map(|f| &f.1) {
                None => firsts.push((range, (img, txt))),
                Some((i0, t0)) => {
                    // levels differ in f32 rounding (FMA or not, summation order), which int8
                    // can turn into a different rounding of a quantised value; bf16 on the
                    // AVX512_BF16 and AMX kernels rounds the activations to bf16 too (the AVX2
                    // and portable ones only the weights)
                    let d = max_abs(&img, &i0.chunks(e).map(|c| c.to_vec()).collect::<Vec<_>>())
                        .max(max_abs(&txt, &t0.chunks(e).map(|c| c.to_vec()).collect::<Vec<_>>()));
                    let c = min_cosine(&img, i0, e).min(min_cosine(&txt, t0, e));
                    let lowp = p == CpuPrecision::Bf16 && isa.lowp_engine(cpu::gemm_lowp::Kind::Bf16).is_some();
                    if p == CpuPrecision::Int8 || lowp {
                        assert!(c >= 0.9999, "tiny {p} {isa}: min cosine to the first level {c}");
                    } else {
                        assert!(d <= 1e-4, "tiny {p} {isa}: differs from the first level by {d}");
                    }
                }
            }
        }
    }
}

#[test]
fn isa_names_parse() {
    assert_eq!(Isa::parse("auto"), Some(None));
    assert_eq!(Isa::parse("AVX2"), Some(Some(Isa::Avx2)));
    assert_eq!(Isa::parse("scalar"), Some(Some(Isa::Scalar)));
    assert_eq!(Isa::parse("avx512"), Some(Some(Isa::Avx512)));
    assert_eq!(Isa::parse("avxvnni"), Some(Some(Isa::AvxVnni)));
    assert_eq!(Isa::parse("amx"), Some(Some(Isa::Amx)));
    assert_eq!(Isa::parse("sse9"), None);
    assert!(Isa::Scalar.available() && Isa::detect().available() && Isa::from_env().available());
    assert!(CpuPrecision::best_for_machine().supported());
}

fn full() -> Option<std::path::PathBuf> {
    let dir = root().join("tests/fixtures/full");
    if dir.join("reference.json").is_file() {
        return Some(dir);
    }
    if std::env::var("CLIP_WGPU_REQUIRE_FULL").is_ok_and(|v| v == "1") {
        panic!("CLIP_WGPU_REQUIRE_FULL=1 but {} is missing: run scripts/make_fixtures.py full", dir.display());
    }
    eprintln!(
        "SKIPPED: no full-size fixture at {} (python3 scripts/make_fixtures.py full tests/fixtures/full --openai)",
        dir.display()
    );
    None
}

#[test]
fn full_size_reduced_precisions_stay_within_cosine_0_999_of_f32() {
    let Some(dir) = full() else { return };
    let r = load(&dir.join("reference.json"));
    let t = Towers::load(&dir);
    let n = r.n_synthetic;
    let px = synthetic_pixels(n, 224);
    let e = t.ck.config.embed_dim;
    let isa = Isa::detect();
    let f32p = t.prepare(CpuPrecision::F32, isa);
    let (img0, txt0) = (t.images(&f32p, &px, n), t.texts(&f32p, &r.ids));
    assert!(max_abs(&img0, &r.image_embeds[..n]) <= 1e-5, "f32 {isa}: image embeddings differ from transformers");
    assert!(max_abs(&txt0, &r.text_embeds) <= 1e-5, "f32 {isa}: text embeddings differ from transformers");
    for p in [CpuPrecision::Bf16, CpuPrecision::Int8] {
        if !p.supported() {
            eprintln!("{p}: not supported on this machine");
            continue;
        }
        // every distinct SIMD kernel this machine has for the precision (AVX2, AVX-512, AMX,
        // …; the portable one is the tiny model's, above: its arithmetic is AVX2's, slower)
        let mut seen = Vec::new();
        for isa in isas().into_iter().filter(|&i| i != Isa::Scalar) {
            let kernels = Prepared::kernels_for(p, isa);
            if seen.contains(&kernels) {
                continue;
            }
            seen.push(kernels.clone());
            let prep = t.prepare(p, isa);
            let (img, txt) = (t.images(&prep, &px, n), t.texts(&prep, &r.ids));
            let (ci, ct) = (min_cosine(&img, &img0, e), min_cosine(&txt, &txt0, e));
            eprintln!(
                "full {p} {isa} ({kernels}): min cosine vs f32: image {ci:.6} ({n} images), text {ct:.6} ({} texts)",
                r.ids.len()
            );
            assert!(ci >= 0.999, "{p} {isa} ({kernels}): image min cosine {ci}");
            assert!(ct >= 0.999, "{p} {isa} ({kernels}): text min cosine {ct}");
        }
    }
    // f32 at every SIMD level matches transformers on the full-size model too (each
    // distinct kernel once)
    let mut seen = vec![Prepared::kernels_for(CpuPrecision::F32, isa)];
    for isa in isas().into_iter().filter(|&i| i != Isa::Scalar) {
        if seen.contains(&Prepared::kernels_for(CpuPrecision::F32, isa)) {
            continue;
        }
        seen.push(Prepared::kernels_for(CpuPrecision::F32, isa));
        let prep = t.prepare(CpuPrecision::F32, isa);
        let (img, txt) = (t.images(&prep, &px, n), t.texts(&prep, &r.ids));
        let (ei, et) = (max_abs(&img, &r.image_embeds[..n]), max_abs(&txt, &r.text_embeds));
        eprintln!("full f32 {isa} ({}): max abs vs transformers: image {ei:.1e}, text {et:.1e}", prep.kernels());
        assert!(ei <= 1e-5 && et <= 1e-5, "f32 {isa}: image {ei}, text {et}");
    }
}

/// Ids of a 7-token text, a 77-token one (no padding), and a short one padded to 77 with
/// the end-of-text id, as HF's tokenizer pads, and one padded with zeros.
fn mixed_batch(vocab_top: u32) -> (Vec<u32>, Vec<Vec<u32>>) {
    let (sot, eot) = (vocab_top - 1, vocab_top);
    let short = vec![sot, 320, 1125, 539, 320, 1929, eot];
    let mut long = vec![sot];
    long.extend((0..75).map(|i| 300 + (i * 7919 % 40000) as u32));
    long.push(eot);
    let mut padded = vec![sot, 320, 2368, eot];
    padded.resize(77, eot);
    let mut zeros = vec![sot, 1125, 539, 9289, 320, eot];
    zeros.resize(77, 0);
    (short.clone(), vec![long.clone(), short, padded, zeros, long])
}

fn check_alone_vs_batched(t: &Towers, label: &str) {
    let (short, batch) = mixed_batch(49407);
    let e = t.ck.config.embed_dim;
    for p in CpuPrecision::ALL.into_iter().filter(|p| p.supported()) {
        // each distinct kernel once (a level whose kernels for `p` are another's adds nothing)
        let mut seen = Vec::new();
        for isa in isas() {
            let kernels = Prepared::kernels_for(p, isa);
            if seen.contains(&kernels) {
                continue;
            }
            seen.push(kernels);
            let prep = t.prepare(p, isa);
            let alone = t.texts(&prep, std::slice::from_ref(&short));
            let together = t.texts(&prep, &batch);
            let d = alone.iter().zip(&together[e..2 * e]).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(d <= 1e-5, "{label} {p} {isa}: short text alone vs batched differs by {d}");
            // the padded ones equal their unpadded selves
            let unpadded = t.texts(&prep, &[batch[2][..4].to_vec(), batch[3][..6].to_vec()]);
            let d2 = unpadded.iter().zip(&together[2 * e..4 * e]).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(d2 <= 1e-5, "{label} {p} {isa}: padded text vs unpadded differs by {d2}");
            eprintln!("{label} {p} {isa}: alone vs batched {d:.1e}, padded vs unpadded {d2:.1e}");
        }
    }
}

#[test]
fn short_text_alone_equals_it_batched_with_long_and_padded_texts() {
    check_alone_vs_batched(&Towers::load(&tiny_dir().join("hf")), "tiny");
    if let Some(dir) = full() {
        check_alone_vs_batched(&Towers::load(&dir), "full");
    }
}

/// Timing, not a check: the image tower on the full-size model at batch 32 (2 threads as
/// the machine gives), warm-up 1, 5 runs, for each precision in `CLIP_WGPU_BENCH_PRECISIONS`
/// (default `f32,bf16,int8`) at the detected level (or `CLIP_WGPU_CPU_ISA`).
/// `cargo test --release --test cpu_precision time_ -- --ignored --nocapture`
#[test]
#[ignore]
fn time_image_tower_batch_32() {
    let Some(dir) = full() else { return };
    let t = Towers::load(&dir);
    let batch: usize = std::env::var("CLIP_WGPU_BENCH_BATCH").ok().and_then(|v| v.parse().ok()).unwrap_or(32);
    let px = synthetic_pixels(batch, 224);
    let list = std::env::var("CLIP_WGPU_BENCH_PRECISIONS").unwrap_or_else(|_| "f32,bf16,int8".into());
    for p in list.split(',').filter_map(CpuPrecision::parse) {
        let prep = Prepared::with_precision(&t.ck.weights.params, &[&t.vision, &t.text], p);
        t.images(&prep, &px, batch);
        let mut times: Vec<f64> = (0..5)
            .map(|_| {
                let s = std::time::Instant::now();
                std::hint::black_box(t.images(&prep, &px, batch));
                s.elapsed().as_secs_f64()
            })
            .collect();
        times.sort_by(f64::total_cmp);
        println!(
            "{{\"engine\": \"clip-wgpu\", \"precision\": \"{p}\", \"isa\": \"{}\", \"batch\": {batch}, \"median_s\": {:.4}, \"img_per_s\": {:.2}, \"times_s\": {times:?}}}",
            prep.isa(),
            times[2],
            batch as f64 / times[2]
        );
    }
}

#[test]
fn auto_picks_the_fastest_precision_within_the_bar_and_caches_it() {
    // tiny: too narrow, f32 without measuring
    let t = Towers::load(&tiny_dir().join("hf"));
    let c = cpu::auto::choose(&t.ck.weights.params, &t.ck.config, &t.vision, &t.text);
    assert_eq!(c.cpu_precision(), CpuPrecision::F32);
    assert!(c.measured.is_empty(), "{c:?}");
    let Some(dir) = full() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cpu-precision.json");
    // the only test of this binary that reads the variable
    std::env::set_var("CLIP_WGPU_CPU_TUNE_CACHE", &cache);
    let t = Towers::load(&dir);
    let c = cpu::auto::choose(&t.ck.weights.params, &t.ck.config, &t.vision, &t.text);
    eprintln!("auto: {} — {}", c.precision, c.reason);
    assert!(!c.from_cache && cache.is_file(), "{c:?}");
    let chosen = c.measured.iter().find(|m| m.precision == c.precision).unwrap();
    assert!(chosen.min_cosine >= cpu::auto::MIN_COSINE, "{c:?}");
    for m in c.measured.iter().filter(|m| m.min_cosine >= cpu::auto::MIN_COSINE) {
        assert!(chosen.image_s + chosen.text_s <= m.image_s + m.text_s, "{c:?}");
    }
    let again = cpu::auto::choose(&t.ck.weights.params, &t.ck.config, &t.vision, &t.text);
    assert!(again.from_cache && again.precision == c.precision, "{again:?}");
    // a choice measured at another thread count serves (and says so) instead of measuring
    // again; one for another model does not
    let all: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&std::fs::read(&cache).unwrap()).unwrap();
    assert_eq!(all.len(), 1);
    let (key, mut entry) = all.into_iter().next().unwrap();
    let threads = format!(" | {} threads | ", rayon::current_num_threads());
    assert!(key.contains(&threads), "{key}");
    entry["precision"] = "bf16".into(); // a value this machine's measurement need not give
    let other = serde_json::json!({ key.replace(&threads, " | 999 threads | "): entry.clone() });
    std::fs::write(&cache, serde_json::to_vec(&other).unwrap()).unwrap();
    let borrowed = cpu::auto::choose(&t.ck.weights.params, &t.ck.config, &t.vision, &t.text);
    assert!(borrowed.from_cache && borrowed.precision == "bf16", "{borrowed:?}");
    assert!(borrowed.reason.ends_with("(measured at 999 threads)"), "{}", borrowed.reason);
    let foreign = serde_json::json!({ key.replace(&threads, " | 999 threads | ").replace(" | clip-wgpu ", " | x | clip-wgpu "): entry });
    std::fs::write(&cache, serde_json::to_vec(&foreign).unwrap()).unwrap();
    let measured = cpu::auto::choose(&t.ck.weights.params, &t.ck.config, &t.vision, &t.text);
    assert!(!measured.from_cache, "{measured:?}");
}

/// Every split of a batch (sub-batches of 3, in parallel and one by one) gives the embeddings
/// of the whole batch, bit for bit, at every precision and level: each op is per row or per
/// sequence, and no kernel's arithmetic depends on how many rows it is given.
#[test]
fn sub_batches_give_the_whole_batch_bit_for_bit() {
    use cpu::split::{Reason, Split};
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    let whole = Split { size: 0, parallel: true, reason: Reason::Env };
    let cuts = [
        Split { size: 3, parallel: true, reason: Reason::Env },
        Split { size: 3, parallel: false, reason: Reason::Env },
    ];
    let mut dirs = vec![(tiny_dir().join("hf"), tiny_dir().join("reference.json"))];
    dirs.extend(full().map(|d| (d.clone(), d.join("reference.json"))));
    let levels = isas();
    for (dir, reference) in dirs {
        let r = load(&reference);
        let t = Towers::load(&dir);
        let (cfg, params) = (&t.ck.config, &t.ck.weights.params);
        let n = r.n_synthetic.max(7);
        let px = synthetic_pixels(n, cfg.vision.image_size);
        let ids = r.ids;
        assert!(ids.len() > 3, "{}: too few texts to split", dir.display());
        for p in CpuPrecision::ALL.into_iter().filter(|p| p.supported()) {
            // (the portable kernels on the full-size model would take minutes: tiny only)
            for &isa in levels.iter().filter(|&&i| i != Isa::Scalar || dir == tiny_dir().join("hf")) {
                let prep = t.prepare(p, isa);
                let images = Input::Pixels { data: &px, n };
                let texts = Input::Tokens(&ids);
                let img = bits(&cpu::run_split(&t.vision, cfg, params, &prep, &images, whole));
                let txt = bits(&cpu::run_split(&t.text, cfg, params, &prep, &texts, whole));
                assert_eq!(img.len(), n * cfg.embed_dim);
                for cut in cuts {
                    let what = format!("{} {p} {isa} {}", dir.display(), cut.describe());
                    assert!(
                        img == bits(&cpu::run_split(&t.vision, cfg, params, &prep, &images, cut)),
                        "{what}: images"
                    );
                    assert!(txt == bits(&cpu::run_split(&t.text, cfg, params, &prep, &texts, cut)), "{what}: texts");
                }
                eprintln!("{} {p} {isa}: {n} images, {} texts: every split the same bits", dir.display(), ids.len());
            }
        }
    }
}

/// Computing only the pooled rows after the last attention (`Program::pooled_tail`) gives
/// the embeddings of computing every row to the end (as transformers does, op by op through
/// `cpu::run_op`), bit for bit, at every precision and level whose tail products are the
/// hand-written kernels; within 1e-6 where the `gemm` crate runs them (f32 at `avx512`, `amx`),
/// which the engine then runs on every row anyway.
#[test]
fn pooled_tail_gives_the_embeddings_of_every_row() {
    use std::collections::HashMap;
    let mut dirs = vec![tiny_dir().join("hf")];
    dirs.extend(full());
    for dir in dirs {
        let tiny = dir == tiny_dir().join("hf");
        let r = load(&if tiny { tiny_dir().join("reference.json") } else { dir.join("reference.json") });
        let t = Towers::load(&dir);
        let (cfg, params) = (&t.ck.config, &t.ck.weights.params);
        for program in [&t.vision, &t.text] {
            let (cut, _) = program.pooled_tail().expect("CLIP's towers end in row-wise ops");
            assert!(matches!(program.ops[cut], model::Op::Attention { .. }), "{:?}: cut after op {cut}", program.tower);
        }
        let n = 5;
        let px = synthetic_pixels(n, cfg.vision.image_size);
        let ids = r.ids.clone();
        for p in CpuPrecision::ALL.into_iter().filter(|p| p.supported()) {
            for &isa in isas().iter().filter(|&&i| i != Isa::Scalar || tiny) {
                let prep = t.prepare(p, isa);
                for (program, input) in [(&t.vision, Input::Pixels { data: &px, n }), (&t.text, Input::Tokens(&ids))] {
                    let got = cpu::run_prepared(program, cfg, params, &prep, &input);
                    // every row through every op
                    let seqs = model::Seqs::of(&input, cfg);
                    let mut acts: HashMap<model::Act, Vec<f32>> = program
                        .widths
                        .iter()
                        .map(|&(a, w, rows)| {
                            let r = if rows == model::Rows::Tokens { seqs.tokens() } else { seqs.count() };
                            (a, vec![0f32; r * w])
                        })
                        .collect();
                    for op in &program.ops {
                        cpu::run_op(op, program, cfg, params, &prep, &input, &seqs, &mut acts);
                    }
                    let want = &acts[&program.output];
                    let what = format!("{} {p} {isa} {:?}", dir.display(), program.tower);
                    assert_eq!(got.len(), want.len(), "{what}");
                    let err = got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
                    if prep.kernels().contains("gemm crate") {
                        assert!(err <= 1e-6, "{what}: max difference {err}");
                    } else {
                        assert!(
                            got.iter().zip(want).all(|(a, b)| a.to_bits() == b.to_bits()),
                            "{what}: max difference {err}"
                        );
                    }
                    eprintln!("{what}: pooled tail = every row (max difference {err:e})");
                }
            }
        }
    }
}
