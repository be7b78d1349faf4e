//! The public face: [`Clip`] loads a checkpoint, encodes images and texts on the chosen
//! engine and turns embeddings into scores.
//!
//! ```no_run
//! use clip_wgpu::{Clip, ClipOptions};
//! let clip = Clip::load("clip-vit-base-patch32/", &ClipOptions::default())?;
//! let images = clip.encode_image_files(&["dog.jpg"]);
//! let texts = clip.encode_texts(&["a photo of a dog", "a photo of a cat"])?;
//! let img = images[0].as_ref().unwrap();
//! for (t, e) in ["dog", "cat"].iter().zip(texts.chunks(clip.embed_dim())) {
//!     let cos = clip_wgpu::cosine(img, e);
//!     println!("{t}: CLIP score {:.2}", clip_wgpu::clip_score(cos));
//! }
//! # Ok::<(), clip_wgpu::Error>(())
//! ```

use std::path::Path;

use rayon::prelude::*;

use std::sync::atomic::{AtomicBool, Ordering};

use crate::cache::{CacheStats, EmbeddingCache, EngineKind, Key};
use crate::cpu::CpuPrecision;
use crate::error::{Error, Result};
use crate::gpu::{self, GpuEncoder, GpuError, Precision};
use crate::model::{self, Activation, Checkpoint, Input, LoadOptions, Program, Tower};
use crate::preprocess::{self, Limits, Variant};
use crate::text::ClipTokenizer;

/// Where the encoders run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum Device {
    /// A GPU adapter if one works, else the CPU.
    #[default]
    Auto,
    Cpu,
    Gpu,
}

impl Device {
    pub fn name(self) -> &'static str {
        match self {
            Device::Auto => "auto",
            Device::Cpu => "cpu",
            Device::Gpu => "gpu",
        }
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Device {
    type Err = Error;
    fn from_str(s: &str) -> Result<Device> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Device::Auto),
            "cpu" => Ok(Device::Cpu),
            "gpu" => Ok(Device::Gpu),
            _ => Err(Error::Invalid(format!("unknown device {s:?}: expected auto, cpu or gpu"))),
        }
    }
}

/// A GPU backend (wgpu's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Vulkan,
    Metal,
    Dx12,
    Gl,
}

impl Backend {
    pub const ALL: [Backend; 4] = [Backend::Vulkan, Backend::Metal, Backend::Dx12, Backend::Gl];

    /// `vulkan`, `metal`, `dx12` or `gl`: the name [`gpu::ContextOptions`] takes.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Vulkan => "vulkan",
            Backend::Metal => "metal",
            Backend::Dx12 => "dx12",
            Backend::Gl => "gl",
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Backend {
    type Err = Error;
    /// `vulkan|metal|dx12|gl` (also `vk`, `mtl`, `d3d12`, `directx`, `gles`, `opengl`).
    fn from_str(s: &str) -> Result<Backend> {
        match s.to_ascii_lowercase().as_str() {
            "vulkan" | "vk" => Ok(Backend::Vulkan),
            "metal" | "mtl" => Ok(Backend::Metal),
            "dx12" | "d3d12" | "directx" => Ok(Backend::Dx12),
            "gl" | "gles" | "opengl" => Ok(Backend::Gl),
            _ => Err(Error::Invalid(format!("unknown GPU backend {s:?}: expected vulkan, metal, dx12 or gl"))),
        }
    }
}

/// The numeric precision asked for, over both engines: the GPU engine runs f32 or f16, the
/// CPU engine f32, bf16 or int8.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum PrecisionChoice {
    /// GPU: f16 where the adapter has SHADER_F16, else f32. CPU: f32.
    #[default]
    Auto,
    /// f32 on either engine: the reference.
    F32,
    /// GPU only: f16 storage, f32 accumulation (an error on device cpu; f32 when device auto
    /// finds no GPU).
    F16,
    /// CPU only: bf16 weights, f32 accumulation (device auto runs it on the CPU; an error on
    /// device gpu).
    Bf16,
    /// CPU only: int8 weights and activations, i32 accumulation (as bf16).
    Int8,
}

impl PrecisionChoice {
    pub const ALL: [PrecisionChoice; 5] = [
        PrecisionChoice::Auto,
        PrecisionChoice::F32,
        PrecisionChoice::F16,
        PrecisionChoice::Bf16,
        PrecisionChoice::Int8,
    ];

