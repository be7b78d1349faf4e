//! The command line: arguments, model loading and the commands, one module each.

mod classify;
mod columns;
mod embed;
mod info;
pub mod inputs;
pub mod output;
mod score;
#[cfg(feature = "server")]
mod serve;
mod tune;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::{Args, Parser, Subcommand};

use clip_wgpu::gpu::{MatmulPath, Tiles};
use clip_wgpu::model::Activation;
use clip_wgpu::preprocess::{Limits, Variant};
use clip_wgpu::{Backend, Clip, ClipOptions, Device, PrecisionChoice};

pub use classify::{classify, ClassifyArgs};
pub use embed::{embed, EmbedArgs};
pub use info::{info, validate, InfoArgs, ValidateArgs};
pub use score::{score, ScoreArgs};
#[cfg(feature = "server")]
pub use serve::{serve, ServeArgs};
pub use tune::{tune, TuneArgs};

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
    /// HTTP service: OpenAI-compatible /v1/embeddings, /embed, /score, /classify, /health and
    /// /metrics, with the items of concurrent requests merged into true batches.
    #[cfg(feature = "server")]
    Serve(ServeArgs),
    /// Time the GPU matmul's tile candidates for a model's layer shapes on this adapter and
    /// cache the fastest per shape bucket (read by every later run; `info` shows the choice).
    Tune(TuneArgs),
}

#[derive(Args, Clone)]
pub struct ModelArgs {
    /// Checkpoint: an HF directory (model.safetensors + config.json), an OpenAI/open_clip
    /// safetensors file, or a model name: a Hub repository (openai/clip-vit-large-patch14) or a
    /// preset (ViT-B-32, ViT-B-16, ViT-L-14, ViT-L-14-336, ViT-B-32-laion2B), taken from the
    /// Hugging Face cache or downloaded. Default: $CLIP_WGPU_MODEL, else
    /// openai/clip-vit-base-patch32.
    #[arg(long, env = "CLIP_WGPU_MODEL")]
    pub model: Option<PathBuf>,
    /// Where to run the encoders.
    #[arg(long, value_enum, default_value_t = Device::Auto, env = "CLIP_WGPU_DEVICE")]
    pub device: Device,
    /// MLP activation, overriding the checkpoint (quick-gelu: OpenAI weights; gelu: LAION's).
    #[arg(long, value_enum)]
    pub activation: Option<Activation>,
    /// Image preprocessing: `hf` (transformers' PIL CLIPImageProcessor) or `openai` (clip.load);
    /// they differ only on images with alpha and on the crop offset's rounding.
    #[arg(long, value_enum, default_value_t = Variant::Hf)]
    pub preprocess: Variant,
    /// A tokenizer.json to use instead of the bundled CLIP tokenizer.
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Images per encoder batch (also the unit of the streaming pipeline): a number, or
    /// `auto` (the default: on a GPU the most one command buffer takes within the adapter's
    /// limits, up to 256; on the CPU 32).
    #[arg(long, default_value = "auto", value_parser = parse_batch_size, env = "CLIP_WGPU_BATCH_SIZE")]
    pub batch_size: usize,
    /// Keep embeddings across runs in this directory (keyed by model, content: image bytes or
    /// token ids, and the engine and precision that computed them); a rerun over the same inputs
    /// skips decoding and encoding.
    #[arg(long, env = "CLIP_WGPU_CACHE_DIR", value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Embeddings kept in memory by content within a run (a repeated image or text is encoded
    /// once); 0 turns the in-memory cache off.
    #[arg(long, default_value_t = 16_384, value_name = "N")]
    pub cache_entries: usize,
    /// Largest image accepted, in pixels (width × height, read from the header before
    /// decoding): larger ones are reported as errors, not decoded.
    #[arg(long, default_value_t = Limits::default().max_pixels, value_name = "PIXELS")]
    pub max_pixels: u64,
    /// Largest image file accepted, in bytes.
    #[arg(long, default_value_t = Limits::default().max_file_bytes, value_name = "BYTES")]
    pub max_file_size: u64,
    /// GPU adapter: a substring of its name or its index in `clip-wgpu info`.
    #[arg(long, env = "CLIP_WGPU_ADAPTER")]
    pub adapter: Option<String>,
    /// GPU backend.
    #[arg(long, value_enum, env = "CLIP_WGPU_BACKEND")]
    pub backend: Option<Backend>,
    /// Precision. GPU: f16 storage with f32 accumulation (the default where the adapter has
    /// SHADER_F16) or f32. CPU: f32 (the default, reference-exact) or the reduced bf16/int8
    /// where this machine supports them (`clip-wgpu info` says which); asking for bf16/int8
    /// runs on the CPU.
    #[arg(long, value_enum, env = "CLIP_WGPU_PRECISION", default_value_t = PrecisionChoice::Auto)]
    pub precision: PrecisionChoice,
    /// GPU matmul kernel for the linear layers: `auto` uses cooperative matrices (tensor
    /// cores, EXPERIMENTAL_COOPERATIVE_MATRIX 16x16x16 f16→f32) at f16 precision where the
    /// adapter offers them and a self-check at startup passes, else the plain kernel; `plain`
    /// never uses them; `coop` insists (an error with --device gpu where they cannot run, a
    /// notice and the plain kernel with --device auto). `clip-wgpu info` says which runs.
    #[arg(long, value_enum, env = "CLIP_WGPU_GPU_MATMUL", default_value_t = MatmulPath::Auto)]
    pub gpu_matmul: MatmulPath,
    /// Tiles of the plain GPU matmul: `auto` (the table `clip-wgpu tune` cached for this
    /// adapter, driver and kernels, else the shipped default), a tile for every layer
    /// (reg32x32, reg64x64, wg64x64k16, wg64x64k32, wg64x64k16db, wg128x64k16), or a JSON
    /// table file (the cache file's `table` layout). `clip-wgpu info --model M` shows each
    /// bucket's tile and why.
    #[arg(long, env = "CLIP_WGPU_GPU_TILES", default_value = "auto", value_parser = Tiles::parse, value_name = "auto|TILE|FILE")]
    pub gpu_tiles: Tiles,
}

