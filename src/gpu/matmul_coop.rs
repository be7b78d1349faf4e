//! The cooperative-matrix (tensor core) matmul (`shaders/matmul_coop.wgsl`): the same
//! `Y (+)= act(X·Wᵀ + b)` and bindings as [`matmul`], on 16×16×16
//! f16 cooperative matrices with f32 accumulation, 128×128 blocks staged through workgroup
//! memory. Used only for f16 token rows, on adapters that offer the configuration, after a
//! self-check (see [`selfcheck`](super::selfcheck)); unrun on hardware so far.

use super::family::{Chunk, Family, Res};
use super::matmul::{self, linear_resources, linear_shape, MatmulParams};
use super::types::{AdapterReport, Dt};
use super::wgsl::{epilogue_suffix, Header, Slot};
use crate::model::{Epilogue, Op};

/// The shader source.
pub const WGSL: &str = include_str!("../../shaders/matmul_coop.wgsl");

/// One cooperative-matrix matmul variant. X and W are f16.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CoopKey {
    /// Storage of Y (f16 for token rows; f32 allowed).
    pub y: Dt,
    pub epi: Epilogue,
}

/// Output block of one workgroup (rows, columns).
pub const BLOCK: (u32, u32) = (128, 128);
/// K step: K must be a multiple of it.
pub const BK: usize = 32;
/// Invocations per workgroup: 8 subgroups of [`SUBGROUP`].
pub const THREADS: u32 = 256;
/// The subgroup size the tile layout assumes.
pub const SUBGROUP: u32 = 32;
/// Workgroup memory the kernel declares (`WG_BYTES` in the shader): two buffers of X and W
/// slices (128 rows × 40 halves each) and 8 f32 16×16 scratch tiles.
pub const WORKGROUP_BYTES: u32 = 2 * 2 * 128 * 40 * 2 + 8 * 256 * 4;

impl CoopKey {
    /// Every variant (both output types, every epilogue).
    pub fn all() -> Vec<CoopKey> {
        [Dt::F16, Dt::F32]
            .into_iter()
            .flat_map(|y| Epilogue::all().into_iter().map(move |epi| CoopKey { y, epi }))
            .collect()
    }
}

impl Family for CoopKey {
    /// The same uniform block and bindings as the plain matmul.
    type Params = MatmulParams;
    const FILE: &'static str = "matmul_coop.wgsl";
    const WGSL: &'static str = WGSL;

    fn name(&self) -> String {
        format!("matmul_coop_f16xf16_{}{}", self.y.wgsl(), epilogue_suffix(self.epi))
    }
    fn header(&self) -> Header {
        Header::default()
            .enable("wgpu_cooperative_matrix")
            .alias("XT", Dt::F16)
            .alias("WT", Dt::F16)
            .alias("YT", self.y)
            .epilogue(self.epi)
    }
    fn slots(&self) -> Vec<Slot> {
        matmul::SLOTS.to_vec()
    }
    fn resources(&self, op: &Op) -> Vec<Res> {
        linear_resources("matmul_coop", op)
    }
    fn launch(&self, op: &Op, chunk: &Chunk) -> (MatmulParams, [u32; 3]) {
        let (m, n, k) = linear_shape("matmul_coop", op, chunk);
        (matmul::params(m, n, k), dispatch(m, n))
    }
}

/// Whether a `m × n × k` product can run on this kernel (any m, n; k a multiple of [`BK`]).
pub fn fits(_m: usize, _n: usize, k: usize) -> bool {
    k > 0 && k.is_multiple_of(BK)
}

pub fn dispatch(m: usize, n: usize) -> [u32; 3] {
    [(n as u32).div_ceil(BLOCK.1), (m as u32).div_ceil(BLOCK.0), 1]
}

/// Which kernel runs the linear layers (`--gpu-matmul`, `CLIP_WGPU_GPU_MATMUL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum MatmulPath {
    /// The cooperative-matrix kernel where the adapter offers it (f16 precision) and it passes
    /// its self-check, else the plain one.
    #[default]
    Auto,
    /// Always the register-tiled kernel of matmul.wgsl.
    Plain,
    /// The cooperative-matrix kernel; an error where it cannot run.
    Coop,
}

