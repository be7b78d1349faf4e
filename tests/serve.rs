//! `clip-wgpu serve` end to end: the built binary on a free port with the tiny checkpoint,
//! spoken to over plain TCP. Every embedding answered equals (≤ 1e-6) what `clip-wgpu embed`
//! gives for the same inputs, on the CPU and on lavapipe; bad requests (the corpus in
//! tests/fixtures/bad/requests) get a 4xx naming the problem, and the server stays healthy;
//! the API key; graceful shutdown on SIGTERM.
#![cfg(feature = "server")]

mod common;
use common::reference::*;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};

const TOL: f32 = 1e-6;

/// A running server; killed when dropped.
struct Server {
    child: Child,
    addr: SocketAddr,
    stderr: mpsc::Receiver<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn model() -> String {
    tiny_dir().join("hf").display().to_string()
}

fn img_path(name: &str) -> String {
    root().join("tests/fixtures/images").join(name).display().to_string()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn data_url(name: &str) -> String {
    let bytes = std::fs::read(img_path(name)).unwrap();
    let mime = if name.ends_with(".png") { "image/png" } else { "image/jpeg" };
    format!("data:{mime};base64,{}", b64(&bytes))
}

/// Starts `clip-wgpu serve` on port 0 and waits (bounded) for its `listening on` line.
fn start(device: &str, extra: &[&str]) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_clip-wgpu"))
        .args(["serve", "--model", &model(), "--device", device, "--host", "127.0.0.1", "--port", "0"])
        .args(extra)
        .env_remove("CLIP_WGPU_API_KEY")
        .env_remove("CLIP_WGPU_MODEL")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let t0 = Instant::now();
    let mut seen = Vec::new();
    loop {
        let left = Duration::from_secs(120).saturating_sub(t0.elapsed());
        match rx.recv_timeout(left) {
            Ok(line) => {
                if let Some(a) = line.strip_prefix("listening on http://") {
                    let addr = a.trim().parse().unwrap();
                    return Server { child, addr, stderr: rx };
                }
                seen.push(line);
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the server did not start within 120 s; stderr: {seen:#?}");
            }
        }
    }
}

struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Parses one HTTP/1.1 response read to the end of the connection.
fn parse_response(raw: &[u8]) -> Resp {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or_else(|| {
        panic!("no complete response head: {:?}", String::from_utf8_lossy(raw));
    });
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> =
        lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_string(), v.trim().to_string())).collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked =
        headers.iter().any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked"));
    if chunked {
        let mut out = Vec::new();
        let mut rest = &body[..];
        loop {
            let eol = rest.windows(2).position(|w| w == b"\r\n").unwrap();
            let n = usize::from_str_radix(std::str::from_utf8(&rest[..eol]).unwrap().trim(), 16).unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&rest[eol + 2..eol + 2 + n]);
            rest = &rest[eol + 2 + n + 2..];
        }
        body = out;
    }
    Resp { status, headers, body }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(120))).unwrap();
    s
}

/// One request on its own connection (`Connection: close`); the raw body as given.
fn request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
    let mut s = connect(addr);
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    s.write_all(head.as_bytes()).unwrap();
    // the server may answer (413) and close before the whole body is sent
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    parse_response(&raw)
}

fn post(addr: SocketAddr, path: &str, body: &Value) -> Resp {
    request(addr, "POST", path, &[("Content-Type", "application/json")], body.to_string().as_bytes())
}

fn get(addr: SocketAddr, path: &str) -> Resp {
    request(addr, "GET", path, &[], b"")
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

const IMAGES: [&str; 3] = ["CLIP.png", "franz-kafka.jpg", "gray_q85_400x300.jpg"];

/// `clip-wgpu embed` on the same inputs: the reference (image embeddings, text embeddings).
fn cli_embed(device: &str, texts: &[&str]) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_clip-wgpu"));
    c.args(["embed", "--model", &model(), "--device", device, "--format", "json", "--quiet"]);
    for i in IMAGES {
        c.args(["--image", &img_path(i)]);
    }
    for t in texts {
        c.args(["--text", t]);
    }
    let out = c.env_remove("CLIP_WGPU_MODEL").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = |k: &str| v[k].as_array().unwrap().iter().map(|x| floats(&x["embedding"])).collect();
    (rows("images"), rows("texts"))
}

