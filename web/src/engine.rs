//! The engine behind the page, in plain Rust (no JS types): a checkpoint on the browser's
//! WebGPU adapter (the library's WGSL kernels through wgpu, awaited, never blocked on) or on
//! the CPU engine (single-threaded on `wasm32-unknown-unknown`: rayon runs its jobs on the
//! calling thread there). Errors are the engine's messages.

use clip_wgpu::cpu::{self, CpuPrecision};
use clip_wgpu::gpu::{Context, ContextOptions, GpuEncoder, GpuOptions, Precision};
use clip_wgpu::model::{self, check_tokens, Checkpoint, ClipConfig, Input, LoadOptions, Params, Program, Tower};
use clip_wgpu::preprocess::{self, Decoded, Limits, Pixels, Variant};
use clip_wgpu::text::ClipTokenizer;

/// Where the encoders run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceChoice {
    /// The browser's WebGPU adapter: an error where there is none.
    WebGpu,
    /// The CPU engine (wasm, f32).
    Cpu,
    /// WebGPU where it opens, else the CPU.
    Auto,
}

impl DeviceChoice {
    pub fn parse(s: &str) -> Result<DeviceChoice, String> {
        match s.to_ascii_lowercase().as_str() {
            "webgpu" | "gpu" => Ok(DeviceChoice::WebGpu),
            "cpu" | "wasm" => Ok(DeviceChoice::Cpu),
            "auto" => Ok(DeviceChoice::Auto),
            _ => Err(format!("unknown device {s:?}: expected \"webgpu\", \"cpu\" or \"auto\"")),
        }
    }
}

enum Backend {
    Gpu(Box<GpuEncoder>),
    Cpu { params: Params, prep: Box<cpu::Prepared> },
}

/// A loaded model, ready to embed images and texts.
pub struct Engine {
    cfg: ClipConfig,
    vision: Program,
    text: Program,
    tokenizer: ClipTokenizer,
    logit_scale: f32,
    backend: Backend,
    /// `webgpu ADAPTER (f32|f16)` or `cpu (wasm, f32)`.
    path: String,
    adapter: String,
}

/// Images per CPU batch: the activations of a batch stay in tens of MB.
const CPU_BATCH: usize = 8;

impl Engine {
    /// Loads a checkpoint from bytes: `model` a `.safetensors` file (f32, f16 or bf16: kept as
    /// f32 in memory and on the GPU unless the adapter has `shader-f16` and `precision` allows
    /// it), `config` its `config.json` (HF) or `open_clip_config.json`, `tokenizer` a
    /// `tokenizer.json` (`None`: the bundled CLIP BPE).
    pub async fn from_bytes(
        name: &str,
        config: Option<&[u8]>,
        model: &[u8],
        tokenizer: Option<&[u8]>,
        device: DeviceChoice,
        precision: Option<Precision>,
    ) -> Result<Engine, String> {
        let (ck, tokenizer) = load_checkpoint(name, config, model, tokenizer)?;
        Self::from_checkpoint(ck, tokenizer, device, precision).await
    }

    pub async fn from_checkpoint(
        ck: Checkpoint,
        tokenizer: ClipTokenizer,
        device: DeviceChoice,
        precision: Option<Precision>,
    ) -> Result<Engine, String> {
        let gpu = match device {
            DeviceChoice::Cpu => None,
            DeviceChoice::WebGpu => Some(open_gpu(&ck, precision).await?),
            DeviceChoice::Auto => open_gpu(&ck, precision).await.ok(),
        };
        let vision = Program::new(Tower::Vision, &ck.config, &ck.weights);
        let text = Program::new(Tower::Text, &ck.config, &ck.weights);
        let logit_scale = ck.weights.logit_scale.exp();
        let (backend, path, adapter) = match gpu {
            Some(g) => {
                let r = &g.context().report;
                let (path, adapter) = (format!("webgpu {} ({})", r.name, g.precision()), r.name.clone());
                // the weights live on the GPU now: the host copy goes
                (Backend::Gpu(Box::new(g)), path, adapter)
            }
            None => {
                let mut params = ck.weights.params;
                let prep = cpu::Prepared::with_precision(&params, &[&vision, &text], CpuPrecision::F32);
                // The linear layers live in the engine's own layout now: their canonical copies
                // go, so the weights are held once (as `Clip` does).
                for p in [&vision, &text] {
                    for op in &p.ops {
                        if let model::Op::Linear { lin, .. } | model::Op::PatchEmbed { patch: lin, .. } = op {
                            params.list[lin.weight.0].data = Vec::new();
                        }
                    }
                }
                let path = format!("cpu (wasm, {}, 1 thread)", CpuPrecision::F32);
                (Backend::Cpu { params, prep: Box::new(prep) }, path, String::new())
            }
        };
        Ok(Engine { cfg: ck.config, vision, text, tokenizer, logit_scale, backend, path, adapter })
    }

    /// Length of an embedding.
    pub fn dim(&self) -> usize {
        self.cfg.embed_dim
    }
    /// What runs the encoders, in words.
    pub fn path(&self) -> &str {
        &self.path
    }
    /// The WebGPU adapter's name (empty on the CPU).
    pub fn adapter(&self) -> &str {
        &self.adapter
    }
    pub fn is_gpu(&self) -> bool {
        matches!(self.backend, Backend::Gpu(_))
    }
    /// `exp(logit_scale)`: logits are this times the cosine.
    pub fn logit_scale(&self) -> f32 {
        self.logit_scale
    }
    /// The side of the model's square input images.
    pub fn image_size(&self) -> u32 {
        self.cfg.vision.image_size as u32
    }

