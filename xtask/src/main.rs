//! `cargo xtask bench`: clip-wgpu's encoders (CPU and GPU, each precision) against PyTorch
//! and ONNX Runtime, measured in the same run, interleaved run by run, on the same checkpoint,
//! shapes, token ids and thread count; each configuration in its own process (peak RSS is
//! its own); exports (CSV, JSON, Markdown, LaTeX), plots (SVG, PNG) and an environment
//! record (env.json). `--images DIR` measures the end-to-end image pipeline instead.
//!
//! `cargo xtask make-images DIR` writes synthetic JPEGs for the end-to-end mode.

mod cpumask;
mod device;
mod export;
mod plot;
mod results;
mod sys;
mod web;
mod worker;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use serde_json::{json, Value};

use clip_wgpu::cpu::CpuPrecision;
use clip_wgpu::gpu::{self, Precision};
use clip_wgpu::text::ClipTokenizer;

use export::Format;
use results::{Na, Row, CLIP};
use worker::{Spec, Worker};

#[derive(Parser)]
#[command(about = "clip-wgpu's development tasks")]
struct Xtask {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Benchmark the encoders against PyTorch and ONNX Runtime.
    Bench(Box<Bench>),
    /// Write synthetic photo-like JPEGs (for `bench --images`).
    MakeImages(MakeImages),
    /// Re-render a results directory's exports and plots from its results.json and env.json.
    Report { dir: PathBuf },
    /// Build everything the GPU machine needs for the device check into DIR (git-ignored):
    /// stripped binaries, the Vulkan loader, check.sh. On the device: `DIR/check.sh OUT [--quick]`.
    DevicePack(device::Pack),
    /// Build the browser package (web/, wasm-bindgen --target web) into target/web/pkg.
    Web(web::Web),
    /// (internal) One measurement process, driven by `bench` on stdin.
    #[command(hide = true)]
    Worker {
        #[arg(long)]
        spec: String,
    },
}

#[derive(Parser, Clone)]
struct Bench {
    /// Batch sizes (both towers; the pipeline's batch in end-to-end mode).
    #[arg(long, num_args = 1.., default_values_t = [1, 8])]
    batch_sizes: Vec<usize>,
    /// Timed runs per configuration.
    #[arg(long, default_value_t = 5)]
    num_runs: usize,
    /// Untimed runs first.
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Only clip-wgpu's CPU engine (and the baselines).
    #[arg(long, conflicts_with = "gpu_only")]
    cpu_only: bool,
    /// Only clip-wgpu's GPU engine (and the baselines).
    #[arg(long)]
    gpu_only: bool,
    /// Towers to measure.
    #[arg(long, value_delimiter = ',', default_values_t = ["image".to_string(), "text".to_string()])]
    towers: Vec<String>,
    /// Precisions: GPU f32, f16; CPU f32 and whatever this build's CPU engine supports here
    /// (bf16, int8). Combinations that cannot run are skipped with a note.
    #[arg(long, value_delimiter = ',', default_values_t = ["f32".to_string()])]
    precision: Vec<String>,
    /// clip-wgpu CPU configurations at each of these sub-batch sizes, in the same run
    /// (`CLIP_WGPU_CPU_SUB`: a batch is run in sub-batches of N items; 0: whole batches);
    /// default: the engine's own choice (`clip_wgpu::cpu::Split`).
    #[arg(long, value_delimiter = ',')]
    cpu_sub: Vec<usize>,
    /// HF checkpoint directory; default: a full-size random ViT-B/32 made by
    /// scripts/make_fixtures.py into tests/fixtures/full (speed does not depend on the values).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Baselines measured in the same run, interleaved (`none` for none): `torch`, `ort` (CPU,
    /// f32, --threads threads), `ort-int8` (ONNX Runtime's `quantize_dynamic` of the same graph,
    /// QInt8 weights), `torch-cuda`, `torch-compile` (a CUDA GPU, fp16: eager with SDPA
    /// attention, and torch.compile with CUDA graphs).
    #[arg(long, value_delimiter = ',', default_values_t = ["torch".to_string(), "ort".to_string()])]
    compare: Vec<String>,
    /// Texts of exactly N tokens (SOT and EOT included); default: a mix of real caption
    /// lengths. The baselines always pad to 77, as their tokenizers do.
    #[arg(long, value_parser = clap::value_parser!(u16).range(2..=77))]
    text_tokens: Option<u16>,
    /// End-to-end mode: the images of DIR through decode, preprocess and encode
    /// (clip_wgpu::pipeline), with decode+preprocess-only and encode-only rates beside.
    #[arg(long)]
    images: Option<PathBuf>,
    /// CPU threads for every engine.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// GPU configurations only up to this batch size (software adapters such as lavapipe
    /// take minutes per image batch); larger ones are skipped with a note.
    #[arg(long)]
    gpu_max_batch: Option<usize>,
    /// GPU adapter (name substring or index, as in `clip-wgpu info`).
    #[arg(long)]
    adapter: Option<String>,
    /// GPU backend (vulkan, metal, dx12, gl).
    #[arg(long)]
    backend: Option<String>,
    /// Where results go.
    #[arg(long, default_value = "target/bench")]
    output_dir: PathBuf,
    /// Export formats.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Format::All])]
    export_format: Vec<Format>,
    /// No plots.
    #[arg(long)]
    no_plots: bool,
    /// Run every engine, clip-wgpu and the baselines alike, as on a CPU with only these
    /// instruction sets (`avx2`: no AVX-512, AVX-VNNI or AMX), by masking CPUID in every
    /// process (Linux x86-64 with CPUID faulting; builds xtask/cpuid_mask.c with `cc`). The
    /// kernels an AVX2-only CPU runs, measured on this machine's cores.
    #[arg(long, value_enum)]
    cpu_as: Option<cpumask::CpuAs>,
}

