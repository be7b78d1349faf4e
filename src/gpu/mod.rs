//! The GPU backend: WGSL compute kernels run through `wgpu` (Vulkan, Metal, DX12, GL).
//!
//! It executes the same [`Program`](crate::model::Program) as the CPU backend, one dispatch
//! per [`Op`](crate::model::Op):
//!
//! * [`context`]: instance, adapter selection (name or index, backend), device with the
//!   optional features that matter (SHADER_F16, SUBGROUP), [`adapters`] for `info`.
//! * [`shader`]: the WGSL sources of `shaders/` and their variants (a generated header of
//!   type aliases and constants, and `//#if FLAG` blocks).
//! * one file per kernel family: [`matmul`] (linear layers and the patch embedding),
//!   [`matmul_coop`] (linear layers on cooperative matrices, where the adapter has them),
//!   [`attention`], [`norm`] (layernorm, L2), [`embed`] (token embedding, pooling).
//! * [`weights`]: all parameters uploaded once (f32, or converted to f16 once) into a few
//!   large buffers, each parameter bound as its own aligned slice.
//! * [`executor`]: [`GpuEncoder`], the activation pool, one command encoder and one submit
//!   per batch (chunk), only the embeddings read back.

pub mod attention;
pub mod context;
pub mod embed;
pub mod executor;
pub mod matmul;
pub mod matmul_coop;
pub mod norm;
pub mod shader;
pub mod weights;

pub use context::{adapters, AdapterReport, Context, ContextOptions};
pub use executor::{plan_kernels, plan_kernels_with, GpuEncoder, GpuOptions, GpuStats};
pub use matmul_coop::MatmulPath;
pub use shader::{Dt, KernelKey};

/// Storage precision of the GPU path. Arithmetic (dot products, reductions, softmax) is f32
/// in both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Weights and activations stored as f32: the reference path.
    F32,
    /// Weights and token activations stored as f16 (the pooled rows and the embeddings
    /// stay f32), f32 accumulation. Needs SHADER_F16.
    F16,
}

impl Precision {
    pub fn parse(s: &str) -> Option<Precision> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "fp32" | "float32" => Some(Precision::F32),
            "f16" | "fp16" | "float16" | "half" => Some(Precision::F16),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
        }
    }
    /// Storage type of the weights.
    pub fn weights(self) -> Dt {
        match self {
            Precision::F32 => Dt::F32,
            Precision::F16 => Dt::F16,
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Everything that can go wrong on the GPU path.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GpuError {
    #[error("no GPU adapter found{0}")]
    NoAdapter(String),
    #[error("unknown backend `{0}` (expected vulkan, metal, dx12 or gl)")]
    UnknownBackend(String),
    #[error("could not create a device on `{adapter}`: {msg}")]
    RequestDevice { adapter: String, msg: String },
    #[error("not supported on this adapter/model: {0}")]
    Unsupported(String),
    #[error("invalid input: {0}")]
    InvalidInput(String),
    #[error("out of memory: {0}")]
    OutOfMemory(String),
    #[error("device lost: {0}")]
    DeviceLost(String),
    #[error("{0}")]
    Backend(String),
}