    /// Encoded image bytes (JPEG, PNG, WebP, GIF, BMP, TIFF) → the model's input pixels.
    pub fn preprocess_bytes(&self, name: &str, bytes: &[u8]) -> Result<Vec<f32>, String> {
        preprocess::preprocess_bytes_sized(bytes, self.image_size(), Variant::Hf, &Limits::default())
            .map_err(|e| format!("{name}: {e}"))
    }

    /// Straight (not premultiplied) RGBA pixels, as in an `ImageData` → the model's input
    /// pixels (alpha composited onto white, as transformers' preprocessing does).
    pub fn preprocess_rgba(&self, name: &str, width: u32, height: u32, rgba: Vec<u8>) -> Result<Vec<f32>, String> {
        if width == 0 || height == 0 {
            return Err(format!("{name}: image has a zero dimension ({width}x{height})"));
        }
        let d = Decoded::new(width, height, Pixels::Rgba(rgba))
            .ok_or_else(|| format!("{name}: {width}x{height} RGBA needs {} bytes", width as u64 * height as u64 * 4))?;
        Ok(preprocess::normalize(&preprocess::resize_crop(&d.into_rgb_hf(), self.image_size(), Variant::Hf)))
    }

    /// Preprocessed images (`n` back to back) → `[n, dim]` L2-normalised embeddings.
    pub async fn embed_pixels(&self, pixels: &[f32], n: usize) -> Result<Vec<f32>, String> {
        let per = 3 * (self.image_size() as usize).pow(2);
        if pixels.len() != n * per {
            return Err(format!("{} pixel values for {n} images (expected {})", pixels.len(), n * per));
        }
        match &self.backend {
            Backend::Gpu(g) => {
                g.encode_async(Tower::Vision, &Input::Pixels { data: pixels, n }).await.map_err(|e| e.to_string())
            }
            Backend::Cpu { params, prep } => {
                let mut out = Vec::with_capacity(n * self.dim());
                for c in pixels.chunks(CPU_BATCH * per) {
                    let input = Input::Pixels { data: c, n: c.len() / per };
                    out.extend(cpu::run_prepared(&self.vision, &self.cfg, params, prep, &input));
                }
                Ok(out)
            }
        }
    }

    /// Texts → `[n, dim]` L2-normalised embeddings.
    pub async fn embed_texts<S: AsRef<str>>(&self, texts: &[S]) -> Result<Vec<f32>, String> {
        let ids: Vec<Vec<u32>> = texts.iter().map(|t| self.tokenizer.encode(t.as_ref())).collect();
        check_tokens(&ids, &self.cfg.text)?;
        match &self.backend {
            Backend::Gpu(g) => g.encode_async(Tower::Text, &Input::Tokens(&ids)).await.map_err(|e| e.to_string()),
            Backend::Cpu { params, prep } => {
                let mut out = Vec::with_capacity(ids.len() * self.dim());
                for c in ids.chunks(64) {
                    out.extend(cpu::run_prepared(&self.text, &self.cfg, params, prep, &Input::Tokens(c)));
                }
                Ok(out)
            }
        }
    }
}

/// The checkpoint (weights as f32) and tokenizer from the files' bytes (see
/// [`Engine::from_bytes`]); the bytes may go once this returns.
pub fn load_checkpoint(
    name: &str,
    config: Option<&[u8]>,
    model: &[u8],
    tokenizer: Option<&[u8]>,
) -> Result<(Checkpoint, ClipTokenizer), String> {
    let ck = model::load_from_bytes(name, model, config, &LoadOptions::default()).map_err(|e| e.to_string())?;
    let tokenizer = match tokenizer {
        Some(b) => ClipTokenizer::from_bytes(b).map_err(|e| format!("{name}: tokenizer.json: {e}"))?,
        None => ClipTokenizer::bundled(),
    };
    Ok((ck, tokenizer))
}

async fn open_gpu(ck: &Checkpoint, precision: Option<Precision>) -> Result<GpuEncoder, String> {
    let ctx = Context::new_async(&ContextOptions::default()).await.map_err(|e| format!("WebGPU: {e}"))?;
    // f16 only where the adapter has shader-f16 (and it was not refused): else the f32 kernels
    let precision = precision.unwrap_or_else(|| ctx.default_precision());
    // The reductions use workgroup memory, not subgroup operations: the kernels' subgroup
    // variants use builtins (`subgroup_id`) that browsers do not all have yet.
    let opts = GpuOptions { subgroups: false, ..GpuOptions::default() };
    GpuEncoder::with_options_async(&ctx, &ck.config, &ck.weights, precision, opts)
        .await
        .map_err(|e| format!("WebGPU: {e}"))
}

/// Rows of `a` (`[n, dim]`) against rows of `b` (`[m, dim]`): `[n, m]` cosines.
pub fn cosines(a: &[f32], b: &[f32], dim: usize) -> Result<Vec<f32>, String> {
    if dim == 0 || !a.len().is_multiple_of(dim) || !b.len().is_multiple_of(dim) {
        return Err(format!("embeddings of {} and {} values are not rows of {dim}", a.len(), b.len()));
    }
    Ok(a.chunks(dim).flat_map(|x| b.chunks(dim).map(move |y| clip_wgpu::cosine(x, y))).collect())
}
