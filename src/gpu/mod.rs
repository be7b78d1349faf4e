//! The GPU backend: WGSL compute kernels run through `wgpu` (Vulkan, Metal, DX12, GL).
//!
//! It executes the same [`Program`](crate::model::Program) as the CPU backend, one dispatch
//! per [`Op`](crate::model::Op) (the tower's [`Op::Head`](crate::model::Op::Head) too: pooling,
//! layernorm, projection and L2 normalisation in one kernel). The modules, each importing only those above it in this
//! list (no import circle; `tests/shaders.rs` checks it):
//!
//! * [`types`]: [`Dt`], [`Precision`], [`GpuError`], [`AdapterReport`] (imports nothing of gpu).
//! * [`wgsl`]: the variant generator (header of aliases, consts and binding declarations,
//!   `//#if FLAG` blocks, shared snippets), [`wgsl::Slot`] and [`wgsl::Uniform`].
//! * [`family`]: the [`family::Family`] trait, what one kernel family provides.
//! * one file per kernel family, owning its key, uniform block, bindings and dispatch:
//!   [`matmul`] (linear layers), [`matmul_coop`] (linear layers on cooperative matrices, where
//!   the adapter has them), [`patch`] (the patch embedding), [`attention`], [`norm`]
//!   (layernorm), [`embed`] (token embedding), [`head`] (the tower's end).
//! * [`shader`]: [`KernelKey`] (one variant of any family) and the catalog of all variants.
//! * [`tiles`]: which tile configuration runs each linear layer, by shape bucket, and why
//!   (forced, cached tuner table, shipped default); the tuner's cache file (no device).
//! * [`plan`]: which variant runs each op (no device needed).
//! * [`context`]: instance, adapter selection, device with the optional features that matter.
//! * [`pipeline`]: pipelines and bind group layouts from a key.
//! * [`pipeline_cache`]: the driver's compiled pipelines, persisted per adapter and driver.
//! * [`weights`]: all parameters uploaded once into a few large buffers, each bound as its own
//!   aligned slice (split by rows where larger than a binding may be).
//! * [`pool`]: the encoder's buffers (activation pool, inputs, uniforms, readback), bind
//!   groups and the recording of a chunk.
//! * [`selfcheck`]: the tensor-core kernel's selection and self-check.
//! * [`tune`]: the autotuner: times the tile candidates of each bucket on the device and
//!   caches the fastest (`clip-wgpu tune`).
//! * [`executor`]: [`GpuEncoder`], which walks a program chunk by chunk.

pub mod attention;
pub mod context;
pub mod embed;
pub mod executor;
pub mod family;
pub mod head;
pub mod matmul;
pub mod matmul_coop;
pub mod norm;
pub mod patch;
pub mod pipeline;
pub mod pipeline_cache;
pub mod plan;
pub mod pool;
pub mod selfcheck;
pub mod shader;
pub mod tiles;
#[cfg(not(target_arch = "wasm32"))]
pub mod tune;
pub mod types;
pub mod weights;
pub mod wgsl;

#[cfg(not(target_arch = "wasm32"))]
pub use context::adapters;
pub use context::{Context, ContextOptions};
pub use executor::{GpuEncoder, GpuOptions, GpuStats};
pub use matmul::Tile;
pub use matmul_coop::MatmulPath;
pub use plan::{plan_kernels, plan_kernels_tiled, plan_kernels_with};
pub use pool::ChunkCost;
pub use shader::KernelKey;
pub use tiles::{Reason, TilePolicy, Tiles};
pub use types::{AdapterReport, Dt, GpuError, Precision};
