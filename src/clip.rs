//! The public face: [`Clip`] loads a checkpoint, encodes images and texts on the chosen
//! engine and turns embeddings into scores.
//!
//! ```no_run
//! use clip_wgpu::{Clip, ClipOptions};
//! let clip = Clip::load("clip-vit-base-patch32/", &ClipOptions::default())?;
//! let images = clip.encode_image_files(&["dog.jpg"]);
//! let texts = clip.encode_texts(&["a photo of a dog", "a photo of a cat"]);
//! let img = images[0].as_ref().unwrap();
//! for (t, e) in ["dog", "cat"].iter().zip(texts.chunks(clip.embed_dim())) {
//!     let cos = clip_wgpu::cosine(img, e);
//!     println!("{t}: CLIP score {:.2}", clip_wgpu::clip_score(cos));
//! }
//! # Ok::<(), clip_wgpu::Error>(())
//! ```

use std::path::Path;

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::model::{self, Activation, Checkpoint, Input, LoadOptions, Program, Tower};
use crate::preprocess::{self, Limits, Variant};
use crate::text::ClipTokenizer;

/// Where the encoders run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize)]
pub enum Device {
    /// A GPU adapter if one works, else the CPU.
    #[default]
    Auto,
    Cpu,
    Gpu,
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
    /// Images per encoder batch.
    pub batch_size: usize,
}

impl Default for ClipOptions {
    fn default() -> Self {
        ClipOptions {
            device: Device::Auto,
            activation: None,
            variant: Variant::Hf,
            limits: Limits::default(),
            tokenizer: None,
            batch_size: 32,
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
    device_used: Device,
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
        if opts.batch_size == 0 {
            return Err(Error::Invalid("batch size must be at least 1".into()));
        }
        let device_used = match opts.device {
            Device::Cpu | Device::Auto => Device::Cpu,
            Device::Gpu => return Err(Error::Gpu("this build has no GPU engine yet".into())),
        };
        let vision = Program::new(Tower::Vision, &ck.config, &ck.weights);
        let text = Program::new(Tower::Text, &ck.config, &ck.weights);
        Ok(Clip { ck, vision, text, tokenizer, opts: opts.clone(), device_used })
    }

    pub fn config(&self) -> &model::ClipConfig {
        &self.ck.config
    }
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
    /// The device the encoders run on.
    pub fn device(&self) -> Device {
        self.device_used
    }
    /// `exp(logit_scale)`: logits are this times the cosine.
    pub fn logit_scale(&self) -> f32 {
        self.ck.weights.logit_scale.exp()
    }

    /// Encodes preprocessed images (CHW f32, `3·S·S` values each, back to back) into
    /// L2-normalised embeddings, `[n, embed_dim]` flat.
    pub fn encode_pixels(&self, pixels: &[f32], n: usize) -> Vec<f32> {
        let s = self.ck.config.vision.image_size;
        assert_eq!(pixels.len(), n * 3 * s * s, "encode_pixels: expected {n} images of 3x{s}x{s}");
        let per = 3 * s * s;
        let mut out = Vec::with_capacity(n * self.embed_dim());
        for chunk in pixels.chunks(self.opts.batch_size * per) {
            let input = Input::Pixels { data: chunk, n: chunk.len() / per };
            out.extend(self.run(Tower::Vision, &input));
        }
        out
    }

    /// Encodes token id sequences (each `[SOT, …, EOT]`, at most the context length).
    pub fn encode_ids(&self, ids: &[Vec<u32>]) -> Vec<f32> {
        let mut out = Vec::with_capacity(ids.len() * self.embed_dim());
        for chunk in ids.chunks(self.opts.batch_size.max(1) * 4) {
            out.extend(self.run(Tower::Text, &Input::Tokens(chunk)));
        }
        out
    }

    /// Tokenises and encodes texts: `[n, embed_dim]` flat, L2-normalised.
    pub fn encode_texts<S: AsRef<str> + Sync>(&self, texts: &[S]) -> Vec<f32> {
        let ids: Vec<Vec<u32>> = texts.par_iter().map(|t| self.tokenizer.encode(t.as_ref())).collect();
        self.encode_ids(&ids)
    }

    /// Preprocesses one image given as bytes (`name` labels errors).
    pub fn preprocess_bytes(&self, name: &str, bytes: &[u8]) -> Result<Vec<f32>> {
        preprocess::preprocess_bytes(bytes, self.opts.variant, &self.opts.limits)
            .map_err(|source| Error::Image { input: name.to_string(), source })
    }

    /// Reads and preprocesses one image file.
    pub fn preprocess_file(&self, path: &Path) -> Result<Vec<f32>> {
        let name = path.display().to_string();
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
        let bytes = std::fs::read(path).map_err(|e| Error::Io { path: path.into(), msg: e.to_string() })?;
        self.preprocess_bytes(&name, &bytes)
    }

    /// Encodes image files: one result per input, in order; a bad file gets its error and
    /// the others still get embeddings.
    pub fn encode_image_files<P: AsRef<Path> + Sync>(&self, paths: &[P]) -> Vec<Result<Vec<f32>>> {
        self.encode_prepared(paths.par_iter().map(|p| self.preprocess_file(p.as_ref())).collect())
    }

    /// Encodes encoded images (JPEG, PNG, … bytes): one result per input, in order.
    pub fn encode_image_bytes<B: AsRef<[u8]> + Sync>(&self, images: &[B]) -> Vec<Result<Vec<f32>>> {
        self.encode_prepared(
            images
                .par_iter()
                .enumerate()
                .map(|(i, b)| self.preprocess_bytes(&format!("image #{i}"), b.as_ref()))
                .collect(),
        )
    }

    /// Encodes already decoded images.
    pub fn encode_images(&self, images: &[image::DynamicImage]) -> Vec<f32> {
        let px: Vec<f32> =
            images.par_iter().flat_map_iter(|im| preprocess::preprocess_image(im, self.opts.variant)).collect();
        self.encode_pixels(&px, images.len())
    }

    fn encode_prepared(&self, prepared: Vec<Result<Vec<f32>>>) -> Vec<Result<Vec<f32>>> {
        let ok: Vec<&Vec<f32>> = prepared.iter().filter_map(|r| r.as_ref().ok()).collect();
        let px: Vec<f32> = ok.iter().flat_map(|v| v.iter().copied()).collect();
        let emb = self.encode_pixels(&px, ok.len());
        let e = self.embed_dim();
        let mut rows = emb.chunks(e);
        prepared.into_iter().map(|r| r.map(|_| rows.next().expect("one embedding per image").to_vec())).collect()
    }

    fn run(&self, tower: Tower, input: &Input) -> Vec<f32> {
        let program = match tower {
            Tower::Vision => &self.vision,
            Tower::Text => &self.text,
        };
        crate::cpu::run(program, &self.ck.config, &self.ck.weights.params, input)
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

    fn _assert_send_sync() {
        fn is<T: Send + Sync>() {}
        is::<Clip>();
    }
}
