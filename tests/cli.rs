//! The command line end to end on the tiny checkpoint: the `embed` JSON contract, `score`'s
//! outputs, exit statuses, and bad inputs reported while good ones are still processed; every
//! format of `score`, `classify` and `embed` (.npy f32/f16 with its index), atomic `--output`.

mod common;
#[path = "common/npy.rs"]
mod npy;
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
    assert_eq!(out.status.code(), Some(1), "a usage error is fatal (1), not a failed input (2)");
    assert!(stderr(&out).contains("not a batch size"), "{}", stderr(&out));
    let out = run(&["embed", "--model", &model(), "--no-such-option"]);
    assert_eq!(out.status.code(), Some(1));
    let out = run(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
}

/// Reference embedding of a fixture image (`franz-kafka.jpg` or `CLIP.png`).
fn ref_image<'a>(r: &'a Reference, name: &str) -> &'a [f32] {
    let i = r.image_files.iter().position(|f| f.ends_with(name)).unwrap();
    &r.image_embeds[r.n_synthetic + i]
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The files in a directory, sorted.
fn listing(d: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(d).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

#[test]
fn score_every_format_and_atomic_output() {
    let r = load(&tiny_dir().join("reference.json"));
    let bad = img("corrupt_truncated.png");
    let base = [
        "score",
        "--model",
        &model(),
        "--device",
        "cpu",
        "--image",
        &img("CLIP.png"),
        "--image",
        &bad,
        "--image",
        &img("franz-kafka.jpg"),
        "--text",
        &r.texts[0],
        "--text",
        &r.texts[4],
        "--mean",
    ]
    .map(String::from);
    let want: Vec<(String, usize, f32)> = ["CLIP.png", "franz-kafka.jpg"]
        .iter()
        .flat_map(|i| [0, 4].map(|t| (img(i), t, dot(ref_image(&r, i), &r.text_embeds[t]))))
        .collect();
    let mean = (want.iter().map(|w| 100.0 * w.2).sum::<f32>() / 4.0).max(0.0);
    let check = |rows: Vec<(String, String, f32, f32, f32)>, what: &str| {
        assert_eq!(rows.len(), 4, "{what}");
        for (row, (i, t, cos)) in rows.iter().zip(&want) {
            assert_eq!((&row.0, &row.1), (i, &r.texts[*t]), "{what}");
            assert!((row.3 - cos).abs() < 1e-5, "{what}: cosine {} vs {cos}", row.3);
            assert!((row.2 - 100.0 * cos.max(0.0)).abs() < 1e-3, "{what}: score");
            assert!((row.4 - r.logit_scale.exp() * cos).abs() < 1e-4, "{what}: logit");
        }
    };
    let f = |v: &Value| v.as_f64().unwrap() as f32;
    let dir = tempfile::tempdir().unwrap();
    for format in ["json", "jsonl", "csv", "tsv", "table"] {
        let path = dir.path().join(format!("scores.{format}"));
        // a stale longer file at the destination is replaced whole
        std::fs::write(&path, "x".repeat(100_000)).unwrap();
        let mut args: Vec<String> = base.to_vec();
        args.extend(["--format", format, "--output"].map(String::from));
        args.push(path.display().to_string());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = run(&args);
        assert_eq!(out.status.code(), Some(2), "{format}: {}", stderr(&out));
        assert!(out.stdout.is_empty(), "--output: nothing on stdout");
        assert!(stderr(&out).contains(&bad), "{format}: the bad image is reported");
        let text = std::fs::read_to_string(&path).unwrap();
        match format {
            "json" => {
                let v: Value = serde_json::from_str(&text).unwrap();
                let rows = v["scores"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|s| {
                        let s0 = s["image"].as_str().unwrap().to_string();
                        (s0, s["text"].as_str().unwrap().to_string(), f(&s["score"]), f(&s["cosine"]), f(&s["logit"]))
                    })
                    .collect();
                check(rows, format);
                assert_eq!(v["errors"].as_array().unwrap().len(), 1);
                assert_eq!(v["errors"][0]["input"], bad.as_str());
                assert!((f(&v["clipscore_torchmetrics"]) - mean).abs() < 1e-3);
            }
            "jsonl" => {
                let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
                assert_eq!(lines.len(), 6, "4 scores, 1 error, the mean");
                let rows = lines
                    .iter()
                    .filter(|s| s.get("score").is_some())
                    .map(|s| {
                        let s0 = s["image"].as_str().unwrap().to_string();
                        (s0, s["text"].as_str().unwrap().to_string(), f(&s["score"]), f(&s["cosine"]), f(&s["logit"]))
                    })
                    .collect();
                check(rows, format);
                // the error comes in input order: after CLIP.png's rows
                assert_eq!(lines[2]["input"], bad.as_str());
                assert!(lines[2]["error"].as_str().unwrap().contains(&bad));
                assert!((f(&lines[5]["clipscore_torchmetrics"]) - mean).abs() < 1e-3);
            }
            "csv" | "tsv" => {
                let mut rd = csv::ReaderBuilder::new()
                    .delimiter(if format == "csv" { b',' } else { b'\t' })
                    .from_reader(text.as_bytes());
                let h = rd.headers().unwrap().clone();
                assert_eq!(h.iter().collect::<Vec<_>>(), ["image", "text", "score", "cosine", "logit", "error"]);
                let recs: Vec<csv::StringRecord> = rd.records().map(|x| x.unwrap()).collect();
                assert_eq!(recs.len(), 5);
                let p = |s: &str| s.parse::<f32>().unwrap();
                let rows = recs
                    .iter()
                    .filter(|x| x[5].is_empty())
                    .map(|x| (x[0].to_string(), x[1].to_string(), p(&x[2]), p(&x[3]), p(&x[4])))
                    .collect();
                check(rows, format);
                assert_eq!((&recs[2][0], &recs[2][2]), (bad.as_str(), ""));
                assert!(recs[2][5].contains(&bad));
                assert!(stderr(&out).contains("CLIPScore"), "--mean goes to stderr with csv/tsv");
            }
            _ => {
                let lines: Vec<&str> = text.lines().collect();
                assert!(lines[0].starts_with("image") && lines[0].contains("cosine"), "{text}");
                assert_eq!(lines.len(), 6, "{text}");
                let last: Vec<&str> = lines[4].split_whitespace().collect();
                let cos: f32 = last[last.len() - 2].parse().unwrap();
                assert!((cos - want[3].2).abs() < 1e-5, "{text}");
                assert!(lines[5].contains("CLIPScore"));
            }
        }
    }
    // complete files only, no temporary left behind
    assert_eq!(listing(dir.path()), ["scores.csv", "scores.json", "scores.jsonl", "scores.table", "scores.tsv"]);

    // an output directory that does not exist: fatal, nothing written
    let out = run(&[
        "score",
        "--model",
        &model(),
        "--image",
        &img("CLIP.png"),
        "--text",
        "x",
        "-o",
        "/nonexistent-dir/x.json",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("/nonexistent-dir/x.json"));
}

#[test]
fn classify_softmax_and_top_k() {
    let r = load(&tiny_dir().join("reference.json"));
    let dir = tempfile::tempdir().unwrap();
    // template "a photo of a {}" with dog and cat gives reference texts 0 and 1
    std::fs::write(dir.path().join("labels.txt"), "cat\n\n").unwrap();
    let labels_file = dir.path().join("labels.txt").display().to_string();
    let scale = r.logit_scale.exp();
    let expect = |name: &str| -> Vec<(&str, f32, f32)> {
        let e = ref_image(&r, name);
        let logits = [scale * dot(e, &r.text_embeds[0]), scale * dot(e, &r.text_embeds[1])];
        let m = logits[0].max(logits[1]);
        let z = (logits[0] - m).exp() + (logits[1] - m).exp();
        let mut v = vec![("dog", (logits[0] - m).exp() / z, logits[0]), ("cat", (logits[1] - m).exp() / z, logits[1])];
        v.sort_by(|a, b| b.1.total_cmp(&a.1));
        v
    };
    let bad = img("corrupt_header_only.jpg");
    let args = |format: &str, k: &str| -> Vec<String> {
        [
            "classify",
            "--model",
            &model(),
            "--device",
            "cpu",
            "--image",
            &img("franz-kafka.jpg"),
            "--image",
            &bad,
            "--image",
            &img("CLIP.png"),
            "--label",
            "dog",
            "--labels-from",
            &labels_file,
            "--template",
            "a photo of a {}",
            "--top-k",
            k,
            "--format",
            format,
        ]
        .map(String::from)
        .to_vec()
    };
    let exec = |a: Vec<String>| run(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let out = exec(args("json", "5"));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    for (res, name) in results.iter().zip(["franz-kafka.jpg", "CLIP.png"]) {
        assert_eq!(res["image"], img(name));
        let top = res["top"].as_array().unwrap();
        assert_eq!(top.len(), 2, "top-k is at most the number of labels");
        for (t, (label, prob, logit)) in top.iter().zip(expect(name)) {
            assert_eq!(t["label"], label);
            assert!((t["prob"].as_f64().unwrap() as f32 - prob).abs() < 1e-5, "{t} vs {prob}");
            assert!((t["logit"].as_f64().unwrap() as f32 - logit).abs() < 1e-4);
        }
        let sum: f64 = top.iter().map(|t| t["prob"].as_f64().unwrap()).sum();
        assert!((sum - 1.0).abs() < 1e-5);
    }
    assert_eq!(v["errors"][0]["input"], bad.as_str());
    assert_eq!(v["template"], "a photo of a {}");

    let out = exec(args("jsonl", "1"));
    let lines: Vec<Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[1]["input"], bad.as_str());
    assert_eq!(lines[2]["top"].as_array().unwrap().len(), 1);
    assert_eq!(lines[2]["top"][0]["label"], expect("CLIP.png")[0].0);

    let out = exec(args("csv", "2"));
    let mut rd = csv::Reader::from_reader(out.stdout.as_slice());
    assert_eq!(
        rd.headers().unwrap().iter().collect::<Vec<_>>(),
        ["image", "rank", "label", "prob", "logit", "cosine", "error"]
    );
    let recs: Vec<csv::StringRecord> = rd.records().map(|x| x.unwrap()).collect();
    assert_eq!(recs.len(), 5, "2 ranks × 2 images + 1 error");
    assert_eq!((&recs[0][1], &recs[0][2]), ("1", expect("franz-kafka.jpg")[0].0));
    let p: f32 = recs[4][3].parse().unwrap();
    assert!((p - expect("CLIP.png")[1].1).abs() < 1e-5);

    let out = exec(args("table", "2"));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.lines().next().unwrap().contains("prob") && table.lines().count() == 5, "{table}");

    // the default template is applied: "a photo of a {}."
    let out =
        run(&["classify", "--model", &model(), "--image", &img("CLIP.png"), "--label", "dog", "--format", "json"]);
    assert_eq!(out.status.code(), Some(0));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["template"], "a photo of a {}.");
    assert!((v["results"][0]["top"][0]["prob"].as_f64().unwrap() - 1.0).abs() < 1e-6);
}

