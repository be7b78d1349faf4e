//! The command line's inputs end to end on the tiny checkpoint: directories (with corrupt files
//! in them), globs, path lists, stdin, pairs files (CSV, TSV, JSONL) and the threshold filter.
//! Every score is checked against transformers' embeddings (tests/fixtures/tiny/reference.json).

mod common;
use common::reference::*;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn run_in(dir: Option<&Path>, stdin: Option<&str>, args: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_clip-wgpu"));
    c.args(args)
        .env_remove("CLIP_WGPU_MODEL")
        .env("CLIP_WGPU_DEVICE", "cpu")
        .env("HF_HOME", "/nonexistent-hf-home")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(d) = dir {
        c.current_dir(d);
    }
    let mut child = c.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

fn run(args: &[&str]) -> Output {
    run_in(None, None, args)
}

fn model() -> String {
    tiny_dir().join("hf").display().to_string()
}

fn img(name: &str) -> PathBuf {
    root().join("tests/fixtures/images").join(name)
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    })
}

/// Reference cosine of a fixture image (`franz-kafka.jpg` or `CLIP.png`) and reference text `t`.
fn ref_cos(r: &Reference, image: &str, t: usize) -> f32 {
    let i = r.image_files.iter().position(|f| f.ends_with(image)).unwrap();
    let e = &r.image_embeds[r.n_synthetic + i];
    e.iter().zip(&r.text_embeds[t]).map(|(a, b)| a * b).sum()
}

/// Checks one score record against the reference: cosine, score = 100·max(cos,0), logit.
fn check_score(r: &Reference, s: &Value, image: &str, t: usize) {
    let want = ref_cos(r, image, t);
    let cos = s["cosine"].as_f64().unwrap() as f32;
    assert!((cos - want).abs() < 1e-5, "{s}: cosine {cos} vs {want}");
    assert!((s["score"].as_f64().unwrap() as f32 - 100.0 * want.max(0.0)).abs() < 1e-3, "{s}");
    assert!((s["logit"].as_f64().unwrap() as f32 - r.logit_scale.exp() * want).abs() < 1e-4, "{s}");
    assert_eq!(s["text"], r.texts[t].as_str());
}

fn link_or_copy(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    std::fs::copy(from, to).unwrap();
}

/// A directory tree with good images, corrupt ones and files that are not images.
fn tree() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    link_or_copy(&img("CLIP.png"), &p.join("CLIP.png"));
    link_or_copy(&img("franz-kafka.jpg"), &p.join("sub/deeper/franz-kafka.jpg"));
    link_or_copy(&img("corrupt_truncated.jpg"), &p.join("sub/corrupt_truncated.jpg"));
    link_or_copy(&img("corrupt_empty.png"), &p.join("corrupt_empty.png"));
    link_or_copy(&img("corrupt_text.txt"), &p.join("notes.txt"));
    link_or_copy(&img("corrupt_random.bin"), &p.join("sub/random.bin"));
    d
}

