//! Persistent measurement processes, one per configuration, so that each one's peak RSS is
//! its own: `xtask worker --spec JSON` (a clip-wgpu engine) or `scripts/bench_baseline.py
//! --worker` (PyTorch, ONNX Runtime). Both speak the same line protocol on stdin/stdout:
//!
//! * on start, one line `{"ready": true, …}` (or `{"error": …}`);
//! * `warmup [MODE]` → `{"ok": true}`; `run [MODE]` → `{"time_s": T}` (one timed run);
//! * `stats` → `{"peak_rss_bytes", "modes": {MODE: {"cpu_s", "wall_s"}}, …}`;
//! * end of input: the process exits.
//!
//! Lines that are not JSON objects (library chatter) are passed on to stderr.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use clip_wgpu::pipeline::Pipeline;
use clip_wgpu::{Backend, Clip, ClipOptions, Device, PrecisionChoice};

use crate::sys;

/// What one clip-wgpu worker measures.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Spec {
    pub model: PathBuf,
    /// `cpu` or `gpu`.
    pub device: String,
    pub precision: String,
    /// `image`, `text` or `e2e`.
    pub tower: String,
    pub batch: usize,
    /// The text batch's token ids (text tower).
    pub texts: Vec<Vec<u32>>,
    pub threads: usize,
    pub adapter: Option<String>,
    pub backend: Option<String>,
    /// End-to-end mode: the image directory.
    pub images: Option<PathBuf>,
}

