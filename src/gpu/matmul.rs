//! The matmul family (`shaders/matmul.wgsl`): `Y (+)= act(X·Wᵀ + b)` with register tiles of
//! 4×4 outputs per invocation, and its `PATCH` variant, the patch embedding with the im2col
//! fused into the loads and the class token and position embedding into the epilogue.

use super::types::Dt;
use super::wgsl::{generate, Binding, Header};

/// The shader source.
pub const WGSL: &str = include_str!("../../shaders/matmul.wgsl");
use crate::model::Activation;

/// One matmul variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MatmulKey {
    /// Storage of X (ignored with `patch`: pixels are f32).
    pub x: Dt,
    pub w: Dt,
    pub y: Dt,
    pub bias: bool,
    /// 0 none, 1 QuickGELU, 2 GELU.
    pub act: u32,
    /// `Y += …` (the residual add; Y is read and written).
    pub acc: bool,
    pub patch: bool,
}

/// Invocations per workgroup along columns and rows; each invocation computes 4×4 outputs.
pub const WG: (u32, u32) = (8, 8);
/// Output tile of one workgroup.
pub const TILE: u32 = 32;

pub fn act_code(a: Option<Activation>) -> u32 {
    match a {
        None => 0,
        Some(Activation::QuickGelu) => 1,
        Some(Activation::Gelu) => 2,
    }
}

impl MatmulKey {
    pub fn name(&self) -> String {
        let x = if self.patch { "px" } else { self.x.wgsl() };
        format!(
            "matmul{}_{}x{}_{}{}{}{}",
            if self.patch { "_patch" } else { "" },
            x,
            self.w.wgsl(),
            self.y.wgsl(),
            if self.bias { "_bias" } else { "" },
            ["", "_quickgelu", "_gelu"][self.act as usize],
            if self.acc { "_acc" } else { "" },
        )
    }

    pub fn source(&self) -> String {
        let h = Header::default()
            .alias("XT", if self.patch { Dt::F32 } else { self.x })
            .alias("WT", self.w)
            .alias("YT", self.y)
            .constant("HAS_BIAS", self.bias)
            .constant("ACT", format!("{}u", self.act))
            .constant("ACCUMULATE", self.acc)
            .flag("PATCH", self.patch);
        generate(WGSL, &h)
    }

    pub fn bindings(&self) -> Vec<(u32, Binding)> {
        let mut b = vec![
            (0, Binding::Uniform),
            (1, Binding::Read),
            (2, Binding::Read),
            (3, Binding::Read),
            (4, Binding::ReadWrite),
        ];
        if self.patch {
            b.push((5, Binding::Read));
        }
        b
    }
}

/// The uniform block of `Params` in matmul.wgsl.
pub fn params(m: usize, n: usize, k: usize) -> [u32; 8] {
    [m as u32, n as u32, (k / 4) as u32, 0, 0, 0, 0, 0]
}

/// Params of the patch embedding: `m = images · tokens` rows.
pub fn patch_params(images: usize, width: usize, image: usize, patch: usize) -> [u32; 8] {
    let grid = image / patch;
    let tokens = grid * grid + 1;
    [
        (images * tokens) as u32,
        width as u32,
        (3 * patch * patch / 4) as u32,
        tokens as u32,
        grid as u32,
        patch as u32,
        image as u32,
        0,
    ]
}

pub fn dispatch(m: usize, n: usize) -> [u32; 3] {
    [(n as u32).div_ceil(TILE), (m as u32).div_ceil(TILE), 1]
}
