//! Hardening: the bad-input corpus of tests/fixtures/bad (scripts/make_bad_corpus.py) through
//! the library (`Clip` on the tiny checkpoint, CPU) and the CLI. Every bad input is an error
//! that names the input and the problem; nothing panics; decompression bombs are refused from
//! their headers before any pixel buffer is allocated (measured with a counting allocator);
//! valid but unusual images are scored and match Pillow's crop; the fuzzers' corpora
//! (fuzz/corpus/*) are replayed through the same entry points (CI needs no nightly for that).

mod common;
use common::reference::*;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use clip_wgpu::model::{self, LoadOptions};
use clip_wgpu::preprocess::{self, Limits, PreprocessError, Variant};
use clip_wgpu::text::{ClipTokenizer, CONTEXT_LENGTH, EOT, SOT};
use clip_wgpu::{Clip, ClipOptions, Device};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

// ---- a counting allocator: bytes allocated by the current thread, and their peak ------------

struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn track(delta: isize) {
    // `try_with`: nothing to count while the thread's locals are being torn down.
    let _ = LIVE.try_with(|l| {
        let v = l.get() + delta;
        l.set(v);
        let _ = PEAK.try_with(|p| p.set(p.get().max(v)));
    });
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged; the
// bookkeeping touches only const-initialised thread-locals of `Cell<isize>` (no allocation,
// no destructor), so it cannot recurse into the allocator.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        // SAFETY: forwarded as is; the caller upholds `alloc`'s contract.
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            track(l.size() as isize);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let p = unsafe { System.alloc_zeroed(l) };
        if !p.is_null() {
            track(l.size() as isize);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: `p` was allocated by `System` with layout `l` (every allocation goes through here).
        unsafe { System.dealloc(p, l) };
        track(-(l.size() as isize));
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        // SAFETY: as for `dealloc`; the caller upholds `realloc`'s contract.
        let q = unsafe { System.realloc(p, l, new) };
        if !q.is_null() {
            track(new as isize - l.size() as isize);
        }
        q
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Runs `f` and returns its result with the most bytes it had allocated at once (this thread).
fn peak_bytes<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let start = LIVE.with(|l| l.get());
    PEAK.with(|p| p.set(start));
    let r = f();
    let peak = PEAK.with(|p| p.get());
    (r, (peak - start).max(0) as usize)
}

// ---- the corpus ------------------------------------------------------------------------------

fn bad_dir() -> PathBuf {
    root().join("tests/fixtures/bad")
}

fn manifest() -> Vec<Value> {
    let text = std::fs::read_to_string(bad_dir().join("manifest.json")).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    v["inputs"].as_array().unwrap().clone()
}

fn entries(kind: &str) -> Vec<(PathBuf, Option<String>, Value)> {
    let v: Vec<_> = manifest()
        .into_iter()
        .filter(|e| e["kind"] == kind)
        .map(|e| (bad_dir().join(e["file"].as_str().unwrap()), e["expect"].as_str().map(String::from), e))
        .collect();
    assert!(!v.is_empty(), "no {kind} entries in the manifest");
    v
}

fn cpu_clip(opts: ClipOptions) -> Clip {
    Clip::load(tiny_dir().join("hf"), &ClipOptions { device: Device::Cpu, notices: false, ..opts }).unwrap()
}

fn norm(v: &[f32]) -> f32 {
    v.iter().map(|x| x * x).sum::<f32>().sqrt()
}

// ---- images ----------------------------------------------------------------------------------

#[test]
fn bad_images_are_errors_naming_the_file_and_the_problem() {
    let clip = cpu_clip(ClipOptions::default());
    let bad = entries("bad_image");
    let valid = entries("valid_image");
    // one call with every bad and every valid image interleaved: the good ones still get
    // embeddings, each bad one its own error
    let mut paths = Vec::new();
    for (i, (p, _, _)) in bad.iter().enumerate() {
        paths.push(p.clone());
        if let Some((v, _, _)) = valid.get(i % valid.len()) {
            paths.push(v.clone());
        }
    }
    let res = clip.encode_image_files(&paths);
    let mut n_bad = 0;
    for (p, r) in paths.iter().zip(&res) {
        let name = p.display().to_string();
        match bad.iter().find(|(b, _, _)| b == p) {
            Some((_, expect, e)) => {
                if e.get("note").is_some() && expect.is_none() {
                    // garbage scan data: decodes to garbage pixels as in Pillow; must not panic
                    continue;
                }
                let msg = match r {
                    Err(err) => err.to_string(),
                    Ok(_) => panic!("{name}: scored, but it is not a usable image"),
                };
                assert!(msg.contains(&name), "the error names the input: {msg}");
                if let Some(x) = expect {
                    assert!(msg.contains(x.as_str()), "{name}: expected {x:?} in {msg:?}");
                }
                n_bad += 1;
            }
            None => {
                let e = r.as_ref().unwrap_or_else(|err| panic!("{name}: {err}"));
                assert_eq!(e.len(), clip.embed_dim());
                assert!((norm(e) - 1.0).abs() < 1e-4, "{name}: embedding not normalised");
            }
        }
    }
    assert!(n_bad >= 40, "only {n_bad} bad images checked");
}

#[test]
fn every_bad_image_fails_with_small_memory() {
    // Each bad input, both variants, straight through `preprocess_bytes` on this thread: an
    // error, with at most a few MiB allocated whatever the header claims.
    let lim = Limits::default();
    for (p, expect, e) in entries("bad_image") {
        let bytes = std::fs::read(&p).unwrap();
        for v in [Variant::Hf, Variant::OpenAi] {
            let (r, peak) = peak_bytes(|| preprocess::preprocess_bytes(&bytes, v, &lim));
            let name = p.file_name().unwrap().to_string_lossy();
            assert!(peak < 8 << 20, "{name}: {peak} bytes allocated");
            if e.get("note").is_some() && expect.is_none() {
                continue;
            }
            let err = r.err().unwrap_or_else(|| panic!("{name}: decoded"));
            if let Some(x) = &expect {
                assert!(err.to_string().contains(x.as_str()), "{name}: {err}");
            }
            if let Some(b) = e.get("bomb") {
                let (w, h) = (b[0].as_u64().unwrap(), b[1].as_u64().unwrap());
                match err {
                    PreprocessError::TooManyPixels { width, height, limit } => {
                        assert_eq!((width as u64, height as u64, limit), (w, h, lim.max_pixels), "{name}")
                    }
                    other => panic!("{name}: expected TooManyPixels, got {other}"),
                }
                // refused before anything proportional to the claimed size was allocated
                assert!(peak < 1 << 20, "{name}: {peak} bytes allocated before refusing a {w}x{h} bomb");
            }
        }
    }
}

#[test]
fn zlib_bomb_within_limits_is_bounded_and_refused_by_a_lower_limit() {
    let (p, expect, _) = entries("bomb_within_default").remove(0);
    let bytes = std::fs::read(&p).unwrap();
    assert!(bytes.len() < 64 << 10, "a 144 Mpx image in {} bytes", bytes.len());
    let lim = Limits { max_pixels: 100_000_000, ..Limits::default() };
    let (r, peak) = peak_bytes(|| preprocess::preprocess_bytes(&bytes, Variant::Hf, &lim));
    let err = r.unwrap_err().to_string();
    assert!(err.contains(expect.as_deref().unwrap()) && err.contains("over the limit"), "{err}");
    assert!(peak < 1 << 20, "{peak} bytes allocated before refusing");
}

/// The memory a decode may take is bounded by `max_pixels`: for every format, the peak of a
/// valid image of `n` pixels stays under 12 bytes per pixel plus 8 MiB (the largest layout,
/// RGBA16 = 8 bytes/px, is turned into 4 then 3 bytes/px while the previous buffer is dropped).
#[test]
fn decode_memory_is_proportional_to_the_pixels() {
    use image::{DynamicImage, ImageFormat};
    let (w, h) = (1500u32, 1000u32);
    let n = (w * h) as usize;
    let rgb =
        image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x % 251) as u8, (y % 241) as u8, ((x ^ y) % 256) as u8]));
    let rgba16 = DynamicImage::ImageRgb8(rgb.clone()).to_rgba16();
    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
    for (name, img, fmt) in [
        ("png rgb8", DynamicImage::ImageRgb8(rgb.clone()), ImageFormat::Png),
        ("png rgba16", DynamicImage::ImageRgba16(rgba16), ImageFormat::Png),
        ("bmp", DynamicImage::ImageRgb8(rgb.clone()), ImageFormat::Bmp),
        ("tiff", DynamicImage::ImageRgb8(rgb.clone()), ImageFormat::Tiff),
        ("gif", DynamicImage::ImageRgb8(rgb.clone()), ImageFormat::Gif),
        ("webp", DynamicImage::ImageRgb8(rgb.clone()), ImageFormat::WebP),
        ("jpeg", DynamicImage::ImageRgb8(rgb.clone()), ImageFormat::Jpeg),
    ] {
        let mut b = std::io::Cursor::new(Vec::new());
        img.write_to(&mut b, fmt).unwrap();
        cases.push((name, b.into_inner()));
    }
    for (name, bytes) in &cases {
        for v in [Variant::Hf, Variant::OpenAi] {
            let (r, peak) = peak_bytes(|| preprocess::preprocess_bytes(bytes, v, &Limits::default()));
            r.unwrap_or_else(|e| panic!("{name}: {e}"));
            eprintln!("{name} {v:?}: peak {:.2} bytes/px", peak as f64 / n as f64);
            assert!(peak < 12 * n + (8 << 20), "{name} {v:?}: {peak} bytes for {n} px");
            // and a limit below the size refuses it from the header, with almost nothing allocated
            let lim = Limits { max_pixels: n as u64 - 1, ..Limits::default() };
            let (r, peak) = peak_bytes(|| preprocess::preprocess_bytes(bytes, v, &lim));
            assert!(matches!(r, Err(PreprocessError::TooManyPixels { .. })), "{name}");
            assert!(peak < 1 << 20, "{name}: {peak} bytes allocated before refusing");
        }
    }
}

