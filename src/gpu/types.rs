//! The plain types every module of the GPU engine shares: storage types, the precision, the
//! error, and what an adapter offers. This module imports no other module of `gpu`.

/// A storage type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum Dt {
    F32,
    F16,
}

impl Dt {
    pub fn wgsl(self) -> &'static str {
        match self {
            Dt::F32 => "f32",
            Dt::F16 => "f16",
        }
    }
    pub fn size(self) -> u64 {
        match self {
            Dt::F32 => 4,
            Dt::F16 => 2,
        }
    }
}

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
    /// Storage type of the per-token activations (the pooled rows and the embeddings are
    /// always f32).
    pub fn tokens(self) -> Dt {
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

/// What `info` shows about one adapter.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AdapterReport {
    /// Position in [`adapters`](super::context::adapters)'s list (what `--adapter N` selects).
    pub index: usize,
    pub name: String,
    /// PCI vendor and device ids (as the driver reports them; 0 where it has none).
    pub vendor: u32,
    pub device: u32,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    pub driver_info: String,
    pub shader_f16: bool,
    pub subgroup: bool,
    pub timestamp_query: bool,
    /// `EXPERIMENTAL_COOPERATIVE_MATRIX` configurations, e.g. `16x16x16 f16→f32`; empty when absent.
    pub cooperative_matrix: Vec<String>,
    /// The cooperative-matrix configuration the tensor-core matmul uses is offered.
    pub coop_16x16x16_f16_f32: bool,
    /// The matmul kernel the engine would run there at its default precision with
    /// `--gpu-matmul auto`, and why (see [`matmul_coop::unavailable`](super::matmul_coop::unavailable)).
    pub matmul_path: String,
    pub subgroup_min_size: u32,
    pub subgroup_max_size: u32,
    pub max_storage_buffer_binding_size: u64,
    pub max_buffer_size: u64,
    pub max_compute_workgroup_storage_size: u32,
    pub max_compute_invocations_per_workgroup: u32,
    pub min_storage_buffer_offset_alignment: u32,
    /// The precision the engine would choose by default there.
    pub default_precision: Precision,
}
