//! The attention family (`shaders/attention.wgsl`): scores, softmax and the weighted sum of
//! all heads of all sequences of a ragged batch in one dispatch, one workgroup per
//! (head, sequence).

use super::family::{wrong_op, Chunk, Family, Res};
use super::types::Dt;
use super::wgsl::{uniform, Header, Slot};
use crate::model::Op;

/// The shader source.
pub const WGSL: &str = include_str!("../../shaders/attention.wgsl");

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AttentionKey {
    pub qkv: Dt,
    pub out: Dt,
    /// head_dim / 4.
    pub hd4: u32,
    pub causal: bool,
}

pub const SLOTS: [Slot; 4] = [
    Slot::UNIFORM,
    Slot::read(1, "qkv", "array<vec4<QT>>"),
    Slot::read(2, "seqs", "array<vec2<u32>>"),
    Slot::read_write(3, "out", "array<vec4<OT>>"),
];

uniform!(
    /// `struct Params` of attention.wgsl.
    AttentionParams { width4: u32, heads: u32, scale: f32, _pad: u32 }
);

pub fn params(width: usize, heads: usize, head_dim: usize) -> AttentionParams {
    AttentionParams { width4: (width / 4) as u32, heads: heads as u32, scale: 1.0 / (head_dim as f32).sqrt(), _pad: 0 }
}

pub fn dispatch(heads: usize, seqs: usize) -> [u32; 3] {
    [heads as u32, seqs as u32, 1]
}

impl Family for AttentionKey {
    type Params = AttentionParams;
    const FILE: &'static str = "attention.wgsl";
    const WGSL: &'static str = WGSL;

    fn name(&self) -> String {
        format!(
            "attention_{}_{}_d{}{}",
            self.qkv.wgsl(),
            self.out.wgsl(),
            self.hd4 * 4,
            if self.causal { "_causal" } else { "" }
        )
    }
    fn header(&self) -> Header {
        Header::default()
            .alias("QT", self.qkv)
            .alias("OT", self.out)
            .constant("HD4", format!("{}u", self.hd4))
            .constant("CAUSAL", self.causal)
    }
    fn slots(&self) -> Vec<Slot> {
        SLOTS.to_vec()
    }
    fn resources(&self, op: &Op) -> Vec<Res> {
        match *op {
            Op::Attention { qkv, out, .. } => vec![Res::Uniform, Res::Act(qkv), Res::Seqs, Res::Act(out)],
            _ => wrong_op("attention", op),
        }
    }
    fn launch(&self, op: &Op, chunk: &Chunk) -> (AttentionParams, [u32; 3]) {
        let Op::Attention { out, heads, head_dim, .. } = *op else { wrong_op("attention", op) };
        (params(chunk.width(out), heads, head_dim), dispatch(heads, chunk.seqs.count()))
    }
}