#[test]
fn file_size_limit_is_checked_before_reading() {
    let limits = Limits { max_file_bytes: 100, ..Limits::default() };
    let clip = cpu_clip(ClipOptions { limits, ..Default::default() });
    let p = bad_dir().join("images/rgba_gradient_alpha.png");
    let size = std::fs::metadata(&p).unwrap().len();
    let err = clip.encode_image_files(&[&p]).remove(0).unwrap_err().to_string();
    assert!(err.contains(&p.display().to_string()) && err.contains(&format!("{size} bytes")), "{err}");
    assert!(err.contains("over the limit of 100"), "{err}");
    let bytes = std::fs::read(&p).unwrap();
    let err = clip.encode_image_bytes(&[&bytes]).remove(0).unwrap_err().to_string();
    assert!(err.contains("image #0") && err.contains("over the limit of 100 bytes"), "{err}");
}

#[test]
fn unusual_valid_images_match_pillow() {
    for (p, _, e) in entries("valid_image") {
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        let bytes = std::fs::read(&p).unwrap();
        let d =
            preprocess::decode(&bytes, Variant::Hf, &Limits::default()).unwrap_or_else(|err| panic!("{name}: {err}"));
        let ours = preprocess::resize_crop(&d, 224, Variant::Hf);
        let want = image::open(bad_dir().join(e["reference"].as_str().unwrap())).unwrap().to_rgb8();
        let worst =
            ours.as_raw().iter().zip(want.as_raw()).map(|(a, b)| (*a as i32 - *b as i32).unsigned_abs()).max().unwrap();
        // JPEG without libjpeg-turbo decodes a few levels off
        let tol = if cfg!(feature = "libjpeg") || !name.ends_with(".jpg") { 0 } else { 6 };
        assert!(worst <= tol, "{name}: max difference {worst} from Pillow's crop ({})", e["note"]);
        // the OpenAI variant scores it too
        let t = preprocess::preprocess_bytes(&bytes, Variant::OpenAi, &Limits::default()).unwrap();
        assert!(t.len() == 3 * 224 * 224 && t.iter().all(|v| v.is_finite()), "{name}");
    }
}

