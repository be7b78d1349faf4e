//! Image decoding and Pillow-exact CLIP preprocessing, at the model's image size `S`
//! ([`crate::model::VisionConfig::image_size`]: 224 for ViT-B/32, B/16 and L/14, 336 for
//! L/14-336).
//!
//! Two reference pipelines are reproduced bit for bit (on losslessly stored inputs):
//!
//! * [`Variant::Hf`] — transformers' PIL-backed `CLIPImageProcessor`
//!   (`CLIPImageProcessorPil` in transformers 5, `use_fast=False` in 4.x) with the model's
//!   `size = {"shortest_edge": S}` and `crop_size = S×S`:
//!   `convert_to_rgb` (images with an alpha band or a `transparency` key are
//!   `alpha_composite`d onto opaque white, others `convert("RGB")`), then
//!   `Image.resize((w, h), BICUBIC)` with the shortest side to `S` and the long side
//!   `int(S * long / short)`, center crop with `top = (h - S) // 2` (floor),
//!   `u8 * (1/255)` in float64 cast to float32, then `(x - mean) / std` in float32.
//! * [`Variant::OpenAi`] — OpenAI's `clip.load` transform (`_transform(S)`): `Resize(S, BICUBIC)`
//!   on the image in the mode `Image.open` gave (RGBA/LA are resized premultiplied, palette
//!   images with NEAREST, `I;16` with Pillow's 16-bit resampler), `CenterCrop(S)` with
//!   `top = int(round((h - S) / 2))` (half to even), then `convert("RGB")` (drops alpha,
//!   `I;16` clips to 255, CMYK via Pillow's formula), `ToTensor`, `Normalize`.
//!
//! Both variants produce the same output size rule and the same float formula (`u8/255` in f32
//! equals `f32(u8 * (1/255) as f64)` for every u8, and the normalisation is the same f32
//! arithmetic); on RGB inputs whose resized long side has an even excess over `S` (or is `S`)
//! they agree exactly.

mod decode;
#[cfg(feature = "libjpeg")]
mod jpeg;
pub mod resample;

pub use decode::{decode_native, Decoded, Pixels};

use image::{DynamicImage, RgbImage};

/// Which reference pipeline to reproduce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum Variant {
    /// transformers' PIL-backed `CLIPImageProcessor` (the default).
    #[default]
    Hf,
    /// OpenAI's `clip.load(...)` preprocessing (torchvision transforms on PIL images).
    #[cfg_attr(feature = "cli", value(name = "openai"))]
    OpenAi,
}

impl std::str::FromStr for Variant {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "hf" | "transformers" | "huggingface" => Ok(Variant::Hf),
            "openai" | "open-ai" | "clip" => Ok(Variant::OpenAi),
            other => Err(format!("unknown preprocessing variant {other:?} (expected \"hf\" or \"openai\")")),
        }
    }
}

/// Why an input could not be preprocessed. Decoding never panics; every failure is one of these.
#[derive(Debug, thiserror::Error)]
pub enum PreprocessError {
    #[error("empty file")]
    Empty,
    #[error("file is {bytes} bytes, over the limit of {limit} bytes")]
    FileTooLarge { bytes: u64, limit: u64 },
    #[error("unsupported image format: {0}")]
    Unsupported(String),
    #[error(
        "image is {width}x{height} = {:.1} Mpx, over the limit of {:.1} Mpx ({limit} pixels)",
        (*width as f64) * (*height as f64) / 1e6,
        (*limit as f64) / 1e6
    )]
    TooManyPixels { width: u32, height: u32, limit: u64 },
    #[error("image is truncated or corrupt: {0}")]
    Corrupt(String),
}

/// Input limits, checked before any pixel is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest `width * height` accepted. Default: 178,956,970 — Pillow's
    /// `DecompressionBombError` threshold (2 × `Image.MAX_IMAGE_PIXELS`), so anything Pillow
    /// opens without raising is accepted.
    pub max_pixels: u64,
    /// Largest encoded file accepted. Default: 256 MiB.
    pub max_file_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_pixels: 178_956_970, max_file_bytes: 256 << 20 }
    }
}

/// Side of the square model input of ViT-B/32, B/16 and L/14 (L/14-336 takes 336): the size
/// [`preprocess_bytes`] and [`preprocess_image`] produce. A [`crate::Clip`] preprocesses at its
/// checkpoint's own size ([`preprocess_bytes_sized`]).
pub const IMAGE_SIZE: u32 = 224;
/// OpenAI CLIP's per-channel mean (RGB), written as in the references.
#[allow(clippy::excessive_precision)]
pub const MEAN: [f32; 3] = [0.48145466, 0.4578275, 0.40821073];
/// OpenAI CLIP's per-channel standard deviation (RGB).
#[allow(clippy::excessive_precision)]
pub const STD: [f32; 3] = [0.26862954, 0.26130258, 0.27577711];