fn parse_batch_size(s: &str) -> Result<usize, String> {
    if s.eq_ignore_ascii_case("auto") {
        return Ok(0);
    }
    match s.parse::<usize>() {
        Ok(0) | Err(_) => Err(format!("{s:?} is not a batch size: give a positive number or `auto`")),
        Ok(n) => Ok(n),
    }
}

/// The checkpoint used when none is named.
pub const DEFAULT_REPO: &str = clip_wgpu::model::presets::DEFAULT.repo;

/// Where weights are looked for, in order: `--model`, `$CLIP_WGPU_MODEL` (both in `arg`: a
/// path, or a model name: a preset's short name such as `ViT-L-14`, or a Hugging Face Hub
/// repository such as `openai/clip-vit-large-patch14`), the Hugging Face cache, then a download
/// into that cache through `hf-hub` (unless `$HF_HUB_OFFLINE` is set). `quiet` hides the
/// download's progress bar.
pub fn resolve_model(arg: &Option<PathBuf>, quiet: bool) -> Result<PathBuf, clip_wgpu::Error> {
    use clip_wgpu::model::hub::{self, Named};
    let repo = match hub::named(arg.as_deref()) {
        Named::Path(p) | Named::Missing(p) => return Ok(p),
        Named::Repo(repo) => repo,
    };
    let hub = hub::cache_dir();
    if let Some(p) = hub.as_deref().and_then(|h| hub::cached_snapshot(h, &repo)) {
        return Ok(p);
    }
    let offline = std::env::var_os("HF_HUB_OFFLINE").is_some_and(|v| !v.is_empty() && v != "0");
    let download = if offline {
        "not tried: $HF_HUB_OFFLINE is set".to_string()
    } else {
        match download_repo(&repo, hub.as_deref(), quiet) {
            Ok(p) => return Ok(p),
            Err(e) => format!("failed: {e}"),
        }
    };
    let cache = hub
        .map(|h| hub::repo_dir(&h, &repo).display().to_string())
        .unwrap_or_else(|| "$HF_HOME/hub (HOME is not set)".into());
    let mut looked = match arg {
        None => vec!["--model PATH|NAME (not given)".to_string(), "$CLIP_WGPU_MODEL (not set)".to_string()],
        Some(p) => vec![format!(
            "--model / $CLIP_WGPU_MODEL {:?}: no such file or directory, so read as the model name {repo}",
            p.display().to_string()
        )],
    };
    looked.push(format!("the Hugging Face cache: {cache} (no snapshot with model.safetensors and config.json)"));
    looked.push(format!("a download of {repo} from the Hugging Face Hub: {download}"));
    let looked: Vec<String> = looked.iter().enumerate().map(|(i, l)| format!("  {}. {l}", i + 1)).collect();
    Err(clip_wgpu::Error::NoModel(format!(
        "no model weights found for {repo}.\n\
         Looked for them at, in order:\n{}\n\
         To get them: with network access, run the command once (it downloads into the cache), \
         or `huggingface-cli download {repo} model.safetensors config.json`; or copy a checkpoint \
         directory here and pass it with --model (or set CLIP_WGPU_MODEL). OpenAI/open_clip .safetensors files work too. \
         Model names: {}. See weights/README.md.",
        looked.join("\n"),
        clip_wgpu::model::presets::names()
    )))
}