#[derive(Parser)]
struct MakeImages {
    dir: PathBuf,
    #[arg(long, default_value_t = 32)]
    count: usize,
    #[arg(long, default_value_t = 640)]
    width: u32,
    #[arg(long, default_value_t = 480)]
    height: u32,
}

fn main() -> Result<()> {
    match Xtask::parse().cmd {
        Cmd::Bench(b) => bench(*b),
        Cmd::MakeImages(m) => make_images(&m),
        Cmd::DevicePack(p) => device::pack(&p, &root()),
        Cmd::Web(w) => web::build(&w, &root()),
        Cmd::Report { dir } => {
            let rows: Vec<Row> = serde_json::from_str(&std::fs::read_to_string(dir.join("results.json"))?)?;
            let env: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("env.json"))?)?;
            let md = write_outputs(&rows, &env, &dir, &[Format::All], true)?;
            println!("{md}");
            Ok(())
        }
        Cmd::Worker { spec } => {
            let spec: Spec = serde_json::from_str(&spec).context("worker spec")?;
            if worker::serve(&spec).is_err() {
                std::process::exit(1);
            }
            Ok(())
        }
    }
}

/// The repository: `CLIP_WGPU_ROOT` where set (the device check runs a binary built
/// elsewhere, in a copy of the tree at another path), else where this was built.
fn root() -> PathBuf {
    match std::env::var_os("CLIP_WGPU_ROOT") {
        Some(r) => PathBuf::from(r),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf(),
    }
}

/// Captions of ordinary length (COCO-style), in an order whose every prefix has a typical
/// mean length: batch 1 is one ordinary caption, not the shortest or the longest.
const CAPTIONS: [&str; 16] = [
    "A man riding a wave on top of a surfboard.",
    "a photo of a dog",
    "Two giraffes standing next to each other in a grassy field near a fence and some trees.",
    "A kitchen with wooden cabinets, a white refrigerator and a stove.",
    "a red bus",
    "A group of people standing around a table with plates of food and glasses of wine at a party.",
    "A cat sleeping on a laptop keyboard.",
    "An aerial view of a city at night with bright lights along the highways, bridges over the river and tall office buildings in the background.",
    "A plate of pasta with tomato sauce and basil.",
    "a photo of a cat",
    "A young boy in a baseball uniform swinging a bat at a ball during a game.",
    "Snow covered mountains under a clear blue sky.",
    "A bowl of fruit",
    "A woman holding an umbrella while walking down a rainy street lined with shops and parked cars.",
    "Close-up of a hummingbird drinking nectar from a red flower.",
    "An old wooden boat tied to a dock on a calm lake at sunrise.",
];

/// The text batch's token ids: `n` texts of exactly `fixed` tokens, or the caption mix.
fn text_batch(n: usize, fixed: Option<usize>, tok: &ClipTokenizer) -> Vec<Vec<u32>> {
    const SOT: u32 = 49406;
    const EOT: u32 = 49407;
    match fixed {
        Some(len) => {
            let mut ids = vec![320u32; len];
            ids[0] = SOT;
            ids[len - 1] = EOT;
            vec![ids; n]
        }
        None => (0..n).map(|i| tok.encode(CAPTIONS[i % CAPTIONS.len()])).collect(),
    }
}

