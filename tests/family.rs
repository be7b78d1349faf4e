//! The CLIP family beyond ViT-B/32's grid on the CPU engine, against transformers (the
//! oracle): random checkpoints in the exact architecture of
//!
//! * `b16`: ViT-B/16's patch grid (14×14 patches of 16 on 224 px, 197 tokens);
//! * `l14-336`: ViT-L/14-336's (24×24 patches of 14 on 336 px, 577 tokens), which also
//!   makes preprocessing resize and crop to 336;
//! * `text768`: ViT-L/14's text tower, 768 wide over the real 49,408-token vocabulary (a
//!   152 MB f32 token table); not committed, made by
//!   `python3 scripts/make_fixtures.py text768 tests/fixtures/family/text768` (CI does).
//!
//! with tiny widths elsewhere (scripts/make_fixtures.py, `family`). Normalised embeddings
//! within 1e-5 (max abs) of transformers' on both towers: 2 synthetic images, 8 real ones
//! through the whole pipeline in both preprocessing variants (`hf`: transformers'
//! CLIPImageProcessor at the model's size; `openai`: OpenAI's `_transform(S)`), 16 texts; the
//! committed members in both checkpoint namings (HF f32, OpenAI f16 with shapes inferred).
//! Also: a model name given to `--model` is found in the Hugging Face cache, and errors on the
//! CPU engine do not name the GPU.

mod common;
use common::reference::*;

use std::path::{Path, PathBuf};

use clip_wgpu::model::{self, ClipConfig, LoadOptions};
use clip_wgpu::pipeline::Pipeline;
use clip_wgpu::preprocess::Variant;
use clip_wgpu::{Clip, ClipOptions, Device, Error, PrecisionChoice, PreparedImage};

/// Reference outputs of a family fixture (those of `common::reference` plus the `openai`
/// preprocessing variant's image embeddings).
#[derive(serde::Deserialize)]
struct FamilyRef {
    n_synthetic: usize,
    image_files: Vec<String>,
    texts: Vec<String>,
    image_embeds: Vec<Vec<f32>>,
    text_embeds: Vec<Vec<f32>>,
    /// Absent from the full-size fixtures (`make_fixtures.py full`).
    #[serde(default)]
    openai_image_embeds: Vec<Vec<f32>>,
}

fn family_dir(name: &str) -> PathBuf {
    root().join("tests/fixtures/family").join(name)
}

fn reference(name: &str) -> FamilyRef {
    reference_in(&family_dir(name))
}

fn reference_in(dir: &Path) -> FamilyRef {
    let p = dir.join("reference.json");
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap()
}

/// The generated text768 fixture, or `None` (with SKIPPED printed) where it was not made; a
/// panic instead under `CLIP_WGPU_REQUIRE_FULL=1` (CI makes it).
fn text768() -> Option<PathBuf> {
    let dir = family_dir("text768");
    if dir.join("reference.json").is_file() {
        return Some(dir);
    }
    if std::env::var("CLIP_WGPU_REQUIRE_FULL").is_ok_and(|v| v == "1") {
        panic!(
            "CLIP_WGPU_REQUIRE_FULL=1 but {} is missing: run python3 scripts/make_fixtures.py text768 {}",
            dir.display(),
            dir.display()
        );
    }
    eprintln!("SKIPPED: no text768 fixture (python3 scripts/make_fixtures.py text768 tests/fixtures/family/text768)");
    None
}