/// Downloads config.json and model.safetensors of `repo` into the cache.
#[cfg(not(feature = "download"))]
fn download_repo(_repo: &str, _cache: Option<&std::path::Path>, _quiet: bool) -> Result<PathBuf, String> {
    Err("this build has no download support (cargo feature `download`)".into())
}

/// Downloads config.json and model.safetensors of `repo` into the cache.
#[cfg(feature = "download")]
fn download_repo(repo_name: &str, cache: Option<&std::path::Path>, quiet: bool) -> Result<PathBuf, String> {
    let mut b = hf_hub::api::sync::ApiBuilder::from_env().with_progress(!quiet && std::io::stderr().is_terminal());
    if let Some(c) = cache {
        b = b.with_cache_dir(c.to_path_buf());
    }
    let repo = b.build().map_err(|e| e.to_string())?.model(repo_name.to_string());
    if !quiet {
        let size = clip_wgpu::model::presets::by_repo(repo_name)
            .map(|p| format!(" (about {} MB)", p.download_mb))
            .unwrap_or_default();
        eprintln!("clip-wgpu: downloading {repo_name}{size} into the Hugging Face cache");
    }
    let config = repo.get("config.json").map_err(|e| e.to_string())?;
    repo.get("model.safetensors").map_err(|e| e.to_string())?;
    Ok(config.parent().map(PathBuf::from).unwrap_or_default())
}

/// Loads the model; `quiet` silences the one-line notices (fallbacks).
pub fn load(m: &ModelArgs, quiet: bool) -> Result<Clip, clip_wgpu::Error> {
    let path = resolve_model(&m.model, quiet)?;
    let opts = ClipOptions {
        device: m.device,
        activation: m.activation,
        variant: m.preprocess,
        tokenizer: m.tokenizer.clone(),
        batch_size: m.batch_size,
        adapter: m.adapter.clone(),
        backend: m.backend,
        precision: m.precision,
        gpu_matmul: m.gpu_matmul,
        gpu_tiles: m.gpu_tiles.clone(),
        limits: Limits { max_pixels: m.max_pixels, max_file_bytes: m.max_file_size },
        cache_entries: m.cache_entries,
        cache_dir: m.cache_dir.clone(),
        notices: !quiet,
    };
    Clip::load(path, &opts)
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Ctrl-C (SIGINT, SIGTERM): the first stops the run after the batch in hand, and the outputs
/// (temporary files until the end) are removed, so nothing half-written is left; a second
/// ends the process at once.
pub fn install_interrupt_handler() {
    let _ = ctrlc::set_handler(|| {
        if INTERRUPTED.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!(
            "clip-wgpu: interrupted: stopping after the current batch; no output is written (Ctrl-C again to quit now)"
        );
    });
}

/// Whether Ctrl-C was pressed.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// An error once Ctrl-C was pressed: the batch loops call it to stop.
/// With `CLIP_WGPU_STATS=1` in the environment, one line on stderr per batch saying what the
/// run holds: inputs done, the GPU's buffers, bind groups and pipelines created so far (constant
/// after warm-up: nothing is re-created per batch) and the embedding cache's entries (bounded by
/// `--cache-entries`). `scripts/soak.py` reads these lines.
pub fn stats_line(clip: &Clip, done: usize) {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if !*ON.get_or_init(|| std::env::var_os("CLIP_WGPU_STATS").is_some_and(|v| v != "0")) {
        return;
    }
    let c = clip.cache_stats();
    let gpu = match clip.gpu() {
        Some(g) => {
            let s = g.stats();
            format!(
                "gpu_buffers={} gpu_bind_groups={} gpu_pipelines={} gpu_submits={}",
                s.buffers_created, s.bind_groups_created, s.pipelines_created, s.submits
            )
        }
        None => "gpu=none".into(),
    };
    eprintln!(
        "clip-wgpu stats: done={done} {gpu} cache_entries={} cache_hits={} cache_misses={}",
        c.entries, c.hits, c.misses
    );
}

pub fn check_interrupted() -> Result<(), clip_wgpu::Error> {
    if interrupted() {
        return Err(clip_wgpu::Error::Invalid("interrupted".into()));
    }
    Ok(())
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
