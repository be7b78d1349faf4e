//! clip-wgpu: CLIP ViT-B/32 image and text embeddings and CLIP scores.
//!
//! Data flows one way: bytes → [`preprocess`] (decode, PIL-exact resize and crop,
//! normalise) → pixels; text → [`text`] (OpenAI-exact tokenizer) → ids; both → an
//! encoder ([`cpu`], or the GPU) executing the one model description in [`model`] →
//! L2-normalised embeddings → scores ([`cosine`], [`clip_score`], [`softmax`]).
//! [`Clip`] puts it together.
//!
//! Cargo features: `cli` (default) builds the `clip-wgpu` command line and brings clap,
//! indicatif, ctrlc, csv and glob; `download` (default) fetches the default checkpoint
//! through hf-hub; `libjpeg` (default) decodes JPEG with libjpeg-turbo, exactly as Pillow
//! does; `webdataset` (with `cli`) reads WebDataset `.tar` shards (`shards`); `parquet`
//! (default) writes the command line's Parquet output. A program embedding the library needs none of the first two:
//! `clip-wgpu = { version = "0.1", default-features = false, features = ["libjpeg"] }`.

pub mod batcher;
pub mod cache;
pub mod clip;
pub mod cpu;
pub mod error;
pub mod gpu;
pub mod model;
pub mod pipeline;
pub mod preprocess;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "webdataset")]
pub mod shards;
pub mod text;

pub use cache::EngineKind;
pub use clip::{
    clip_score, clip_score_mean, cosine, softmax, Backend, Clip, ClipOptions, Device, PrecisionChoice, PreparedImage,
};
pub use error::{Error, Result};