fn cpu_clip(path: &Path, variant: Variant) -> Clip {
    let ck = model::load(path, &LoadOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    let opts = ClipOptions {
        device: Device::Cpu,
        precision: PrecisionChoice::F32,
        variant,
        cache_entries: 0,
        notices: false,
        ..Default::default()
    };
    Clip::from_checkpoint(ck, clip_wgpu::text::ClipTokenizer::bundled(), &opts).unwrap()
}

/// Max abs error of `got` (rows of `dim`) against `want`, checked ≤ 1e-5 and printed.
fn check_rows(label: &str, what: &str, got: &[f32], want: &[Vec<f32>]) -> f32 {
    let err = max_abs(got, want);
    eprintln!("{label}: {what} ({} rows): max abs error {err:.3e}", want.len());
    assert!(err <= 1e-5, "{label}: {what}: max abs error {err} > 1e-5");
    err
}

/// Every check of one checkpoint of fixture `name` against its reference.
fn check_member(name: &str, path: &Path, label: &str, want: (usize, usize, usize)) {
    check_against(&reference(name), path, label, want);
}

/// Every check of the checkpoint at `path` against the reference `r`.
fn check_against(r: &FamilyRef, path: &Path, label: &str, want: (usize, usize, usize)) {
    let clip = cpu_clip(path, Variant::Hf);
    let c = clip.config();
    let v = &c.vision;
    assert_eq!((v.patch_size, v.image_size, v.tokens()), want, "{label}: patch, image size, tokens");
    assert_eq!(clip.image_size() as usize, v.image_size);
    let s = v.image_size;
    let dim = clip.embed_dim();
    let n = r.n_synthetic;

    // the model alone: synthetic pixels at the model's size
    let px = synthetic_pixels(n, s);
    check_rows(label, "synthetic images", &clip.encode_pixels(&px, n).unwrap(), &r.image_embeds[..n]);

    // end to end, hf preprocessing at the model's size, in one call and through the pipeline
    let files: Vec<PathBuf> = r.image_files.iter().map(|f| root().join(f)).collect();
    let got: Vec<f32> = clip.encode_image_files(&files).into_iter().flat_map(|e| e.unwrap()).collect();
    check_rows(label, "images, hf preprocessing", &got, &r.image_embeds[n..]);
    let mut piped = Vec::new();
    Pipeline::new(&clip, 3)
        .run(
            files.iter().cloned(),
            |p| clip.prepare_file(p),
            |batch| {
                for (_, e) in batch {
                    piped.extend(e?);
                }
                Ok::<(), Error>(())
            },
        )
        .unwrap();
    check_rows(label, "images through the pipeline (batches of 3)", &piped, &r.image_embeds[n..]);

    // end to end, OpenAI's preprocessing at the model's size
    if !r.openai_image_embeds.is_empty() {
        let oa = cpu_clip(path, Variant::OpenAi);
        let got: Vec<f32> = oa.encode_image_files(&files).into_iter().flat_map(|e| e.unwrap()).collect();
        check_rows(label, "images, openai preprocessing", &got, &r.openai_image_embeds);
    }

    // the text tower
    let txt = clip.encode_texts(&r.texts).unwrap();
    check_rows(label, "texts", &txt, &r.text_embeds);
    assert_eq!(txt.len(), r.texts.len() * dim);
}

#[test]
fn b16_grid_matches_transformers() {
    let want = (16, 224, 197);
    check_member("b16", &family_dir("b16/hf"), "b16 HF f32", want);
    check_member("b16", &family_dir("b16/openai-f16/open_clip_model.safetensors"), "b16 OpenAI f16", want);
}

#[test]
fn l14_336_grid_matches_transformers() {
    let want = (14, 336, 577);
    check_member("l14-336", &family_dir("l14-336/hf"), "l14-336 HF f32", want);
    check_member("l14-336", &family_dir("l14-336/openai-f16/open_clip_model.safetensors"), "l14-336 OpenAI f16", want);
}

#[test]
fn text768_matches_transformers() {
    let Some(dir) = text768() else { return };
    let clip = cpu_clip(&dir.join("hf"), Variant::Hf);
    let t = &clip.config().text;
    assert_eq!((t.tower.width, t.tower.heads, t.tower.mlp, t.vocab_size), (768, 12, 3072, 49408));
    check_member("text768", &dir.join("hf"), "text768 HF f32", (32, 224, 50));
}

/// A full-size random member of the family, made on demand (never committed, not in CI: the
/// f32 ViT-L/14 is 1.7 GB):
///
/// ```text
/// python3 scripts/make_fixtures.py full DIR --preset ViT-L-14 [--openai]
/// CLIP_WGPU_FULL_FAMILY=DIR cargo test --release --test family full_size -- --nocapture
/// ```
///
/// Its configuration must be its preset's; embeddings within 1e-5 of transformers' (8
/// synthetic images, 2 real ones end to end, 16 texts); with `--openai`, the OpenAI-named copy
/// too.
#[test]
fn full_size_member_matches_transformers() {
    let Some(dir) = std::env::var_os("CLIP_WGPU_FULL_FAMILY").map(PathBuf::from) else {
        eprintln!("SKIPPED: CLIP_WGPU_FULL_FAMILY is not set (a directory from make_fixtures.py full --preset …)");
        return;
    };
    let ck = model::load(&dir, &LoadOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    let preset = model::presets::PRESETS
        .iter()
        .find(|p| (p.config)() == ck.config)
        .unwrap_or_else(|| panic!("{}: the configuration is no preset's: {:?}", dir.display(), ck.config));
    drop(ck);
    let v = (preset.config)().vision;
    let want = (v.patch_size, v.image_size, v.tokens());
    let r = reference_in(&dir);
    check_against(&r, &dir, &format!("full-size {} (random), HF", preset.name), want);
    // with --openai: the same weights in OpenAI naming, the configuration from the shapes
    let f = dir.join("openai/open_clip_model.safetensors");
    if f.is_file() {
        let ck = model::load(&f, &LoadOptions::default()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ck.config, (preset.config)(), "{}: inferred configuration", f.display());
        drop(ck);
        check_against(&r, &f, &format!("full-size {} (random), OpenAI naming", preset.name), want);
    }
}

/// On the CPU engine an error names no GPU: wrong pixel counts (directly and through
/// `encode_prepared`, where one bad batch fails every image in it) name the model's size.
#[test]
fn cpu_errors_name_no_gpu() {
    let clip = cpu_clip(&family_dir("l14-336/hf"), Variant::Hf);
    let wrong = synthetic_pixels(2, 224);
    let e = clip.encode_pixels(&wrong, 2).unwrap_err().to_string();
    assert!(!e.contains("GPU"), "{e}");
    assert!(e.contains("2 images of 3x336x336 need 677376") && e.contains("301056 values given"), "{e}");

    let prepared = vec![
        Ok(PreparedImage::Pixels { pixels: synthetic_pixels(1, 224), key: None }),
        Ok(PreparedImage::Pixels { pixels: synthetic_pixels(1, 336), key: None }),
    ];
    for r in clip.encode_prepared(prepared) {
        let e = r.unwrap_err();
        assert!(matches!(e, Error::Invalid(_)), "{e:?}");
        let e = e.to_string();
        assert!(!e.contains("GPU") && e.contains("3x336x336"), "{e}");
    }
}

/// The config each preset names is what `config.json` of its fixture-shaped checkpoint gives,
/// and the presets' configurations are the published ones (widths from the checkpoint).
#[test]
fn fixture_configs_are_their_presets_grids() {
    for (name, preset) in [("b16", ClipConfig::vit_b_16()), ("l14-336", ClipConfig::vit_l_14_336())] {
        let ck = model::load(&family_dir(name).join("hf"), &LoadOptions::default()).unwrap();
        let (a, b) = (&ck.config.vision, &preset.vision);
        assert_eq!((a.image_size, a.patch_size, a.tokens()), (b.image_size, b.patch_size, b.tokens()), "{name}");
        assert_eq!(ck.config.text.vocab_size, preset.text.vocab_size);
    }
}

fn cli() -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_clip-wgpu"));
    c.env_remove("CLIP_WGPU_MODEL").env_remove("HF_HUB_CACHE").env("HF_HUB_OFFLINE", "1");
    c
}

/// `--model NAME` (a preset's short name or its Hub repository) finds the snapshot in the
/// Hugging Face cache, and embeds at that model's image size.
#[test]
fn model_names_resolve_through_the_hf_cache() {
    let home = tempfile::tempdir().unwrap();
    let snap = home.path().join("hub/models--openai--clip-vit-large-patch14-336/snapshots/0123abcd");
    std::fs::create_dir_all(&snap).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(family_dir("l14-336/hf").join(f), snap.join(f)).unwrap();
    }
    let r = reference("l14-336");
    let image = root().join(&r.image_files[0]);
    for name in ["ViT-L-14-336", "openai/clip-vit-large-patch14-336", "vit-l/14-336"] {
        let out = cli()
            .env("HF_HOME", home.path())
            .args(["embed", "--model", name, "--device", "cpu", "--format", "json", "--image"])
            .arg(&image)
            .args(["--text", &r.texts[0]])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{name}: {}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let vec = |x: &serde_json::Value| -> Vec<f32> {
            x["embedding"].as_array().unwrap().iter().map(|f| f.as_f64().unwrap() as f32).collect()
        };
        let img = vec(&v["images"][0]);
        check_rows(name, "CLI image", &img, &r.image_embeds[r.n_synthetic..r.n_synthetic + 1]);
        check_rows(name, "CLI text", &vec(&v["texts"][0]), &r.text_embeds[..1]);
    }

    // a name that is not in the cache, offline: one message naming the repository
    let out = cli()
        .env("HF_HOME", home.path())
        .args(["embed", "--model", "ViT-B-16", "--device", "cpu", "--text", "x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("no model weights found for openai/clip-vit-base-patch16"), "{e}");
    assert!(e.contains("models--openai--clip-vit-base-patch16") && e.contains("HF_HUB_OFFLINE"), "{e}");
    assert!(e.contains("ViT-L-14-336 (openai/clip-vit-large-patch14-336)"), "{e}");
}