#[test]
fn directory_with_corrupt_files() {
    let r = load(&tiny_dir().join("reference.json"));
    let d = tree();
    let dir = d.path().display().to_string();
    let out = run(&[
        "score",
        "--model",
        &model(),
        "--image",
        &dir,
        "--text",
        &r.texts[0],
        "--text",
        &r.texts[2],
        "--format",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(2), "corrupt files → exit 2: {}", String::from_utf8_lossy(&out.stderr));
    let v = json(&out);
    let scores = v["scores"].as_array().unwrap();
    // sorted: CLIP.png, then sub/deeper/franz-kafka.jpg; each against both texts in order
    let want = [("CLIP.png", 0), ("CLIP.png", 2), ("sub/deeper/franz-kafka.jpg", 0), ("sub/deeper/franz-kafka.jpg", 2)];
    assert_eq!(scores.len(), want.len(), "{v}");
    for (s, (name, t)) in scores.iter().zip(want) {
        assert_eq!(s["image"], d.path().join(name).display().to_string());
        check_score(&r, s, Path::new(name).file_name().unwrap().to_str().unwrap(), t);
    }
    // the two corrupt images are errors, in sorted order; .txt and .bin are not images: skipped
    let errors = v["errors"].as_array().unwrap();
    let inputs: Vec<&str> = errors.iter().map(|e| e["input"].as_str().unwrap()).collect();
    let bad = [d.path().join("corrupt_empty.png"), d.path().join("sub/corrupt_truncated.jpg")];
    assert_eq!(inputs, bad.iter().map(|p| p.to_str().unwrap()).collect::<Vec<_>>());
    let stderr = String::from_utf8_lossy(&out.stderr);
    for (e, b) in errors.iter().zip(&bad) {
        assert!(e["error"].as_str().unwrap().contains(b.to_str().unwrap()), "{e}");
        assert!(stderr.contains(b.to_str().unwrap()), "reported on stderr: {stderr}");
    }
    assert!(!stderr.contains("notes.txt") && !stderr.contains("random.bin"));

    // a batch size of 1 streams the same result
    let out1 = run(&[
        "score",
        "--model",
        &model(),
        "--image",
        &dir,
        "--text",
        &r.texts[0],
        "--text",
        &r.texts[2],
        "--format",
        "json",
        "--batch-size",
        "1",
    ]);
    assert_eq!(out1.status.code(), Some(2));
    assert_eq!(json(&out1), v);
}

#[test]
fn globs_lists_and_stdin() {
    let r = load(&tiny_dir().join("reference.json"));
    let d = tree();
    let p = d.path();
    // a glob (quoted: expanded by clip-wgpu), relative to the working directory
    let out = run_in(
        Some(p),
        None,
        &[
            "score",
            "--model",
            &model(),
            "--image",
            "**/*.jpg",
            "--image",
            "nothing*.png",
            "--text",
            &r.texts[0],
            "--format",
            "json",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    let v = json(&out);
    let images: Vec<&str> = v["scores"].as_array().unwrap().iter().map(|s| s["image"].as_str().unwrap()).collect();
    assert_eq!(images, ["sub/deeper/franz-kafka.jpg"]);
    check_score(&r, &v["scores"][0], "franz-kafka.jpg", 0);
    let errors: Vec<&str> = v["errors"].as_array().unwrap().iter().map(|e| e["input"].as_str().unwrap()).collect();
    assert_eq!(errors, ["sub/corrupt_truncated.jpg", "nothing*.png"], "{v}");
    assert!(v["errors"][1]["error"].as_str().unwrap().contains("no image file matches"));

    // --images-from and `-` (stdin): one path per line, empty lines skipped, directories expanded
    std::fs::write(p.join("list.txt"), format!("{}\n\n{}\r\n", img("CLIP.png").display(), "missing.png")).unwrap();
    std::fs::write(p.join("texts.txt"), format!("{}\n\n{}\n", r.texts[0], r.texts[4])).unwrap();
    let out = run_in(
        Some(p),
        Some(&format!("{}\nsub/deeper\n", img("franz-kafka.jpg").display())),
        &[
            "score",
            "--model",
            &model(),
            "--image",
            "-",
            "--images-from",
            "list.txt",
            "--texts-from",
            "texts.txt",
            "--format",
            "json",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    let v = json(&out);
    let scores = v["scores"].as_array().unwrap();
    let got: Vec<(String, String)> = scores
        .iter()
        .map(|s| (s["image"].as_str().unwrap().to_string(), s["text"].as_str().unwrap().to_string()))
        .collect();
    let (kafka, clip) = (img("franz-kafka.jpg").display().to_string(), img("CLIP.png").display().to_string());
    let mut want = Vec::new();
    for i in [&kafka, &"sub/deeper/franz-kafka.jpg".to_string(), &clip] {
        for t in [0, 4] {
            want.push((i.clone(), r.texts[t].clone()));
        }
    }
    assert_eq!(got, want);
    for (s, t) in scores.iter().zip([0, 4, 0, 4, 0, 4]) {
        let name = if s["image"].as_str().unwrap().ends_with("CLIP.png") { "CLIP.png" } else { "franz-kafka.jpg" };
        check_score(&r, s, name, t);
    }
    assert_eq!(v["errors"][0]["input"], "missing.png");
    assert_eq!(v["errors"].as_array().unwrap().len(), 1);
}

/// Writes a pairs file in `dir` and returns its name.
fn pairs_files(dir: &Path, r: &Reference) -> Vec<&'static str> {
    let (clip, kafka) = (img("CLIP.png").display().to_string(), img("franz-kafka.jpg").display().to_string());
    // r.texts[4] has a comma: quoted in CSV
    let csv = format!(
        "id,image,caption\n1,{clip},{}\n2,{kafka},\"{}\"\n3,missing.png,{}\n4,,{}\n",
        r.texts[0], r.texts[4], r.texts[1], r.texts[2]
    );
    std::fs::write(dir.join("pairs.csv"), csv).unwrap();
    let tsv = format!(
        "image\ttext\n{clip}\t{}\n{kafka}\t{}\nmissing.png\t{}\n\t{}\n",
        r.texts[0], r.texts[4], r.texts[1], r.texts[2]
    );
    std::fs::write(dir.join("pairs.tsv"), tsv).unwrap();
    let j = |i: &str, t: &str| serde_json::json!({"image": i, "text": t}).to_string();
    let jsonl = format!(
        "{}\n{}\n\n{}\n{{\"text\": \"no image\"}}\n",
        j(&clip, &r.texts[0]),
        serde_json::json!({"image": kafka, "caption": r.texts[4]}),
        j("missing.png", &r.texts[1])
    );
    std::fs::write(dir.join("pairs.jsonl"), jsonl).unwrap();
    vec!["pairs.csv", "pairs.tsv", "pairs.jsonl"]
}

#[test]
fn pairs_csv_tsv_jsonl() {
    let r = load(&tiny_dir().join("reference.json"));
    let d = tempfile::tempdir().unwrap();
    for f in pairs_files(d.path(), &r) {
        let out =
            run_in(Some(d.path()), None, &["score", "--model", &model(), "--pairs", f, "--format", "json", "--mean"]);
        assert_eq!(out.status.code(), Some(2), "{f}: {}", String::from_utf8_lossy(&out.stderr));
        let v = json(&out);
        let scores = v["scores"].as_array().unwrap();
        assert_eq!(scores.len(), 2, "{f}: {v}");
        check_score(&r, &scores[0], "CLIP.png", 0);
        check_score(&r, &scores[1], "franz-kafka.jpg", 4);
        let errors = v["errors"].as_array().unwrap();
        assert_eq!(errors.len(), 2, "{f}: {v}");
        assert_eq!(errors[0]["input"], "missing.png");
        assert_eq!(errors[0]["text"], r.texts[1].as_str(), "the pair's text comes with its error");
        // the row without an image: named FILE:LINE
        assert_eq!(errors[1]["input"], format!("{f}:5"), "{f}");
        let mean = (100.0 * (ref_cos(&r, "CLIP.png", 0) + ref_cos(&r, "franz-kafka.jpg", 4)) / 2.0).max(0.0);
        assert!((v["clipscore_torchmetrics"].as_f64().unwrap() as f32 - mean).abs() < 1e-3, "{v}");
    }

    // fatal: no such file, no usable columns, unknown extension
    std::fs::write(d.path().join("bad.csv"), "path,words\na.png,x\n").unwrap();
    std::fs::write(d.path().join("pairs.txt"), "x").unwrap();
    for f in ["nope.csv", "bad.csv", "pairs.txt"] {
        let out = run_in(Some(d.path()), None, &["score", "--model", &model(), "--pairs", f]);
        assert_eq!(out.status.code(), Some(1), "{f}");
        assert!(String::from_utf8_lossy(&out.stderr).contains(f));
    }
    // --pairs excludes --image/--text
    let out = run_in(Some(d.path()), None, &["score", "--model", &model(), "--pairs", "pairs.csv", "--text", "x"]);
    assert_ne!(out.status.code(), Some(0));
}

#[test]
fn threshold_keeps_one_side() {
    let r = load(&tiny_dir().join("reference.json"));
    let d = tempfile::tempdir().unwrap();
    pairs_files(d.path(), &r);
    let s = [100.0 * ref_cos(&r, "CLIP.png", 0).max(0.0), 100.0 * ref_cos(&r, "franz-kafka.jpg", 4).max(0.0)];
    // a threshold between the two scores
    let t = (s[0] + s[1]) / 2.0;
    let (hi, lo) = if s[0] > s[1] { ("CLIP.png", "franz-kafka.jpg") } else { ("franz-kafka.jpg", "CLIP.png") };
    for (keep, want) in [("above", hi), ("below", lo)] {
        let out = run_in(
            Some(d.path()),
            None,
            &[
                "score",
                "--model",
                &model(),
                "--pairs",
                "pairs.jsonl",
                "--threshold",
                &t.to_string(),
                "--keep",
                keep,
                "--format",
                "json",
                "--mean",
            ],
        );
        assert_eq!(out.status.code(), Some(2));
        let v = json(&out);
        let scores = v["scores"].as_array().unwrap();
        assert_eq!(scores.len(), 1, "{keep}: {v}");
        assert!(scores[0]["image"].as_str().unwrap().ends_with(want), "{keep}: {v}");
        assert_eq!((v["kept"].as_u64(), v["dropped"].as_u64()), (Some(1), Some(1)));
        // the mean is over every scored pair, before the filter
        assert!((v["clipscore_torchmetrics"].as_f64().unwrap() as f32 - (s[0] + s[1]) / 2.0).abs() < 1e-3);
    }
    // the default keeps what is at least T
    let out = run_in(
        Some(d.path()),
        None,
        &["score", "--model", &model(), "--pairs", "pairs.csv", "--threshold", "0", "--format", "jsonl"],
    );
    let lines: Vec<Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.iter().filter(|l| l.get("score").is_some()).count(), 2);
    // --keep needs --threshold
    let out = run_in(Some(d.path()), None, &["score", "--model", &model(), "--pairs", "pairs.csv", "--keep", "below"]);
    assert_ne!(out.status.code(), Some(0));
}
