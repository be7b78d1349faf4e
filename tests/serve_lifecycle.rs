//! The service's life cycle, through the library (`clip_wgpu::server::run` with a load
//! function of the test's own): `/health` and every endpoint answer 503 while the model loads
//! and 200 once it is ready; a load that fails or panics ends the server with its error; a
//! client that goes away has its queued items dropped unprocessed, and the server goes on.
#![cfg(feature = "server")]

mod common;
use common::reference::*;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use clip_wgpu::server::{run, ServeConfig};
use clip_wgpu::{Clip, ClipOptions, Device, Error};
use serde_json::{json, Value};

fn options() -> ClipOptions {
    // no embedding cache: every item is really encoded
    ClipOptions { device: Device::Cpu, cache_entries: 0, notices: false, ..Default::default() }
}

fn load_tiny() -> clip_wgpu::Result<Clip> {
    Clip::load(tiny_dir().join("hf"), &options())
}

/// Starts the server on a free port in a thread of its own (it runs until the test process
/// ends). Returns the address and a receiver of `run`'s result.
fn spawn<F>(config: ServeConfig, load: F) -> (SocketAddr, mpsc::Receiver<clip_wgpu::Result<()>>)
where
    F: FnOnce() -> clip_wgpu::Result<Clip> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(run(listener, config, load));
    });
    (addr, rx)
}

struct Resp {
    status: u16,
    head: String,
    body: Value,
}

fn request(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> Resp {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("a response head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("a status");
    let mut body = raw[split + 4..].to_vec();
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    let body = serde_json::from_slice(&body).unwrap_or(Value::String(String::from_utf8_lossy(&body).into()));
    Resp { status, head, body }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = b.windows(2).position(|w| w == b"\r\n") else { return out };
        let n = usize::from_str_radix(String::from_utf8_lossy(&b[..eol]).trim(), 16).unwrap_or(0);
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + n]);
        b = &b[eol + 2 + n + 2..];
    }
}

fn metric(addr: SocketAddr, name: &str) -> f64 {
    let r = request(addr, "GET", "/metrics", b"");
    let text = r.body.as_str().unwrap_or_default().to_string();
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("{name} not in /metrics:\n{text}"))
}

fn wait_for(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !ok() {
        assert!(t0.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn health_and_endpoints_answer_503_while_loading_then_200() {
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (addr, _done) = spawn(ServeConfig::default(), move || {
        // the model loads only when the test says so
        go_rx.recv_timeout(Duration::from_secs(60)).ok();
        load_tiny()
    });
    let h = request(addr, "GET", "/health", b"");
    assert_eq!(h.status, 503, "{}", h.body);
    assert!(h.head.to_ascii_lowercase().contains("retry-after:"), "{}", h.head);
    assert_eq!(h.body["status"], "loading", "{}", h.body);
    let body = json!({"texts": ["a photo of a cat"]}).to_string();
    let e = request(addr, "POST", "/embed", body.as_bytes());
    assert_eq!(e.status, 503, "{}", e.body);
    assert!(e.head.to_ascii_lowercase().contains("retry-after:"), "{}", e.head);
    // /metrics says not ready
    assert_eq!(metric(addr, "clip_wgpu_ready "), 0.0);

    go_tx.send(()).unwrap();
    wait_for("/health 200 after the load", Duration::from_secs(60), || {
        request(addr, "GET", "/health", b"").status == 200
    });
    let e = request(addr, "POST", "/embed", body.as_bytes());
    assert_eq!(e.status, 200, "{}", e.body);
    let got: Vec<f32> =
        e.body["texts"][0]["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
    let want = load_tiny().unwrap().encode_texts(&["a photo of a cat"]).unwrap();
    let diff = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(diff <= 1e-6, "served embedding differs from the library's by {diff}");
    assert_eq!(metric(addr, "clip_wgpu_ready "), 1.0);
}

#[test]
fn a_failed_load_ends_the_server_with_its_error() {
    let (_, done) = spawn(ServeConfig::default(), || Clip::load("/nonexistent/clip-model", &options()));
    let r = done.recv_timeout(Duration::from_secs(60)).expect("run returned");
    let e = r.expect_err("the load failed");
    assert!(e.to_string().contains("/nonexistent/clip-model"), "{e}");

    let (_, done) = spawn(ServeConfig::default(), || -> clip_wgpu::Result<Clip> { panic!("load exploded") });
    let r = done.recv_timeout(Duration::from_secs(60)).expect("run returned after a panicking load");
    let e: Error = r.expect_err("a panicking load is an error");
    assert!(e.to_string().contains("loading the model"), "{e}");
}

/// A large JPEG (decoding it takes tens of milliseconds), made distinct by bytes after its end
/// marker, which decoders ignore.
fn big_jpeg() -> Vec<u8> {
    let img =
        image::RgbImage::from_fn(3000, 2000, |x, y| image::Rgb([(x / 12) as u8, (y / 8) as u8, ((x + y) / 20) as u8]));
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 70).encode_image(&img).unwrap();
    out
}

#[test]
fn a_client_that_goes_away_has_its_queued_items_dropped() {
    let config = ServeConfig { max_batch: 1, workers: 1, ..ServeConfig::default() };
    let (addr, _done) = spawn(config, load_tiny);
    wait_for("/health 200", Duration::from_secs(60), || request(addr, "GET", "/health", b"").status == 200);

    let jpeg = big_jpeg();
    const N: usize = 64;
    let images: Vec<String> = (0..N)
        .map(|i| {
            let mut b = jpeg.clone();
            b.extend_from_slice(format!("item {i}").as_bytes());
            base64::engine::general_purpose::STANDARD.encode(&b)
        })
        .collect();
    let body = json!({ "images": images }).to_string();
    let mut s = TcpStream::connect(addr).unwrap();
    let head = format!(
        "POST /embed HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body.as_bytes()).unwrap();
    // the items are in the batcher: the client goes away
    wait_for("the items queued", Duration::from_secs(30), || {
        metric(addr, "clip_wgpu_queue_depth{tower=\"image\"}") > 0.0
    });
    drop(s);
    wait_for("the queue drained", Duration::from_secs(60), || {
        metric(addr, "clip_wgpu_queue_depth{tower=\"image\"}") == 0.0
    });
    let cancelled = metric(addr, "clip_wgpu_items_cancelled_total{tower=\"image\"}");
    let encoded = metric(addr, "clip_wgpu_batch_size_sum{tower=\"image\"}");
    eprintln!("client gone: {cancelled} items dropped, {encoded} encoded, of {N}");
    assert!(cancelled >= 1.0, "no item was dropped (encoded {encoded} of {N})");
    assert!(encoded + cancelled <= N as f64, "encoded {encoded} + cancelled {cancelled} > {N}");
    assert!(encoded < N as f64, "all {N} items were encoded for a client that had gone");

    // the server goes on: a good request afterwards is answered in full
    let r = request(addr, "POST", "/embed", json!({"texts": ["still here"]}).to_string().as_bytes());
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(request(addr, "GET", "/health", b"").status, 200);
}