fn mean_len(ids: &[Vec<u32>]) -> f64 {
    ids.iter().map(|t| t.len()).sum::<usize>() as f64 / ids.len().max(1) as f64
}

/// One engine configuration of a group.
#[derive(Clone)]
struct Engine {
    engine: String,
    device: String,
    precision: String,
    /// clip-wgpu CPU: the sub-batch size forced (`CLIP_WGPU_CPU_SUB`), else the engine's choice.
    sub: Option<usize>,
}

impl Engine {
    fn name(&self) -> String {
        format!("{} {} {}", self.engine, self.device, self.label())
    }

    /// The precision, and the sub-batch size where one is forced (`int8 sub8`).
    fn label(&self) -> String {
        match self.sub {
            Some(s) => format!("{} sub{s}", self.precision),
            None => self.precision.clone(),
        }
    }
}

fn model_path(b: &Bench) -> Result<PathBuf> {
    if let Some(m) = &b.model {
        return Ok(m.clone());
    }
    let dir = root().join("tests/fixtures/full");
    if !dir.join("model.safetensors").is_file() {
        eprintln!("xtask: generating a full-size random ViT-B/32 in {}", dir.display());
        let st = Command::new("python3").arg(root().join("scripts/make_fixtures.py")).arg("full").arg(&dir).status()?;
        if !st.success() {
            bail!("scripts/make_fixtures.py failed (it needs torch and transformers; or pass --model DIR)");
        }
    }
    Ok(dir)
}

/// Tokens per image of the model's vision tower (`grid² + 1`: 50 for ViT-B/32, 257 for L/14),
/// from its HF `config.json` (transformers' defaults where a field is absent), else from the
/// checkpoint itself.
fn vision_tokens(model: &Path) -> Result<usize> {
    let cfg = model.join("config.json");
    if cfg.is_file() {
        let v: Value = serde_json::from_slice(&std::fs::read(&cfg)?).with_context(|| format!("{}", cfg.display()))?;
        let get = |k: &str, d: u64| v["vision_config"][k].as_u64().unwrap_or(d) as usize;
        let (size, patch) = (get("image_size", 224), get("patch_size", 32));
        if patch == 0 || size % patch != 0 {
            bail!("{}: image size {size} is not a multiple of the patch size {patch}", cfg.display());
        }
        return Ok((size / patch).pow(2) + 1);
    }
    let ck = clip_wgpu::model::load(model, &Default::default())?;
    Ok(ck.config.vision.tokens())
}

fn python_versions() -> Value {
    Command::new("python3")
        .arg(root().join("scripts/bench_baseline.py"))
        .arg("--versions")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| serde_json::from_slice(&o.stdout).ok())
        .unwrap_or_else(|| json!({"python": null}))
}

fn note(notes: &mut Vec<String>, s: String) {
    eprintln!("xtask: note: {s}");
    notes.push(s);
}

/// Per-run machine readings: RAPL energy and NVML, sampled around each timed run.
struct Probes {
    rapl: Option<sys::Rapl>,
    nv: Option<sys::Nv>,
}

#[derive(Default)]
struct Acc {
    times: Vec<f64>,
    cpu_j: f64,
    gpu_j: f64,
    gpu_w: Vec<f64>,
    cpu_temp: Option<f64>,
    gpu_temp: Option<f64>,
}

impl Probes {
    fn timed(&self, w: &mut Worker, cmd: &str, acc: &mut Acc) -> Result<()> {
        let r0 = self.rapl.as_ref().map(|r| r.read());
        let n0 = self.nv.as_ref().map(|n| n.sample());
        let v = w.request(cmd)?;
        let t = v["time_s"].as_f64().context("worker reply without time_s")?;
        acc.times.push(t);
        if let (Some(r), Some(a)) = (&self.rapl, r0) {
            acc.cpu_j += r.joules(&a, &r.read());
        }
        if let (Some(n), Some(a)) = (&self.nv, n0) {
            let b = n.sample();
            if let (Some(e0), Some(e1)) = (a.1, b.1) {
                acc.gpu_j += (e1 - e0) / 1e3;
            }
            if let Some(p) = b.2 {
                acc.gpu_w.push(p);
            }
            if let Some(t) = b.0 {
                acc.gpu_temp = Some(acc.gpu_temp.map_or(t, |x: f64| x.max(t)));
            }
        }
        if let Some(t) = sys::cpu_temp_c() {
            acc.cpu_temp = Some(acc.cpu_temp.map_or(t, |x: f64| x.max(t)));
        }
        Ok(())
    }
}

