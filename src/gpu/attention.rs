//! The attention family (`shaders/attention.wgsl`): scores, softmax and the weighted sum of
//! all heads of all sequences of a ragged batch in one dispatch, one workgroup per
//! (head, sequence).

use super::types::Dt;
use super::wgsl::{generate, Binding, Header};

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

pub const BINDINGS: [(u32, Binding); 4] =
    [(0, Binding::Uniform), (1, Binding::Read), (2, Binding::Read), (3, Binding::ReadWrite)];

impl AttentionKey {
    pub fn name(&self) -> String {
        format!(
            "attention_{}_{}_d{}{}",
            self.qkv.wgsl(),
            self.out.wgsl(),
            self.hd4 * 4,
            if self.causal { "_causal" } else { "" }
        )
    }
    pub fn source(&self) -> String {
        let h = Header::default()
            .alias("QT", self.qkv)
            .alias("OT", self.out)
            .constant("HD4", format!("{}u", self.hd4))
            .constant("CAUSAL", self.causal);
        generate(WGSL, &h)
    }
}

pub fn params(width: usize, heads: usize, head_dim: usize) -> [u32; 8] {
    [(width / 4) as u32, heads as u32, (1.0 / (head_dim as f32).sqrt()).to_bits(), 0, 0, 0, 0, 0]
}

pub fn dispatch(heads: usize, seqs: usize) -> [u32; 3] {
    [heads as u32, seqs as u32, 1]
}
