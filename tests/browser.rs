//! The browser package (web/, built by `cargo xtask web` into target/web/pkg/) in headless
//! Chromium: web/test/run.mjs serves the repository on 127.0.0.1 with the isolation headers,
//! opens web/test/ (which embeds the tiny fixture's images in several formats and as
//! Uint8Array, Blob, ImageData and ImageBitmap, and its texts, on the WebGPU kernels and on the
//! wasm CPU engine, and provokes errors), then classifies in the demo and saves a screenshot
//! (target/web/demo.png). Here the page's embeddings are compared with the native CPU engine's
//! on the same inputs: max abs ≤ 1e-4 on WebGPU, ≤ 1e-5 on the wasm CPU engine.
//!
//! Needs node, web/node_modules (`npm ci --prefix web`), Chromium (`CLIP_WGPU_CHROMIUM`,
//! default /usr/bin/chromium) and the package; skipped with the reason otherwise, unless
//! `CLIP_WGPU_REQUIRE_BROWSER=1` (CI), where a missing piece fails.

use std::path::{Path, PathBuf};
use std::process::Command;

use clip_wgpu::{Clip, ClipOptions, Device, PrecisionChoice};
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn chromium() -> PathBuf {
    std::env::var_os("CLIP_WGPU_CHROMIUM").map(PathBuf::from).unwrap_or_else(|| "/usr/bin/chromium".into())
}

/// Why the browser test cannot run here, if it cannot.
fn missing() -> Option<String> {
    let r = root();
    if Command::new("node").arg("--version").output().map_or(true, |o| !o.status.success()) {
        return Some("node is not installed".into());
    }
    if !chromium().is_file() {
        return Some(format!("no Chromium at {} (apt-get install chromium)", chromium().display()));
    }
    if !r.join("web/node_modules/puppeteer-core").is_dir() {
        return Some("web/node_modules has no puppeteer-core (npm ci --prefix web)".into());
    }
    if !r.join("target/web/pkg/clip_wgpu.js").is_file() {
        return Some("target/web/pkg/clip_wgpu.js is not built (cargo xtask web)".into());
    }
    None
}

fn floats(v: &Value, what: &str) -> Vec<f32> {
    v.as_array()
        .unwrap_or_else(|| panic!("{what}: not an array in the page's results: {v}"))
        .iter()
        .map(|x| x.as_f64().unwrap_or(f64::NAN) as f32)
        .collect()
}

fn max_abs(a: &[f32], b: &[f32], what: &str) -> f32 {
    assert_eq!(a.len(), b.len(), "{what}: {} values from the page, {} natively", a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, |m, d| if d.is_nan() { f32::INFINITY } else { m.max(d) })
}

/// The page's synthetic ImageData (web/test/test.mjs), as an image.
fn synthetic(w: u32, h: u32) -> image::DynamicImage {
    image::DynamicImage::ImageRgba8(image::RgbaImage::from_fn(w, h, |x, y| {
        let v = |c: u32| ((x * 7 + y * 13 + c * 50) % 256) as u8;
        image::Rgba([v(0), v(1), v(2), 255])
    }))
}

/// The native CPU engine's embedding of one fixture image, decoded as the wasm build decodes
/// it: JPEG through the image crate's pure-Rust decoder (the native default, libjpeg-turbo,
/// differs by a few levels), everything else through the library's own decoding.
fn native_image(clip: &Clip, path: &Path) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap();
    if path.extension().is_some_and(|e| e == "jpg") {
        let img = image::load_from_memory(&bytes).unwrap();
        clip.encode_images(&[img]).unwrap()
    } else {
        clip.encode_image_bytes(&[bytes]).pop().unwrap().unwrap()
    }
}