// ---- texts -----------------------------------------------------------------------------------

#[test]
fn empty_and_huge_texts_are_encoded() {
    let clip = cpu_clip(ClipOptions::default());
    let tok = clip.tokenizer();
    let words = "a photo of a dog on a beach ".repeat(400);
    let long = &words[..10_000];
    let one_word = "x".repeat(10_000);
    let cjk = "猫".repeat(10_000);
    let emoji = "👍🏽".repeat(2_500);
    let controls: String = (0..10_000u32).map(|i| char::from_u32(i % 32).unwrap()).collect();
    let texts = ["", " \t\n ", long, &one_word, &cjk, &emoji, &controls, "\u{0}", "a"];
    for t in &texts {
        let ids = tok.encode(t);
        assert!(ids.len() >= 2 && ids.len() <= CONTEXT_LENGTH, "{} ids", ids.len());
        assert_eq!((ids[0], *ids.last().unwrap()), (SOT, EOT));
    }
    assert_eq!(tok.encode(""), vec![SOT, EOT]);
    assert_eq!(tok.encode(" \t\n "), vec![SOT, EOT]);
    assert_eq!(tok.encode(&controls), vec![SOT, EOT], "control characters are dropped");
    let ids = tok.encode(long);
    assert_eq!(ids.len(), CONTEXT_LENGTH, "a 10,000-character text is truncated to 77 ids");
    assert_eq!(&ids[1..8], &tok.encode("a photo of a dog on a")[1..8]);
    let started = std::time::Instant::now();
    let emb = clip.encode_texts(&texts).unwrap();
    assert!(started.elapsed().as_secs() < 60, "10,000-character words took {:?}", started.elapsed());
    assert_eq!(emb.len(), texts.len() * clip.embed_dim());
    for row in emb.chunks(clip.embed_dim()) {
        assert!((norm(row) - 1.0).abs() < 1e-4);
    }
    // the long text's embedding is that of its first 76 tokens + EOT
    let direct = clip.encode_ids(&[ids]).unwrap();
    let d = clip.embed_dim();
    assert!(max_abs(&emb[2 * d..3 * d], &[direct]) < 1e-6);
}