    pub fn name(self) -> &'static str {
        match self {
            PrecisionChoice::Auto => "auto",
            PrecisionChoice::F32 => "f32",
            PrecisionChoice::F16 => "f16",
            PrecisionChoice::Bf16 => "bf16",
            PrecisionChoice::Int8 => "int8",
        }
    }

    /// What runs where for this choice on `device`: the device to use, the GPU precision
    /// (`None`: the adapter's default) and the CPU engine's precision. An error for a GPU-only
    /// precision on the CPU and the other way round.
    pub fn resolve(self, device: Device) -> Result<(Device, Option<Precision>, CpuPrecision)> {
        Ok(match (self, device) {
            (PrecisionChoice::Auto, d) => (d, None, CpuPrecision::F32),
            (PrecisionChoice::F32, d) => (d, Some(Precision::F32), CpuPrecision::F32),
            (PrecisionChoice::F16, Device::Cpu) => {
                return Err(Error::Invalid(
                    "precision f16 is a GPU precision; the CPU engine runs f32, bf16 or int8".into(),
                ))
            }
            (PrecisionChoice::F16, d) => (d, Some(Precision::F16), CpuPrecision::F32),
            (p @ (PrecisionChoice::Bf16 | PrecisionChoice::Int8), d) => {
                let cp = if p == PrecisionChoice::Bf16 { CpuPrecision::Bf16 } else { CpuPrecision::Int8 };
                if d == Device::Gpu {
                    return Err(Error::Invalid(format!(
                        "precision {cp} is a CPU precision; the GPU engine runs f16 or f32"
                    )));
                }
                (Device::Cpu, None, cp)
            }
        })
    }
}

impl std::fmt::Display for PrecisionChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for PrecisionChoice {
    type Err = Error;
    /// `auto`, and the names [`Precision::parse`] and [`CpuPrecision::parse`] take.
    fn from_str(s: &str) -> Result<PrecisionChoice> {
        if s.eq_ignore_ascii_case("auto") {
            return Ok(PrecisionChoice::Auto);
        }
        match (Precision::parse(s), CpuPrecision::parse(s)) {
            (Some(Precision::F32), _) => Ok(PrecisionChoice::F32),
            (Some(Precision::F16), _) => Ok(PrecisionChoice::F16),
            (_, Some(CpuPrecision::Bf16)) => Ok(PrecisionChoice::Bf16),
            (_, Some(CpuPrecision::Int8)) => Ok(PrecisionChoice::Int8),
            _ => Err(Error::Invalid(format!("unknown precision {s:?}: expected auto, f32, f16, bf16 or int8"))),
        }
    }
}

/// How a [`Clip`] is built.
#[derive(Debug, Clone)]
pub struct ClipOptions {
    pub device: Device,
    /// Overrides the checkpoint's activation (QuickGELU for OpenAI weights, GELU for LAION's).
    pub activation: Option<Activation>,
    /// Image preprocessing variant (`hf`, the default, or `openai`).
    pub variant: Variant,
    pub limits: Limits,
    /// A `tokenizer.json` to use instead of the bundled CLIP one.
    pub tokenizer: Option<std::path::PathBuf>,
    /// Images per encoder batch; 0 (the default): chosen from the device (see
    /// [`Clip::batch_size`]).
    pub batch_size: usize,
    /// GPU adapter: a substring of its name or its index in `clip-wgpu info`.
    pub adapter: Option<String>,
    /// GPU backend; `None`: all are searched (see [`gpu::ContextOptions`]).
    pub backend: Option<Backend>,
    /// Precision (see [`PrecisionChoice`]): `Auto` runs f16 on a GPU with SHADER_F16, else
    /// f32; bf16 and int8 run on the CPU.
    pub precision: PrecisionChoice,
    /// GPU matmul kernel: `Auto` (cooperative matrices where the adapter offers them at f16
    /// and they pass their self-check), `Plain`, or `Coop` (an error where they cannot run
    /// with `Device::Gpu`; a notice and the plain kernel with `Device::Auto`). Default: the
    /// environment variable `CLIP_WGPU_GPU_MATMUL` (auto|plain|coop) if set, else `Auto`.
    pub gpu_matmul: gpu::MatmulPath,
    /// Tiles of the plain GPU matmul (see [`gpu::Tiles`]): `Auto` uses the table `clip-wgpu
    /// tune` cached for the adapter, else the shipped default. Default: the environment
    /// variable `CLIP_WGPU_GPU_TILES` (auto, a tile name or a table file) if set, else `Auto`.
    pub gpu_tiles: gpu::Tiles,
    /// Embeddings kept in memory by content (image bytes, token ids); 0 turns the in-process
    /// cache off.
    pub cache_entries: usize,
    /// A directory keeping embeddings across runs (see [`crate::cache`]).
    pub cache_dir: Option<std::path::PathBuf>,
    /// Print one-line notices (fallbacks) on stderr.
    pub notices: bool,
}

