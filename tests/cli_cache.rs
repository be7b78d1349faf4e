//! The command line's run-to-run behaviour: the on-disk embedding cache, the no-weights
//! message a new user sees offline, and Ctrl-C during `embed` (no output, no temporary files).

mod common;
use common::reference::*;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn cmd() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_clip-wgpu"));
    c.env_remove("CLIP_WGPU_MODEL").env_remove("CLIP_WGPU_CACHE_DIR").env("HF_HOME", "/nonexistent-hf-home");
    c
}

fn run(args: &[&str]) -> Output {
    cmd().args(args).output().unwrap()
}

fn model() -> String {
    tiny_dir().join("hf").display().to_string()
}

fn embeddings(v: &Value, key: &str) -> Vec<Vec<f64>> {
    v[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect())
        .collect()
}

fn entries(dir: &Path) -> usize {
    walk(dir).iter().filter(|p| p.extension().is_some_and(|e| e == "f32")).count()
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.path().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

#[test]
fn cache_dir_serves_a_second_run_with_the_same_embeddings() {
    let cache = tempfile::tempdir().unwrap();
    let images = root().join("tests/fixtures/images");
    let a = images.join("CLIP.png").display().to_string();
    let b = images.join("cmyk_q90_320x240.jpg").display().to_string();
    let copy_dir = tempfile::tempdir().unwrap();
    // the same bytes under another name: one cache entry
    let a2 = copy_dir.path().join("same-as-clip.png");
    std::fs::copy(&a, &a2).unwrap();
    let a2 = a2.display().to_string();
    let c = cache.path().display().to_string();
    let args = [
        "embed",
        "--model",
        &model(),
        "--device",
        "cpu",
        "--cache-dir",
        &c,
        "--image",
        &a,
        "--image",
        &b,
        "--image",
        &a2,
        "--text",
        "a diagram",
        "--text",
        "a photo of a cat",
        "--format",
        "json",
    ];
    let first = run(&args);
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    assert_eq!(entries(cache.path()), 4, "two distinct images and two texts");
    let second = run(&args);
    assert!(second.status.success());
    let (v1, v2): (Value, Value) =
        (serde_json::from_slice(&first.stdout).unwrap(), serde_json::from_slice(&second.stdout).unwrap());
    assert_eq!(embeddings(&v1, "images"), embeddings(&v2, "images"));
    assert_eq!(embeddings(&v1, "texts"), embeddings(&v2, "texts"));
    assert_eq!(embeddings(&v1, "images")[0], embeddings(&v1, "images")[2], "same bytes, same embedding");
    // an uncached run gives the same values (the cache does not change results)
    let plain = run(&args.iter().filter(|a| **a != "--cache-dir" && **a != c.as_str()).copied().collect::<Vec<_>>());
    let v3: Value = serde_json::from_slice(&plain.stdout).unwrap();
    let (x, y) = (embeddings(&v1, "images"), embeddings(&v3, "images"));
    for (r1, r3) in x.iter().zip(&y) {
        let d = r1.iter().zip(r3).map(|(p, q)| (p - q).abs()).fold(0.0, f64::max);
        assert!(d < 1e-6, "cached vs fresh embedding differs by {d}");
    }
    // a cache entry replaced by garbage is ignored and rewritten
    let victim = walk(cache.path()).into_iter().find(|p| p.extension().is_some_and(|e| e == "f32")).unwrap();
    std::fs::write(&victim, b"torn").unwrap();
    let third = run(&args);
    assert!(third.status.success());
    let v4: Value = serde_json::from_slice(&third.stdout).unwrap();
    assert_eq!(embeddings(&v1, "images"), embeddings(&v4, "images"));
    assert_eq!(
        std::fs::metadata(&victim).unwrap().len(),
        4 * v1["images"][0]["embedding"].as_array().unwrap().len() as u64
    );
}

fn max_diff(a: &[Vec<f64>], b: &[Vec<f64>]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).flat_map(|(x, y)| x.iter().zip(y).map(|(p, q)| (p - q).abs())).fold(0.0, f64::max)
}

#[test]
fn cache_dir_keeps_precisions_apart() {
    if !clip_wgpu::cpu::CpuPrecision::Int8.supported() {
        eprintln!("SKIPPED: int8 is not supported on this machine");
        return;
    }
    let cache = tempfile::tempdir().unwrap();
    let c = cache.path().display().to_string();
    let images = root().join("tests/fixtures/images");
    let a = images.join("CLIP.png").display().to_string();
    let b = images.join("cmyk_q90_320x240.jpg").display().to_string();
    let m = model();
    let base = ["embed", "--model", &m, "--device", "cpu", "--image", &a, "--image", &b, "--text", "a diagram"];
    let embed = |precision: &str, cached: bool| {
        let mut args: Vec<&str> = base.to_vec();
        args.extend(["--format", "json", "--precision", precision]);
        if cached {
            args.extend(["--cache-dir", &c]);
        }
        let out = run(&args);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["precision"], precision, "the engine's precision is reported");
        let mut e = embeddings(&v, "images");
        e.extend(embeddings(&v, "texts"));
        e
    };
    let int8 = embed("int8", true);
    assert_eq!(entries(cache.path()), 3);
    // an f32 run over the same inputs is not served the int8 entries: it encodes, and adds its own
    let f32_first = embed("f32", true);
    assert_eq!(entries(cache.path()), 6, "the f32 run wrote entries of its own");
    let fresh = embed("f32", false);
    assert!(max_diff(&f32_first, &fresh) < 1e-6, "f32 with the cache vs without: {}", max_diff(&f32_first, &fresh));
    let d = max_diff(&int8, &fresh);
    assert!(d > 1e-4, "int8 and f32 embeddings differ (by {d}), so serving one for the other would show");
    // and the next f32 run is served its own entries
    let f32_again = embed("f32", true);
    assert_eq!(f32_again, f32_first);
    assert_eq!(entries(cache.path()), 6);
    assert_eq!(embed("int8", true), int8);
}

