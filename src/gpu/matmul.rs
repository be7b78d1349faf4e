//! The matmul family (`shaders/matmul.wgsl`): `Y (+)= act(X·Wᵀ + b)` with register tiles of
//! 4×4 outputs per invocation; the epilogue is [`Epilogue`] (shaders/epilogue.wgsl).

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
}

/// Invocations per workgroup along columns and rows; each invocation computes 4×4 outputs.
pub const WG: (u32, u32) = (8, 8);
/// Output tile of one workgroup.
pub const TILE: u32 = 32;

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

pub fn dispatch(m: usize, n: usize) -> [u32; 3] {
    [(n as u32).div_ceil(TILE), (m as u32).div_ceil(TILE), 1]
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
        format!("matmul_{}x{}_{}{}", self.x.wgsl(), self.w.wgsl(), self.y.wgsl(), epilogue_suffix(self.epi))
    }
    fn header(&self) -> Header {
        Header::default().alias("XT", self.x).alias("WT", self.w).alias("YT", self.y).epilogue(self.epi)
    }
    fn slots(&self) -> Vec<Slot> {
        SLOTS.to_vec()
    }
    fn resources(&self, op: &Op) -> Vec<Res> {
        linear_resources("matmul", op)
    }
    fn launch(&self, op: &Op, chunk: &Chunk) -> (MatmulParams, [u32; 3]) {
        let (m, n, k) = linear_shape("matmul", op, chunk);
        (params(m, n, k), dispatch(m, n))
    }
}
