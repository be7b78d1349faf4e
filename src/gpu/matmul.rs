//! The matmul family (`shaders/matmul.wgsl`): `Y (+)= act(X·Wᵀ + b)`; the epilogue is
//! [`Epilogue`] (shaders/epilogue.wgsl). Its tile configuration ([`Tile`]) is part of the
//! key: register tiles (no workgroup memory, no barriers: what lavapipe runs fastest) or
//! X and W slices staged in workgroup memory with a barrier per K step (what GPUs without
//! cooperative matrices need), in the candidate configurations of [`Tile::CANDIDATES`].
//! Which one runs a layer is the tile policy's choice ([`tiles`](super::tiles)).

use super::family::{wrong_op, Chunk, Family, Res};
use super::types::Dt;
use super::wgsl::{epilogue_suffix, uniform, Header, Slot};
use crate::model::{Epilogue, Op};

/// The shader source.
pub const WGSL: &str = include_str!("../../shaders/matmul.wgsl");

/// One matmul variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MatmulKey {
    pub x: Dt,
    pub w: Dt,
    pub y: Dt,
    pub epi: Epilogue,
    pub tile: Tile,
}

/// Invocations per workgroup along columns and rows of the default register tile; each
/// invocation computes 4×4 outputs (the patch embedding shares this tile).
pub const WG: (u32, u32) = (8, 8);
/// Output tile of one workgroup of the default register tile.
pub const TILE: u32 = 32;

/// One tile configuration of the plain matmul. A workgroup of `wg.0 × wg.1` invocations
/// computes a block of `wg.1·tm` rows × `wg.0·4` columns of Y; each invocation `tm` rows × 4
/// columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tile {
    /// X and W slices staged in workgroup memory, a barrier per K step (`STAGED`); else
    /// register tiles read straight from storage.
    pub staged: bool,
    /// Invocations per workgroup along columns and rows.
    pub wg: (u32, u32),
    /// Rows of Y per invocation (4 or 8; always 4 columns).
    pub tm: u32,
    /// K step of the staged kernel, a multiple of 4 (0 for register tiles).
    pub bk: u32,
    /// Two staging buffers: the next K slice is loaded while this one is used, one barrier
    /// per step instead of two.
    pub double: bool,
}

impl Default for Tile {
    fn default() -> Self {
        Tile::REG32
    }
}

impl Tile {
    /// Register tiles, 8×8 invocations × 4×4 outputs = 32×32 (the default everywhere: no
    /// workgroup memory, runs on any adapter; the fastest on lavapipe).
    pub const REG32: Tile = Tile { staged: false, wg: (8, 8), tm: 4, bk: 0, double: false };
    /// Register tiles, 16×16 invocations × 4×4 = 64×64.
    pub const REG64: Tile = Tile { staged: false, wg: (16, 16), tm: 4, bk: 0, double: false };
    /// Workgroup-memory tiles 64×64, K step 16, single buffer (8 KiB).
    pub const WG64_K16: Tile = Tile { staged: true, wg: (16, 16), tm: 4, bk: 16, double: false };
    /// As [`WG64_K16`](Self::WG64_K16) with K step 32 (16 KiB).
    pub const WG64_K32: Tile = Tile { staged: true, wg: (16, 16), tm: 4, bk: 32, double: false };
    /// As [`WG64_K16`](Self::WG64_K16), double-buffered (16 KiB).
    pub const WG64_K16_DB: Tile = Tile { staged: true, wg: (16, 16), tm: 4, bk: 16, double: true };
    /// Workgroup-memory tiles of 128 rows × 64 columns, 8×4 outputs per invocation, K step 16
    /// (12 KiB).
    pub const WG128X64_K16: Tile = Tile { staged: true, wg: (16, 16), tm: 8, bk: 16, double: false };

    /// Every configuration the tuner tries and the catalog holds.
    pub const CANDIDATES: [Tile; 6] =
        [Tile::REG32, Tile::REG64, Tile::WG64_K16, Tile::WG64_K32, Tile::WG64_K16_DB, Tile::WG128X64_K16];

    /// Rows and columns of Y one workgroup computes.
    pub fn block(&self) -> (u32, u32) {
        (self.wg.1 * self.tm, self.wg.0 * 4)
    }
    pub fn invocations(&self) -> u32 {
        self.wg.0 * self.wg.1
    }
    /// Workgroup memory the variant declares, in bytes.
    pub fn workgroup_bytes(&self) -> u32 {
        if !self.staged {
            return 0;
        }
        let (bm, bn) = self.block();
        (bm + bn) * self.bk * 4 * if self.double { 2 } else { 1 }
    }
    /// Short name: `reg32x32`, `wg64x64k16`, `wg64x64k16db`, …
    pub fn name(&self) -> String {
        let (bm, bn) = self.block();
        if self.staged {
            format!("wg{bm}x{bn}k{}{}", self.bk, if self.double { "db" } else { "" })
        } else {
            format!("reg{bm}x{bn}")
        }
    }
    /// The candidate of that [`name`](Self::name).
    pub fn parse(s: &str) -> Option<Tile> {
        Tile::CANDIDATES.into_iter().find(|t| t.name().eq_ignore_ascii_case(s.trim()))
    }
    /// Workgroups of an `m × n` product.
    pub fn dispatch(&self, m: usize, n: usize) -> [u32; 3] {
        let (bm, bn) = self.block();
        [(n as u32).div_ceil(bn), (m as u32).div_ceil(bm), 1]
    }
    /// Why the adapter cannot run it (workgroup memory or invocations over its limits), or
    /// `None`.
    pub fn unfit(&self, max_workgroup_bytes: u32, max_invocations: u32) -> Option<String> {
        if self.workgroup_bytes() > max_workgroup_bytes {
            return Some(format!("{} B of workgroup memory > {max_workgroup_bytes}", self.workgroup_bytes()));
        }
        if self.invocations() > max_invocations {
            return Some(format!("{} invocations > {max_invocations}", self.invocations()));
        }
        None
    }
}