impl Default for ClipOptions {
    fn default() -> Self {
        ClipOptions {
            device: Device::Auto,
            activation: None,
            variant: Variant::Hf,
            limits: Limits::default(),
            tokenizer: None,
            batch_size: 0,
            adapter: None,
            backend: None,
            precision: PrecisionChoice::Auto,
            // the CLI's --gpu-matmul reads the same variable; library users (xtask's worker)
            // get it here
            gpu_matmul: std::env::var("CLIP_WGPU_GPU_MATMUL")
                .ok()
                .and_then(|v| gpu::MatmulPath::parse(&v))
                .unwrap_or_default(),
            gpu_tiles: gpu::Tiles::from_env().unwrap_or_else(|e| {
                eprintln!("clip-wgpu: warning: {e}; using the tuned or default tiles");
                gpu::Tiles::Auto
            }),
            cache_entries: 16_384,
            cache_dir: None,
            notices: true,
        }
    }
}

/// A loaded CLIP model. `Send + Sync`: share it between threads behind an `Arc`.
pub struct Clip {
    ck: Checkpoint,
    vision: Program,
    text: Program,
    tokenizer: ClipTokenizer,
    opts: ClipOptions,
    gpu: Option<GpuEncoder>,
    /// The CPU engine's precision (f32 unless bf16 or int8 was chosen).
    cpu_precision: CpuPrecision,
    /// How `auto` chose the CPU precision (when it did).
    cpu_auto: Option<crate::cpu::auto::AutoChoice>,
    /// Set when the GPU failed under `auto`: the rest of the work runs on the CPU.
    gpu_failed: AtomicBool,
    /// The CPU engine's weight layout, made on its first use.
    cpu: std::sync::OnceLock<crate::cpu::Prepared>,
    cache: EmbeddingCache,
}

/// An image ready for the encoder: its pixels (and its cache key), or its embedding, found
/// in the cache.
pub enum PreparedImage {
    Pixels { pixels: Vec<f32>, key: Option<Key> },
    Cached(Vec<f32>),
}

impl Clip {
    /// Loads an HF directory or an OpenAI/open_clip safetensors file.
    pub fn load(path: impl AsRef<Path>, opts: &ClipOptions) -> Result<Clip> {
        let ck = model::load(path.as_ref(), &LoadOptions { activation: opts.activation })?;
        let tokenizer = match &opts.tokenizer {
            Some(p) => ClipTokenizer::from_file(p)?,
            None => ClipTokenizer::bundled(),
        };
        Self::from_checkpoint(ck, tokenizer, opts)
    }

