//! Preprocessing against Pillow / transformers / OpenAI CLIP references.
//!
//! Fixtures come from `scripts/make_test_images.py` (committed under `tests/fixtures/images`):
//! for each input, the 224×224 u8 image each reference normalised (`<file>.hf.png`,
//! `<file>.openai.png` when it differs from hf) and a few f32 tensors.

#[path = "common/npy.rs"]
mod npy;

use std::path::{Path, PathBuf};

use clip_wgpu::preprocess::{self, Limits, Variant};
use npy::Npy;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/images")
}

fn manifest() -> serde_json::Value {
    let s = std::fs::read_to_string(fixtures().join("manifest.json")).expect("manifest.json");
    serde_json::from_str(&s).expect("valid manifest")
}

fn load_rgb(path: &Path) -> image::RgbImage {
    image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).to_rgb8()
}

/// (max abs diff, fraction of differing values) between two RGB images.
fn diff(a: &image::RgbImage, b: &image::RgbImage) -> (u8, f64) {
    assert_eq!(a.dimensions(), b.dimensions());
    let mut max = 0u8;
    let mut n = 0usize;
    for (x, y) in a.as_raw().iter().zip(b.as_raw()) {
        let d = x.abs_diff(*y);
        max = max.max(d);
        n += (d != 0) as usize;
    }
    (max, n as f64 / a.as_raw().len() as f64)
}

fn reference_crop(file: &str, variant: Variant, entry: &serde_json::Value) -> image::RgbImage {
    let name = match variant {
        Variant::OpenAi if !entry["openai_same_as_hf"].as_bool().unwrap() => {
            format!("{file}.openai.png")
        }
        _ => format!("{file}.hf.png"),
    };
    load_rgb(&fixtures().join(name))
}

fn our_crop(bytes: &[u8], variant: Variant) -> image::RgbImage {
    let d = preprocess::decode(bytes, variant, &Limits::default()).expect("decodes");
    preprocess::resize_crop(&d, preprocess::IMAGE_SIZE, variant)
}

/// Bounds for inputs whose decoders differ from Pillow's (libjpeg-turbo / libwebp):
/// max abs difference of the 224×224 u8 crop, measured with the image crate's decoders.
fn lossy_bound(file: &str) -> u8 {
    match file {
        f if f.ends_with(".webp") => 0,
        _ => JPEG_MAX_DIFF,
    }
}

/// With the `libjpeg` feature (default) JPEGs are decoded by libjpeg-turbo's C code, as in
/// Pillow: exact. Without it, zune-jpeg (image crate) vs libjpeg-turbo, after resize + crop: the
/// worst case measured on the fixtures is 4 (q50 4:2:0 and progressive: chroma upsampling and
/// IDCT rounding); 1–2 on 4:4:4, grayscale, CMYK and franz-kafka.jpg. One step of margin.
const JPEG_MAX_DIFF: u8 = if cfg!(feature = "libjpeg") { 0 } else { 5 };

#[test]
fn lossless_inputs_match_pillow_exactly() {
    let m = manifest();
    let mut checked = 0;
    let mut failures = Vec::new();
    for e in m["images"].as_array().unwrap() {
        if e["kind"] != "lossless" {
            continue;
        }
        let file = e["file"].as_str().unwrap();
        let bytes = std::fs::read(fixtures().join(file)).unwrap();
        for variant in [Variant::Hf, Variant::OpenAi] {
            let ours = our_crop(&bytes, variant);
            let want = reference_crop(file, variant, e);
            let (max, frac) = diff(&ours, &want);
            if max != 0 {
                failures.push(format!(
                    "{file} {variant:?} ({}): max diff {max}, {:.2}% differ",
                    e["pil_mode"],
                    frac * 100.0
                ));
            }
            checked += 1;
        }
    }
    assert!(failures.is_empty(), "not bit-exact:\n{}", failures.join("\n"));
    assert!(checked >= 60, "only {checked} checks");
}