// ---- checkpoints, configs, tokenizers ---------------------------------------------------------

fn load_err(path: &Path) -> String {
    match Clip::load(path, &ClipOptions { device: Device::Cpu, notices: false, ..Default::default() }) {
        Ok(_) => panic!("{} loaded but should not", path.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn malformed_safetensors_files() {
    for (p, expect, _) in entries("bad_safetensors") {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("model.safetensors");
        std::fs::copy(&p, &f).unwrap();
        for target in [d.path().to_path_buf(), f.clone()] {
            let e = load_err(&target);
            assert!(e.contains(&f.display().to_string()), "names the file: {e}");
            assert!(e.contains(expect.as_deref().unwrap()), "{}: {e}", p.display());
        }
        // from bytes: the same error, labelled with the given name
        let bytes = std::fs::read(&p).unwrap();
        let e = model::load_from_bytes("mem.safetensors", &bytes, None, &LoadOptions::default()).unwrap_err();
        assert!(e.to_string().starts_with("mem.safetensors: not a valid safetensors file"), "{e}");
    }
}

#[test]
fn micro_checkpoint_loads_from_bytes_and_from_disk() {
    let st = std::fs::read(bad_dir().join("model/micro_hf.safetensors")).unwrap();
    let cfg = std::fs::read(bad_dir().join("model/micro_config.json")).unwrap();
    let ck = model::load_from_bytes("micro", &st, Some(&cfg), &LoadOptions::default()).unwrap();
    assert_eq!((ck.config.vision.tower.width, ck.config.vision.tokens(), ck.config.text.vocab_size), (4, 5, 12));
    // without config.json the shapes give the same architecture except the heads (64-wide rule)
    let inferred = model::load_from_bytes("micro", &st, None, &LoadOptions::default()).unwrap();
    assert_eq!(inferred.config.vision.image_size, 4);
    assert_eq!(inferred.weights.params.numel(), ck.weights.params.numel());
    // a config that is not UTF-8 / not JSON / not an object / absurd
    for (cfg, want) in [
        (&b"\xff\xfe{}"[..], "micro:config.json: not UTF-8 text"),
        (b"{\"vision_config\": {", "invalid config.json"),
        (b"[1, 2, 3]", "invalid config.json"),
        (b"{\"text_config\": {\"num_hidden_layers\": 1000000000}}", "layers 1000000000 is out of range"),
        (
            b"{\"vision_config\": {\"hidden_size\": 1099511627776, \"num_attention_heads\": 1}}",
            "width 1099511627776 is out of range",
        ),
        (b"{\"vision_config\": {\"image_size\": 0}}", "image size 0"),
        (b"{\"vision_config\": {\"patch_size\": 0}}", "patch size 0"),
        (b"{\"text_config\": {\"vocab_size\": 0}}", "vocabulary size must be > 0"),
        (b"{\"vision_config\": {\"layer_norm_eps\": -1}}", "layer_norm_eps -1 out of range"),
    ] {
        let e = model::load_from_bytes("micro", &st, Some(cfg), &LoadOptions::default()).unwrap_err().to_string();
        assert!(e.contains(want), "{}: {e}", String::from_utf8_lossy(cfg));
        assert!(e.starts_with("micro"), "{e}");
    }
}

/// Rewrites a safetensors file tensor by tensor (like tests/checkpoint_errors.rs).
fn rewrite(
    src: &Path,
    dst: &Path,
    edit: impl Fn(&str, Dtype, Vec<usize>, Vec<u8>) -> Option<(Dtype, Vec<usize>, Vec<u8>)>,
) {
    let bytes = std::fs::read(src).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut owned = Vec::new();
    for (name, t) in st.tensors() {
        if let Some(x) = edit(&name, t.dtype(), t.shape().to_vec(), t.data().to_vec()) {
            owned.push((name, x));
        }
    }
    let views: Vec<(String, TensorView)> =
        owned.iter().map(|(n, (d, s, b))| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap())).collect();
    safetensors::serialize_to_file(views, None, dst).unwrap();
}

#[test]
fn non_finite_weights_in_half_precision_files_name_the_tensor() {
    // bf16 +Inf (HF layout, with config.json)
    let d = tempfile::tempdir().unwrap();
    std::fs::copy(tiny_dir().join("hf-bf16/config.json"), d.path().join("config.json")).unwrap();
    let t = "text_model.encoder.layers.1.self_attn.v_proj.weight";
    rewrite(&tiny_dir().join("hf-bf16/model.safetensors"), &d.path().join("model.safetensors"), |n, dt, s, mut b| {
        if n == t {
            b[6..8].copy_from_slice(&half::bf16::INFINITY.to_le_bytes());
        }
        Some((dt, s, b))
    });
    let e = load_err(d.path());
    assert!(e.contains(t) && e.contains("non-finite value (inf) at flat index 3"), "{e}");

    // f16 -Inf and NaN (OpenAI layout, single file)
    let f = d.path().join("open_clip_model.safetensors");
    for (bits, shown) in [(half::f16::NEG_INFINITY, "-inf"), (half::f16::NAN, "NaN")] {
        let t = "visual.transformer.resblocks.0.attn.in_proj_weight";
        rewrite(&tiny_dir().join("openai-f16/open_clip_model.safetensors"), &f, |n, dt, s, mut b| {
            if n == t {
                b[0..2].copy_from_slice(&bits.to_le_bytes());
            }
            Some((dt, s, b))
        });
        let e = load_err(&f);
        assert!(e.contains(t) && e.contains(&format!("({shown}) at flat index 0")), "{e}");
    }
}

/// A change to one tensor: dtype, shape and bytes in, the same out.
type Edit = dyn Fn(Dtype, Vec<usize>, Vec<u8>) -> (Dtype, Vec<usize>, Vec<u8>);

#[test]
fn wrong_dtypes_and_shapes_without_config() {
    // no config.json: hyper-parameters are inferred from shapes, so odd shapes hit that code
    let d = tempfile::tempdir().unwrap();
    let src = tiny_dir().join("hf/model.safetensors");
    let dst = d.path().join("model.safetensors");
    let cases: Vec<(&str, Box<Edit>, &str)> = vec![
        // a scalar where a matrix is expected (the MLP width is read from it)
        (
            "vision_model.encoder.layers.0.mlp.fc1.weight",
            Box::new(|dt, _, b| (dt, vec![], b[..4].to_vec())),
            "mlp.fc1.weight",
        ),
        (
            "visual_projection.weight",
            Box::new(|dt, _, b| (dt, vec![], b[..4].to_vec())),
            "visual_projection.weight` has shape [], expected 2 dimensions",
        ),
        (
            "text_model.embeddings.token_embedding.weight",
            Box::new(|dt, _, b| (dt, vec![], b[..4].to_vec())),
            "token_embedding",
        ),
        (
            "vision_model.embeddings.position_embedding.weight",
            Box::new(|dt, _, b| (dt, vec![7, 32], b[..7 * 32 * 4].to_vec())),
            "grid²+1",
        ),
        (
            "vision_model.embeddings.patch_embedding.weight",
            Box::new(|dt, _, b| (dt, vec![32, 3, 32 * 32], b)),
            "patch embedding has shape",
        ),
        ("logit_scale", Box::new(|_, _, b| (Dtype::F64, vec![], [b.clone(), b].concat())), "F64"),
        ("text_model.final_layer_norm.weight", Box::new(|_, s, b| (Dtype::U8, s.clone(), b[..s[0]].to_vec())), "U8"),
    ];
    for (tensor, edit, want) in cases {
        rewrite(&src, &dst, |n, dt, s, b| Some(if n == tensor { edit(dt, s, b) } else { (dt, s, b) }));
        let e = load_err(d.path());
        assert!(e.contains(&dst.display().to_string()) && e.contains(want), "{tensor}: {e}");
    }
    // an absurd layer index in a name: no overflow, the layer count is refused
    rewrite(&src, &dst, |_, dt, s, b| Some((dt, s, b)));
    let bytes = std::fs::read(&dst).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let data: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, t)| {
            let n = n.replace("text_model.encoder.layers.1.", "text_model.encoder.layers.18446744073709551615.");
            (n, t.dtype(), t.shape().to_vec(), t.data().to_vec())
        })
        .collect();
    let views: Vec<(String, TensorView)> =
        data.iter().map(|(n, dt, s, b)| (n.clone(), TensorView::new(*dt, s.clone(), b).unwrap())).collect();
    safetensors::serialize_to_file(views, None, &dst).unwrap();
    let e = load_err(d.path());
    assert!(e.contains("text tower: layers 18446744073709551615 is out of range"), "{e}");
}