fn bench(b: Bench) -> Result<()> {
    if b.batch_sizes.contains(&0) {
        bail!("batch sizes must be at least 1");
    }
    if let Some(level) = b.cpu_as {
        if cpumask::active() != Some(level) {
            std::process::exit(cpumask::reexec(level, &root())?);
        }
        cpumask::check(level)?;
    }
    let e2e = b.images.is_some();
    for t in &b.towers {
        if !["image", "text"].contains(&t.as_str()) {
            bail!("unknown tower {t:?} (image, text)");
        }
    }
    let model = model_path(&b)?;
    let patches = vision_tokens(&model)? as f64;
    std::fs::create_dir_all(&b.output_dir).with_context(|| format!("creating {}", b.output_dir.display()))?;
    let mut notes: Vec<String> = Vec::new();
    let (cpu_model, _) = sys::cpu_info();

    // engines
    let mut engines: Vec<Engine> = Vec::new();
    if !b.gpu_only {
        for p in &b.precision {
            match CpuPrecision::parse(p) {
                None => note(&mut notes, format!("CPU precision {p}: unknown to the CPU engine, skipped")),
                Some(c) if !c.supported() => {
                    note(&mut notes, format!("CPU precision {c}: not supported by this build on this machine, skipped"))
                }
                Some(c) => {
                    let subs: Vec<Option<usize>> =
                        if b.cpu_sub.is_empty() { vec![None] } else { b.cpu_sub.iter().map(|&s| Some(s)).collect() };
                    for sub in subs {
                        engines.push(Engine {
                            engine: CLIP.into(),
                            device: "cpu".into(),
                            precision: c.name().into(),
                            sub,
                        })
                    }
                }
            }
        }
    }
    let mut gpu_report: Value = json!("n/a");
    let mut gpu_name = String::from("n/a");
    if !b.cpu_only {
        match gpu::Context::new(&gpu::ContextOptions { adapter: b.adapter.clone(), backend: b.backend.clone() }) {
            Err(e) => note(&mut notes, format!("no GPU ({e}): GPU configurations skipped")),
            Ok(ctx) => {
                gpu_report = serde_json::to_value(&ctx.report)?;
                gpu_name = ctx.report.name.clone();
                for p in &b.precision {
                    match Precision::parse(p) {
                        None => {
                            note(&mut notes, format!("GPU precision {p}: the GPU engine has f32 and f16 only, skipped"))
                        }
                        Some(Precision::F16) if !ctx.has_f16() => note(
                            &mut notes,
                            format!("GPU precision f16: {} has no SHADER_F16, skipped", ctx.report.name),
                        ),
                        Some(g) => engines.push(Engine {
                            engine: CLIP.into(),
                            device: "gpu".into(),
                            precision: g.name().into(),
                            sub: None,
                        }),
                    }
                }
            }
        }
    }
    let py = python_versions();
    let has = |m: &str| py.get(m).is_some_and(|v| !v.is_null());
    let mut baselines: Vec<Engine> = Vec::new();
    for c in b.compare.iter().map(|c| c.trim()).filter(|c| !c.is_empty() && *c != "none") {
        let needs: &[&str] = match c {
            "torch" => &["torch", "transformers"],
            "ort" | "ort-int8" => &["torch", "transformers", "onnxruntime", "onnx"],
            // PyTorch on a CUDA GPU in fp16: eager (SDPA attention) and torch.compile
            "torch-cuda" | "torch-compile" => &["torch", "transformers"],
            other => bail!("unknown baseline {other:?} (torch, ort, ort-int8, torch-cuda, torch-compile)"),
        };
        if e2e {
            note(&mut notes, format!("baseline {c}: not measured in end-to-end mode (--images)"));
        } else if let Some(m) = needs.iter().find(|m| !has(m)) {
            note(
                &mut notes,
                format!("baseline {c}: python3 lacks {m} (pip install torch transformers onnxruntime onnx), skipped"),
            );
        } else {
            let cuda = c.starts_with("torch-c");
            baselines.push(Engine {
                engine: c.into(),
                device: if cuda { "gpu" } else { "cpu" }.into(),
                precision: if cuda {
                    "f16"
                } else if c == "ort-int8" {
                    "int8"
                } else {
                    "f32"
                }
                .into(),
                sub: None,
            });
        }
    }
    if engines.is_empty() && baselines.is_empty() {
        bail!("nothing to measure (see the notes above)");
    }

    let tok = ClipTokenizer::bundled();
    let fixed = b.text_tokens.map(|n| n as usize);
    let text_mode = match fixed {
        Some(n) => format!("texts of exactly {n} tokens (SOT and EOT included)"),
        None => format!(
            "texts: a mix of {} real captions of {}–{} tokens, cycled through the batch",
            CAPTIONS.len(),
            CAPTIONS.iter().map(|c| tok.encode(c).len()).min().unwrap_or(0),
            CAPTIONS.iter().map(|c| tok.encode(c).len()).max().unwrap_or(0)
        ),
    };

    // environment record
    let mut env = sys::environment(&root());
    // the CPU engine's overrides are part of the command (the workers inherit them)
    let set: Vec<String> = ["CLIP_WGPU_CPU_ISA", "CLIP_WGPU_CPU_F32", "CLIP_WGPU_CPU_SUB", "CLIP_WGPU_CPU_ALL_ROWS"]
        .iter()
        .filter_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()).map(|v| format!("{k}={v} ")))
        .collect();
    env["command"] = json!(format!("{}{}", set.concat(), command_line()));
    let isa = clip_wgpu::cpu::Isa::from_env();
    env["cpu_isa"] = json!(isa.name());
    if let Some(level) = b.cpu_as {
        env["cpu_as"] = json!(level.name());
        note(&mut notes, level.describe().to_string());
    }
    let largest = b.batch_sizes.iter().copied().max().unwrap_or(1);
    env["cpu_kernels"] = json!(b
        .precision
        .iter()
        .filter_map(|p| CpuPrecision::parse(p))
        .map(|p| {
            let kernels = clip_wgpu::cpu::Prepared::kernels_for(p, isa);
            if b.cpu_sub.is_empty() {
                let split = |t| clip_wgpu::cpu::Split::choose(t, p, largest, b.threads).describe();
                let (img, txt) = (split(clip_wgpu::model::Tower::Vision), split(clip_wgpu::model::Tower::Text));
                format!("{p}: {kernels}; batch {largest}: images in {img}, texts in {txt}")
            } else {
                format!("{p}: {kernels}")
            }
        })
        .collect::<Vec<_>>());
    env["model"] = json!(model.display().to_string());
    env["threads"] = json!(b.threads);
    env["precisions_requested"] = json!(b.precision);
    env["cpu_precisions_supported"] =
        json!(CpuPrecision::ALL.iter().filter(|p| p.supported()).map(|p| p.name()).collect::<Vec<_>>());
    env["gpu_adapter"] = gpu_report.clone();
    env["gpu_adapters_all"] = gpu::adapters(b.backend.as_deref())
        .map(|a| serde_json::to_value(a).unwrap_or_default())
        .unwrap_or_else(|e| json!(e.to_string()));
    env["python"] = py.clone();
    env["text_tokens"] = json!(text_mode);
    env["runs"] = json!({"timed": b.num_runs, "warmup": b.warmup, "interleaved": true});

    let probes = Probes { rapl: sys::Rapl::open(), nv: sys::Nv::open() };
    let exe = std::env::current_exe()?;
    let mut rows: Vec<Row> = Vec::new();

    // groups: (tower, batch)
    let mut groups: Vec<(String, usize)> = Vec::new();
    for &n in &b.batch_sizes {
        if e2e {
            groups.push(("e2e".into(), n));
        } else {
            for t in &b.towers {
                groups.push((t.clone(), n));
            }
        }
    }
    // order: by tower, then batch
    groups.sort_by_key(|g| (if e2e { 0 } else { b.towers.iter().position(|t| *t == g.0).unwrap_or(0) }, g.1));

    for (tower, n) in &groups {
        let texts = if tower == "text" { text_batch(*n, fixed, &tok) } else { Vec::new() };
        let mut ws: Vec<(Engine, Worker)> = Vec::new();
        for e in engines.iter().chain(if tower == "e2e" { &[][..] } else { &baselines[..] }) {
            if e.device == "gpu" && b.gpu_max_batch.is_some_and(|m| *n > m) {
                note(&mut notes, format!("{} {tower} batch {n}: over --gpu-max-batch, skipped", e.name()));
                continue;
            }
            let cmd = if e.engine == CLIP {
                let spec = Spec {
                    model: model.clone(),
                    device: e.device.clone(),
                    precision: e.precision.clone(),
                    tower: tower.clone(),
                    batch: *n,
                    texts: texts.clone(),
                    threads: b.threads,
                    adapter: b.adapter.clone(),
                    backend: b.backend.clone(),
                    images: b.images.clone(),
                };
                let mut c = Command::new(&exe);
                c.arg("worker").arg("--spec").arg(serde_json::to_string(&spec)?);
                if let Some(s) = e.sub {
                    c.env("CLIP_WGPU_CPU_SUB", s.to_string());
                }
                c
            } else {
                let mut c = Command::new("python3");
                c.arg(root().join("scripts/bench_baseline.py"))
                    .args(["--worker", "--engine", &e.engine, "--tower", tower])
                    .arg("--model")
                    .arg(&model)
                    .args(["--batch", &n.to_string(), "--threads", &b.threads.to_string()]);
                if tower == "text" {
                    c.arg("--ids").arg(serde_json::to_string(&texts)?);
                }
                c.env("OMP_NUM_THREADS", b.threads.to_string());
                c
            };
            match Worker::spawn(&e.name(), cmd) {
                Ok(w) => ws.push((e.clone(), w)),
                Err(err) => note(&mut notes, format!("{} {tower} batch {n}: {err:#}", e.name())),
            }
        }
        eprintln!("xtask: {tower} batch {n}: {} workers loading", ws.len());
        // wait until every worker has loaded (they load in parallel)
        let mut ready: Vec<(Engine, Worker, Value)> = Vec::new();
        for (e, mut w) in ws {
            match w.recv() {
                Ok(v) => ready.push((e, w, v)),
                Err(err) => note(&mut notes, format!("{} {tower} batch {n}: did not start: {err:#}", e.name())),
            }
        }
        let modes: &[&str] = if tower == "e2e" { &["prep", "encode", "e2e"] } else { &[""] };
        let mut failed: Vec<bool> = vec![false; ready.len()];
        for _ in 0..b.warmup {
            for (i, (e, w, _)) in ready.iter_mut().enumerate() {
                for m in modes {
                    if !failed[i] {
                        if let Err(err) = w.request(&format!("warmup {m}")) {
                            note(&mut notes, format!("{} {tower} batch {n}: {err:#}", e.name()));
                            failed[i] = true;
                        }
                    }
                }
            }
        }
        let mut accs: Vec<Vec<Acc>> = ready.iter().map(|_| modes.iter().map(|_| Acc::default()).collect()).collect();
        for run in 0..b.num_runs.max(1) {
            // rotate the order, so that no engine always runs first after another
            let k = ready.len().max(1);
            for j in 0..ready.len() {
                let i = (j + run) % k;
                for (mi, m) in modes.iter().enumerate() {
                    if failed[i] {
                        continue;
                    }
                    let (e, w, _) = &mut ready[i];
                    if let Err(err) = probes.timed(w, &format!("run {m}"), &mut accs[i][mi]) {
                        note(&mut notes, format!("{} {tower} batch {n}: {err:#}", e.name()));
                        failed[i] = true;
                    }
                }
            }
            eprintln!("xtask: {tower} batch {n}: run {}/{} done", run + 1, b.num_runs.max(1));
        }
        for (i, (e, mut w, info)) in ready.into_iter().enumerate() {
            if failed[i] {
                continue;
            }
            let st = w.request("stats").unwrap_or_default();
            w.finish();
            for (mi, m) in modes.iter().enumerate() {
                let acc = std::mem::take(&mut accs[i][mi]);
                let mut r = Row {
                    engine: e.engine.clone(),
                    device: e.device.clone(),
                    adapter: if e.device == "gpu" {
                        info["adapter"].as_str().unwrap_or(&gpu_name).to_string()
                    } else {
                        cpu_model.clone()
                    },
                    tower: match *m {
                        "prep" => "decode+preprocess".into(),
                        "encode" => "encode".into(),
                        "e2e" => "e2e".into(),
                        _ => tower.clone(),
                    },
                    precision: e.label(),
                    batch: *n,
                    threads: b.threads,
                    ..Default::default()
                };
                (r.tokens, r.token_mode) = match tower.as_str() {
                    "text" if e.engine != CLIP => (77.0, "padded-77".into()),
                    "text" => (mean_len(&texts), if fixed.is_some() { "fixed" } else { "captions" }.into()),
                    _ => (patches, "patches".into()),
                };
                let items = info["items"].as_u64().unwrap_or(*n as u64) as usize;
                let wall: f64 = acc.times.iter().sum();
                r.set_times(items, acc.times);
                r.peak_rss_bytes = Na(st["peak_rss_bytes"].as_u64());
                r.gpu_pool_bytes = Na(st["gpu_pool_bytes"].as_u64());
                r.gpu_weight_bytes = Na(st["gpu_weight_bytes"].as_u64());
                let md = &st["modes"][*m];
                r.cpu_util = Na(match (md["cpu_s"].as_f64(), md["wall_s"].as_f64()) {
                    (Some(c), Some(w)) if w > 0.0 && c.is_finite() => Some(c / w),
                    _ => None,
                });
                r.cpu_power_w = Na((probes.rapl.is_some() && wall > 0.0).then(|| acc.cpu_j / wall));
                r.gpu_power_w = Na(if probes.nv.is_some() && acc.gpu_j > 0.0 && wall > 0.0 {
                    Some(acc.gpu_j / wall)
                } else if !acc.gpu_w.is_empty() {
                    Some(acc.gpu_w.iter().sum::<f64>() / acc.gpu_w.len() as f64)
                } else {
                    None
                });
                r.cpu_temp_c = Na(acc.cpu_temp);
                r.gpu_temp_c = Na(acc.gpu_temp);
                if let Some(f) = st["failed_images"].as_u64().filter(|&f| f > 0) {
                    note(&mut notes, format!("{}: {f} images failed to decode and were left out", e.name()));
                }
                eprintln!(
                    "xtask: {:<26} {:<18} batch {:>3}: median {:>9.1} ms, {:>8.2} items/s, peak RSS {} MiB",
                    e.name(),
                    r.tower,
                    n,
                    r.median_s * 1e3,
                    r.items_per_s,
                    r.peak_rss_bytes.0.map_or("n/a".into(), |v| (v >> 20).to_string())
                );
                rows.push(r);
            }
        }
    }
    results::add_ratios(&mut rows);
    results::add_overlap(&mut rows);

    env["notes"] = json!(notes);
    env["gpu_name"] = json!(gpu_name);
    std::fs::write(b.output_dir.join("env.json"), serde_json::to_string_pretty(&env)? + "\n")?;
    let md = write_outputs(&rows, &env, &b.output_dir, &b.export_format, !b.no_plots)?;
    println!("{md}");
    Ok(())
}

