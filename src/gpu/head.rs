//! The head family (`shaders/head.wgsl`): a tower's [`Op::Head`] — pooling, the final
//! layernorm, the projection and the L2 normalisation — in one dispatch, one workgroup per
//! sequence (four dispatches before: pool, layernorm, matmul, l2-normalize).

use super::family::{wrong_op, Chunk, Family, Res};
use super::types::{Dt, GpuError};
use super::wgsl::{uniform, Header, Slot};
use crate::model::{Op, PoolAt, Program};

/// The shader source.
pub const WGSL: &str = include_str!("../../shaders/head.wgsl");

/// The widest token row the kernel holds in workgroup memory (`MAXW` in the WGSL: 8 KiB of
/// the 16 KiB every WebGPU adapter grants). CLIP's widest tower (ViT-bigG) is 1664 wide.
pub const MAX_WIDTH: usize = 2048;

/// One head variant; the pooled row, the projection's sums and the embeddings are f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HeadKey {
    /// Storage of the token rows.
    pub x: Dt,
    /// Storage of the layernorm's and the projection's parameters.
    pub w: Dt,
}

const SLOTS: [Slot; 8] = [
    Slot::UNIFORM,
    Slot::read_write(1, "out", "array<f32>"),
    Slot::read(2, "x", "array<XT>"),
    Slot::read(3, "seqs", "array<vec2<u32>>"),
    Slot::read(4, "gamma", "array<WT>"),
    Slot::read(5, "beta", "array<WT>"),
    Slot::read(6, "proj", "array<vec4<WT>>"),
    Slot::read(7, "bias", "array<WT>"),
];

uniform!(
    /// `struct Params` of head.wgsl.
    HeadParams { w: u32, d: u32, last: u32, eps: f32, has_bias: u32, _pad0: u32, _pad1: u32, _pad2: u32 }
);

impl Family for HeadKey {
    type Params = HeadParams;
    const FILE: &'static str = "head.wgsl";
    const WGSL: &'static str = WGSL;

    fn name(&self) -> String {
        format!("head_{}_{}", self.x.wgsl(), self.w.wgsl())
    }
    fn header(&self) -> Header {
        Header::default().alias("XT", self.x).alias("WT", self.w).constant("MAXW", format!("{MAX_WIDTH}u"))
    }
    fn slots(&self) -> Vec<Slot> {
        SLOTS.to_vec()
    }
    fn resources(&self, op: &Op) -> Vec<Res> {
        match *op {
            Op::Head { x, ln, proj, out, .. } => vec![
                Res::Uniform,
                Res::Act(out),
                Res::Act(x),
                Res::Seqs,
                Res::Param(ln.gamma),
                Res::Param(ln.beta),
                Res::Param(proj.weight),
                Res::OptParam(proj.bias),
            ],
            _ => wrong_op("head", op),
        }
    }
    fn launch(&self, op: &Op, chunk: &Chunk) -> (HeadParams, [u32; 3]) {
        let Op::Head { x, at, eps, proj, .. } = *op else { wrong_op("head", op) };
        let p = HeadParams {
            w: chunk.width(x) as u32,
            d: proj.n_out as u32,
            last: (at == PoolAt::Last) as u32,
            eps,
            has_bias: proj.bias.is_some() as u32,
            ..Default::default()
        };
        (p, [chunk.seqs.count() as u32, 1, 1])
    }
    /// The token rows fit the kernel's workgroup memory and the projection's input width is a
    /// multiple of 4 (vec4 loads; every CLIP width is).
    fn check(&self, op: &Op, program: &Program) -> Result<(), GpuError> {
        let Op::Head { x, proj, .. } = *op else { wrong_op("head", op) };
        let w = program.width(x);
        if w > MAX_WIDTH || !w.is_multiple_of(4) || proj.n_in != w {
            return Err(GpuError::Unsupported(format!(
                "the {:?} tower's head: token rows {w} wide (projection {}×{}); the GPU kernel takes rows \
                 of at most {MAX_WIDTH}, a multiple of 4, equal to the projection's input",
                program.tower, proj.n_out, proj.n_in
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Act, LayerNormW, LinearW, ParamId, Rows, Tower};

    fn program(width: usize) -> Program {
        let proj = LinearW { weight: ParamId(0), bias: None, n_in: width, n_out: 512 };
        let ln = LayerNormW { gamma: ParamId(1), beta: ParamId(2) };
        let head = Op::Head { x: Act::X, at: PoolAt::First, ln, eps: 1e-5, proj, out: Act::Embed };
        Program {
            tower: Tower::Vision,
            ops: vec![head],
            widths: vec![(Act::X, width, Rows::Tokens), (Act::Embed, 512, Rows::Seqs)],
            output: Act::Embed,
            embed_dim: 512,
        }
    }

    #[test]
    fn rows_wider_than_the_workgroup_memory_are_refused() {
        for (w, ok) in [(768, true), (1664, true), (MAX_WIDTH, true), (MAX_WIDTH + 4, false), (770, false)] {
            let p = program(w);
            let r = HeadKey { x: Dt::F32, w: Dt::F32 }.check(&p.ops[0], &p);
            assert_eq!(r.is_ok(), ok, "width {w}: {r:?}");
            if let Err(e) = r {
                assert!(e.to_string().contains(&format!("token rows {w} wide")), "{e}");
            }
        }
    }
}