    pub fn from_checkpoint(ck: Checkpoint, tokenizer: ClipTokenizer, opts: &ClipOptions) -> Result<Clip> {
        let (device, gpu_precision, mut cpu_precision) = opts.precision.resolve(opts.device)?;
        // from here on `device` is where the choice runs (bf16 and int8: the CPU)
        let opts = &ClipOptions { device, ..opts.clone() };
        if !cpu_precision.supported() {
            return Err(Error::Invalid(format!("CPU precision {cpu_precision} is not supported on this machine")));
        }
        let gpu = match opts.device {
            Device::Cpu => None,
            Device::Gpu => Some(
                open_context(opts)
                    .and_then(|c| open_gpu(c, &ck, opts, gpu_precision))
                    .map_err(|e| Error::Gpu(e.to_string()))?,
            ),
            Device::Auto => match open_context(opts) {
                // lavapipe/llvmpipe/SwiftShader: far slower than the CPU engine on the same cores
                Ok(c) if c.report.device_type == "Cpu" && opts.adapter.is_none() => {
                    notice(
                        opts,
                        &format!(
                            "the only GPU adapter is a software one ({}); the CPU engine is faster, running there \
                             (--device gpu forces the adapter)",
                            c.report.name
                        ),
                    );
                    None
                }
                Ok(c) => match open_gpu(c, &ck, opts, gpu_precision) {
                    Ok(g) => Some(g),
                    Err(e) => {
                        notice(opts, &format!("GPU unusable ({e}); running on the CPU"));
                        None
                    }
                },
                Err(e) => {
                    notice(opts, &format!("no usable GPU ({e}); running on the CPU"));
                    None
                }
            },
        };
        let vision = Program::new(Tower::Vision, &ck.config, &ck.weights);
        let text = Program::new(Tower::Text, &ck.config, &ck.weights);
        let cache = EmbeddingCache::new(&ck, opts.cache_entries, opts.cache_dir.as_deref()).map_err(|e| Error::Io {
            path: opts.cache_dir.clone().unwrap_or_default(),
            msg: format!("cache directory unusable: {e}"),
        })?;
        let mut ck = ck;
        let cpu = std::sync::OnceLock::new();
        // `auto` on the CPU: the fastest precision meeting the accuracy bar here (measured
        // once per machine and checkpoint, then cached; f32 for narrow models)
        let mut cpu_auto = None;
        if gpu.is_none() && opts.precision == PrecisionChoice::Auto {
            let c = crate::cpu::auto::choose(&ck.weights.params, &ck.config, &vision, &text);
            cpu_precision = c.cpu_precision();
            cpu_auto = Some(c);
        }
        if gpu.is_none() {
            // The CPU engine for sure: lay its weights out now and let the canonical copies of
            // the linear layers go, so the weights are held once (about 600 MB, not 1.2 GB, for
            // ViT-B/32 in f32). Biases, norms and embeddings stay in `params`.
            let prep = crate::cpu::Prepared::with_precision(&ck.weights.params, &[&vision, &text], cpu_precision);
            for p in [&vision, &text] {
                for op in &p.ops {
                    if let crate::model::Op::Linear { lin, .. }
                    | crate::model::Op::PatchEmbed { patch: lin, .. }
                    | crate::model::Op::Head { proj: lin, .. } = op
                    {
                        ck.weights.params.list[lin.weight.0].data = Vec::new();
                    }
                }
            }
            let _ = cpu.set(prep);
        }
        Ok(Clip {
            cache,
            ck,
            vision,
            text,
            tokenizer,
            opts: opts.clone(),
            gpu,
            cpu_precision,
            cpu_auto,
            gpu_failed: AtomicBool::new(false),
            cpu,
        })
    }

    pub fn config(&self) -> &model::ClipConfig {
        &self.ck.config
    }
    /// The loaded checkpoint. When the CPU engine runs, the linear layers' weights live in its
    /// own layout and their entries in `weights.params` are empty (shapes kept).
    pub fn checkpoint(&self) -> &Checkpoint {
        &self.ck
    }
    pub fn tokenizer(&self) -> &ClipTokenizer {
        &self.tokenizer
    }
    /// Length of an embedding.
    pub fn embed_dim(&self) -> usize {
        self.ck.config.embed_dim
    }
    /// Images per encoder batch: `batch_size` if set, else what the device takes: on a GPU
    /// the most images one command buffer holds within its binding limits (at most 256 at
    /// 224 px, fewer for larger images, so the pixels waiting in host memory stay under
    /// 160 MB), on the CPU 32 (the engine cuts it into sub-batches where that is faster, `cpu::Split`;
    /// larger batches only add latency).
    pub fn batch_size(&self) -> usize {
        if self.opts.batch_size > 0 {
            return self.opts.batch_size;
        }
        let s = self.ck.config.vision.image_size.max(1);
        match self.active_gpu() {
            Some(g) => g.chunk_limits(Tower::Vision).1.clamp(1, (256 * 224 * 224 / (s * s)).max(1)),
            None => 32,
        }
    }

    /// The embedding cache's hits and misses so far.
    pub fn cache_stats(&self) -> CacheStats {
        self.cache.stats()
    }

    /// The device the encoders run on now.
    pub fn device(&self) -> Device {
        match self.active_gpu() {
            Some(_) => Device::Gpu,
            None => Device::Cpu,
        }
    }

    /// The GPU encoder, while it is in use.
    pub fn gpu(&self) -> Option<&GpuEncoder> {
        self.active_gpu()
    }

    /// What runs the encoders, in words: `cpu (PRECISION, N threads)` or
    /// `gpu NAME (backend, precision)`.
    pub fn engine_description(&self) -> String {
        match self.active_gpu() {
            Some(g) => {
                let r = &g.context().report;
                format!("gpu {} ({}, {})", r.name, r.backend, g.precision())
            }
            None => format!("cpu ({}, {} threads)", self.cpu_precision, rayon::current_num_threads()),
        }
    }

    /// How `--precision auto` chose the CPU engine's precision, and why (`None` when a
    /// precision was given or the GPU runs the encoders).
    pub fn cpu_auto_choice(&self) -> Option<&crate::cpu::auto::AutoChoice> {
        self.cpu_auto.as_ref()
    }