#[test]
fn lossy_inputs_within_measured_bounds() {
    let m = manifest();
    let mut report = Vec::new();
    let mut failures = Vec::new();
    for e in m["images"].as_array().unwrap() {
        if e["kind"] != "jpeg" && e["kind"] != "lossy" {
            continue;
        }
        let file = e["file"].as_str().unwrap();
        let bytes = std::fs::read(fixtures().join(file)).unwrap();
        for variant in [Variant::Hf, Variant::OpenAi] {
            let ours = our_crop(&bytes, variant);
            let want = reference_crop(file, variant, e);
            let (max, frac) = diff(&ours, &want);
            let t_ours = preprocess::normalize(&ours);
            let t_want = preprocess::normalize(&want);
            let tmax = t_ours.iter().zip(&t_want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            report.push(format!(
                "{file:32} {variant:?}: u8 max {max}, {:.1}% differ, tensor max {tmax:.4}",
                frac * 100.0
            ));
            if max > lossy_bound(file) {
                failures.push(format!("{file} {variant:?}: max diff {max} > {}", lossy_bound(file)));
            }
        }
    }
    eprintln!("{}", report.join("\n"));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn normalize_matches_reference_floats() {
    // The generator asserts that every reference tensor (transformers' and OpenAI's) is exactly
    // this table applied to its u8 crop; check our normalisation against it, bit for bit.
    let m = manifest();
    let table = m["normalize_table"].as_array().unwrap();
    let ramp = image::RgbImage::from_fn(256, 1, |x, _| image::Rgb([x as u8, x as u8, x as u8]));
    let ours = preprocess::normalize(&ramp);
    for c in 0..3 {
        for v in 0..256 {
            let want = table[c][v].as_f64().unwrap() as f32;
            assert_eq!(ours[c * 256 + v], want, "channel {c} value {v}");
        }
    }
    // Optional f32 tensor fixtures (`--tensors` in the generator).
    for e in m["images"].as_array().unwrap() {
        let file = e["file"].as_str().unwrap();
        let p = fixtures().join(format!("{file}.openai.f32.npy"));
        if !p.exists() {
            continue;
        }
        let want = Npy::read(&p).unwrap();
        assert_eq!(want.shape, vec![3, 224, 224]);
        let bytes = std::fs::read(fixtures().join(file)).unwrap();
        let ours = preprocess::preprocess_bytes(&bytes, Variant::OpenAi, &Limits::default()).unwrap();
        let max = ours.iter().zip(&want.to_f32()).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(max <= 1e-6, "{file}: tensor max diff {max}");
    }
}

#[test]
fn clip_png_tensor_exact() {
    // RGBA 2162×762: the case where hf (composite on white, floor crop) and openai (premultiplied
    // resize, drop alpha, round-half-even crop) differ most.
    let bytes = std::fs::read(fixtures().join("CLIP.png")).unwrap();
    let m = manifest();
    let e = m["images"].as_array().unwrap().iter().find(|e| e["file"] == "CLIP.png").unwrap().clone();
    for variant in [Variant::Hf, Variant::OpenAi] {
        let ours = preprocess::preprocess_bytes(&bytes, variant, &Limits::default()).unwrap();
        let want = preprocess::normalize(&reference_crop("CLIP.png", variant, &e));
        let max = ours.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(max <= 1e-6, "{variant:?}: tensor max diff {max}");
    }
}

#[test]
fn franz_kafka_against_oracle() {
    let bytes = std::fs::read(fixtures().join("franz-kafka.jpg")).unwrap();
    // OpenAI's own preprocessing of this photograph (tests/fixtures/oracle/README.md)
    let oracle = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/oracle/expected_preprocessed_image.npy");
    let want: Vec<f32> = Npy::read(&oracle).unwrap().to_f32();
    assert_eq!(want.len(), 3 * 224 * 224);
    for variant in [Variant::Hf, Variant::OpenAi] {
        let ours = preprocess::preprocess_bytes(&bytes, variant, &Limits::default()).unwrap();
        let max = ours.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        let mean = ours.iter().zip(&want).map(|(a, b)| (a - b).abs() as f64).sum::<f64>() / ours.len() as f64;
        eprintln!("franz-kafka {variant:?}: tensor max diff {max:.5}, mean {mean:.6}");
        // libjpeg: the oracle's tensor itself; zune: JPEG_MAX_DIFF u8 steps / 255 / min(std).
        let bound = if cfg!(feature = "libjpeg") { 1e-6 } else { JPEG_MAX_DIFF as f32 / 255.0 / 0.26 + 1e-5 };
        assert!(max <= bound, "tensor max diff {max} > {bound}");
    }
}

#[test]
fn corrupt_inputs_are_errors_not_panics() {
    let m = manifest();
    let lim = Limits::default();
    let mut n = 0;
    for e in m["images"].as_array().unwrap() {
        if e["kind"] != "corrupt" {
            continue;
        }
        let file = e["file"].as_str().unwrap();
        let bytes = std::fs::read(fixtures().join(file)).unwrap();
        for variant in [Variant::Hf, Variant::OpenAi] {
            let r = preprocess::preprocess_bytes(&bytes, variant, &lim);
            match &r {
                Err(err) => eprintln!("{file} {variant:?}: {err}"),
                Ok(_) => eprintln!("{file} {variant:?}: decoded (Pillow: {})", e["pil"]),
            }
            // Everything Pillow refuses is refused (truncated files included: Pillow raises
            // "image file is truncated" unless LOAD_TRUNCATED_IMAGES is set).
            assert!(r.is_err(), "{file}: expected an error");
        }
        n += 1;
    }
    assert!(n >= 6);
    let err = preprocess::preprocess_bytes(b"", Variant::Hf, &lim).unwrap_err();
    assert_eq!(err.to_string(), "empty file");
    let bomb = std::fs::read(fixtures().join("corrupt_bomb_100000x100000.png")).unwrap();
    let err = preprocess::preprocess_bytes(&bomb, Variant::Hf, &lim).unwrap_err();
    assert!(err.to_string().contains("100000x100000"), "{err}");
    let small = Limits { max_file_bytes: 10, ..Limits::default() };
    assert!(preprocess::preprocess_bytes(&bomb, Variant::Hf, &small).is_err());
}

#[test]
fn truncations_and_bit_flips_never_panic() {
    let bytes = std::fs::read(fixtures().join("rgb_640x480.png")).unwrap();
    let jpg = std::fs::read(fixtures().join("q95_444_400x300.jpg")).unwrap();
    let lim = Limits::default();
    for src in [&bytes, &jpg] {
        for cut in (0..src.len()).step_by(src.len() / 23 + 1) {
            let _ = preprocess::preprocess_bytes(&src[..cut], Variant::OpenAi, &lim);
        }
        let mut x = 0x9E37_79B9u32;
        for _ in 0..20 {
            let mut b = src.clone();
            for _ in 0..8 {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                let i = x as usize % b.len();
                b[i] ^= (x >> 24) as u8 | 1;
            }
            let _ = preprocess::preprocess_bytes(&b, Variant::Hf, &lim);
        }
    }
}

/// Offset of the first marker `m` (`FF m`) in a JPEG's marker chain (before the first scan).
fn jpeg_marker(b: &[u8], m: u8) -> Option<usize> {
    let mut pos = 2;
    while pos + 4 <= b.len() && b[pos] == 0xFF {
        if b[pos + 1] == m {
            return Some(pos);
        }
        if b[pos + 1] == 0xDA {
            return None;
        }
        pos += 2 + u16::from_be_bytes([b[pos + 2], b[pos + 3]]) as usize;
    }
    None
}

#[test]
fn jpeg_size_is_checked_from_the_header() {
    // A valid file whose SOF claims 60000×60000: refused before any pixel data is decoded.
    let mut b = std::fs::read(fixtures().join("q95_444_400x300.jpg")).unwrap();
    let sof = jpeg_marker(&b, 0xC0).expect("baseline SOF0");
    b[sof + 5..sof + 9].copy_from_slice(&[0xEA, 0x60, 0xEA, 0x60]);
    let err = preprocess::preprocess_bytes(&b, Variant::Hf, &Limits::default()).unwrap_err();
    assert!(matches!(err, preprocess::PreprocessError::TooManyPixels { .. }), "{err}");
}

/// libjpeg-turbo path only: Pillow's truncation rule and its CMYK convention.
#[cfg(feature = "libjpeg")]
#[test]
fn jpeg_truncation_and_cmyk_follow_pillow() {
    let lim = Limits::default();
    let dec = |b: &[u8]| preprocess::decode_native(b, &lim);
    // Pillow (checked with Pillow 13 / libjpeg-turbo 3.2): a baseline file whose data ends right
    // after the last entropy-coded byte is truncated ("image file is truncated"), but one that
    // only lacks its EOI marker after some padding decodes; a progressive file needs its EOI.
    let q = std::fs::read(fixtures().join("q95_444_400x300.jpg")).unwrap();
    assert_eq!(&q[q.len() - 2..], &[0xFF, 0xD9]);
    let full = dec(&q).unwrap();
    assert!(dec(&q[..q.len() - 2]).is_err(), "no EOI");
    for cut in [100, 700, 2000, q.len() - 100] {
        assert!(dec(&q[..cut]).is_err(), "cut at {cut}");
    }
    let mut padded = q[..q.len() - 2].to_vec();
    padded.extend_from_slice(&[0; 64]);
    assert_eq!(dec(&padded).unwrap(), full, "no EOI, padded");
    let p = std::fs::read(fixtures().join("progressive_360x270.jpg")).unwrap();
    let mut padded = p[..p.len() - 2].to_vec();
    padded.extend_from_slice(&[0; 64]);
    assert!(dec(&padded).is_err(), "progressive, no EOI");

    // CMYK is always read as Adobe-inverted `CMYK;I`: without the APP14 segment the samples
    // (and Pillow's result) are the same.
    let c = std::fs::read(fixtures().join("cmyk_q90_320x240.jpg")).unwrap();
    let app14 = jpeg_marker(&c, 0xEE).expect("Adobe APP14");
    let len = u16::from_be_bytes([c[app14 + 2], c[app14 + 3]]) as usize;
    let stripped = [&c[..app14], &c[app14 + 2 + len..]].concat();
    let with = dec(&c).unwrap();
    assert_eq!(with.pixels.mode(), "CMYK");
    assert_eq!(dec(&stripped).unwrap(), with);
}

/// At ViT-L/14-336's size: the 336×336 crops of transformers' processor (`size` 336) and of
/// OpenAI's `_transform(336)`, stored by `scripts/make_fixtures.py family` under
/// tests/fixtures/family/crops336, every colour mode and decoder among them; bit-exact (JPEGs
/// within the decoder bound), and the f32 tensor of `preprocess_bytes_sized` is their
/// normalisation.
#[test]
fn crops_at_336_match_pillow() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/family/crops336");
    let m: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("crops.json")).unwrap()).unwrap();
    let size = m["size"].as_u64().unwrap() as u32;
    assert_eq!(size, 336);
    let mut failures = Vec::new();
    let mut checked = 0;
    for e in m["images"].as_array().unwrap() {
        let file = e["file"].as_str().unwrap();
        let bytes = std::fs::read(fixtures().join(file)).unwrap();
        for variant in [Variant::Hf, Variant::OpenAi] {
            let want = match variant {
                Variant::OpenAi if !e["openai_same_as_hf"].as_bool().unwrap() => format!("{file}.openai.png"),
                _ => format!("{file}.hf.png"),
            };
            let want = load_rgb(&dir.join(want));
            let d = preprocess::decode(&bytes, variant, &Limits::default()).expect("decodes");
            let ours = preprocess::resize_crop(&d, size, variant);
            assert_eq!(ours.dimensions(), (size, size), "{file} {variant:?}");
            let (max, frac) = diff(&ours, &want);
            let bound = if file.ends_with(".jpg") { lossy_bound(file) } else { 0 };
            if max > bound {
                failures.push(format!("{file} {variant:?}: max diff {max} > {bound}, {:.2}% differ", frac * 100.0));
            }
            let t = preprocess::preprocess_bytes_sized(&bytes, size, variant, &Limits::default()).unwrap();
            assert_eq!(t, preprocess::normalize(&ours), "{file} {variant:?}: tensor is not the crop's normalisation");
            checked += 1;
        }
    }
    assert!(failures.is_empty(), "not bit-exact at {size} px:\n{}", failures.join("\n"));
    assert!(checked >= 30, "only {checked} checks");
}
