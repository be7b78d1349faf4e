//! `clip-wgpu`: CLIP embeddings and scores from the command line. A thin layer over
//! [`clip_wgpu::Clip`].

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Serialize;
use serde_json::json;

use clip_wgpu::gpu::Precision;
use clip_wgpu::model::Activation;
use clip_wgpu::preprocess::Variant;
use clip_wgpu::{clip_score, clip_score_mean, cosine, Clip, ClipOptions, Device};

#[derive(Parser)]
#[command(
    name = "clip-wgpu",
    version,
    about = "CLIP ViT-B/32 image and text embeddings and CLIP scores, on the GPU (wgpu) or the CPU"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Score images against texts: CLIP score 100·max(cos,0), cosine and logit per pair.
    Score(ScoreArgs),
    /// Print L2-normalised embeddings of images and texts.
    Embed(EmbedArgs),
    /// List every GPU adapter (backend, driver, features, limits, the path it would run) and,
    /// with a model, its configuration.
    Info(InfoArgs),
    /// Compare every GPU adapter and precision against the CPU engine: max abs error and min
    /// cosine of the embeddings, both towers, batch sizes 1, 7 and 32.
    Validate(ValidateArgs),
}

#[derive(Args, Clone)]
struct ModelArgs {
    /// Checkpoint: an HF directory (model.safetensors + config.json) or an OpenAI/open_clip
    /// safetensors file. Default: $CLIP_WGPU_MODEL, else the Hugging Face cache's
    /// openai/clip-vit-base-patch32.
    #[arg(long, env = "CLIP_WGPU_MODEL")]
    model: Option<PathBuf>,
    /// Where to run the encoders.
    #[arg(long, value_enum, default_value_t = Device::Auto, env = "CLIP_WGPU_DEVICE")]
    device: Device,
    /// MLP activation, overriding the checkpoint (quick-gelu: OpenAI weights; gelu: LAION's).
    #[arg(long, value_enum)]
    activation: Option<ActivationArg>,
    /// Image preprocessing: `hf` (transformers' PIL CLIPImageProcessor) or `openai` (clip.load);
    /// they differ only on images with alpha and on the crop offset's rounding.
    #[arg(long, value_enum, default_value_t = VariantArg::Hf)]
    preprocess: VariantArg,
    /// A tokenizer.json to use instead of the bundled CLIP tokenizer.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Images per encoder batch.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// GPU adapter: a substring of its name or its index in `clip-wgpu info`.
    #[arg(long, env = "CLIP_WGPU_ADAPTER")]
    adapter: Option<String>,
    /// GPU backend.
    #[arg(long, value_enum, env = "CLIP_WGPU_BACKEND")]
    backend: Option<BackendArg>,
    /// GPU storage precision: f16 (f32 accumulation; the default where the adapter has
    /// SHADER_F16) or f32. The CPU engine always computes in f32.
    #[arg(long, value_enum, env = "CLIP_WGPU_PRECISION", default_value_t = PrecisionArg::Auto)]
    precision: PrecisionArg,
}

#[derive(Clone, Copy, ValueEnum)]
enum BackendArg {
    Vulkan,
    Metal,
    Dx12,
    Gl,
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum PrecisionArg {
    Auto,
    F32,
    F16,
}

#[derive(Args)]
struct InfoArgs {
    /// A checkpoint to describe too.
    #[arg(long, env = "CLIP_WGPU_MODEL")]
    model: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct ValidateArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Batch sizes to compare at.
    #[arg(long, num_args = 1.., default_values_t = [1, 7, 32])]
    batch_sizes: Vec<usize>,
}

#[derive(Clone, Copy, ValueEnum)]
enum ActivationArg {
    QuickGelu,
    Gelu,
}

#[derive(Clone, Copy, ValueEnum)]
enum VariantArg {
    Hf,
    Openai,
}

#[derive(Args)]
struct EmbedArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// An image file (repeatable).
    #[arg(long = "image")]
    images: Vec<PathBuf>,
    /// A text (repeatable).
    #[arg(long = "text")]
    texts: Vec<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = EmbedFormat::Json)]
    format: EmbedFormat,
}

#[derive(Clone, Copy, ValueEnum)]
enum EmbedFormat {
    /// `{"images": [{"input", "embedding"}|{"input", "error"}], "texts": [...]}`
    Json,
}