/// Decode any supported bytes (JPEG, PNG, WebP, GIF first frame, BMP, TIFF) following the
/// variant's colour rules: for [`Variant::Hf`] the result is already RGB (alpha composited onto
/// white); for [`Variant::OpenAi`] it stays in the mode Pillow opens it in (colour conversion
/// happens after the resize, in [`resize_crop`]).
pub fn decode(bytes: &[u8], variant: Variant, limits: &Limits) -> Result<Decoded, PreprocessError> {
    let d = decode_native(bytes, limits)?;
    Ok(match variant {
        Variant::Hf => d.into_rgb_hf(),
        Variant::OpenAi => d.into_openai(),
    })
}

/// Output size of "resize the shortest side to `size`": `(w, h)` with the long side
/// `int(size * long / short)` (transformers' `get_resize_output_image_size(default_to_square=False)`
/// and torchvision's `Resize(int)` compute the same thing).
pub fn resized_size(width: u32, height: u32, size: u32) -> (u32, u32) {
    let (w, h) = (width as f64, height as f64);
    if width <= height {
        (size, (size as f64 * h / w) as u32)
    } else {
        ((size as f64 * w / h) as u32, size)
    }
}

/// Offsets `(left, top)` of the `size × size` center crop of a `w × h` image.
/// Hf floors `(h - size) / 2`; OpenAI (torchvision) uses `int(round((h - size) / 2.0))`,
/// Python's round half to even.
pub fn crop_offsets(w: u32, h: u32, size: u32, variant: Variant) -> (u32, u32) {
    let off = |len: u32| -> u32 {
        let d = len.saturating_sub(size);
        match variant {
            Variant::Hf => d / 2,
            Variant::OpenAi => {
                let half = d / 2;
                if d % 2 == 1 && half % 2 == 1 {
                    half + 1
                } else {
                    half
                }
            }
        }
    };
    (off(w), off(h))
}

/// Pillow's `convert("RGBA" -> "RGBa")` on one pixel buffer (`MULDIV255` premultiplication).
fn premultiply<const C: usize>(v: &[u8]) -> Vec<u8> {
    let mut out = v.to_vec();
    for p in out.chunks_exact_mut(C) {
        let a = p[C - 1] as u32;
        for c in p.iter_mut().take(C - 1) {
            *c = decode::muldiv255(*c as u32, a) as u8;
        }
    }
    out
}

/// Pillow's `convert("RGBa" -> "RGBA")`: `CLIP8(255 * c / a)` (truncating), unchanged for
/// `a` in {0, 255}.
fn unpremultiply<const C: usize>(v: &mut [u8]) {
    for p in v.chunks_exact_mut(C) {
        let a = p[C - 1] as u32;
        if a != 0 && a != 255 {
            for c in p.iter_mut().take(C - 1) {
                *c = (255 * *c as u32 / a).min(255) as u8;
            }
        }
    }
}

