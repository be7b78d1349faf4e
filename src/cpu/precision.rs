//! The CPU engine's weight precision: f32 (the reference) or a reduced one, chosen per run.

/// How the CPU engine stores the linear layers' weights and computes their products.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CpuPrecision {
    /// f32 weights and activations: the reference path.
    #[default]
    F32,
    /// bf16 weights, f32 accumulation.
    Bf16,
    /// int8 weights (per-output-channel scales), quantised activations, i32 accumulation.
    Int8,
}

impl CpuPrecision {
    pub const ALL: [CpuPrecision; 3] = [CpuPrecision::F32, CpuPrecision::Bf16, CpuPrecision::Int8];

    pub fn parse(s: &str) -> Option<CpuPrecision> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "fp32" | "float32" => Some(CpuPrecision::F32),
            "bf16" | "bfloat16" => Some(CpuPrecision::Bf16),
            "int8" | "i8" | "q8" => Some(CpuPrecision::Int8),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            CpuPrecision::F32 => "f32",
            CpuPrecision::Bf16 => "bf16",
            CpuPrecision::Int8 => "int8",
        }
    }

    /// Whether this build runs it on this machine: all three run everywhere (AVX2 kernels
    /// where the CPU has AVX2+FMA, portable ones elsewhere).
    pub fn supported(self) -> bool {
        true
    }

    /// The precision to use when none is asked for: f32, the reference (reduced precisions
    /// trade exactness for speed and are opt-in; see docs/rejected-optimizations.md for
    /// what they gain on each machine).
    pub fn best_for_machine() -> CpuPrecision {
        CpuPrecision::F32
    }
}

impl std::fmt::Display for CpuPrecision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
