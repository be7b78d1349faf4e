//! [`KernelKey`]: one variant of one kernel family, and [`catalog`], every variant the engine
//! can use. Each family's file (`matmul.rs`, `attention.rs`, …) owns its key, its WGSL source
//! and its bindings; this module only dispatches to them.

use super::types::{Dt, Precision};
use super::{attention, embed, matmul, matmul_coop, norm};

pub use super::wgsl::{generate, preprocess, Binding, Header};

/// The shader files, by name (for the tests: every file must be reached by some variant).
pub const FILES: [(&str, &str); 5] = [
    ("matmul.wgsl", matmul::WGSL),
    ("matmul_coop.wgsl", matmul_coop::WGSL),
    ("attention.wgsl", attention::WGSL),
    ("norm.wgsl", norm::WGSL),
    ("embed.wgsl", embed::WGSL),
];

/// One kernel variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KernelKey {
    Matmul(matmul::MatmulKey),
    /// The cooperative-matrix matmul (tensor cores).
    MatmulCoop(matmul_coop::CoopKey),
    Attention(attention::AttentionKey),
    Norm(norm::NormKey),
    Embed(embed::EmbedKey),
}

impl KernelKey {
    /// Short unique name (labels, test output).
    pub fn name(&self) -> String {
        match self {
            KernelKey::Matmul(k) => k.name(),
            KernelKey::MatmulCoop(k) => k.name(),
            KernelKey::Attention(k) => k.name(),
            KernelKey::Norm(k) => k.name(),
            KernelKey::Embed(k) => k.name(),
        }
    }
    /// The shader file it comes from.
    pub fn file(&self) -> &'static str {
        match self {
            KernelKey::Matmul(_) => "matmul.wgsl",
            KernelKey::MatmulCoop(_) => "matmul_coop.wgsl",
            KernelKey::Attention(_) => "attention.wgsl",
            KernelKey::Norm(_) => "norm.wgsl",
            KernelKey::Embed(_) => "embed.wgsl",
        }
    }
    pub fn source(&self) -> String {
        match self {
            KernelKey::Matmul(k) => k.source(),
            KernelKey::MatmulCoop(k) => k.source(),
            KernelKey::Attention(k) => k.source(),
            KernelKey::Norm(k) => k.source(),
            KernelKey::Embed(k) => k.source(),
        }
    }
    pub fn entry(&self) -> &'static str {
        match self {
            KernelKey::Matmul(_) | KernelKey::MatmulCoop(_) | KernelKey::Attention(_) => "main",
            KernelKey::Norm(k) => k.entry(),
            KernelKey::Embed(k) => k.entry(),
        }
    }
    /// The bindings of group 0 that the entry point uses, in binding order.
    pub fn bindings(&self) -> Vec<(u32, Binding)> {
        match self {
            KernelKey::Matmul(k) => k.bindings(),
            KernelKey::MatmulCoop(k) => k.bindings(),
            KernelKey::Attention(_) => attention::BINDINGS.to_vec(),
            KernelKey::Norm(k) => k.bindings(),
            KernelKey::Embed(k) => k.bindings(),
        }
    }
    pub fn needs_f16(&self) -> bool {
        self.source().starts_with("enable f16;")
    }
    /// Uses subgroup builtins or operations (Features::SUBGROUP).
    pub fn needs_subgroup(&self) -> bool {
        matches!(self, KernelKey::Norm(k) if k.subgroup) || matches!(self, KernelKey::MatmulCoop(_))
    }
    /// Uses cooperative matrices (Features::EXPERIMENTAL_COOPERATIVE_MATRIX).
    pub fn needs_coop(&self) -> bool {
        matches!(self, KernelKey::MatmulCoop(_))
    }
}

/// Every variant the engine can use with the given head sizes: all storage-type
/// combinations of both precisions, every epilogue, both subgroup settings, and every
/// cooperative-matrix matmul variant.
pub fn catalog(head_dims: &[usize]) -> Vec<KernelKey> {
    let mut v = Vec::new();
    for precision in [Precision::F32, Precision::F16] {
        let wt = precision.weights();
        let at = precision.tokens();
        for (x, y) in [(at, at), (Dt::F32, Dt::F32)] {
            for bias in [false, true] {
                for act in 0..3 {
                    for acc in [false, true] {
                        v.push(KernelKey::Matmul(matmul::MatmulKey { x, w: wt, y, bias, act, acc, patch: false }));
                    }
                }
            }
        }
        v.push(KernelKey::Matmul(matmul::MatmulKey {
            x: Dt::F32,
            w: wt,
            y: at,
            bias: true,
            act: 0,
            acc: false,
            patch: true,
        }));
        for &hd in head_dims {
            for causal in [false, true] {
                v.push(KernelKey::Attention(attention::AttentionKey {
                    qkv: at,
                    out: at,
                    hd4: (hd / 4) as u32,
                    causal,
                }));
            }
        }
        for subgroup in [false, true] {
            for (x, y, inplace) in [(at, at, false), (at, at, true), (Dt::F32, Dt::F32, true)] {
                v.push(KernelKey::Norm(norm::NormKey { x, y, g: wt, inplace, subgroup, l2: false }));
            }
            v.push(KernelKey::Norm(norm::NormKey { x: Dt::F32, y: Dt::F32, g: wt, inplace: true, subgroup, l2: true }));
        }
        for pool in [false, true] {
            v.push(KernelKey::Embed(embed::EmbedKey { pool, tokens: at, table: wt, pooled: Dt::F32 }));
        }
    }
    v.extend(matmul_coop::CoopKey::all().into_iter().map(KernelKey::MatmulCoop));
    v.sort();
    v.dedup();
    v
}
