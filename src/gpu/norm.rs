//! The row-normalisation family (`shaders/norm.wgsl`): layernorm (in place or not) and L2
//! normalisation, one workgroup per row, reductions through subgroups where SUBGROUP exists.

use super::family::{wrong_op, Chunk, Family, Res};
use super::types::Dt;
use super::wgsl::{uniform, Header, Slot};
use crate::model::Op;

/// The shader source.
pub const WGSL: &str = include_str!("../../shaders/norm.wgsl");

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NormKey {
    pub x: Dt,
    pub y: Dt,
    /// gamma/beta storage.
    pub g: Dt,
    pub inplace: bool,
    pub subgroup: bool,
    /// The `l2_normalize` entry point (in place, `y` only) instead of `layer_norm`.
    pub l2: bool,
}

const Y: Slot = Slot::read_write(1, "y", "array<YT>");
const X: Slot = Slot::read(2, "x", "array<XT>");
const GAMMA: Slot = Slot::read(3, "gamma", "array<GT>");
const BETA: Slot = Slot::read(4, "beta", "array<GT>");

uniform!(
    /// `struct Params` of norm.wgsl.
    NormParams { w: u32, rows: u32, eps: f32, _pad: u32 }
);

pub fn params(width: usize, rows: usize, eps: f32) -> NormParams {
    NormParams { w: width as u32, rows: rows as u32, eps, _pad: 0 }
}

pub fn dispatch(rows: usize) -> [u32; 3] {
    [rows as u32, 1, 1]
}

impl Family for NormKey {
    type Params = NormParams;
    const FILE: &'static str = "norm.wgsl";
    const WGSL: &'static str = WGSL;

    fn name(&self) -> String {
        format!(
            "{}_{}_{}_{}{}{}",
            if self.l2 { "l2_normalize" } else { "layer_norm" },
            self.x.wgsl(),
            self.y.wgsl(),
            self.g.wgsl(),
            if self.inplace { "_inplace" } else { "" },
            if self.subgroup { "_subgroup" } else { "" }
        )
    }
    fn header(&self) -> Header {
        Header::default()
            .alias("XT", self.x)
            .alias("YT", self.y)
            .alias("GT", self.g)
            .flag("SUBGROUP", self.subgroup)
            .flag("INPLACE", self.inplace)
            .flag("L2", self.l2)
    }
    fn entry(&self) -> &'static str {
        if self.l2 {
            "l2_normalize"
        } else {
            "layer_norm"
        }
    }
    fn slots(&self) -> Vec<Slot> {
        match (self.l2, self.inplace) {
            (true, _) => vec![Slot::UNIFORM, Y],
            (false, true) => vec![Slot::UNIFORM, Y, GAMMA, BETA],
            (false, false) => vec![Slot::UNIFORM, Y, X, GAMMA, BETA],
        }
    }
    fn resources(&self, op: &Op) -> Vec<Res> {
        match *op {
            Op::LayerNorm { x, ln, out, .. } if x == out => {
                vec![Res::Uniform, Res::Act(out), Res::Param(ln.gamma), Res::Param(ln.beta)]
            }
            Op::LayerNorm { x, ln, out, .. } => {
                vec![Res::Uniform, Res::Act(out), Res::Act(x), Res::Param(ln.gamma), Res::Param(ln.beta)]
            }
            Op::L2Normalize { x } => vec![Res::Uniform, Res::Act(x)],
            _ => wrong_op("norm", op),
        }
    }
    fn launch(&self, op: &Op, chunk: &Chunk) -> (NormParams, [u32; 3]) {
        let (x, eps) = match *op {
            Op::LayerNorm { x, eps, .. } => (x, eps),
            Op::L2Normalize { x } => (x, 0.0),
            _ => wrong_op("norm", op),
        };
        let rows = chunk.rows(x);
        (params(chunk.width(x), rows, eps), dispatch(rows))
    }
}
