//! The patch-embedding family (`shaders/patch_embed.wgsl`): the vision input as one matmul
//! whose loads are the im2col of the pixels, with the class token and the position embedding
//! in its epilogue. Any patch size and image size (ViT-B/32, B/16, L/14, at 224 or 336 px):
//! scalar loads in general, vec4 loads where the patch size is a multiple of 4 (then so is the
//! image size, a multiple of it: `ClipConfig::validate`), 2.6× faster on lavapipe.

use super::family::{wrong_op, Chunk, Family, Res};
use super::matmul::TILE;
use super::types::Dt;
use super::wgsl::{uniform, Header, Slot};
use crate::model::Op;

/// The shader source.
pub const WGSL: &str = include_str!("../../shaders/patch_embed.wgsl");

/// One patch-embedding variant (the pixels are f32).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PatchKey {
    pub w: Dt,
    pub y: Dt,
    /// vec4 loads of pixels and weights (patch size a multiple of 4); scalar ones otherwise.
    pub vec4: bool,
}

/// Whether a patch embedding whose rows are `n_in = 3·P·P` long can use vec4 loads: P a
/// multiple of 4 (the image size, a multiple of P, then is too).
pub fn vec4_loads(n_in: usize) -> bool {
    let p = ((n_in / 3) as f64).sqrt().round() as usize;
    3 * p * p == n_in && p.is_multiple_of(4)
}

const SLOTS: [Slot; 6] = [
    Slot::UNIFORM,
    Slot::read(1, "px", "array<f32>"),
    Slot::read(2, "w", "array<WT>"),
    Slot::read(3, "pos", "array<WT>"),
    Slot::read_write(4, "y", "array<YT>"),
    Slot::read(5, "class_emb", "array<WT>"),
];
const SLOTS_VEC4: [Slot; 6] = [
    Slot::UNIFORM,
    Slot::read(1, "px", "array<vec4<f32>>"),
    Slot::read(2, "w", "array<vec4<WT>>"),
    Slot::read(3, "pos", "array<WT>"),
    Slot::read_write(4, "y", "array<YT>"),
    Slot::read(5, "class_emb", "array<WT>"),
];

uniform!(
    /// `struct Params` of patch_embed.wgsl.
    PatchParams { m: u32, n: u32, k: u32, tokens: u32, grid: u32, psize: u32, image: u32, _pad: u32 }
);

/// The uniform block for `images` images of `image`² pixels cut in patches of `patch`², into
/// rows of `width`.
pub fn params(images: usize, width: usize, image: usize, patch: usize) -> PatchParams {
    let grid = image / patch;
    let tokens = grid * grid + 1;
    PatchParams {
        m: (images * tokens) as u32,
        n: width as u32,
        k: (3 * patch * patch) as u32,
        tokens: tokens as u32,
        grid: grid as u32,
        psize: patch as u32,
        image: image as u32,
        _pad: 0,
    }
}

impl Family for PatchKey {
    type Params = PatchParams;
    const FILE: &'static str = "patch_embed.wgsl";
    const WGSL: &'static str = WGSL;

    fn name(&self) -> String {
        format!("patch_embed_{}_{}{}", self.w.wgsl(), self.y.wgsl(), if self.vec4 { "_vec4" } else { "" })
    }
    fn header(&self) -> Header {
        Header::default().alias("WT", self.w).alias("YT", self.y).flag("VEC4", self.vec4)
    }
    fn slots(&self) -> Vec<Slot> {
        if self.vec4 {
            SLOTS_VEC4.to_vec()
        } else {
            SLOTS.to_vec()
        }
    }
    fn resources(&self, op: &Op) -> Vec<Res> {
        match *op {
            Op::PatchEmbed { patch, class, pos, out } => vec![
                Res::Uniform,
                Res::Input,
                Res::Param(patch.weight),
                Res::Param(pos),
                Res::Act(out),
                Res::Param(class),
            ],
            _ => wrong_op("patch_embed", op),
        }
    }
    fn launch(&self, op: &Op, chunk: &Chunk) -> (PatchParams, [u32; 3]) {
        let Op::PatchEmbed { patch, .. } = *op else { wrong_op("patch_embed", op) };
        let v = chunk.vision;
        assert!(
            !self.vec4 || (v.patch_size.is_multiple_of(4) && v.image_size.is_multiple_of(4)),
            "vec4 patch loads planned for patch {} and image {}",
            v.patch_size,
            v.image_size
        );
        let p = params(chunk.seqs.count(), patch.n_out, v.image_size, v.patch_size);
        (p, [p.n.div_ceil(TILE), p.m.div_ceil(TILE), 1])
    }
}