    /// The GPU's storage precision while the GPU runs the encoders; `F32` on the CPU (whose
    /// own precision [`engine_kind`](Self::engine_kind) gives).
    pub fn precision(&self) -> Precision {
        self.active_gpu().map(|g| g.precision()).unwrap_or(Precision::F32)
    }

    /// The engine running the encoders now and its precision (what the embedding cache keys by).
    pub fn engine_kind(&self) -> EngineKind {
        match self.active_gpu() {
            Some(g) => EngineKind::Gpu { precision: g.precision(), coop: g.uses_coop() },
            None => EngineKind::Cpu(self.cpu_precision),
        }
    }

    fn active_gpu(&self) -> Option<&GpuEncoder> {
        self.gpu.as_ref().filter(|_| !self.gpu_failed.load(Ordering::Relaxed))
    }
    /// `exp(logit_scale)`: logits are this times the cosine.
    pub fn logit_scale(&self) -> f32 {
        self.ck.weights.logit_scale.exp()
    }

    /// Encodes preprocessed images (CHW f32, `3·S·S` values each, back to back) into
    /// L2-normalised embeddings, `[n, embed_dim]` flat.
    pub fn encode_pixels(&self, pixels: &[f32], n: usize) -> Result<Vec<f32>> {
        self.encode_pixels_on(pixels, n).map(|(e, _)| e)
    }

    /// [`encode_pixels`](Self::encode_pixels), and the engine that encoded each image (under
    /// `Device::Auto` the GPU may fail part way, and the CPU do the rest).
    fn encode_pixels_on(&self, pixels: &[f32], n: usize) -> Result<(Vec<f32>, Vec<EngineKind>)> {
        let s = self.ck.config.vision.image_size;
        let per = 3 * s * s;
        if pixels.len() != n * per {
            return Err(Error::Invalid(format!(
                "encode_pixels: {} values given, {n} images of 3x{s}x{s} need {}",
                pixels.len(),
                n * per
            )));
        }
        let mut out = Vec::with_capacity(n * self.embed_dim());
        let mut engines = Vec::with_capacity(n);
        for chunk in pixels.chunks(self.batch_size() * per) {
            let input = Input::Pixels { data: chunk, n: chunk.len() / per };
            let (e, engine) = self.run(Tower::Vision, &input)?;
            out.extend(e);
            engines.extend(std::iter::repeat_n(engine, chunk.len() / per));
        }
        Ok((out, engines))
    }

    /// Encodes token id sequences (each `[SOT, …, EOT]`, at most the context length).
    /// Sequences already in the cache are not encoded again.
    pub fn encode_ids(&self, ids: &[Vec<u32>]) -> Result<Vec<f32>> {
        crate::model::check_tokens(ids, &self.ck.config.text).map_err(Error::Invalid)?;
        let d = self.embed_dim();
        let mut out = vec![0f32; ids.len() * d];
        // (position, key) of the sequences to encode
        let mut todo: Vec<(usize, Option<Key>)> = Vec::new();
        let engine = self.engine_kind();
        for (i, t) in ids.iter().enumerate() {
            let key = self.cache.enabled().then(|| self.cache.text_key(t));
            match key.as_ref().and_then(|k| self.cache.get(k, engine)) {
                Some(e) => out[i * d..][..d].copy_from_slice(&e),
                None => todo.push((i, key)),
            }
        }
        for chunk in todo.chunks(self.batch_size().max(8) * 4) {
            let batch: Vec<Vec<u32>> = chunk.iter().map(|&(i, _)| ids[i].clone()).collect();
            let (emb, engine) = self.run(Tower::Text, &Input::Tokens(&batch))?;
            for (&(i, key), e) in chunk.iter().zip(emb.chunks(d)) {
                out[i * d..][..d].copy_from_slice(e);
                if let Some(k) = key {
                    self.cache.put(&k, engine, e);
                }
            }
        }
        Ok(out)
    }

    /// Tokenises and encodes texts: `[n, embed_dim]` flat, L2-normalised.
    pub fn encode_texts<S: AsRef<str> + Sync>(&self, texts: &[S]) -> Result<Vec<f32>> {
        let ids: Vec<Vec<u32>> = texts.par_iter().map(|t| self.tokenizer.encode(t.as_ref())).collect();
        self.encode_ids(&ids)
    }

    /// The side of the square images the vision tower takes (the checkpoint's: 224 for
    /// ViT-B/32, 336 for ViT-L/14-336); preprocessing resizes and crops to it.
    pub fn image_size(&self) -> u32 {
        self.ck.config.vision.image_size as u32
    }