#[test]
fn broken_open_clip_config_is_named() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("open_clip_model.safetensors");
    std::fs::copy(tiny_dir().join("openai-f16/open_clip_model.safetensors"), &f).unwrap();
    let c = d.path().join("open_clip_config.json");
    for (text, want) in [(&b"{\"model_cfg\": 3}"[..], "invalid open_clip_config.json"), (b"\xff", "not UTF-8")] {
        std::fs::write(&c, text).unwrap();
        let e = load_err(&f);
        assert!(e.contains(&c.display().to_string()) && e.contains(want), "{e}");
    }
}

#[test]
fn wrong_tokenizer_files_are_named() {
    for (p, expect, _) in entries("bad_tokenizer") {
        let opts =
            ClipOptions { device: Device::Cpu, tokenizer: Some(p.clone()), notices: false, ..Default::default() };
        let e = Clip::load(tiny_dir().join("hf"), &opts).err().expect("a wrong tokenizer is refused").to_string();
        assert!(e.contains(&p.display().to_string()), "{e}");
        assert!(e.contains(&expect.clone().unwrap().replace("\\\"", "\"")), "{}: {e}", p.display());
    }
    let missing = bad_dir().join("tokenizers/nope.json");
    let opts = ClipOptions { device: Device::Cpu, tokenizer: Some(missing.clone()), ..Default::default() };
    let e = Clip::load(tiny_dir().join("hf"), &opts).err().unwrap().to_string();
    assert!(e.contains("nope.json") && e.contains("cannot read"), "{e}");
}

