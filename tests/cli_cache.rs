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
