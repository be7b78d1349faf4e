//! The command line: arguments, model loading and the commands, one module each.

mod classify;
mod embed;
mod info;
pub mod inputs;
pub mod output;
mod score;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

use clip_wgpu::gpu::Precision;
use clip_wgpu::model::Activation;
use clip_wgpu::preprocess::Variant;
use clip_wgpu::{Clip, ClipOptions, Device};

pub use classify::{classify, ClassifyArgs};
pub use embed::{embed, EmbedArgs};
pub use info::{info, validate, InfoArgs, ValidateArgs};
pub use score::{score, ScoreArgs};

#[derive(Parser)]
#[command(
    name = "clip-wgpu",
    version,
    about = "CLIP ViT-B/32 image and text embeddings and CLIP scores, on the GPU (wgpu) or the CPU"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Score images against texts (every image × every text, or aligned `--pairs`): CLIP score
    /// 100·max(cos,0), cosine and logit per pair.
    Score(ScoreArgs),
    /// Zero-shot classification: images × labels through a prompt template → softmax
    /// probabilities and the top-k labels.
    Classify(ClassifyArgs),
    /// L2-normalised embeddings of images and texts (JSON, JSONL, or .npy + a JSONL index).
    Embed(EmbedArgs),
    /// List every GPU adapter (backend, driver, features, limits, the path it would run) and,
    /// with a model, its configuration.
    Info(InfoArgs),
    /// Compare every GPU adapter and precision against the CPU engine: max abs error and min
    /// cosine of the embeddings, both towers, batch sizes 1, 7 and 32.
    Validate(ValidateArgs),
}

#[derive(Args, Clone)]
pub struct ModelArgs {
    /// Checkpoint: an HF directory (model.safetensors + config.json) or an OpenAI/open_clip
    /// safetensors file. Default: $CLIP_WGPU_MODEL, else the Hugging Face cache's
    /// openai/clip-vit-base-patch32.
    #[arg(long, env = "CLIP_WGPU_MODEL")]
    pub model: Option<PathBuf>,
    /// Where to run the encoders.
    #[arg(long, value_enum, default_value_t = Device::Auto, env = "CLIP_WGPU_DEVICE")]
    pub device: Device,
    /// MLP activation, overriding the checkpoint (quick-gelu: OpenAI weights; gelu: LAION's).
    #[arg(long, value_enum)]
    pub activation: Option<ActivationArg>,
    /// Image preprocessing: `hf` (transformers' PIL CLIPImageProcessor) or `openai` (clip.load);
    /// they differ only on images with alpha and on the crop offset's rounding.
    #[arg(long, value_enum, default_value_t = VariantArg::Hf)]
    pub preprocess: VariantArg,
    /// A tokenizer.json to use instead of the bundled CLIP tokenizer.
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Images per encoder batch (also the unit of the streaming pipeline).
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// GPU adapter: a substring of its name or its index in `clip-wgpu info`.
    #[arg(long, env = "CLIP_WGPU_ADAPTER")]
    pub adapter: Option<String>,
    /// GPU backend.
    #[arg(long, value_enum, env = "CLIP_WGPU_BACKEND")]
    pub backend: Option<BackendArg>,
    /// GPU storage precision: f16 (f32 accumulation; the default where the adapter has
    /// SHADER_F16) or f32. The CPU engine always computes in f32.
    #[arg(long, value_enum, env = "CLIP_WGPU_PRECISION", default_value_t = PrecisionArg::Auto)]
    pub precision: PrecisionArg,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum BackendArg {
    Vulkan,
    Metal,
    Dx12,
    Gl,
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
pub enum PrecisionArg {
    Auto,
    F32,
    F16,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum ActivationArg {
    QuickGelu,
    Gelu,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum VariantArg {
    Hf,
    Openai,
}

/// Where weights are looked for, in order.
pub fn resolve_model(arg: &Option<PathBuf>) -> Result<PathBuf, clip_wgpu::Error> {
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

/// Loads the model; `quiet` silences the one-line notices (fallbacks).
pub fn load(m: &ModelArgs, quiet: bool) -> Result<Clip, clip_wgpu::Error> {
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
        notices: !quiet,
        ..ClipOptions::default()
    };
    Clip::load(path, &opts)
}

pub fn exit_code(failed: usize) -> ExitCode {
    if failed > 0 {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    }
}

/// Reports a failed input on stderr (the structured output gets it too).
pub fn report(input: &str, error: &str) {
    // most errors already start with the input's name
    if error.starts_with(input) {
        eprintln!("clip-wgpu: {error}");
    } else {
        eprintln!("clip-wgpu: {input}: {error}");
    }
}

/// A progress indicator on stderr, only when stderr is a terminal and not `--quiet`.
pub struct Progress(Option<indicatif::ProgressBar>);

impl Progress {
    pub fn new(quiet: bool, what: &'static str) -> Progress {
        if quiet || !std::io::stderr().is_terminal() {
            return Progress(None);
        }
        let pb = indicatif::ProgressBar::new_spinner();
        pb.set_style(
            indicatif::ProgressStyle::with_template(&format!(
                "{{spinner}} {{pos}} {what} ({{per_sec}}, {{elapsed}}) {{msg}}"
            ))
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        pb.enable_steady_tick(std::time::Duration::from_millis(200));
        Progress(Some(pb))
    }

    pub fn inc(&self, n: usize) {
        if let Some(pb) = &self.0 {
            pb.inc(n as u64);
        }
    }

    /// Prints a line above the bar (or plainly without one).
    pub fn report(&self, input: &str, error: &str) {
        match &self.0 {
            Some(pb) => pb.suspend(|| report(input, error)),
            None => report(input, error),
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(pb) = &self.0 {
            pb.finish_and_clear();
        }
    }
}