/// Image files under `dir` (recursively, by extension), sorted.
pub fn image_files(dir: &std::path::Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().and_then(|x| x.to_str()).is_some_and(|x| {
                ["jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff"].contains(&x.to_ascii_lowercase().as_str())
            }) {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

fn reply(v: Value) {
    let mut o = std::io::stdout().lock();
    let _ = writeln!(o, "{v}");
    let _ = o.flush();
}

/// The worker process: loads the engine, then answers commands until its input ends.
pub fn serve(spec: &Spec) -> Result<()> {
    match serve_inner(spec) {
        Ok(()) => Ok(()),
        Err(e) => {
            reply(json!({"error": format!("{e:#}")}));
            Err(e)
        }
    }
}

fn serve_inner(spec: &Spec) -> Result<()> {
    rayon::ThreadPoolBuilder::new().num_threads(spec.threads.max(1)).build_global().ok();
    let device = if spec.device == "gpu" { Device::Gpu } else { Device::Cpu };
    let precision: PrecisionChoice = spec.precision.parse().map_err(|e| anyhow!("{e}"))?;
    // one named precision (a CPU one on the GPU, or the other way round, fails to load)
    if precision == PrecisionChoice::Auto {
        return Err(anyhow!("precision auto: the worker measures a named precision"));
    }
    let backend = spec.backend.as_deref().map(str::parse::<Backend>).transpose().map_err(|e| anyhow!("{e}"))?;
    let opts = ClipOptions {
        device,
        batch_size: spec.batch.max(1),
        adapter: spec.adapter.clone(),
        backend,
        precision,
        // every run must do the work: no embedding cache
        cache_entries: 0,
        ..Default::default()
    };
    let t0 = Instant::now();
    let clip = Clip::load(&spec.model, &opts).with_context(|| format!("loading {}", spec.model.display()))?;
    let s = clip.config().vision.image_size;
    let per = 3 * s * s;
    let pixels: Vec<f32> = if spec.tower == "image" {
        (0..spec.batch * per).map(|i| ((i.wrapping_mul(2_654_435_761) % 1000) as f32 / 1000.0) * 3.8 - 1.8).collect()
    } else {
        Vec::new()
    };
    let files = match &spec.images {
        Some(d) if spec.tower == "e2e" => image_files(d)?,
        _ => Vec::new(),
    };
    if spec.tower == "e2e" && files.is_empty() {
        bail!("no images in {}", spec.images.as_deref().unwrap_or(std::path::Path::new("?")).display());
    }
    let adapter = clip.gpu().map(|g| g.context().report.name.clone()).unwrap_or_else(|| "cpu".into());
    let mut prepped: Option<Vec<f32>> = None;
    let mut failed = 0usize;

    let prep_all = |failed: &mut usize| -> Vec<f32> {
        let mut px = Vec::with_capacity(files.len() * per);
        for chunk in files.chunks(spec.batch.max(1)) {
            let done: Vec<_> = chunk.par_iter().map(|p| clip.preprocess_file(p)).collect();
            for r in done {
                match r {
                    Ok(v) => px.extend_from_slice(&v),
                    Err(_) => *failed += 1,
                }
            }
        }
        px
    };

    // one unit of work, by mode
    let work = |mode: &str, prepped: &mut Option<Vec<f32>>, failed: &mut usize| -> Result<()> {
        match (spec.tower.as_str(), mode) {
            ("image", _) => {
                clip.encode_pixels(&pixels, spec.batch)?;
            }
            ("text", _) => {
                clip.encode_ids(&spec.texts)?;
            }
            ("e2e", "prep") => {
                let mut f = 0;
                *prepped = Some(prep_all(&mut f));
                *failed = f;
            }
            ("e2e", "encode") => {
                if prepped.is_none() {
                    let mut f = 0;
                    *prepped = Some(prep_all(&mut f));
                }
                let px = prepped.as_ref().unwrap();
                for chunk in px.chunks(spec.batch.max(1) * per) {
                    clip.encode_pixels(chunk, chunk.len() / per)?;
                }
            }
            ("e2e", "e2e") => {
                let mut n = 0;
                Pipeline::new(&clip, spec.batch.max(1)).run(
                    files.iter(),
                    |p| clip.prepare_file(p),
                    |batch| {
                        n += batch.len();
                        Ok::<(), clip_wgpu::Error>(())
                    },
                )?;
                debug_assert_eq!(n, files.len());
            }
            (t, m) => bail!("tower {t} has no mode {m:?}"),
        }
        Ok(())
    };

    reply(json!({
        "ready": true,
        "load_s": t0.elapsed().as_secs_f64(),
        "engine": clip.engine_description(),
        "adapter": adapter,
        "items": if spec.tower == "e2e" { files.len() } else { spec.batch },
    }));
    let mut acct: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        let mut it = line.split_whitespace();
        let cmd = it.next().unwrap_or("");
        let mode = it.next().unwrap_or("").to_string();
        match cmd {
            "warmup" => {
                work(&mode, &mut prepped, &mut failed)?;
                reply(json!({"ok": true}));
            }
            "run" => {
                let c0 = sys::cpu_seconds();
                let t = Instant::now();
                work(&mode, &mut prepped, &mut failed)?;
                let dt = t.elapsed().as_secs_f64();
                let dc = match (c0, sys::cpu_seconds()) {
                    (Some(a), Some(b)) => b - a,
                    _ => f64::NAN,
                };
                let e = acct.entry(mode).or_default();
                e.0 += dc;
                e.1 += dt;
                reply(json!({"time_s": dt}));
            }
            "stats" => {
                let modes: serde_json::Map<String, Value> =
                    acct.iter().map(|(m, (c, w))| (m.clone(), json!({"cpu_s": c, "wall_s": w}))).collect();
                reply(json!({
                    "peak_rss_bytes": sys::peak_rss_bytes(),
                    "modes": modes,
                    "gpu_pool_bytes": clip.gpu().map(|g| g.pool_bytes()),
                    "gpu_weight_bytes": clip.gpu().map(|g| g.stats().weight_bytes),
                    "failed_images": failed,
                }));
            }
            "quit" | "" => break,
            other => bail!("unknown command {other:?}"),
        }
    }
    Ok(())
}

/// The orchestrator's end of a worker process.
pub struct Worker {
    pub name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl Worker {
    /// Starts `cmd` (stdin/stdout piped, stderr inherited); [`recv`](Self::recv) then waits for its ready line.
    pub fn spawn(name: &str, mut cmd: Command) -> Result<Worker> {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("piped"));
        Ok(Worker { name: name.to_string(), child, stdin, stdout })
    }

    /// The next JSON object the worker prints (other lines go to stderr); an `error` reply
    /// is an error.
    pub fn recv(&mut self) -> Result<Value> {
        let mut line = String::new();
        loop {
            line.clear();
            if self.stdout.read_line(&mut line)? == 0 {
                bail!("{} exited", self.name);
            }
            let t = line.trim();
            if t.starts_with('{') {
                if let Ok(v) = serde_json::from_str::<Value>(t) {
                    if let Some(e) = v.get("error") {
                        bail!("{}: {}", self.name, e.as_str().unwrap_or(&e.to_string()));
                    }
                    return Ok(v);
                }
            }
            if !t.is_empty() {
                eprintln!("[{}] {t}", self.name);
            }
        }
    }

    pub fn request(&mut self, cmd: &str) -> Result<Value> {
        let w = self.stdin.as_mut().ok_or_else(|| anyhow!("{} closed", self.name))?;
        writeln!(w, "{cmd}").and_then(|_| w.flush()).with_context(|| format!("{} is gone", self.name))?;
        self.recv()
    }

    /// Closes the worker's input and waits for it to exit.
    pub fn finish(mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        drop(self.stdin.take());
        // a worker that is still running after its input closed is stuck: end it (it is our child)
        if let Ok(None) = self.child.try_wait() {
            std::thread::sleep(std::time::Duration::from_millis(200));
            if let Ok(None) = self.child.try_wait() {
                let _ = self.child.kill();
            }
        }
        let _ = self.child.wait();
    }
}