/// Writes the exports and plots of `rows` into `dir`; returns the Markdown table.
fn write_outputs(rows: &[Row], env: &Value, dir: &Path, formats: &[Format], plots: bool) -> Result<String> {
    let caption = caption(env);
    let mut written = vec![dir.join("env.json")];
    for f in Format::expand(formats) {
        let text = match f {
            Format::Csv => export::csv(rows)?,
            Format::Json => export::json(rows)?,
            Format::Markdown => export::markdown(rows, &caption),
            Format::Latex => export::latex(rows, &caption),
            Format::All => unreachable!(),
        };
        let p = dir.join(f.file());
        std::fs::write(&p, text)?;
        written.push(p);
    }
    if plots && !rows.is_empty() {
        let gpu = env["gpu_name"].as_str().filter(|g| *g != "n/a");
        let sub = format!(
            "{}, {} threads{}",
            short_cpu(env["cpu_model"].as_str().unwrap_or("")),
            env["threads"],
            gpu.map(|g| format!("; GPU {}", g.split(" (").next().unwrap_or(g))).unwrap_or_default()
        );
        match plot::plots(rows, dir, &sub) {
            Ok(f) => written.extend(f),
            Err(e) => eprintln!("xtask: note: plots skipped: {e:#}"),
        }
    }
    for p in written {
        eprintln!("xtask: wrote {}", p.display());
    }
    Ok(export::markdown(rows, &caption))
}