impl MatmulPath {
    pub fn parse(s: &str) -> Option<MatmulPath> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Some(MatmulPath::Auto),
            "plain" => Some(MatmulPath::Plain),
            "coop" | "cooperative" | "tensor" => Some(MatmulPath::Coop),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            MatmulPath::Auto => "auto",
            MatmulPath::Plain => "plain",
            MatmulPath::Coop => "coop",
        }
    }
}

impl std::fmt::Display for MatmulPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Whether an adapter's configuration list has the one the kernel uses: 16×16×16, A/B f16,
/// C/result f32.
pub fn offers_config(props: &[wgpu::CooperativeMatrixProperties]) -> bool {
    use wgpu::CooperativeScalarType as T;
    props.iter().any(|c| (c.m_size, c.n_size, c.k_size) == (16, 16, 16) && c.ab_type == T::F16 && c.cr_type == T::F32)
}

/// Why the cooperative-matrix kernel cannot run on this adapter, or `None` when it can (as
/// far as its report says: the self-check at engine build has the last word).
pub fn unavailable(r: &AdapterReport) -> Option<String> {
    if r.cooperative_matrix.is_empty() {
        return Some("no EXPERIMENTAL_COOPERATIVE_MATRIX".into());
    }
    if !r.coop_16x16x16_f16_f32 {
        return Some(format!(
            "cooperative matrices without the 16x16x16 f16→f32 configuration (offers {})",
            r.cooperative_matrix.join(", ")
        ));
    }
    if !r.shader_f16 {
        return Some("no SHADER_F16".into());
    }
    if !r.subgroup {
        return Some("no SUBGROUP".into());
    }
    if r.subgroup_min_size != SUBGROUP || r.subgroup_max_size != SUBGROUP {
        return Some(format!(
            "subgroup size {}–{} (the kernel's tile layout needs exactly {SUBGROUP})",
            r.subgroup_min_size, r.subgroup_max_size
        ));
    }
    if r.max_compute_workgroup_storage_size < WORKGROUP_BYTES {
        return Some(format!(
            "workgroup memory {} B < the kernel's {WORKGROUP_BYTES} B",
            r.max_compute_workgroup_storage_size
        ));
    }
    if r.max_compute_invocations_per_workgroup < THREADS {
        return Some(format!("{} invocations per workgroup < {THREADS}", r.max_compute_invocations_per_workgroup));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_clip_gemm_shape_fits() {
        // N and K of both towers' linear layers (ViT-B/32 and its text tower), M = 50·B or
        // up to 77·B rows, B from 1 to 1024.
        let dims = [512, 768, 1536, 2048, 2304, 3072];
        for &n in &dims {
            for &k in &dims {
                for m in [1, 2, 50, 77, 129, 50 * 256, 77 * 1024] {
                    assert!(fits(m, n, k));
                    let d = dispatch(m, n);
                    assert!(d[0] * BLOCK.1 >= n as u32 && d[1] * BLOCK.0 >= m as u32 && d[1] <= 65535);
                }
            }
        }
        assert!(!fits(50, 512, 8) && !fits(50, 512, 0));
        assert_eq!(WORKGROUP_BYTES, 49152);
        assert_eq!(MatmulPath::parse("Coop"), Some(MatmulPath::Coop));
        assert_eq!(MatmulPath::parse("x"), None);
    }

    #[test]
    fn the_configuration_is_required() {
        use wgpu::CooperativeScalarType as T;
        let c = |m, n, k, ab, cr| wgpu::CooperativeMatrixProperties {
            m_size: m,
            n_size: n,
            k_size: k,
            ab_type: ab,
            cr_type: cr,
            saturating_accumulation: false,
        };
        // The H100's list (docs/gpu-hardware.md).
        let h100 = [c(16, 16, 16, T::F16, T::F16), c(16, 16, 16, T::F16, T::F32), c(16, 8, 16, T::F16, T::F32)];
        assert!(offers_config(&h100));
        assert!(!offers_config(&h100[..1]));
        assert!(!offers_config(&[c(16, 8, 16, T::F16, T::F32), c(8, 8, 8, T::F16, T::F32)]));
        assert!(!offers_config(&[]));
    }
}
