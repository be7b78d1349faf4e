//! `clip-wgpu`: CLIP embeddings and scores from the command line. A thin layer over
//! [`clip_wgpu::Clip`].

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Serialize;
use serde_json::json;

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
    /// Show the model, the tokenizer and the devices that would run.
    Info(ModelArgs),
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
    let txts = clip.encode_texts(&a.texts);
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
            }
            write_json(&Out { images, texts })?
        }
    }
    Ok(exit_code(failed))
}

fn score(a: ScoreArgs) -> Result<ExitCode, clip_wgpu::Error> {
    let clip = load(&a.model)?;
    let imgs = clip.encode_image_files(&a.images);
    let txts = clip.encode_texts(&a.texts);
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

fn info(m: ModelArgs) -> Result<ExitCode, clip_wgpu::Error> {
    let clip = load(&m)?;
    let ck = clip.checkpoint();
    let v = json!({
        "checkpoint": ck.path.display().to_string(),
        "layout": ck.layout,
        "config": ck.config,
        "parameters": ck.weights.params.numel(),
        "device": clip.device(),
        "cpu_threads": rayon::current_num_threads(),
    });
    println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    Ok(ExitCode::SUCCESS)
}