fn short_cpu(model: &str) -> String {
    let m = model.split_whitespace().collect::<Vec<_>>().join(" ");
    if m.is_empty() {
        "CPU".into()
    } else {
        m
    }
}

/// `cargo xtask bench …` as it was typed (the arguments after the subcommand).
fn command_line() -> String {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quoted: Vec<String> =
        args.iter().map(|a| if a.contains(' ') || a.is_empty() { format!("'{a}'") } else { a.clone() }).collect();
    format!("cargo xtask {}", quoted.join(" "))
}

fn caption(env: &Value) -> String {
    let text_mode = env["text_tokens"].as_str().unwrap_or("");
    let gpu = match env["gpu_adapter"].get("name") {
        Some(n) => format!(
            "GPU: {} ({}, {} {}).",
            n.as_str().unwrap_or("?"),
            env["gpu_adapter"]["backend"].as_str().unwrap_or("?"),
            env["gpu_adapter"]["driver"].as_str().unwrap_or(""),
            env["gpu_adapter"]["driver_info"].as_str().unwrap_or("")
        ),
        None => "GPU: none.".into(),
    };
    let mut s = format!(
        "{} ({} cores, {}), {} threads per engine. {gpu} Median of {} runs after {} warmup, runs \
         interleaved between engines, each configuration in its own process (peak RSS is its own). \
         {text_mode}; the baselines run texts padded to 77 tokens, as their tokenizers do. \
         Ratio = clip-wgpu items/s ÷ baseline items/s (same tower and batch). \
         clip-wgpu's CPU kernels: level {} ({}). `{}` ({}, commit {}).",
        short_cpu(env["cpu_model"].as_str().unwrap_or("")),
        env["cores"],
        env["cpu_simd_used"]
            .as_array()
            .map(|a| a.iter().filter_map(|x| x.as_str()).collect::<Vec<_>>().join("+"))
            .unwrap_or_default(),
        env["threads"],
        env["runs"]["timed"],
        env["runs"]["warmup"],
        env["cpu_isa"].as_str().unwrap_or("?"),
        env["cpu_kernels"]
            .as_array()
            .map(|a| a.iter().filter_map(|x| x.as_str()).collect::<Vec<_>>().join("; "))
            .unwrap_or_default(),
        env["command"].as_str().unwrap_or(""),
        env["date"].as_str().unwrap_or(""),
        env["git_commit"].as_str().unwrap_or("").chars().take(10).collect::<String>(),
    );
    let py = &env["python"];
    if !py["torch"].is_null() {
        s += &format!(
            " Baselines: torch {}, transformers {}, onnxruntime {}.",
            py["torch"].as_str().unwrap_or("n/a"),
            py["transformers"].as_str().unwrap_or("n/a"),
            py["onnxruntime"].as_str().unwrap_or("n/a")
        );
    }
    for n in env["notes"].as_array().into_iter().flatten().filter_map(|n| n.as_str()) {
        s += &format!(" Note: {n}.");
    }
    s
}