#[test]
fn browser_package_matches_the_native_cpu_engine() {
    if let Some(why) = missing() {
        if std::env::var("CLIP_WGPU_REQUIRE_BROWSER").is_ok_and(|v| v == "1") {
            panic!("CLIP_WGPU_REQUIRE_BROWSER=1 but the browser test cannot run: {why}");
        }
        eprintln!("skipped: the browser test needs {why}");
        return;
    }
    let r = root();
    let out = r.join("target/web/browser-results.json");
    let shot = r.join("target/web/demo.png");
    let _ = std::fs::remove_file(&out);
    let status = Command::new("node")
        .current_dir(&r)
        .arg("web/test/run.mjs")
        .args([&out, &shot])
        .status()
        .expect("running node web/test/run.mjs");
    assert!(status.success(), "web/test/run.mjs failed ({status})");
    let res: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(res["ok"], true, "the test page failed: {}", res["error"]);
    println!("browser: {}", res["user_agent"]);

    let opts = ClipOptions {
        device: Device::Cpu,
        precision: PrecisionChoice::F32,
        cache_entries: 0,
        notices: false,
        ..Default::default()
    };
    let clip = Clip::load(r.join("tests/fixtures/tiny/hf"), &opts).unwrap();
    let d = clip.embed_dim();
    let files: Vec<String> = res["files"].as_array().unwrap().iter().map(|f| f.as_str().unwrap().to_string()).collect();
    let native_files: Vec<Vec<f32>> =
        files.iter().map(|f| native_image(&clip, &r.join("tests/fixtures/images").join(f))).collect();
    let img = synthetic(97, 61);
    let native_synthetic = clip.encode_images(&[img]).unwrap();
    let texts: Vec<String> = res["texts"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_string()).collect();
    let native_texts = clip.encode_texts(&texts).unwrap();

    for (device, tol) in [("webgpu", 1e-4f32), ("cpu", 1e-5f32)] {
        let page = &res[device];
        assert!(page["error"].is_null(), "{device}: the page failed: {}", page["error"]);
        println!(
            "{device}: {} (adapter {:?}), load {:.0} ms, {} images {:.0} ms, {} texts {:.0} ms",
            page["path"].as_str().unwrap(),
            page["adapter"].as_str().unwrap(),
            page["load_ms"].as_f64().unwrap(),
            files.len(),
            page["files_ms"].as_f64().unwrap(),
            texts.len(),
            page["texts_ms"].as_f64().unwrap()
        );
        assert_eq!(page["dim"].as_u64(), Some(d as u64));
        if device == "webgpu" {
            assert!(page["path"].as_str().unwrap().starts_with("webgpu "), "{device}: {}", page["path"]);
        } else {
            assert!(page["path"].as_str().unwrap().starts_with("cpu "), "{device}: {}", page["path"]);
        }
        let got = floats(&page["files"], "files");
        let mut worst = 0f32;
        for (i, (f, n)) in files.iter().zip(&native_files).enumerate() {
            let m = max_abs(&got[i * d..(i + 1) * d], n, f);
            println!("  {device} {f}: max abs {m:.2e}");
            assert!(m <= tol, "{device}: {f}: max abs {m:e} > {tol:e}");
            worst = worst.max(m);
        }
        let checks: [(&str, Vec<f32>, &[f32]); 5] = [
            ("blob (CLIP.png)", floats(&page["blob"], "blob"), &native_files[2]),
            ("after the errors (CLIP.png)", floats(&page["after_errors"], "after_errors"), &native_files[2]),
            ("ImageData 97x61", floats(&page["imagedata"], "imagedata"), &native_synthetic),
            ("ImageBitmap 97x61", floats(&page["imagebitmap"], "imagebitmap"), &native_synthetic),
            ("texts", floats(&page["texts"], "texts"), &native_texts),
        ];
        for (what, got, want) in &checks {
            let m = max_abs(got, want, what);
            println!("  {device} {what}: max abs {m:.2e}");
            assert!(m <= tol, "{device}: {what}: max abs {m:e} > {tol:e}");
            worst = worst.max(m);
        }
        println!("  {device}: worst max abs {worst:.2e} (bound {tol:e})");

        // classify: the softmax of logit_scale·cos over the texts, as natively
        let probs = floats(&page["probs"], "probs");
        let logits: Vec<f32> =
            native_texts.chunks(d).map(|t| clip.logit_scale() * clip_wgpu::cosine(&native_files[0], t)).collect();
        let m = max_abs(&probs, &clip_wgpu::softmax(&logits), "probs");
        assert!(m <= 1e-3, "{device}: classify differs by {m:e}");
        let scores = floats(&page["scores"], "scores");
        for (j, s) in scores.iter().enumerate() {
            let want = clip_wgpu::clip_score(clip_wgpu::cosine(&native_files[0], &native_texts[j * d..(j + 1) * d]));
            assert!((s - want).abs() <= 1e-2, "{device}: score {j}: {s} vs {want}");
        }

        // errors reject with the engine's message, naming the input, and the page goes on
        let err =
            |k: &str| page[k].as_str().unwrap_or_else(|| panic!("{device}: {k}: no error: {}", page[k])).to_string();
        let e = err("err_corrupt");
        assert!(e.starts_with("image #1: ") && e.contains("JPEG"), "{device}: {e}");
        let e = err("err_random");
        assert!(e.starts_with("image #0: ") && e.contains("unrecognised file signature"), "{device}: {e}");
        let e = err("err_item");
        assert!(e.contains("image #0: expected a Uint8Array"), "{device}: {e}");
        let e = err("err_checkpoint");
        assert!(e.contains("model.safetensors") && e.contains("safetensors"), "{device}: {e}");
        let e = err("err_missing");
        assert!(e.contains("no-such-model/model.safetensors: HTTP 404"), "{device}: {e}");
        println!("  {device} errors: {:?} / {:?}", err("err_corrupt"), err("err_checkpoint"));
    }

    // the Cache API kept the files: the second load fetched nothing
    let keys = res["cache_keys"].to_string();
    assert!(keys.contains("/tests/fixtures/tiny/hf/model.safetensors"), "cache: {keys}");
    println!("cached reload: {:.0} ms; cache holds {keys}", res["cached_load_ms"].as_f64().unwrap());
    assert!(shot.is_file(), "no demo screenshot at {}", shot.display());
    println!("demo screenshot: {}", shot.display());
}
