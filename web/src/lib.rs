//! clip-wgpu in the browser: the ES module `clip_wgpu.js` (wasm-bindgen `--target web`, built
//! by `cargo xtask web` into `target/web/pkg/`).
//!
//! ```js
//! import init, { Clip } from "./pkg/clip_wgpu.js";
//! await init();
//! const clip = await Clip.load("models/clip-vit-base-patch32/", { device: "webgpu" });
//! const img = await clip.embedImages([fileInput.files[0]]);      // Float32Array, 1 × dim
//! const txt = await clip.embedTexts(["a dog", "a cat"]);          // Float32Array, 2 × dim
//! const probs = clip.classify(img, txt);                          // softmax over the texts
//! ```
//!
//! The engine itself (loading, preprocessing, both encoders) is [`engine`], plain Rust.

pub mod engine;

#[cfg(target_arch = "wasm32")]
mod web;
#[cfg(target_arch = "wasm32")]
pub use web::*;