// ---- the CLI: a mixed run --------------------------------------------------------------------

fn cli(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_clip-wgpu"));
    c.args(args).env_remove("CLIP_WGPU_MODEL").env_remove("CLIP_WGPU_DEVICE").env("HF_HOME", "/nonexistent-hf-home");
    for (k, v) in env {
        c.env(k, v);
    }
    c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).output().unwrap()
}

fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    })
}

#[test]
fn cli_mixed_directory_scores_the_good_and_lists_the_bad() {
    let d = tempfile::tempdir().unwrap();
    let exts = ["jpg", "jpeg", "png", "gif", "bmp", "tif", "tiff", "webp"];
    let mut bad = Vec::new();
    let mut good = Vec::new();
    for (kind, list) in [("bad_image", &mut bad), ("valid_image", &mut good)] {
        for (p, expect, e) in entries(kind) {
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            if !exts.iter().any(|x| name.ends_with(&format!(".{x}")))
                || (e.get("note").is_some() && kind == "bad_image")
            {
                continue; // not picked up from a directory (no image extension), or garbage pixels
            }
            std::fs::copy(&p, d.path().join(&name)).unwrap();
            list.push((d.path().join(&name).display().to_string(), expect));
        }
    }
    let long = "a photo of a dog ".repeat(600);
    let long = &long[..10_000];
    let model = tiny_dir().join("hf").display().to_string();
    let dir = d.path().display().to_string();
    let out = cli(
        &[
            "score",
            "--model",
            &model,
            "--device",
            "cpu",
            "--image",
            &dir,
            "--text",
            "a photo of a cat",
            "--text",
            "",
            "--text",
            long,
            "--format",
            "json",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    let v = json_of(&out);
    let scores = v["scores"].as_array().unwrap();
    let mut scored: Vec<&str> = scores.iter().map(|s| s["image"].as_str().unwrap()).collect();
    scored.dedup();
    let mut want: Vec<&str> = good.iter().map(|(p, _)| p.as_str()).collect();
    want.sort();
    assert_eq!(scored, want, "every valid image is scored, in sorted order");
    assert_eq!(scores.len(), 3 * want.len(), "each against the three texts (empty and 10,000 chars included)");
    for s in scores {
        let (cos, score) = (s["cosine"].as_f64().unwrap(), s["score"].as_f64().unwrap());
        assert!(cos.is_finite() && (-1.0..=1.0).contains(&cos) && (score - 100.0 * cos.max(0.0)).abs() < 1e-3, "{s}");
    }
    let errors = v["errors"].as_array().unwrap();
    assert_eq!(errors.len(), bad.len(), "{v}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    for (p, expect) in &bad {
        let e = errors.iter().find(|e| e["input"] == p.as_str()).unwrap_or_else(|| panic!("{p} not in errors"));
        let msg = e["error"].as_str().unwrap();
        if let Some(x) = expect {
            assert!(msg.contains(x.as_str()), "{p}: {msg}");
        }
        assert!(stderr.contains(p.as_str()), "{p} reported on stderr");
    }
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn cli_texts_from_invalid_utf8_is_a_named_error() {
    let f = bad_dir().join("texts/invalid_utf8.txt");
    let img = root().join("tests/fixtures/images/CLIP.png").display().to_string();
    let model = tiny_dir().join("hf").display().to_string();
    let out = cli(
        &[
            "score",
            "--model",
            &model,
            "--device",
            "cpu",
            "--image",
            &img,
            "--texts-from",
            f.to_str().unwrap(),
            "--format",
            "json",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(f.to_str().unwrap()) && stderr.contains("UTF-8"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    // CRLF and blank lines
    let f = bad_dir().join("texts/crlf_and_blank.txt");
    let out = cli(
        &[
            "score",
            "--model",
            &model,
            "--device",
            "cpu",
            "--image",
            &img,
            "--texts-from",
            f.to_str().unwrap(),
            "--format",
            "json",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let texts: Vec<String> =
        json_of(&out)["scores"].as_array().unwrap().iter().map(|s| s["text"].as_str().unwrap().to_string()).collect();
    assert_eq!(texts, ["a photo of a dog", "a photo of a cat"]);
}

// ---- fuzz corpus replay ----------------------------------------------------------------------

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = root().join("fuzz/corpus").join(target);
    let mut v: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect();
    v.sort();
    assert!(v.len() >= 10, "{}: only {} inputs", dir.display(), v.len());
    v
}

#[test]
fn fuzz_corpus_replay_image() {
    let limits = Limits { max_pixels: 4_000_000, max_file_bytes: 1 << 20 };
    let (mut ok, mut err) = (0, 0);
    for (p, data) in corpus("image") {
        let variant = if data.last().is_some_and(|b| b & 1 == 1) { Variant::OpenAi } else { Variant::Hf };
        let (r, peak) = peak_bytes(|| preprocess::preprocess_bytes(&data, variant, &limits));
        // the decoders' working memory is capped by `image::Limits::max_alloc` (8 bytes per
        // allowed pixel + 64 MiB), and the conversions take at most 12 bytes per pixel on top;
        // a TIFF's tag arrays are checked against the file before the tiff crate sizes them
        // from their declared counts (a 2 KB TIFF in this corpus reached ~160 MB without that)
        let bound = 20 * 4_000_000 + (72 << 20);
        assert!(peak < bound, "{}: {peak} bytes", p.display());
        match r {
            Ok(px) => {
                assert!(px.len() == 3 * 224 * 224 && px.iter().all(|v| v.is_finite()), "{}", p.display());
                ok += 1;
            }
            Err(e) => {
                assert!(!e.to_string().is_empty());
                err += 1;
            }
        }
    }
    eprintln!("image corpus: {ok} decoded, {err} refused");
    assert!(ok > 0 && err > 0);
}

#[test]
fn fuzz_corpus_replay_checkpoint() {
    let (mut ok, mut err) = (0, 0);
    for (p, data) in corpus("checkpoint") {
        let Some((len, rest)) = data.split_first_chunk::<2>() else { continue };
        let n = (u16::from_le_bytes(*len) as usize).min(rest.len());
        let (cfg, st) = rest.split_at(n);
        match model::load_from_bytes("fuzz", st, (n > 0).then_some(cfg), &LoadOptions::default()) {
            Ok(ck) => {
                assert!(ck.config.validate().is_ok(), "{}", p.display());
                ok += 1;
            }
            Err(e) => {
                assert!(e.to_string().starts_with("fuzz"), "{}: {e}", p.display());
                err += 1;
            }
        }
    }
    eprintln!("checkpoint corpus: {ok} loaded, {err} refused");
    assert!(err > 0);
}

#[test]
fn fuzz_corpus_replay_tokenizer() {
    let tok = ClipTokenizer::bundled();
    for (_, data) in corpus("tokenizer") {
        if data.first() == Some(&b'{') {
            let _ = ClipTokenizer::from_bytes(&data);
        }
        let ids = tok.encode(&String::from_utf8_lossy(&data));
        assert!(ids.len() >= 2 && ids.len() <= CONTEXT_LENGTH);
        assert_eq!((ids[0], *ids.last().unwrap()), (SOT, EOT));
    }
}