impl std::fmt::Display for Tile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

/// The bindings of the linear layer (also the cooperative-matrix kernel's).
pub const SLOTS: [Slot; 5] = [
    Slot::UNIFORM,
    Slot::read(1, "x", "array<vec4<XT>>"),
    Slot::read(2, "w", "array<vec4<WT>>"),
    Slot::read(3, "bias", "array<WT>"),
    Slot::read_write(4, "y", "array<YT>"),
];

uniform!(
    /// `struct Params` of matmul.wgsl and matmul_coop.wgsl.
    MatmulParams { m: u32, n: u32, k4: u32, _pad: u32 }
);

/// The uniform block of an `m × n × k` product.
pub fn params(m: usize, n: usize, k: usize) -> MatmulParams {
    MatmulParams { m: m as u32, n: n as u32, k4: (k / 4) as u32, _pad: 0 }
}

/// Workgroups of an `m × n` product on the default tile ([`Tile::REG32`]).
pub fn dispatch(m: usize, n: usize) -> [u32; 3] {
    Tile::REG32.dispatch(m, n)
}

/// A linear layer's resources, in [`SLOTS`] order.
pub fn linear_resources(family: &str, op: &Op) -> Vec<Res> {
    match *op {
        Op::Linear { x, lin, out, .. } => {
            vec![Res::Uniform, Res::Act(x), Res::Param(lin.weight), Res::OptParam(lin.bias), Res::Act(out)]
        }
        _ => wrong_op(family, op),
    }
}

/// A linear layer's `(m, n, k)` on a chunk.
pub fn linear_shape(family: &str, op: &Op, chunk: &Chunk) -> (usize, usize, usize) {
    match *op {
        Op::Linear { x, lin, .. } => (chunk.rows(x), lin.n_out, lin.n_in),
        _ => wrong_op(family, op),
    }
}

impl Family for MatmulKey {
    type Params = MatmulParams;
    const FILE: &'static str = "matmul.wgsl";
    const WGSL: &'static str = WGSL;

    fn name(&self) -> String {
        let tile = if self.tile == Tile::REG32 { String::new() } else { format!("_{}", self.tile) };
        format!("matmul_{}x{}_{}{}{tile}", self.x.wgsl(), self.w.wgsl(), self.y.wgsl(), epilogue_suffix(self.epi))
    }
    fn header(&self) -> Header {
        let t = self.tile;
        let (bm, bn) = t.block();
        let bk4 = t.bk / 4;
        let bufs = if t.double { 2 } else { 1 };
        let h = Header::default()
            .alias("XT", self.x)
            .alias("WT", self.w)
            .alias("YT", self.y)
            .constant("WGX", format!("{}u", t.wg.0))
            .constant("WGY", format!("{}u", t.wg.1))
            .flag("STAGED", t.staged);
        let h = if t.staged {
            h.constant("TM", format!("{}u", t.tm))
                .constant("BM", format!("{bm}u"))
                .constant("BN", format!("{bn}u"))
                .constant("BK4", format!("{bk4}u"))
                .constant("XS", format!("{}u", bm * bk4))
                .constant("WS", format!("{}u", bn * bk4))
                .constant("XS_ALL", format!("{}u", bm * bk4 * bufs))
                .constant("WS_ALL", format!("{}u", bn * bk4 * bufs))
                .constant("DOUBLE", t.double)
        } else {
            h
        };
        h.epilogue(self.epi)
    }
    fn slots(&self) -> Vec<Slot> {
        SLOTS.to_vec()
    }
    fn resources(&self, op: &Op) -> Vec<Res> {
        linear_resources("matmul", op)
    }
    fn launch(&self, op: &Op, chunk: &Chunk) -> (MatmulParams, [u32; 3]) {
        let (m, n, k) = linear_shape("matmul", op, chunk);
        (params(m, n, k), self.tile.dispatch(m, n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_have_unique_names_and_fit_webgpu_defaults() {
        let names: std::collections::BTreeSet<String> = Tile::CANDIDATES.iter().map(Tile::name).collect();
        assert_eq!(names.len(), Tile::CANDIDATES.len());
        for t in Tile::CANDIDATES {
            assert_eq!(Tile::parse(&t.name()), Some(t));
            // WebGPU's default limits: 16 KiB of workgroup memory, 256 invocations.
            assert_eq!(t.unfit(16384, 256), None, "{t}");
            if t.staged {
                assert!(t.bk % 4 == 0 && t.bk > 0 && (t.tm == 4 || t.tm == 8), "{t}");
            }
        }
        assert_eq!(Tile::WG64_K16.workgroup_bytes(), 8192);
        assert_eq!(Tile::WG64_K16_DB.workgroup_bytes(), 16384);
        assert_eq!(Tile::WG128X64_K16.block(), (128, 64));
        assert_eq!(Tile::WG128X64_K16.dispatch(129, 65), [2, 2, 1]);
        assert!(Tile::WG64_K32.unfit(8192, 256).is_some());
        assert_eq!(Tile::parse("REG32X32"), Some(Tile::REG32));
        assert_eq!(Tile::parse("wg64"), None);
    }
}
