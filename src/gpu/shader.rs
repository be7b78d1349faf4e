//! [`KernelKey`]: one variant of one kernel family, and [`catalog`], every variant the engine
//! can use. Each family's file (`matmul.rs`, `attention.rs`, …) owns its key, its WGSL, its
//! bindings, its uniform block and its dispatch shape ([`Family`]); this module only
//! dispatches to them.

use super::attention::{self, AttentionKey};
use super::embed::{self, EmbedKey};
use super::family::{Chunk, Family, Res};
use super::head::{self, HeadKey};
use super::matmul::{self, MatmulKey, Tile};
use super::matmul_coop::{self, CoopKey};
use super::norm::{self, NormKey};
use super::patch::{self, PatchKey};
use super::types::{GpuError, Precision};
use super::wgsl::{Field, Slot, Uniform, EPILOGUE_WGSL};
use crate::model::{Epilogue, Op, Program};

pub use super::wgsl::{generate, preprocess, Binding, Header};

/// The shader files, by name (for the tests: every file must be reached by some variant).
pub const FILES: [(&str, &str); 7] = [
    (MatmulKey::FILE, matmul::WGSL),
    (CoopKey::FILE, matmul_coop::WGSL),
    (PatchKey::FILE, patch::WGSL),
    (AttentionKey::FILE, attention::WGSL),
    (NormKey::FILE, norm::WGSL),
    (EmbedKey::FILE, embed::WGSL),
    (HeadKey::FILE, head::WGSL),
];

/// Shared WGSL appended to some variants, by name (every one must be used by some variant).
pub const SNIPPETS: [(&str, &str); 1] = [("epilogue.wgsl", EPILOGUE_WGSL)];

/// One kernel variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KernelKey {
    Matmul(MatmulKey),
    /// The cooperative-matrix matmul (tensor cores).
    MatmulCoop(CoopKey),
    Patch(PatchKey),
    Attention(AttentionKey),
    Norm(NormKey),
    Embed(EmbedKey),
    /// Pooling, layernorm, projection and L2 normalisation of a tower's end.
    Head(HeadKey),
}

/// `$e` with `$k` bound to the family key inside `$key`.
macro_rules! each {
    ($key:expr, $k:ident => $e:expr) => {
        match $key {
            KernelKey::Matmul($k) => $e,
            KernelKey::MatmulCoop($k) => $e,
            KernelKey::Patch($k) => $e,
            KernelKey::Attention($k) => $e,
            KernelKey::Norm($k) => $e,
            KernelKey::Embed($k) => $e,
            KernelKey::Head($k) => $e,
        }
    };
}

fn file_of<F: Family>(_: &F) -> &'static str {
    F::FILE
}
fn fields_of<F: Family>(_: &F) -> &'static [Field] {
    <F::Params as Uniform>::FIELDS
}
fn size_of_params<F: Family>(_: &F) -> u64 {
    std::mem::size_of::<F::Params>() as u64
}
fn launch_of<F: Family>(k: &F, op: &Op, chunk: &Chunk) -> (Vec<u8>, [u32; 3]) {
    let (p, d) = k.launch(op, chunk);
    (bytemuck::bytes_of(&p).to_vec(), d)
}

impl KernelKey {
    /// Short unique name (labels, test output).
    pub fn name(&self) -> String {
        each!(self, k => k.name())
    }
    /// The shader file it comes from.
    pub fn file(&self) -> &'static str {
        each!(self, k => file_of(k))
    }
    pub fn source(&self) -> String {
        each!(self, k => k.source())
    }
    pub fn entry(&self) -> &'static str {
        each!(self, k => k.entry())
    }
    /// The bindings of group 0, in binding order (the uniform block first).
    pub fn slots(&self) -> Vec<Slot> {
        each!(self, k => k.slots())
    }
    /// `(binding, access)` of [`slots`](Self::slots).
    pub fn bindings(&self) -> Vec<(u32, Binding)> {
        self.slots().iter().map(|s| (s.binding, s.access)).collect()
    }
    /// What `op` binds to each slot.
    pub fn resources(&self, op: &Op) -> Vec<Res> {
        each!(self, k => k.resources(op))
    }
    /// `op` of `program` is a shape this variant can run ([`Family::check`]).
    pub fn check(&self, op: &Op, program: &Program) -> Result<(), GpuError> {
        each!(self, k => k.check(op, program))
    }
    /// The uniform block (bytes) and dispatch shape of `op` on a chunk.
    pub fn launch(&self, op: &Op, chunk: &Chunk) -> (Vec<u8>, [u32; 3]) {
        each!(self, k => launch_of(k, op, chunk))
    }
    /// Size of the uniform block, in bytes.
    pub fn params_size(&self) -> u64 {
        each!(self, k => size_of_params(k))
    }
    /// The uniform block's fields (name, offset, type), as the Rust struct has them.
    pub fn params_fields(&self) -> &'static [Field] {
        each!(self, k => fields_of(k))
    }
    /// The matmul epilogue (`None` for the other families).
    pub fn epilogue(&self) -> Option<Epilogue> {
        match self {
            KernelKey::Matmul(k) => Some(k.epi),
            KernelKey::MatmulCoop(k) => Some(k.epi),
            _ => None,
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
/// combinations of both precisions, every epilogue, every matmul tile candidate, both subgroup
/// settings, and every cooperative-matrix matmul variant.
pub fn catalog(head_dims: &[usize]) -> Vec<KernelKey> {
    let mut v = Vec::new();
    for precision in [Precision::F32, Precision::F16] {
        let wt = precision.weights();
        let at = precision.tokens();
        for epi in Epilogue::all() {
            for tile in Tile::CANDIDATES {
                v.push(KernelKey::Matmul(MatmulKey { x: at, w: wt, y: at, epi, tile }));
            }
        }
        for vec4 in [false, true] {
            v.push(KernelKey::Patch(PatchKey { w: wt, y: at, vec4 }));
        }
        for &hd in head_dims {
            for causal in [false, true] {
                v.push(KernelKey::Attention(AttentionKey { qkv: at, out: at, hd4: (hd / 4) as u32, causal }));
            }
        }
        for subgroup in [false, true] {
            for inplace in [false, true] {
                v.push(KernelKey::Norm(NormKey { x: at, y: at, g: wt, inplace, subgroup }));
            }
        }
        v.push(KernelKey::Embed(EmbedKey { tokens: at, table: wt }));
        v.push(KernelKey::Head(HeadKey { x: at, w: wt }));
    }
    v.extend(CoopKey::all().into_iter().map(KernelKey::MatmulCoop));
    v.sort();
    v.dedup();
    v
}