#[derive(Args)]
struct ScoreArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// An image file (repeatable).
    #[arg(long = "image", required = true)]
    images: Vec<PathBuf>,
    /// A text (repeatable); every image is scored against every text.
    #[arg(long = "text", required = true)]
    texts: Vec<String>,
    /// Output: a table, or JSON `{"scores": [{"image","text","score","cosine","logit"}], "errors": [...]}`.
    #[arg(long, value_enum, default_value_t = ScoreFormat::Table)]
    format: ScoreFormat,
    /// Also print torchmetrics' CLIPScore: the mean of 100·cos over all pairs, clamped at 0.
    #[arg(long)]
    mean: bool,
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum ScoreFormat {
    Table,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Score(a) => score(a),
        Command::Embed(a) => embed(a),
        Command::Info(a) => info(a),
        Command::Validate(a) => validate(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("clip-wgpu: error: {e}");
            ExitCode::from(1)
        }
    }
}

/// Where weights are looked for, in order.
fn resolve_model(arg: &Option<PathBuf>) -> Result<PathBuf, clip_wgpu::Error> {
    if let Some(p) = arg {
        return Ok(p.clone());
    }
    let hub = std::env::var_os("HF_HUB_CACHE").map(PathBuf::from).or_else(|| {
        std::env::var_os("HF_HOME")
            .map(|h| PathBuf::from(h).join("hub"))
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/huggingface/hub")))
    });
    if let Some(hub) = &hub {
        let snaps = hub.join("models--openai--clip-vit-base-patch32/snapshots");
        if let Ok(rd) = std::fs::read_dir(&snaps) {
            for e in rd.flatten() {
                if e.path().join("model.safetensors").is_file() {
                    return Ok(e.path());
                }
            }
        }
    }
    Err(clip_wgpu::Error::NoModel(format!(
        "no model weights found. Looked at: --model, $CLIP_WGPU_MODEL, and the Hugging Face cache ({}). \
         Get openai/clip-vit-base-patch32 (model.safetensors + config.json) and pass its directory with --model; \
         see weights/README.md",
        hub.map(|h| h.join("models--openai--clip-vit-base-patch32").display().to_string())
            .unwrap_or_else(|| "$HF_HOME/hub".into())
    )))
}

fn load(m: &ModelArgs) -> Result<Clip, clip_wgpu::Error> {
    let path = resolve_model(&m.model)?;
    let opts = ClipOptions {
        device: m.device,
        activation: m.activation.map(|a| match a {
            ActivationArg::QuickGelu => Activation::QuickGelu,
            ActivationArg::Gelu => Activation::Gelu,
        }),
        variant: match m.preprocess {
            VariantArg::Hf => Variant::Hf,
            VariantArg::Openai => Variant::OpenAi,
        },
        tokenizer: m.tokenizer.clone(),
        batch_size: m.batch_size,
        adapter: m.adapter.clone(),
        backend: m.backend.map(|b| {
            match b {
                BackendArg::Vulkan => "vulkan",
                BackendArg::Metal => "metal",
                BackendArg::Dx12 => "dx12",
                BackendArg::Gl => "gl",
            }
            .to_string()
        }),
        precision: match m.precision {
            PrecisionArg::Auto => None,
            PrecisionArg::F32 => Some(Precision::F32),
            PrecisionArg::F16 => Some(Precision::F16),
        },
        ..ClipOptions::default()
    };
    Clip::load(path, &opts)
}

fn exit_code(failed: usize) -> ExitCode {
    if failed > 0 {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    }
}

/// One input's result in structured output: an embedding or an error.
#[derive(Serialize)]
struct Item<'a> {
    input: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    embedding: Option<&'a [f32]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

fn write_json(v: &impl Serialize) -> Result<(), clip_wgpu::Error> {
    let io = |e: std::io::Error| clip_wgpu::Error::Io { path: "<stdout>".into(), msg: e.to_string() };
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, v).map_err(|e| io(e.into()))?;
    writeln!(out).map_err(io)
}

fn embed(a: EmbedArgs) -> Result<ExitCode, clip_wgpu::Error> {
    let clip = load(&a.model)?;
    let imgs = clip.encode_image_files(&a.images);
    let txts = clip.encode_texts(&a.texts)?;
    let mut failed = 0;
    let images: Vec<Item> = a
        .images
        .iter()
        .zip(&imgs)
        .map(|(p, r)| {
            let input = p.display().to_string();
            match r {
                Ok(e) => Item { input, embedding: Some(e), error: None },
                Err(err) => {
                    failed += 1;
                    eprintln!("clip-wgpu: {err}");
                    Item { input, embedding: None, error: Some(err.to_string()) }
                }
            }
        })
        .collect();
    let texts: Vec<Item> = a
        .texts
        .iter()
        .zip(txts.chunks(clip.embed_dim()))
        .map(|(t, e)| Item { input: t.clone(), embedding: Some(e), error: None })
        .collect();
    match a.format {
        EmbedFormat::Json => {
            #[derive(Serialize)]
            struct Out<'a> {
                images: Vec<Item<'a>>,
                texts: Vec<Item<'a>>,
                /// What computed them: `cpu (f32, …)` or `gpu NAME (backend, precision)`.
                engine: String,
                precision: Precision,
            }
            write_json(&Out { images, texts, engine: clip.engine_description(), precision: clip.precision() })?
        }
    }
    Ok(exit_code(failed))
}

