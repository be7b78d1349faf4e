//! clip-wgpu: CLIP ViT-B/32 image and text embeddings and CLIP scores.
pub mod cpu;
pub mod model;
pub mod preprocess;