    /// Preprocesses one image given as bytes (`name` labels errors) to the model's image size.
    pub fn preprocess_bytes(&self, name: &str, bytes: &[u8]) -> Result<Vec<f32>> {
        preprocess::preprocess_bytes_sized(bytes, self.image_size(), self.opts.variant, &self.opts.limits)
            .map_err(|source| Error::Image { input: name.to_string(), source })
    }

    /// Reads and preprocesses one image file.
    pub fn preprocess_file(&self, path: &Path) -> Result<Vec<f32>> {
        let bytes = self.read_image_file(path)?;
        self.preprocess_bytes(&path.display().to_string(), &bytes)
    }

    /// Prepares one image given as bytes for [`encode_prepared`](Self::encode_prepared): its
    /// embedding if the cache has it, else its pixels.
    pub fn prepare_bytes(&self, name: &str, bytes: &[u8]) -> Result<PreparedImage> {
        let key = self.cache.enabled().then(|| self.cache.image_key(bytes, self.opts.variant));
        if let Some(e) = key.as_ref().and_then(|k| self.cache.get(k, self.engine_kind())) {
            return Ok(PreparedImage::Cached(e));
        }
        Ok(PreparedImage::Pixels { pixels: self.preprocess_bytes(name, bytes)?, key })
    }

    /// Reads one image file and prepares it (see [`prepare_bytes`](Self::prepare_bytes)).
    pub fn prepare_file(&self, path: &Path) -> Result<PreparedImage> {
        let bytes = self.read_image_file(path)?;
        self.prepare_bytes(&path.display().to_string(), &bytes)
    }

    fn read_image_file(&self, path: &Path) -> Result<Vec<u8>> {
        let meta = std::fs::metadata(path).map_err(|e| Error::Io { path: path.into(), msg: e.to_string() })?;
        if meta.is_dir() {
            return Err(Error::Io { path: path.into(), msg: "is a directory, not an image".into() });
        }
        if meta.len() > self.opts.limits.max_file_bytes {
            return Err(Error::Io {
                path: path.into(),
                msg: format!("file is {} bytes, over the limit of {}", meta.len(), self.opts.limits.max_file_bytes),
            });
        }
        std::fs::read(path).map_err(|e| Error::Io { path: path.into(), msg: e.to_string() })
    }

    /// Encodes image files: one result per input, in order; a bad file gets its error and
    /// the others still get embeddings.
    pub fn encode_image_files<P: AsRef<Path> + Sync>(&self, paths: &[P]) -> Vec<Result<Vec<f32>>> {
        self.encode_prepared(paths.par_iter().map(|p| self.prepare_file(p.as_ref())).collect())
    }

    /// Encodes encoded images (JPEG, PNG, … bytes): one result per input, in order.
    pub fn encode_image_bytes<B: AsRef<[u8]> + Sync>(&self, images: &[B]) -> Vec<Result<Vec<f32>>> {
        self.encode_prepared(
            images
                .par_iter()
                .enumerate()
                .map(|(i, b)| self.prepare_bytes(&format!("image #{i}"), b.as_ref()))
                .collect(),
        )
    }

    /// Encodes already decoded images.
    pub fn encode_images(&self, images: &[image::DynamicImage]) -> Result<Vec<f32>> {
        let (size, variant) = (self.image_size(), self.opts.variant);
        let px: Vec<f32> =
            images.par_iter().flat_map_iter(|im| preprocess::preprocess_image_sized(im, size, variant)).collect();
        self.encode_pixels(&px, images.len())
    }

