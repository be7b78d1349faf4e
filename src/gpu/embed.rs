//! The gather family (`shaders/embed.wgsl`): the token embedding (table row + position row
//! per token of a ragged batch) and the pooling (first or last row of each sequence).

use super::types::Dt;
use super::wgsl::{generate, Binding, Header};

/// The shader source.
pub const WGSL: &str = include_str!("../../shaders/embed.wgsl");

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EmbedKey {
    /// The `pool` entry point instead of `token_embed`.
    pub pool: bool,
    /// Storage of the token rows (token_embed's output, pool's input).
    pub tokens: Dt,
    /// Storage of the embedding tables.
    pub table: Dt,
    /// Storage of the pooled rows.
    pub pooled: Dt,
}

pub const WG: u32 = 64;
const MAX_X: u32 = 65535;

impl EmbedKey {
    pub fn name(&self) -> String {
        format!(
            "{}_{}_{}_{}",
            if self.pool { "pool" } else { "token_embed" },
            self.tokens.wgsl(),
            self.table.wgsl(),
            self.pooled.wgsl()
        )
    }
    pub fn source(&self) -> String {
        let h = Header::default()
            .alias("ET", self.tokens)
            .alias("TT", self.table)
            .alias("PT", self.pooled)
            .alias("XT", self.tokens);
        generate(WGSL, &h)
    }
    pub fn entry(&self) -> &'static str {
        if self.pool {
            "pool"
        } else {
            "token_embed"
        }
    }
    pub fn bindings(&self) -> Vec<(u32, Binding)> {
        if self.pool {
            vec![(0, Binding::Uniform), (5, Binding::ReadWrite), (6, Binding::Read), (7, Binding::Read)]
        } else {
            vec![
                (0, Binding::Uniform),
                (1, Binding::ReadWrite),
                (2, Binding::Read),
                (3, Binding::Read),
                (4, Binding::Read),
            ]
        }
    }
}

/// Token embedding: params and dispatch (a 1-D range of `rows · w/4` invocations folded
/// into x ≤ 65535 workgroups and y).
pub fn token_params(rows: usize, width: usize) -> ([u32; 8], [u32; 3]) {
    let total = (rows * width / 4) as u32;
    let groups = total.div_ceil(WG).max(1);
    let x = groups.min(MAX_X);
    let y = groups.div_ceil(x);
    ([(width / 4) as u32, rows as u32, 0, x * WG, 0, 0, 0, 0], [x, y, 1])
}

/// Pooling: params and dispatch.
pub fn pool_params(seqs: usize, width: usize, last: bool) -> ([u32; 8], [u32; 3]) {
    let w4 = (width / 4) as u32;
    ([w4, seqs as u32, last as u32, 0, 0, 0, 0, 0], [w4.div_ceil(WG), seqs as u32, 1])
}
