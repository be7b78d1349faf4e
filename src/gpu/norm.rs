//! The row-normalisation family (`shaders/norm.wgsl`): layernorm (in place or not) and L2
//! normalisation, one workgroup per row, reductions through subgroups where SUBGROUP exists.

use super::types::Dt;
use super::wgsl::{generate, Binding, Header};

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

impl NormKey {
    pub fn name(&self) -> String {
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
    pub fn source(&self) -> String {
        let h = Header::default()
            .alias("XT", self.x)
            .alias("YT", self.y)
            .alias("GT", self.g)
            .flag("SUBGROUP", self.subgroup)
            .flag("INPLACE", self.inplace);
        generate(WGSL, &h)
    }
    pub fn entry(&self) -> &'static str {
        if self.l2 {
            "l2_normalize"
        } else {
            "layer_norm"
        }
    }
    pub fn bindings(&self) -> Vec<(u32, Binding)> {
        if self.l2 {
            return vec![(0, Binding::Uniform), (1, Binding::ReadWrite)];
        }
        let mut b = vec![(0, Binding::Uniform), (1, Binding::ReadWrite)];
        if !self.inplace {
            b.push((2, Binding::Read));
        }
        b.push((3, Binding::Read));
        b.push((4, Binding::Read));
        b
    }
}

pub fn params(width: usize, rows: usize, eps: f32) -> [u32; 8] {
    [width as u32, rows as u32, eps.to_bits(), 0, 0, 0, 0, 0]
}

pub fn dispatch(rows: usize) -> [u32; 3] {
    [rows as u32, 1, 1]
}