fn gpu_available() -> bool {
    let out = Command::new(env!("CARGO_BIN_EXE_clip-wgpu"))
        .args(["embed", "--model", &model(), "--device", "gpu", "--text", "probe", "--quiet"])
        .output()
        .unwrap();
    if out.status.success() {
        return true;
    }
    if std::env::var("CLIP_WGPU_REQUIRE_GPU").is_ok_and(|v| v == "1") {
        panic!("CLIP_WGPU_REQUIRE_GPU=1 but the GPU path fails: {}", String::from_utf8_lossy(&out.stderr));
    }
    eprintln!("skipping the GPU half: no usable adapter");
    false
}

/// Every endpoint's embeddings and scores against `clip-wgpu embed` on `device`.
fn endpoints_match_cli(device: &str) {
    let texts = ["a photo of a dog", "a photo of a cat", "A DIAGRAM of CLIP"];
    let (ref_img, ref_txt) = cli_embed(device, &texts);
    let srv = start(device, &["--max-batch", "2"]);
    let a = srv.addr;
    assert_eq!(get(a, "/health").status, 200);

    // /embed: base64 and data URLs; a broken image fails in place
    let mut images: Vec<Value> = IMAGES.iter().map(|i| json!(b64(&std::fs::read(img_path(i)).unwrap()))).collect();
    images[1] = json!(data_url(IMAGES[1]));
    images.push(json!(b64(b"\x89PNG\r\n\x1a\nbroken")));
    let r = post(a, "/embed", &json!({"images": images, "texts": texts}));
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    let got = v["images"].as_array().unwrap();
    assert_eq!(got.len(), 4);
    for (i, want) in ref_img.iter().enumerate() {
        assert_eq!(got[i]["input"], json!(i));
        let d = max_diff(&floats(&got[i]["embedding"]), want);
        assert!(d <= TOL, "/embed image {i} differs from the CLI by {d}");
    }
    assert_eq!(got[3]["input"], json!(3));
    let err = got[3]["error"].as_str().unwrap();
    assert!(err.contains("images[3]"), "the error names the image: {err}");
    for (i, want) in ref_txt.iter().enumerate() {
        assert_eq!(v["texts"][i]["input"], json!(texts[i]));
        let d = max_diff(&floats(&v["texts"][i]["embedding"]), want);
        assert!(d <= TOL, "/embed text {i} differs from the CLI by {d}");
    }

    // /v1/embeddings: mixed images and texts, float and base64
    let input = json!([texts[0], data_url(IMAGES[0]), texts[1], data_url(IMAGES[2])]);
    let want = [&ref_txt[0], &ref_img[0], &ref_txt[1], &ref_img[2]];
    for fmt in ["float", "base64"] {
        let r = post(a, "/v1/embeddings", &json!({"model": "tiny", "input": input, "encoding_format": fmt}));
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json();
        assert_eq!(v["object"], "list");
        assert_eq!(v["model"], "tiny");
        let data = v["data"].as_array().unwrap();
        assert_eq!(data.len(), 4);
        for (i, w) in want.iter().enumerate() {
            assert_eq!(data[i]["index"], json!(i));
            assert_eq!(data[i]["object"], "embedding");
            let e = if fmt == "float" {
                floats(&data[i]["embedding"])
            } else {
                let raw =
                    base64::engine::general_purpose::STANDARD.decode(data[i]["embedding"].as_str().unwrap()).unwrap();
                raw.chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
            };
            let d = max_diff(&e, w);
            assert!(d <= TOL, "/v1/embeddings ({fmt}) item {i} differs from the CLI by {d}");
            let norm: f32 = e.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-4, "not L2-normalised: {norm}");
        }
        // the texts' tokens: "a photo of a dog" is SOT + 5 + EOT, as is "a photo of a cat"
        assert_eq!(v["usage"]["prompt_tokens"], json!(14));
    }
    // a single string
    let r = post(a, "/v1/embeddings", &json!({"model": "m", "input": texts[2]}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(max_diff(&floats(&r.json()["data"][0]["embedding"]), &ref_txt[2]) <= TOL);

    // /score: every image × every text, with the CLI's cosine, score and logit
    let scale = load(&tiny_dir().join("reference.json")).logit_scale.exp();
    let images: Vec<Value> = IMAGES.iter().map(|i| json!(data_url(i))).collect();
    let r = post(a, "/score", &json!({"images": images, "texts": texts}));
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    let scores = v["scores"].as_array().unwrap();
    assert_eq!(scores.len(), IMAGES.len() * texts.len());
    assert_eq!(v["errors"], json!([]));
    for s in scores {
        let (i, t) = (s["image"].as_u64().unwrap() as usize, s["text"].as_str().unwrap());
        let j = texts.iter().position(|x| *x == t).unwrap();
        let c: f32 = ref_img[i].iter().zip(&ref_txt[j]).map(|(x, y)| x * y).sum();
        let got = s["cosine"].as_f64().unwrap() as f32;
        assert!((got - c).abs() <= 1e-5, "cosine {got} vs {c}");
        assert!((s["score"].as_f64().unwrap() as f32 - 100.0 * c.max(0.0)).abs() <= 1e-3);
        assert!((s["logit"].as_f64().unwrap() as f32 - scale * c).abs() <= 1e-3 * scale.max(1.0));
    }

    // /classify: softmax over the labels through the template
    let labels = ["dog", "cat", "diagram"];
    let r = post(a, "/classify", &json!({"images": [data_url(IMAGES[0])], "labels": labels, "top_k": 2}));
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    let prompts: Vec<String> = labels.iter().map(|l| format!("a photo of a {l}.")).collect();
    let prompts: Vec<&str> = prompts.iter().map(String::as_str).collect();
    let (_, ptxt) = cli_embed(device, &prompts);
    let logits: Vec<f32> =
        ptxt.iter().map(|t| scale * ref_img[0].iter().zip(t).map(|(x, y)| x * y).sum::<f32>()).collect();
    let probs = clip_wgpu::softmax(&logits);
    let top = v["results"][0]["top"].as_array().unwrap();
    assert_eq!(top.len(), 2);
    let best = (0..3).max_by(|&x, &y| probs[x].total_cmp(&probs[y])).unwrap();
    assert_eq!(top[0]["label"], labels[best]);
    assert!((top[0]["prob"].as_f64().unwrap() as f32 - probs[best]).abs() <= 1e-5);

    // multipart: image files and text fields
    let boundary = "clipwgpuboundary";
    let mut body = Vec::new();
    for name in &IMAGES[..2] {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes(),
        );
        body.extend_from_slice(&std::fs::read(img_path(name)).unwrap());
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"text\"\r\n\r\n{}\r\n", texts[1]).as_bytes(),
    );
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    let ct = format!("multipart/form-data; boundary={boundary}");
    let r = request(a, "POST", "/embed", &[("Content-Type", &ct)], &body);
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    for i in 0..2 {
        assert!(max_diff(&floats(&v["images"][i]["embedding"]), &ref_img[i]) <= TOL, "multipart image {i}");
    }
    assert!(max_diff(&floats(&v["texts"][0]["embedding"]), &ref_txt[1]) <= TOL, "multipart text");

    // the metrics saw batches of both towers
    let m = get(a, "/metrics").text();
    for needle in [
        "clip_wgpu_batch_size_count{tower=\"image\"}",
        "clip_wgpu_batch_size_bucket{tower=\"text\",le=\"1\"}",
        "clip_wgpu_requests_total{endpoint=\"/embed\",status=\"200\"}",
        "clip_wgpu_queue_depth{tower=\"image\"} 0",
        "clip_wgpu_cache_hits_total",
        "clip_wgpu_info{engine=",
    ] {
        assert!(m.contains(needle), "/metrics lacks {needle}:\n{m}");
    }
    let count = |name: &str| -> f64 {
        m.lines().find(|l| l.starts_with(name)).and_then(|l| l.rsplit(' ').next()).unwrap().parse().unwrap()
    };
    // --max-batch 2: the 4 images of /embed went as at least two batches
    assert!(count("clip_wgpu_batch_size_count{tower=\"image\"}") >= 2.0);
    assert!(
        count("clip_wgpu_batch_size_bucket{tower=\"image\",le=\"2\"}")
            == count("clip_wgpu_batch_size_count{tower=\"image\"}")
    );
}

