//! The token-embedding family (`shaders/embed.wgsl`): table row + position row per token of
//! a ragged batch. (Pooling is part of the head kernel, `head.rs`.)
//!
//! The token table may exceed one storage binding (a 768-wide text tower's is 152 MB in f32,
//! lavapipe allows 128 MiB): the weight store splits it by rows and the kernel binds up to
//! [`TABLE_PARTS`] parts.

use super::family::{wrong_op, Chunk, Family, Res};
use super::types::Dt;
use super::wgsl::{uniform, Header, Slot};
use crate::model::Op;

/// The shader source.
pub const WGSL: &str = include_str!("../../shaders/embed.wgsl");

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EmbedKey {
    /// Storage of the token rows (the output).
    pub tokens: Dt,
    /// Storage of the embedding tables.
    pub table: Dt,
}

pub const WG: u32 = 64;
const MAX_X: u32 = 65535;
/// Most parts the token table may be split into (bindings `table0` … `table3`).
pub const TABLE_PARTS: usize = 4;

const TOKEN_SLOTS: [Slot; 8] = [
    Slot::UNIFORM,
    Slot::read_write(1, "emb_out", "array<vec4<ET>>"),
    Slot::read(2, "pos", "array<vec4<TT>>"),
    Slot::read(3, "tok", "array<vec2<u32>>"),
    Slot::read(4, "table0", "array<vec4<TT>>"),
    Slot::read(5, "table1", "array<vec4<TT>>"),
    Slot::read(6, "table2", "array<vec4<TT>>"),
    Slot::read(7, "table3", "array<vec4<TT>>"),
];

uniform!(
    /// `struct Params` of embed.wgsl.
    EmbedParams { w4: u32, rows: u32, stride: u32, part_rows: u32 }
);

/// Token embedding: params and dispatch (a 1-D range of `rows · w/4` invocations folded
/// into x ≤ 65535 workgroups and y); the table in parts of `part_rows` rows.
pub fn token_params(rows: usize, width: usize, part_rows: usize) -> (EmbedParams, [u32; 3]) {
    let total = (rows * width / 4) as u32;
    let groups = total.div_ceil(WG).max(1);
    let x = groups.min(MAX_X);
    let y = groups.div_ceil(x);
    let p =
        EmbedParams { w4: (width / 4) as u32, rows: rows as u32, stride: x * WG, part_rows: part_rows.max(1) as u32 };
    (p, [x, y, 1])
}

impl Family for EmbedKey {
    type Params = EmbedParams;
    const FILE: &'static str = "embed.wgsl";
    const WGSL: &'static str = WGSL;

    fn name(&self) -> String {
        format!("token_embed_{}_{}", self.tokens.wgsl(), self.table.wgsl())
    }
    fn header(&self) -> Header {
        Header::default().alias("ET", self.tokens).alias("TT", self.table)
    }
    fn entry(&self) -> &'static str {
        "token_embed"
    }
    fn slots(&self) -> Vec<Slot> {
        TOKEN_SLOTS.to_vec()
    }
    fn resources(&self, op: &Op) -> Vec<Res> {
        match *op {
            Op::TokenEmbed { table, pos, out } => {
                let mut r = vec![Res::Uniform, Res::Act(out), Res::Param(pos), Res::Input];
                r.extend((0..TABLE_PARTS).map(|i| Res::ParamPart(table, i)));
                r
            }
            _ => wrong_op("embed", op),
        }
    }
    fn launch(&self, op: &Op, chunk: &Chunk) -> (EmbedParams, [u32; 3]) {
        match *op {
            Op::TokenEmbed { table, out, .. } => {
                token_params(chunk.seqs.tokens(), chunk.width(out), (chunk.part_rows)(table))
            }
            _ => wrong_op("embed", op),
        }
    }
}