/// Resize the shortest side to `size` with Pillow's BICUBIC (exact), center crop `size × size`,
/// convert to RGB following the variant. `img` should come from [`decode`] with the same
/// variant; an image that is not RGB yet is converted with the variant's rules first (Hf) or
/// after resizing (OpenAI). Only the cropped window is ever resampled (bit-identical to a full
/// resize followed by the crop).
pub fn resize_crop(img: &Decoded, size: u32, variant: Variant) -> RgbImage {
    if variant == Variant::Hf && !matches!(img.pixels, Pixels::Rgb(_)) {
        return resize_crop(&img.clone().into_rgb_hf(), size, variant);
    }
    if variant == Variant::OpenAi && img.alpha_from_key {
        return resize_crop(&img.clone().into_openai(), size, variant);
    }
    let (w, h) = (img.width, img.height);
    let (tw, th) = resized_size(w, h, size);
    let (x0, y0) = crop_offsets(tw, th, size, variant);
    let (cw, ch) = (size.min(tw), size.min(th));
    let same = tw == w && th == h;
    let nearest = img.palette && variant == Variant::OpenAi;

    fn rs<const C: usize>(src: &[u8], nearest: bool, d: [u32; 8]) -> Vec<u8> {
        let [w, h, tw, th, x0, y0, cw, ch] = d;
        if nearest {
            resample::resize_nearest_window(src, C, w, h, tw, th, x0, y0, cw, ch)
        } else {
            resample::resample_u8_window::<C>(src, w, h, tw, th, x0, y0, cw, ch)
        }
    }
    let d = [w, h, tw, th, x0, y0, cw, ch];
    let n = cw as usize * ch as usize;
    let rgb: Vec<u8> = match &img.pixels {
        Pixels::Rgb(v) => rs::<3>(v, nearest, d),
        Pixels::L(v) => rs::<1>(v, nearest, d).into_iter().flat_map(|l| [l, l, l]).collect(),
        Pixels::Rgba(v) => {
            // Pillow resizes RGBA as premultiplied RGBa (unless nothing changes, or for P/NEAREST).
            let out = if same || nearest {
                rs::<4>(v, nearest, d)
            } else {
                let mut o = rs::<4>(&premultiply::<4>(v), false, d);
                unpremultiply::<4>(&mut o);
                o
            };
            out.chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]]).collect()
        }
        Pixels::La(v) => {
            let out = if same || nearest {
                rs::<2>(v, nearest, d)
            } else {
                let mut o = rs::<2>(&premultiply::<2>(v), false, d);
                unpremultiply::<2>(&mut o);
                o
            };
            out.chunks_exact(2).flat_map(|p| [p[0], p[0], p[0]]).collect()
        }
        Pixels::I16(v) => {
            let out = resample::resample_u16_window(v, w, h, tw, th, x0, y0, cw, ch);
            out.into_iter()
                .flat_map(|x| {
                    let l = x.min(255) as u8;
                    [l, l, l]
                })
                .collect()
        }
        Pixels::Cmyk(v) => decode::cmyk_to_rgb(&rs::<4>(v, nearest, d)),
    };
    debug_assert_eq!(rgb.len(), n * 3);
    // The crop is always size×size: the resized short side is `size` and the long side ≥ size.
    RgbImage::from_raw(cw, ch, rgb).expect("buffer size matches")
}

/// Per-channel lookup of `(u8 / 255 - mean) / std`, computed as the references do:
/// `f32(u8 * (1/255) as f64)` (transformers; bit-equal to torchvision's f32 `u8 / 255`), then
/// `(x - mean) / std` in f32.
fn norm_lut() -> &'static [[f32; 256]; 3] {
    static LUT: std::sync::OnceLock<[[f32; 256]; 3]> = std::sync::OnceLock::new();
    LUT.get_or_init(|| {
        let mut t = [[0f32; 256]; 3];
        for (c, row) in t.iter_mut().enumerate() {
            for (v, slot) in row.iter_mut().enumerate() {
                let x = (v as f64 * (1.0 / 255.0)) as f32;
                *slot = (x - MEAN[c]) / STD[c];
            }
        }
        t
    })
}

/// RGB8 HWC → normalised CHW f32 (`3 × h × w`).
pub fn normalize(rgb: &RgbImage) -> Vec<f32> {
    let lut = norm_lut();
    let plane = rgb.width() as usize * rgb.height() as usize;
    let mut out = vec![0f32; 3 * plane];
    let (r, rest) = out.split_at_mut(plane);
    let (g, b) = rest.split_at_mut(plane);
    for (i, p) in rgb.as_raw().chunks_exact(3).enumerate() {
        r[i] = lut[0][p[0] as usize];
        g[i] = lut[1][p[1] as usize];
        b[i] = lut[2][p[2] as usize];
    }
    out
}

/// Bytes → CHW f32 `[3 * 224 * 224]`, normalised with [`MEAN`]/[`STD`]: [`preprocess_bytes_sized`]
/// at [`IMAGE_SIZE`].
pub fn preprocess_bytes(bytes: &[u8], variant: Variant, limits: &Limits) -> Result<Vec<f32>, PreprocessError> {
    preprocess_bytes_sized(bytes, IMAGE_SIZE, variant, limits)
}

/// Bytes → CHW f32 `[3 * size * size]` (the shortest side resized to `size`, then the
/// `size × size` center crop), normalised with [`MEAN`]/[`STD`]. `size` is the model's image
/// size and must be at least 1.
pub fn preprocess_bytes_sized(
    bytes: &[u8],
    size: u32,
    variant: Variant,
    limits: &Limits,
) -> Result<Vec<f32>, PreprocessError> {
    assert!(size > 0, "preprocess_bytes_sized: the image size must be at least 1");
    let d = decode(bytes, variant, limits)?;
    Ok(normalize(&resize_crop(&d, size, variant)))
}

