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
pub mod pipeline;
pub mod plan;
pub mod selfcheck;
pub mod shader;
pub mod types;
pub mod weights;
pub mod wgsl;

pub use context::{adapters, Context, ContextOptions};
pub use executor::{GpuEncoder, GpuOptions, GpuStats};
pub use matmul_coop::MatmulPath;
pub use plan::{plan_kernels, plan_kernels_with};
pub use shader::KernelKey;
pub use types::{AdapterReport, Dt, GpuError, Precision};