    /// Encodes prepared images (one encoder call for all the pixels among them) and caches
    /// the new embeddings: one result per input, in order. If the encoder itself fails (a
    /// forced GPU), every image that needed it gets that error.
    pub fn encode_prepared(&self, prepared: Vec<Result<PreparedImage>>) -> Vec<Result<Vec<f32>>> {
        let mut px = Vec::new();
        let mut n = 0;
        for r in &prepared {
            if let Ok(PreparedImage::Pixels { pixels, .. }) = r {
                px.extend_from_slice(pixels);
                n += 1;
            }
        }
        let emb = if n == 0 { Ok((Vec::new(), Vec::new())) } else { self.encode_pixels_on(&px, n) };
        drop(px);
        let (emb, engines) = match emb {
            Ok(e) => e,
            Err(e) => {
                // each image that needed the encoder gets its error, naming the engine that
                // failed (a forced GPU) or none (bad input)
                return prepared
                    .into_iter()
                    .map(|r| match r? {
                        PreparedImage::Cached(e) => Ok(e),
                        PreparedImage::Pixels { .. } => Err(match &e {
                            Error::Gpu(m) => Error::Gpu(m.clone()),
                            other => Error::Invalid(other.to_string()),
                        }),
                    })
                    .collect();
            }
        };
        // each embedding is cached under the engine that computed it
        let mut rows = emb.chunks(self.embed_dim()).zip(engines);
        prepared
            .into_iter()
            .map(|r| match r? {
                PreparedImage::Cached(e) => Ok(e),
                PreparedImage::Pixels { key, .. } => {
                    let (e, engine) = rows.next().expect("one embedding per image");
                    if let Some(k) = key {
                        self.cache.put(&k, engine, e);
                    }
                    Ok(e.to_vec())
                }
            })
            .collect()
    }

    /// Runs one batch on the GPU if one is in use, else on the CPU. Under `auto` a GPU
    /// failure (device lost, out of memory, …) is reported once, the batch is redone on the
    /// CPU, and the CPU takes over: nothing is lost. A forced GPU returns the error.
    /// Returns the embeddings and the engine that made them.
    fn run(&self, tower: Tower, input: &Input) -> Result<(Vec<f32>, EngineKind)> {
        // (never a GPU on the web: see `WEB_GPU`)
        #[cfg(not(target_arch = "wasm32"))]
        if let Some(g) = self.active_gpu() {
            match g.encode(tower, input) {
                Ok(e) => return Ok((e, EngineKind::Gpu { precision: g.precision(), coop: g.uses_coop() })),
                Err(e) if self.opts.device == Device::Auto && !matches!(e, GpuError::InvalidInput(_)) => {
                    self.gpu_failed.store(true, Ordering::Relaxed);
                    notice(&self.opts, &format!("GPU: {e}; redoing the batch and continuing on the CPU"));
                }
                Err(e) => return Err(Error::Gpu(e.to_string())),
            }
        }
        let program = match tower {
            Tower::Vision => &self.vision,
            Tower::Text => &self.text,
        };
        let prep = self.cpu.get_or_init(|| {
            crate::cpu::Prepared::with_precision(
                &self.ck.weights.params,
                &[&self.vision, &self.text],
                self.cpu_precision,
            )
        });
        let e = crate::cpu::run_prepared(program, &self.ck.config, &self.ck.weights.params, prep, input);
        Ok((e, EngineKind::Cpu(self.cpu_precision)))
    }
}

#[cfg(not(target_arch = "wasm32"))]
fn open_context(opts: &ClipOptions) -> std::result::Result<gpu::Context, GpuError> {
    gpu::Context::new(&gpu::ContextOptions {
        adapter: opts.adapter.clone(),
        backend: opts.backend.map(|b| b.name().to_string()),
    })
}

/// On the web adapters and devices come only through promises: the synchronous [`Clip`] runs
/// the CPU engine there, and the GPU engine is built and run with the `_async` functions
/// ([`gpu::Context::new_async`], [`GpuEncoder::with_options_async`], `encode_async`).
#[cfg(target_arch = "wasm32")]
const WEB_GPU: &str =
    "on the web the GPU engine opens asynchronously (gpu::Context::new_async); Clip runs the CPU engine";

#[cfg(target_arch = "wasm32")]
fn open_context(_opts: &ClipOptions) -> std::result::Result<gpu::Context, GpuError> {
    Err(GpuError::Unsupported(WEB_GPU.into()))
}

#[cfg(target_arch = "wasm32")]
fn open_gpu(
    _ctx: gpu::Context,
    _ck: &Checkpoint,
    _opts: &ClipOptions,
    _precision: Option<Precision>,
) -> std::result::Result<GpuEncoder, GpuError> {
    Err(GpuError::Unsupported(WEB_GPU.into()))
}

#[cfg(not(target_arch = "wasm32"))]
fn open_gpu(
    ctx: gpu::Context,
    ck: &Checkpoint,
    opts: &ClipOptions,
    precision: Option<Precision>,
) -> std::result::Result<GpuEncoder, GpuError> {
    let precision = precision.unwrap_or_else(|| ctx.default_precision());
    if precision == Precision::F16 && !ctx.has_f16() {
        return Err(GpuError::Unsupported(format!("{} has no SHADER_F16: use --precision f32", ctx.report.name)));
    }
    let with = |matmul| {
        let o = gpu::GpuOptions { matmul, tiles: opts.gpu_tiles.clone(), ..Default::default() };
        GpuEncoder::with_options(&ctx, &ck.config, &ck.weights, precision, o)
    };
    match with(opts.gpu_matmul) {
        Err(GpuError::Unsupported(why)) if opts.gpu_matmul == gpu::MatmulPath::Coop && opts.device == Device::Auto => {
            notice(opts, &format!("{why}; using the plain matmul"));
            with(gpu::MatmulPath::Plain)
        }
        r => r,
    }
}