fn score(a: ScoreArgs) -> Result<ExitCode, clip_wgpu::Error> {
    let clip = load(&a.model)?;
    let imgs = clip.encode_image_files(&a.images);
    let txts = clip.encode_texts(&a.texts)?;
    let scale = clip.logit_scale();
    let mut rows = Vec::new();
    let mut errors = Vec::new();
    let mut cosines = Vec::new();
    for (p, r) in a.images.iter().zip(&imgs) {
        match r {
            Ok(e) => {
                for (t, te) in a.texts.iter().zip(txts.chunks(clip.embed_dim())) {
                    let c = cosine(e, te);
                    cosines.push(c);
                    rows.push((p.display().to_string(), t.clone(), clip_score(c), c, scale * c));
                }
            }
            Err(err) => {
                eprintln!("clip-wgpu: {err}");
                errors.push(json!({"input": p.display().to_string(), "error": err.to_string()}));
            }
        }
    }
    let mean = clip_score_mean(&cosines);
    let failed = errors.len();
    match a.format {
        ScoreFormat::Json => {
            #[derive(Serialize)]
            struct Score<'a> {
                image: &'a str,
                text: &'a str,
                score: f32,
                cosine: f32,
                logit: f32,
            }
            #[derive(Serialize)]
            struct Out<'a> {
                scores: Vec<Score<'a>>,
                errors: Vec<serde_json::Value>,
                #[serde(skip_serializing_if = "Option::is_none")]
                clipscore_torchmetrics: Option<f32>,
            }
            let scores = rows
                .iter()
                .map(|(image, text, score, cosine, logit)| Score {
                    image,
                    text,
                    score: *score,
                    cosine: *cosine,
                    logit: *logit,
                })
                .collect();
            write_json(&Out { scores, errors, clipscore_torchmetrics: a.mean.then_some(mean) })?;
        }
        ScoreFormat::Table => {
            let iw = rows.iter().map(|r| r.0.len()).max().unwrap_or(5).clamp(5, 60);
            let tw = rows.iter().map(|r| r.1.chars().count()).max().unwrap_or(4).clamp(4, 60);
            println!("{:<iw$}  {:<tw$}  {:>7}  {:>8}  {:>8}", "image", "text", "score", "cosine", "logit");
            for (i, t, s, c, l) in &rows {
                let t: String = t.chars().take(tw).collect();
                println!("{i:<iw$}  {t:<tw$}  {s:>7.3}  {c:>8.5}  {l:>8.3}");
            }
            if a.mean {
                println!("CLIPScore (torchmetrics: mean of 100·cos, clamped at 0): {mean:.4}");
            }
        }
    }
    Ok(exit_code(failed))
}