#[test]
fn cache_dir_hits_count_only_the_same_precision() {
    use clip_wgpu::{Clip, ClipOptions, Device, PrecisionChoice};
    let cache = tempfile::tempdir().unwrap();
    let images = root().join("tests/fixtures/images");
    let files = [images.join("CLIP.png"), images.join("cmyk_q90_320x240.jpg")];
    let texts = ["a diagram", "a photo of a cat"];
    let supported = |p: PrecisionChoice| match p {
        PrecisionChoice::Bf16 => clip_wgpu::cpu::CpuPrecision::Bf16.supported(),
        PrecisionChoice::Int8 => clip_wgpu::cpu::CpuPrecision::Int8.supported(),
        _ => true,
    };
    let precisions: Vec<PrecisionChoice> = [PrecisionChoice::Int8, PrecisionChoice::Bf16, PrecisionChoice::F32]
        .into_iter()
        .filter(|&p| supported(p))
        .collect();
    if precisions.len() < 3 {
        eprintln!("SKIPPED (in part): only {precisions:?} are supported on this machine");
    }
    // one run: a new Clip (its in-memory cache empty), its embeddings and its hits and misses
    let pass = |precision| {
        let opts = ClipOptions {
            device: Device::Cpu,
            precision,
            cache_dir: Some(cache.path().to_path_buf()),
            notices: false,
            ..Default::default()
        };
        let clip = Clip::load(tiny_dir().join("hf"), &opts).unwrap();
        let mut e: Vec<f32> = clip.encode_image_files(&files).into_iter().flat_map(|r| r.unwrap()).collect();
        e.extend(clip.encode_texts(&texts).unwrap());
        let s = clip.cache_stats();
        (e, s.hits, s.misses)
    };
    let first: Vec<Vec<f32>> = precisions
        .iter()
        .map(|&p| {
            let (e, hits, misses) = pass(p);
            assert_eq!((hits, misses), (0, 4), "{p}: nothing another precision wrote is served");
            e
        })
        .collect();
    assert_eq!(entries(cache.path()), 4 * precisions.len());
    // int8 changes the values (the tiny model's weights are exact in bf16, so its bf16 run
    // gives f32's values; its entries are kept apart all the same)
    if precisions[0] == PrecisionChoice::Int8 {
        assert_ne!(first[0], first[precisions.len() - 1], "int8 and f32 give different embeddings");
    }
    for (i, &p) in precisions.iter().enumerate() {
        let (e, hits, misses) = pass(p);
        assert_eq!((hits, misses), (4, 0), "{p}: its own entries are served");
        assert_eq!(e, first[i], "{p}: the cached embeddings are the ones written");
    }
}

#[test]
fn no_weights_offline_says_where_it_looked_and_how_to_get_them() {
    let home = tempfile::tempdir().unwrap();
    let out = cmd()
        .env("HF_HOME", home.path())
        .env_remove("HF_HUB_CACHE")
        .args(["score", "--image", "x.jpg", "--text", "a dog"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no model weights found"), "{err}");
    assert!(err.contains("--model"), "{err}");
    assert!(err.contains("CLIP_WGPU_MODEL"), "{err}");
    assert!(
        err.contains(&home.path().join("hub/models--openai--clip-vit-base-patch32").display().to_string()),
        "{err}"
    );
    assert!(err.contains("openai/clip-vit-base-patch32"), "{err}");
    assert!(err.contains("weights/README.md"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    // with HF_HUB_OFFLINE the download is not tried, and it says so
    let out = cmd()
        .env("HF_HOME", home.path())
        .env("HF_HUB_OFFLINE", "1")
        .args(["score", "--image", "x.jpg", "--text", "a dog"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("$HF_HUB_OFFLINE is set"));
}

#[test]
fn ctrl_c_during_embed_leaves_no_output() {
    let out_dir = tempfile::tempdir().unwrap();
    let prefix = out_dir.path().join("emb");
    // paths on stdin, never ending until the test closes it: the run is mid-way for sure
    let mut child = cmd()
        .args(["embed", "--model", &model(), "--device", "cpu", "--batch-size", "2", "--image", "-", "--format", "npy"])
        .arg("--output")
        .arg(&prefix)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let img = root().join("tests/fixtures/images/CLIP.png").display().to_string();
    {
        use std::io::Write;
        let stdin = child.stdin.as_mut().unwrap();
        for _ in 0..8 {
            writeln!(stdin, "{img}").unwrap();
        }
        stdin.flush().unwrap();
    }
    // let it write some batches
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert!(child.try_wait().unwrap().is_none(), "still running: stdin is open");
    let st = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(st.success());
    // the next batch notices
    {
        use std::io::Write;
        let stdin = child.stdin.as_mut().unwrap();
        for _ in 0..4 {
            let _ = writeln!(stdin, "{img}");
        }
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.contains("interrupted"), "{err}");
    let left: Vec<_> = std::fs::read_dir(out_dir.path()).unwrap().flatten().map(|e| e.path()).collect();
    assert!(left.is_empty(), "nothing written, no temporary files: {left:?}");
}