#[test]
fn endpoints_match_the_cli_on_the_cpu() {
    endpoints_match_cli("cpu");
}

#[test]
fn endpoints_match_the_cli_on_the_gpu() {
    if gpu_available() {
        endpoints_match_cli("gpu");
    }
}

#[test]
fn api_key_guards_everything_but_health() {
    let srv = start("cpu", &["--api-key", "s3cret"]);
    let a = srv.addr;
    assert_eq!(get(a, "/health").status, 200);
    let body = json!({"model": "m", "input": "a dog"}).to_string();
    let r = request(a, "POST", "/v1/embeddings", &[("Content-Type", "application/json")], body.as_bytes());
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"]["type"], "authentication_error");
    assert_eq!(r.header("WWW-Authenticate"), Some("Bearer"));
    let r = request(
        a,
        "POST",
        "/v1/embeddings",
        &[("Content-Type", "application/json"), ("Authorization", "Bearer wrong")],
        body.as_bytes(),
    );
    assert_eq!(r.status, 401);
    assert_eq!(request(a, "GET", "/metrics", &[("Authorization", "Bearer s3cre")], b"").status, 401);
    let r = request(
        a,
        "POST",
        "/v1/embeddings",
        &[("Content-Type", "application/json"), ("Authorization", "Bearer s3cret")],
        body.as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(request(a, "GET", "/metrics", &[("Authorization", "Bearer s3cret")], b"").status, 200);
}

/// A bad request of the corpus: what it is and the statuses it may get.
#[derive(serde::Deserialize)]
struct BadCase {
    name: String,
    #[serde(default = "default_method")]
    method: String,
    path: String,
    #[serde(default = "default_ct")]
    content_type: String,
    /// the body: a file next to the manifest, or made by the test (`generate`)
    #[serde(default)]
    file: Option<String>,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    generate: Option<String>,
    expect: Vec<u16>,
    /// words the error message must contain
    #[serde(default)]
    mentions: Vec<String>,
}

fn default_method() -> String {
    "POST".into()
}
fn default_ct() -> String {
    "application/json".into()
}

fn generated(kind: &str) -> Vec<u8> {
    match kind {
        // 100,000 texts (over --max-items)
        "100k_texts" => json!({"model": "m", "input": vec!["a dog"; 100_000]}).to_string().into_bytes(),
        // one 10 MB string (over the text limit, under the body limit)
        "10mb_string" => json!({"model": "m", "input": "a".repeat(10 << 20)}).to_string().into_bytes(),
        // a 20 MB body (over --max-body-bytes)
        "huge_body" => {
            let mut b = b"{\"texts\": [\"".to_vec();
            b.resize(20 << 20, b'x');
            b.extend_from_slice(b"\"]}");
            b
        }
        // a PNG header claiming 100000x100000 pixels, as an image
        "bomb_openai" => {
            let png = std::fs::read(img_path("corrupt_bomb_100000x100000.png")).unwrap();
            json!({"model": "m", "input": [format!("data:image/png;base64,{}", b64(&png))]}).to_string().into_bytes()
        }
        // a JSON body that is not UTF-8
        "invalid_utf8" => b"{\"model\": \"m\", \"input\": \"a \xff\xfe dog\"}".to_vec(),
        // 4,000 images of one byte each (over --max-items)
        "many_images" => json!({"images": vec!["AA=="; 4000]}).to_string().into_bytes(),
        other => panic!("unknown generator {other}"),
    }
}

#[test]
fn bad_requests_get_4xx_and_the_server_stays_healthy() {
    let dir = root().join("tests/fixtures/bad/requests");
    let cases: Vec<BadCase> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    assert!(cases.len() >= 30, "the corpus has {} cases", cases.len());
    let srv = start("cpu", &["--read-timeout", "2", "--max-items", "1024", "--max-body-bytes", "12000000"]);
    let a = srv.addr;
    for c in &cases {
        let body = match (&c.file, &c.body, &c.generate) {
            (Some(f), _, _) => std::fs::read(dir.join(f)).unwrap(),
            (_, Some(b), _) => b.clone().into_bytes(),
            (_, _, Some(g)) => generated(g),
            _ => Vec::new(),
        };
        let t0 = Instant::now();
        let r = request(a, &c.method, &c.path, &[("Content-Type", &c.content_type)], &body);
        assert!(t0.elapsed() < Duration::from_secs(60), "{}: took {:?}", c.name, t0.elapsed());
        assert!(
            c.expect.contains(&r.status),
            "{}: status {} (expected {:?}): {}",
            c.name,
            r.status,
            c.expect,
            r.text()
        );
        if r.status >= 400 {
            let v = r.json();
            let msg = v["error"]["message"].as_str().unwrap_or_else(|| panic!("{}: no error message: {v}", c.name));
            assert!(v["error"]["type"].is_string(), "{}: {v}", c.name);
            for m in &c.mentions {
                assert!(msg.contains(m.as_str()), "{}: the message does not mention {m:?}: {msg}", c.name);
            }
        } else {
            // a 200 for a bad image in /embed, /score, /classify: the error in place
            let v = r.json();
            let err = v["images"][0]["error"].as_str().or(v["errors"][0]["error"].as_str());
            let err = err.unwrap_or_else(|| panic!("{}: 200 without an error entry: {v}", c.name));
            for m in &c.mentions {
                assert!(err.contains(m.as_str()), "{}: the error does not mention {m:?}: {err}", c.name);
            }
        }
        assert_eq!(get(a, "/health").status, 200, "after {}", c.name);
    }

    // a body sent one byte a second: 408 once the read timeout (2 s) passes
    let mut s = connect(a);
    s.write_all(b"POST /embed HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n")
        .unwrap();
    let t0 = Instant::now();
    for b in b"{\"texts\": [\"a" {
        if s.write_all(&[*b]).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(1000));
        if t0.elapsed() > Duration::from_secs(8) {
            break;
        }
    }
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let r = parse_response(&raw);
    assert_eq!(r.status, 408, "{}", r.text());

    // headers sent one byte a second: the connection is closed without a request being served
    let mut s = connect(a);
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let t0 = Instant::now();
    let mut closed = false;
    for b in b"POST /embed HTTP/1.1\r\nHost: xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\r\n" {
        if s.write_all(&[*b]).is_err() {
            closed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
        if t0.elapsed() > Duration::from_secs(15) {
            break;
        }
    }
    let mut raw = Vec::new();
    let n = s.read_to_end(&mut raw).unwrap_or(0);
    assert!(closed || n == 0 || raw.starts_with(b"HTTP/1.1 408"), "slow headers: {:?}", String::from_utf8_lossy(&raw));
    assert_eq!(get(a, "/health").status, 200);
}

#[test]
fn sigterm_finishes_and_exits_zero() {
    let mut srv = start("cpu", &[]);
    let a = srv.addr;
    // a keep-alive connection with one request answered: idle when the signal comes
    let mut idle = connect(a);
    idle.write_all(format!("GET /health HTTP/1.1\r\nHost: {a}\r\n\r\n").as_bytes()).unwrap();
    let mut buf = [0u8; 512];
    let n = idle.read(&mut buf).unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    let r = post(a, "/v1/embeddings", &json!({"input": ["a dog", "a cat"]}));
    assert_eq!(r.status, 200);
    let st = Command::new("kill").args(["-TERM", &srv.child.id().to_string()]).status().unwrap();
    assert!(st.success());
    let t0 = Instant::now();
    let code = loop {
        if let Some(s) = srv.child.try_wait().unwrap() {
            break s.code();
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "still running 60 s after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(code, Some(0));
    let lines: Vec<String> = srv.stderr.try_iter().collect();
    assert!(lines.iter().any(|l| l.contains("shutting down")), "{lines:?}");
    // nothing listens any more
    assert!(TcpStream::connect(a).is_err());
}

#[test]
fn openai_client_and_curl() {
    // the official `openai` Python package and curl, against the same server and the CLI
    let ok = Command::new("python3").args(["-c", "import openai"]).output().is_ok_and(|o| o.status.success());
    let curl = Command::new("curl").arg("--version").output().is_ok_and(|o| o.status.success());
    if !(ok && curl) {
        if std::env::var("CLIP_WGPU_REQUIRE_CLIENTS").is_ok_and(|v| v == "1") {
            panic!("CLIP_WGPU_REQUIRE_CLIENTS=1 but python3 with `openai` (pip) or curl is missing");
        }
        eprintln!("skipping: python3 with the `openai` package, or curl, is missing");
        return;
    }
    let mut devices = vec!["cpu"];
    if gpu_available() {
        devices.push("gpu");
    }
    for device in devices {
        let out = Command::new("python3")
            .arg(root().join("scripts/serve_clients_test.py"))
            .args(["--bin", env!("CARGO_BIN_EXE_clip-wgpu"), "--model", &model(), "--device", device])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "serve_clients_test.py --device {device}:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
