//! The layernorm family (`shaders/norm.wgsl`): in place or not, one workgroup per row,
//! reductions through subgroups where SUBGROUP exists. (The tower's final layernorm and L2
//! normalisation are part of the head kernel, `head.rs`.)

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
            "layer_norm_{}_{}_{}{}{}",
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
    }
    fn entry(&self) -> &'static str {
        "layer_norm"
    }
    fn slots(&self) -> Vec<Slot> {
        if self.inplace {
            vec![Slot::UNIFORM, Y, GAMMA, BETA]
        } else {
            vec![Slot::UNIFORM, Y, X, GAMMA, BETA]
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
            _ => wrong_op("norm", op),
        }
    }
    fn launch(&self, op: &Op, chunk: &Chunk) -> (NormParams, [u32; 3]) {
        let Op::LayerNorm { x, eps, .. } = *op else { wrong_op("norm", op) };
        let rows = chunk.rows(x);
        (params(chunk.width(x), rows, eps), dispatch(rows))
    }
}