fn notice(opts: &ClipOptions, msg: &str) {
    if opts.notices {
        eprintln!("clip-wgpu: {msg}");
    }
}

/// Cosine similarity of two L2-normalised embeddings (their dot product).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The per-pair CLIP score: `100 · max(cos, 0)`.
pub fn clip_score(cos: f32) -> f32 {
    100.0 * cos.max(0.0)
}

/// torchmetrics' `CLIPScore`: the mean of `100·cos` over the pairs, then clamped at 0.
pub fn clip_score_mean(cosines: &[f32]) -> f32 {
    if cosines.is_empty() {
        return 0.0;
    }
    (100.0 * cosines.iter().map(|&c| c as f64).sum::<f64>() / cosines.len() as f64).max(0.0) as f32
}

/// Softmax of `logits` (e.g. one image's logits over the texts).
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f64> = logits.iter().map(|&l| ((l - max) as f64).exp()).collect();
    let sum: f64 = exp.iter().sum();
    exp.iter().map(|&e| (e / sum) as f32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores() {
        assert_eq!(clip_score(-0.2), 0.0);
        assert!((clip_score(0.3) - 30.0).abs() < 1e-5);
        assert!((clip_score_mean(&[0.3, -0.1]) - 10.0).abs() < 1e-5);
        assert_eq!(clip_score_mean(&[-0.3, 0.1]), 0.0);
        let p = softmax(&[1.0, 2.0, 3.0]);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!((p[2] - 0.665_240_9).abs() < 1e-6);
    }

    #[test]
    fn option_enums_parse_and_print_the_command_line_names() {
        for d in [Device::Auto, Device::Cpu, Device::Gpu] {
            assert_eq!(d.to_string().parse::<Device>().unwrap(), d);
        }
        for b in Backend::ALL {
            assert_eq!(b.to_string().parse::<Backend>().unwrap(), b);
        }
        for p in PrecisionChoice::ALL {
            assert_eq!(p.to_string().parse::<PrecisionChoice>().unwrap(), p);
        }
        assert_eq!("VK".parse::<Backend>().unwrap(), Backend::Vulkan);
        assert_eq!("fp16".parse::<PrecisionChoice>().unwrap(), PrecisionChoice::F16);
        assert_eq!("bfloat16".parse::<PrecisionChoice>().unwrap(), PrecisionChoice::Bf16);
        let e = "f64".parse::<PrecisionChoice>().unwrap_err().to_string();
        assert!(e.contains("\"f64\"") && e.contains("int8"), "{e}");
        let e = "glide".parse::<Backend>().unwrap_err().to_string();
        assert!(e.contains("\"glide\"") && e.contains("vulkan"), "{e}");
        assert!("tpu".parse::<Device>().unwrap_err().to_string().contains("\"tpu\""));
    }

    #[test]
    fn precision_choices_resolve_to_an_engine() {
        use PrecisionChoice as P;
        let r = |p: P, d| p.resolve(d).map_err(|e| e.to_string());
        assert_eq!(r(P::Auto, Device::Auto), Ok((Device::Auto, None, CpuPrecision::F32)));
        assert_eq!(r(P::F32, Device::Gpu), Ok((Device::Gpu, Some(Precision::F32), CpuPrecision::F32)));
        assert_eq!(r(P::F16, Device::Auto), Ok((Device::Auto, Some(Precision::F16), CpuPrecision::F32)));
        assert_eq!(r(P::Int8, Device::Auto), Ok((Device::Cpu, None, CpuPrecision::Int8)));
        assert_eq!(r(P::Bf16, Device::Cpu), Ok((Device::Cpu, None, CpuPrecision::Bf16)));
        assert!(r(P::F16, Device::Cpu).unwrap_err().contains("f16 is a GPU precision"));
        assert!(r(P::Int8, Device::Gpu).unwrap_err().contains("int8 is a CPU precision"));
    }

    fn _assert_send_sync() {
        fn is<T: Send + Sync>() {}
        is::<Clip>();
    }
}