/// For callers who already decoded with the image crate: the same pipeline on a `DynamicImage`
/// (treated as Pillow would treat the same pixels: no palette or colour-key information), at
/// [`IMAGE_SIZE`].
pub fn preprocess_image(img: &DynamicImage, variant: Variant) -> Vec<f32> {
    preprocess_image_sized(img, IMAGE_SIZE, variant)
}

/// [`preprocess_image`] at the model's image size `size` (at least 1).
pub fn preprocess_image_sized(img: &DynamicImage, size: u32, variant: Variant) -> Vec<f32> {
    assert!(size > 0, "preprocess_image_sized: the image size must be at least 1");
    let d = Decoded::from_dynamic(img);
    let d = match variant {
        Variant::Hf => d.into_rgb_hf(),
        Variant::OpenAi => d,
    };
    normalize(&resize_crop(&d, size, variant))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(resized_size(640, 480, 224), (298, 224));
        assert_eq!(resized_size(480, 640, 224), (224, 298));
        assert_eq!(resized_size(1, 1, 224), (224, 224));
        assert_eq!(resized_size(2162, 762, 224), (635, 224));
        assert_eq!(resized_size(1000, 37, 224), (6054, 224));
        // ViT-L/14-336
        assert_eq!(resized_size(640, 480, 336), (448, 336));
        assert_eq!(resized_size(427, 640, 336), (336, 503));
    }

    #[test]
    fn crops() {
        assert_eq!(crop_offsets(224, 224, 224, Variant::Hf), (0, 0));
        assert_eq!(crop_offsets(635, 224, 224, Variant::Hf), (205, 0));
        assert_eq!(crop_offsets(635, 224, 224, Variant::OpenAi), (206, 0)); // 205.5 -> 206
        assert_eq!(crop_offsets(225, 224, 224, Variant::Hf), (0, 0));
        assert_eq!(crop_offsets(225, 224, 224, Variant::OpenAi), (0, 0)); // 0.5 -> 0
        assert_eq!(crop_offsets(227, 224, 224, Variant::OpenAi), (2, 0)); // 1.5 -> 2
        assert_eq!(crop_offsets(298, 224, 224, Variant::OpenAi), (37, 0));
        assert_eq!(crop_offsets(448, 336, 336, Variant::Hf), (56, 0));
        assert_eq!(crop_offsets(336, 503, 336, Variant::Hf), (0, 83));
        assert_eq!(crop_offsets(336, 503, 336, Variant::OpenAi), (0, 84)); // 83.5 -> 84
    }

    #[test]
    fn normalize_values() {
        let img = RgbImage::from_raw(1, 1, vec![0, 128, 255]).unwrap();
        let t = normalize(&img);
        assert!((t[0] - (0.0 - MEAN[0]) / STD[0]).abs() < 1e-6);
        assert!((t[1] - (128.0 / 255.0 - MEAN[1]) / STD[1]).abs() < 1e-6);
        assert!((t[2] - (1.0 - MEAN[2]) / STD[2]).abs() < 1e-6);
    }

    #[test]
    fn premultiply_roundtrip_opaque() {
        let v = vec![10u8, 20, 30, 255, 1, 2, 3, 0];
        let mut p = premultiply::<4>(&v);
        assert_eq!(p, vec![10, 20, 30, 255, 0, 0, 0, 0]);
        unpremultiply::<4>(&mut p);
        assert_eq!(&p[..4], &[10, 20, 30, 255]);
    }

    #[test]
    fn garbage_never_panics() {
        let lim = Limits::default();
        for b in [&b""[..], b"hello world", &[0xFF, 0xD8, 0xFF][..], &[0x89, b'P', b'N', b'G'][..]] {
            for v in [Variant::Hf, Variant::OpenAi] {
                assert!(preprocess_bytes(b, v, &lim).is_err());
            }
        }
    }

    #[test]
    fn dynamic_image_path() {
        let img = DynamicImage::ImageRgb8(RgbImage::from_pixel(300, 200, image::Rgb([10, 200, 30])));
        for v in [Variant::Hf, Variant::OpenAi] {
            let t = preprocess_image(&img, v);
            assert_eq!(t.len(), 3 * 224 * 224);
            assert!((t[0] - (10.0 / 255.0 - MEAN[0]) / STD[0]).abs() < 1e-6);
            let t = preprocess_image_sized(&img, 336, v);
            assert_eq!(t.len(), 3 * 336 * 336);
            assert!((t[3 * 336 * 336 - 1] - (30.0 / 255.0 - MEAN[2]) / STD[2]).abs() < 1e-6);
        }
    }
}