#[test]
fn embed_npy_safetensors_with_index_and_jsonl() {
    let r = load(&tiny_dir().join("reference.json"));
    let dir = tempfile::tempdir().unwrap();
    let bad = img("corrupt_zero_width.png");
    let want: Vec<Vec<f32>> = vec![
        ref_image(&r, "CLIP.png").to_vec(),
        ref_image(&r, "franz-kafka.jpg").to_vec(),
        r.text_embeds[0].clone(),
        r.text_embeds[6].clone(),
    ];
    for (format, dtype, tol) in
        [("npy", "f32", 1e-5f32), ("npy", "f16", 1e-3), ("safetensors", "f32", 1e-5), ("safetensors", "f16", 1e-3)]
    {
        let prefix = dir.path().join(format!("emb-{format}-{dtype}"));
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
            "--image",
            &img("franz-kafka.jpg"),
            "--text",
            &r.texts[0],
            "--text",
            &r.texts[6],
            "--format",
            format,
            "--dtype",
            dtype,
            "--output",
            &prefix.display().to_string(),
        ]);
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(stderr(&out).contains(&bad));
        let got = if format == "npy" {
            let a = npy::Npy::read(prefix.with_extension("npy")).unwrap();
            assert_eq!(a.shape, [4, 16]);
            assert!(matches!((&a.data, dtype), (npy::NpyData::F32(_), "f32") | (npy::NpyData::F16(_), "f16")));
            a.to_f32()
        } else {
            let bytes = std::fs::read(prefix.with_extension("safetensors")).unwrap();
            let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
            let t = st.tensor("embeddings").unwrap();
            assert_eq!(t.shape(), [4, 16]);
            match dtype {
                "f32" => {
                    assert_eq!(t.dtype(), safetensors::Dtype::F32);
                    t.data().chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
                }
                _ => {
                    assert_eq!(t.dtype(), safetensors::Dtype::F16);
                    t.data().chunks(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect::<Vec<f32>>()
                }
            }
        };
        assert!(max_abs(&got, &want) <= tol, "{format} {dtype}");
        let index: Vec<Value> = std::fs::read_to_string(prefix.with_extension("jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let expect = [
            (Some(0), img("CLIP.png"), "image"),
            (None, bad.clone(), "image"),
            (Some(1), img("franz-kafka.jpg"), "image"),
            (Some(2), r.texts[0].clone(), "text"),
            (Some(3), r.texts[6].clone(), "text"),
        ];
        assert_eq!(index.len(), expect.len());
        for (l, (row, input, kind)) in index.iter().zip(expect) {
            assert_eq!(l["row"].as_u64(), row);
            assert_eq!((l["input"].as_str().unwrap(), l["kind"].as_str().unwrap()), (input.as_str(), kind));
            assert_eq!(l.get("error").is_some(), row.is_none(), "{l}");
        }
    }
    assert_eq!(
        listing(dir.path()),
        [
            "emb-npy-f16.jsonl",
            "emb-npy-f16.npy",
            "emb-npy-f32.jsonl",
            "emb-npy-f32.npy",
            "emb-safetensors-f16.jsonl",
            "emb-safetensors-f16.safetensors",
            "emb-safetensors-f32.jsonl",
            "emb-safetensors-f32.safetensors"
        ]
    );

    // npy needs an output prefix
    let out = run(&["embed", "--model", &model(), "--text", "x", "--format", "npy"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--output"));

    // jsonl: one line per input, images then texts
    let out = run(&[
        "embed",
        "--model",
        &model(),
        "--image",
        &img("franz-kafka.jpg"),
        "--text",
        &r.texts[2],
        "--format",
        "jsonl",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let lines: Vec<Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    assert_eq!((&lines[0]["kind"], &lines[1]["kind"]), (&Value::from("image"), &Value::from("text")));
    let e: Vec<f32> = lines[1]["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
    assert!(max_abs(&e, std::slice::from_ref(&r.text_embeds[2])) <= 1e-5);
}

#[test]
fn usage_errors_exit_1() {
    let m = model();
    let cases: Vec<Vec<&str>> = vec![
        vec!["score", "--model", &m, "--text", "x"],
        vec!["score", "--model", &m, "--image", "a.png"],
        vec!["score", "--model", &m, "--image", "a.png", "--texts-from", "/nonexistent/texts.txt"],
        vec!["classify", "--model", &m, "--image", "a.png"],
        vec!["classify", "--model", &m, "--image", "a.png", "--label", "x", "--template", "no slot"],
        vec!["classify", "--model", &m, "--image", "a.png", "--label", "x", "--top-k", "0"],
    ];
    for c in cases {
        let out = run(&c);
        assert_eq!(out.status.code(), Some(1), "{c:?}");
        assert!(stderr(&out).contains("error"), "{c:?}");
    }
}
