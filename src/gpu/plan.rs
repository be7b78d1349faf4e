//! The planner: which kernel variant runs each op of a [`Program`] (one line per op). It
//! needs no device: the shader tests validate exactly what it plans.

use super::attention::AttentionKey;
use super::embed::EmbedKey;
use super::head::HeadKey;
use super::matmul::{MatmulKey, Tile};
use super::matmul_coop::{self, CoopKey};
use super::norm::NormKey;
use super::patch::{self, PatchKey};
use super::shader::KernelKey;
use super::types::{Dt, Precision};
use crate::model::{Act, Op, Program, Rows};

/// Storage type of one activation of `program` at `precision`: per-token rows in the token
/// type, per-sequence rows (the embeddings) f32.
pub fn act_dt(program: &Program, precision: Precision, a: Act) -> Dt {
    match program.rows(a) {
        Rows::Tokens => precision.tokens(),
        Rows::Seqs => Dt::F32,
    }
}

/// The kernel variant of every op of `program`, with the plain matmul.
pub fn plan_kernels(program: &Program, precision: Precision, subgroup: bool) -> Vec<KernelKey> {
    plan_kernels_with(program, precision, subgroup, false)
}

/// As [`plan_kernels`]; with `coop`, the linear layers on f16 token rows whose K is a multiple
/// of 32 (all of CLIP's) run the cooperative-matrix matmul; others keep the plain kernel.
pub fn plan_kernels_with(program: &Program, precision: Precision, subgroup: bool, coop: bool) -> Vec<KernelKey> {
    plan_kernels_tiled(program, precision, subgroup, coop, &|_| Tile::REG32)
}

/// As [`plan_kernels_with`], the plain matmuls on the tile `tile` gives each op (the tile
/// policy's choice for the chunk's row bucket, [`TilePolicy::tile_of`](super::tiles::TilePolicy::tile_of)).
pub fn plan_kernels_tiled(
    program: &Program,
    precision: Precision,
    subgroup: bool,
    coop: bool,
    tile: &dyn Fn(&Op) -> Tile,
) -> Vec<KernelKey> {
    let w = precision.weights();
    let dt = |a: Act| act_dt(program, precision, a);
    let plan = |op: &Op| match *op {
        Op::PatchEmbed { patch: lin, out, .. } => {
            KernelKey::Patch(PatchKey { w, y: dt(out), vec4: patch::vec4_loads(lin.n_in) })
        }
        Op::TokenEmbed { out, .. } => KernelKey::Embed(EmbedKey { tokens: dt(out), table: w }),
        Op::LayerNorm { x, out, .. } => {
            KernelKey::Norm(NormKey { x: dt(x), y: dt(out), g: w, inplace: x == out, subgroup })
        }
        Op::Linear { x, lin, out, .. }
            if coop && w == Dt::F16 && dt(x) == Dt::F16 && matmul_coop::fits(0, lin.n_out, lin.n_in) =>
        {
            KernelKey::MatmulCoop(CoopKey { y: dt(out), epi: op.epilogue().expect("linear") })
        }
        Op::Linear { x, out, .. } => KernelKey::Matmul(MatmulKey {
            x: dt(x),
            w,
            y: dt(out),
            epi: op.epilogue().expect("linear"),
            tile: tile(op),
        }),
        Op::Attention { qkv, out, head_dim, causal, .. } => {
            KernelKey::Attention(AttentionKey { qkv: dt(qkv), out: dt(out), hd4: (head_dim / 4) as u32, causal })
        }
        Op::Head { x, .. } => KernelKey::Head(HeadKey { x: dt(x), w }),
    };
    program.ops.iter().map(plan).collect()
}
