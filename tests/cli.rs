//! The command line end to end on the tiny checkpoint: the `embed` JSON contract, `score`'s
//! outputs, exit statuses, and bad inputs reported while good ones are still processed.

mod common;
use common::reference::*;

use std::process::{Command, Output};

use serde_json::Value;

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_clip-wgpu"))
        .args(args)
        .env_remove("CLIP_WGPU_MODEL")
        .env("HF_HOME", "/nonexistent-hf-home")
        .output()
        .unwrap()
}

fn model() -> String {
    tiny_dir().join("hf").display().to_string()
}

fn img(name: &str) -> String {
    root().join("tests/fixtures/images").join(name).display().to_string()
}

#[test]
fn embed_json_contract() {
    let r = load(&tiny_dir().join("reference.json"));
    let bad = std::env::temp_dir().join(format!("clip-wgpu-cli-{}.png", std::process::id()));
    std::fs::write(&bad, b"\x89PNG\r\n\x1a\nbroken").unwrap();
    let bad = bad.display().to_string();
    let out = run(&[
        "embed",
        "--model",
        &model(),
        "--device",
        "cpu",
        "--image",
        &img("CLIP.png"),
        "--image",
        &bad,
        "--text",
        &r.texts[0],
        "--text",
        &r.texts[1],
        "--format",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(2), "some input failed → exit 2");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let images = v["images"].as_array().unwrap();
    assert_eq!(images.len(), 2);
    assert_eq!(images[0]["input"], img("CLIP.png"));
    assert_eq!(images[1]["input"], bad.as_str());
    assert!(images[1]["error"].as_str().unwrap().contains(&bad), "error names the input");
    assert!(images[1].get("embedding").is_none());
    assert!(String::from_utf8_lossy(&out.stderr).contains(&bad));

    // CLIP.png is the second real image of the reference
    let got: Vec<f32> = images[0]["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
    let want = &r.image_embeds[r.n_synthetic + 1];
    assert!(max_abs(&got, std::slice::from_ref(want)) <= 1e-5);
    let norm: f32 = got.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-5);

    let texts = v["texts"].as_array().unwrap();
    for (i, t) in texts.iter().enumerate() {
        assert_eq!(t["input"], r.texts[i].as_str());
        let got: Vec<f32> = t["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
        assert!(max_abs(&got, std::slice::from_ref(&r.text_embeds[i])) <= 1e-5, "text {i}");
    }
}

#[test]
fn score_json_and_table() {
    let r = load(&tiny_dir().join("reference.json"));
    let out = run(&[
        "score",
        "--model",
        &model(),
        "--image",
        &img("CLIP.png"),
        "--text",
        &r.texts[0],
        "--text",
        &r.texts[2],
        "--format",
        "json",
        "--mean",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let scores = v["scores"].as_array().unwrap();
    assert_eq!(scores.len(), 2);
    assert!(v["errors"].as_array().unwrap().is_empty());
    let scale = r.logit_scale.exp();
    let mut sum = 0.0;
    for (s, t) in scores.iter().zip([0, 2]) {
        assert_eq!(s["image"], img("CLIP.png"));
        assert_eq!(s["text"], r.texts[t].as_str());
        let want_logit = r.logits_per_image[r.n_synthetic + 1][t];
        let cos = s["cosine"].as_f64().unwrap() as f32;
        assert!((cos - want_logit / scale).abs() < 1e-5);
        assert!((s["logit"].as_f64().unwrap() as f32 - want_logit).abs() < 1e-4);
        assert!((s["score"].as_f64().unwrap() as f32 - 100.0 * cos.max(0.0)).abs() < 1e-4);
        sum += 100.0 * cos;
    }
    let mean = v["clipscore_torchmetrics"].as_f64().unwrap() as f32;
    assert!((mean - (sum / 2.0).max(0.0)).abs() < 1e-3);

    let out = run(&["score", "--model", &model(), "--image", &img("CLIP.png"), "--text", "a diagram"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.lines().next().unwrap().contains("score") && table.contains("a diagram"), "{table}");
}

#[test]
fn fatal_errors_exit_1_with_a_clear_message() {
    let out = run(&["score", "--image", "x.png", "--text", "y"]);
    assert_eq!(out.status.code(), Some(1));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("no model weights found") && e.contains("--model"), "{e}");

    let out = run(&["embed", "--model", "/nonexistent/model", "--text", "y"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/model"));

    let out = run(&["embed", "--model", &model(), "--device", "cpu", "--text", "y", "--batch-size", "0"]);
    assert_eq!(out.status.code(), Some(1));
}