fn info(a: InfoArgs) -> Result<ExitCode, clip_wgpu::Error> {
    let adapters = clip_wgpu::gpu::adapters(None).unwrap_or_default();
    let auto = adapters.iter().find(|r| r.device_type != "Cpu" && r.backend != "gl");
    let model = match &a.model {
        Some(p) => {
            let ck = clip_wgpu::model::load(p, &Default::default())?;
            Some(json!({
                "checkpoint": ck.path.display().to_string(),
                "layout": ck.layout,
                "config": ck.config,
                "parameters": ck.weights.params.numel(),
            }))
        }
        None => None,
    };
    let cpu = json!({"threads": rayon::current_num_threads(), "precision": "f32", "gemm": "gemm crate (runtime AVX-512/AVX2/NEON dispatch)"});
    if a.json {
        let v = json!({"adapters": adapters, "auto": auto.map(|r| r.index), "cpu": cpu, "model": model});
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(ExitCode::SUCCESS);
    }
    println!("CPU engine: f32, {} threads, gemm crate with runtime ISA dispatch", rayon::current_num_threads());
    if adapters.is_empty() {
        println!("GPU adapters: none found (--device auto runs on the CPU)");
    }
    for r in &adapters {
        let path =
            if r.shader_f16 { "f16 storage + f32 accumulation (default) or f32" } else { "f32 only (no SHADER_F16)" };
        let ln = if r.subgroup { "subgroup layernorm" } else { "workgroup-memory layernorm" };
        let coop = if r.cooperative_matrix.is_empty() { "none".to_string() } else { r.cooperative_matrix.join(", ") };
        println!("[{}] {} — {}, {}, driver {} {}", r.index, r.name, r.backend, r.device_type, r.driver, r.driver_info);
        println!(
            "    features: SHADER_F16 {}, SUBGROUP {} (sizes {}–{}), TIMESTAMP_QUERY {}, cooperative matrix: {coop}",
            yes(r.shader_f16),
            yes(r.subgroup),
            r.subgroup_min_size,
            r.subgroup_max_size,
            yes(r.timestamp_query)
        );
        println!(
            "    limits: storage binding {} MiB, buffer {} MiB, workgroup memory {} KiB, {} invocations",
            r.max_storage_buffer_binding_size >> 20,
            r.max_buffer_size >> 20,
            r.max_compute_workgroup_storage_size >> 10,
            r.max_compute_invocations_per_workgroup
        );
        let chosen = if auto.is_some_and(|x| x.index == r.index) {
            "chosen by --device auto"
        } else if r.device_type == "Cpu" {
            "software adapter: --device auto prefers the CPU engine; --device gpu uses it"
        } else {
            "select with --adapter"
        };
        println!("    would run: {path}, {ln}; {chosen}");
    }
    if let Some(m) = model {
        println!("model: {}", serde_json::to_string_pretty(&m).unwrap_or_default());
    }
    Ok(ExitCode::SUCCESS)
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

fn validate(a: ValidateArgs) -> Result<ExitCode, clip_wgpu::Error> {
    use clip_wgpu::gpu::{Context, GpuEncoder};
    use clip_wgpu::model::{Input, Program, Tower};
    let path = resolve_model(&a.model.model)?;
    let ck = clip_wgpu::model::load(&path, &Default::default())?;
    let cfg = &ck.config;
    let s = cfg.vision.image_size;
    let max_b = a.batch_sizes.iter().copied().max().unwrap_or(1);
    // deterministic inputs: smooth pixel patterns, and texts of lengths 2..=context
    let px: Vec<f32> = (0..max_b * 3 * s * s).map(|i| (2.0 * (0.001 * i as f64).sin()) as f32).collect();
    let ids: Vec<Vec<u32>> = (0..max_b)
        .map(|b| {
            let len = 2 + (b * 11) % (cfg.text.context_length - 1);
            let mut t: Vec<u32> = (0..len).map(|j| (320 + 37 * (b + j)) as u32 % 49000).collect();
            t[0] = 49406;
            t[len - 1] = 49407;
            t
        })
        .collect();
    let programs = [Program::new(Tower::Vision, cfg, &ck.weights), Program::new(Tower::Text, cfg, &ck.weights)];
    let mut reference = Vec::new();
    for p in &programs {
        let input = match p.tower {
            Tower::Vision => Input::Pixels { data: &px, n: max_b },
            Tower::Text => Input::Tokens(&ids),
        };
        reference.push(clip_wgpu::cpu::run(p, cfg, &ck.weights.params, &input));
    }
    let e = cfg.embed_dim;
    println!(
        "{:<40} {:<6} {:<8} {:>5} {:>12} {:>12}",
        "adapter", "prec", "tower", "batch", "max abs err", "min cosine"
    );
    let mut worst_failed = false;
    let contexts = Context::all();
    if contexts.is_empty() {
        println!("no GPU adapter found: nothing to validate");
    }
    for ctx in contexts {
        let ctx = match ctx {
            Ok(c) => c,
            Err(err) => {
                println!("(adapter skipped: {err})");
                continue;
            }
        };
        let precisions: Vec<Precision> =
            if ctx.has_f16() { vec![Precision::F32, Precision::F16] } else { vec![Precision::F32] };
        for prec in precisions {
            let enc = match GpuEncoder::from_checkpoint(&ctx, &ck, prec) {
                Ok(g) => g,
                Err(err) => {
                    println!("{:<40} {:<6} error: {err}", ctx.report.name, prec.name());
                    worst_failed = true;
                    continue;
                }
            };
            for (p, want) in programs.iter().zip(&reference) {
                for &b in &a.batch_sizes {
                    let input = match p.tower {
                        Tower::Vision => Input::Pixels { data: &px[..b * 3 * s * s], n: b },
                        Tower::Text => Input::Tokens(&ids[..b]),
                    };
                    match enc.encode(p.tower, &input) {
                        Ok(got) => {
                            let err = got.iter().zip(want).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
                            let cos = (0..b)
                                .map(|i| cosine(&got[i * e..(i + 1) * e], &want[i * e..(i + 1) * e]))
                                .fold(1f32, f32::min);
                            let name: String = ctx.report.name.chars().take(40).collect();
                            let tower = format!("{:?}", p.tower).to_lowercase();
                            println!("{name:<40} {:<6} {tower:<8} {b:>5} {err:>12.3e} {cos:>12.7}", prec.name());
                        }
                        Err(err) => {
                            println!("{:<40} {:<6} batch {b}: error: {err}", ctx.report.name, prec.name());
                            worst_failed = true;
                        }
                    }
                }
            }
        }
    }
    Ok(exit_code(worst_failed as usize))
}