/// Synthetic photo-like JPEGs: smooth gradients, shapes and noise, different sizes.
fn make_images(m: &MakeImages) -> Result<()> {
    std::fs::create_dir_all(&m.dir)?;
    for i in 0..m.count {
        // vary the size a little, as real photos do
        let (w, h) = if i % 3 == 1 { (m.height, m.width) } else { (m.width + (i as u32 % 5) * 16, m.height) };
        let mut seed = 0x9E37_79B9u32.wrapping_mul(i as u32 + 1);
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed
        };
        let (cx, cy, r) = (rnd() % w, rnd() % h, 40 + rnd() % (h / 2));
        let tint = [rnd() % 256, rnd() % 256, rnd() % 256];
        let img = image::RgbImage::from_fn(w, h, |x, y| {
            let d = ((x as i64 - cx as i64).pow(2) + (y as i64 - cy as i64).pow(2)) as f64;
            let inside = d < (r as f64).powi(2);
            let n = (rnd() % 24) as f64;
            let px = |c: usize, base: f64| {
                let v = if inside { tint[c] as f64 } else { base } + n - 12.0;
                v.clamp(0.0, 255.0) as u8
            };
            image::Rgb([
                px(0, 255.0 * x as f64 / w as f64),
                px(1, 255.0 * y as f64 / h as f64),
                px(2, 128.0 + 100.0 * ((x + y) as f64 / 40.0).sin()),
            ])
        });
        let p = m.dir.join(format!("img{i:04}.jpg"));
        img.save_with_format(&p, image::ImageFormat::Jpeg).with_context(|| format!("writing {}", p.display()))?;
    }
    eprintln!("xtask: wrote {} JPEGs into {}", m.count, m.dir.display());
    Ok(())
}
