//! Image decoding into Pillow's modes.
//!
//! The reference pipelines start from `PIL.Image.open(path)`, whose *mode* decides what happens
//! next (OpenAI resizes in that mode and converts to RGB afterwards). So decoding keeps the
//! information Pillow would have: the bands (`L`, `LA`, `RGB`, `RGBA`, `I;16`, `CMYK`), whether
//! the image was palette-based (`P`/`1`: Pillow resizes those with NEAREST whatever filter is
//! asked) and whether an alpha channel comes from a `tRNS` colour key (Pillow keeps `L`/`RGB`
//! plus `info["transparency"]`, not a real alpha band).

use std::io::Cursor;

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader};

use super::{Limits, PreprocessError};

/// Pixel bands, interleaved, row-major, as Pillow would hold them after `Image.open`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pixels {
    /// `L` (also Pillow's `1`, stored as 0/255).
    L(Vec<u8>),
    /// `LA`, 2 bytes per pixel.
    La(Vec<u8>),
    /// `RGB`, 3 bytes per pixel.
    Rgb(Vec<u8>),
    /// `RGBA`, 4 bytes per pixel (straight, not premultiplied).
    Rgba(Vec<u8>),
    /// `I;16` (16-bit grayscale PNG/TIFF).
    I16(Vec<u16>),
    /// `CMYK` in Pillow's convention (Adobe-inverted JPEGs already un-inverted), 4 bytes/pixel.
    Cmyk(Vec<u8>),
}

impl Pixels {
    /// Pillow band names of this pixel layout.
    pub fn mode(&self) -> &'static str {
        match self {
            Pixels::L(_) => "L",
            Pixels::La(_) => "LA",
            Pixels::Rgb(_) => "RGB",
            Pixels::Rgba(_) => "RGBA",
            Pixels::I16(_) => "I;16",
            Pixels::Cmyk(_) => "CMYK",
        }
    }
    fn channels(&self) -> usize {
        match self {
            Pixels::L(_) | Pixels::I16(_) => 1,
            Pixels::La(_) => 2,
            Pixels::Rgb(_) => 3,
            Pixels::Rgba(_) | Pixels::Cmyk(_) => 4,
        }
    }
    fn len(&self) -> usize {
        match self {
            Pixels::L(v) | Pixels::La(v) | Pixels::Rgb(v) | Pixels::Rgba(v) | Pixels::Cmyk(v) => v.len(),
            Pixels::I16(v) => v.len(),
        }
    }
}

/// A decoded image, as Pillow would see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    pub width: u32,
    pub height: u32,
    pub pixels: Pixels,
    /// Pillow would hold this image in mode `P` or `1` (palette PNG/GIF/BMP, 1-bit PNG):
    /// `Image.resize` then uses NEAREST whatever filter is requested. The palette is already
    /// expanded into `pixels`; nearest-neighbour on indices equals nearest on colours.
    pub palette: bool,
    /// The alpha band of `La`/`Rgba` was synthesised from a `tRNS` colour key (Pillow: mode `L`
    /// or `RGB` with `info["transparency"]`); `Image.resize` and `convert("RGB")` ignore it.
    pub alpha_from_key: bool,
}

impl Decoded {
    /// Builds a `Decoded` from raw parts, checking the buffer length.
    pub fn new(width: u32, height: u32, pixels: Pixels) -> Option<Decoded> {
        let n = width as usize * height as usize * pixels.channels();
        (pixels.len() == n && width > 0 && height > 0).then_some(Decoded {
            width,
            height,
            pixels,
            palette: false,
            alpha_from_key: false,
        })
    }

    /// From an already decoded `image::DynamicImage`, the way Pillow would hold the same data
    /// (16-bit colour images keep the high byte, as Pillow's `RGB;16B` unpacker does; 16-bit
    /// grayscale becomes `I;16`; float images are converted by the image crate to 8 bits).
    pub fn from_dynamic(img: &DynamicImage) -> Decoded {
        Self::from_dynamic_owned(img.clone())
    }

    /// [`Decoded::from_dynamic`] taking the image by value: 8-bit buffers are moved, not
    /// copied, so decoding holds one copy of the pixels at a time.
    pub fn from_dynamic_owned(img: DynamicImage) -> Decoded {
        let (width, height) = (img.width(), img.height());
        let hi = |v: &[u16]| v.iter().map(|&x| (x >> 8) as u8).collect::<Vec<u8>>();
        let pixels = match img {
            DynamicImage::ImageLuma8(b) => Pixels::L(b.into_raw()),
            DynamicImage::ImageLumaA8(b) => Pixels::La(b.into_raw()),
            DynamicImage::ImageRgb8(b) => Pixels::Rgb(b.into_raw()),
            DynamicImage::ImageRgba8(b) => Pixels::Rgba(b.into_raw()),
            DynamicImage::ImageLuma16(b) => Pixels::I16(b.into_raw()),
            DynamicImage::ImageLumaA16(b) => Pixels::La(hi(b.as_raw())),
            DynamicImage::ImageRgb16(b) => Pixels::Rgb(hi(b.as_raw())),
            DynamicImage::ImageRgba16(b) => Pixels::Rgba(hi(b.as_raw())),
            other if other.color().has_alpha() => Pixels::Rgba(other.to_rgba8().into_raw()),
            other => Pixels::Rgb(other.to_rgb8().into_raw()),
        };
        Decoded { width, height, pixels, palette: false, alpha_from_key: false }
    }

    /// Transformers' `convert_to_rgb` (PIL path): if the image has an alpha band or a
    /// transparency key, `convert("RGBA")` and `alpha_composite` it onto opaque white, else
    /// `convert("RGB")`. The result is `RGB` (and no longer palette-based).
    pub fn into_rgb_hf(self) -> Decoded {
        let Decoded { width, height, pixels, .. } = self;
        let rgb = match pixels {
            Pixels::Rgb(v) => v,
            Pixels::L(v) => v.iter().flat_map(|&l| [l, l, l]).collect(),
            Pixels::La(v) => v
                .chunks_exact(2)
                .flat_map(|p| {
                    let l = composite_on_white(p[0], p[1]);
                    [l, l, l]
                })
                .collect(),
            Pixels::Rgba(v) => v
                .chunks_exact(4)
                .flat_map(|p| {
                    [composite_on_white(p[0], p[3]), composite_on_white(p[1], p[3]), composite_on_white(p[2], p[3])]
                })
                .collect(),
            Pixels::I16(v) => v
                .iter()
                .flat_map(|&x| {
                    let l = x.min(255) as u8;
                    [l, l, l]
                })
                .collect(),
            Pixels::Cmyk(v) => cmyk_to_rgb(&v),
        };
        Decoded { width, height, pixels: Pixels::Rgb(rgb), palette: false, alpha_from_key: false }
    }

    /// What OpenAI's transform resizes: the `Image.open` mode. A colour-key alpha is not a band
    /// in Pillow, so it is dropped here (`L`/`RGB`).
    pub fn into_openai(self) -> Decoded {
        if !self.alpha_from_key {
            return self;
        }
        let pixels = match self.pixels {
            Pixels::La(v) => Pixels::L(v.chunks_exact(2).map(|p| p[0]).collect()),
            Pixels::Rgba(v) => Pixels::Rgb(v.chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]]).collect()),
            other => other,
        };
        Decoded { pixels, alpha_from_key: false, ..self }
    }
}

/// `(a*b + 128)` then Pillow's `MULDIV255`: exact `round(a*b/255)`.
#[inline]
pub(crate) fn muldiv255(a: u32, b: u32) -> u32 {
    let t = a * b + 128;
    ((t >> 8) + t) >> 8
}

/// One colour channel of Pillow's `ImagingAlphaComposite(white opaque background, src)`
/// (`libImaging/AlphaComposite.c`, 7 extra bits of precision), then `convert("RGB")`.
#[inline]
pub(crate) fn composite_on_white(c: u8, a: u8) -> u8 {
    if a == 0 {
        return 255;
    }
    const PREC: u32 = 7;
    let (src_a, dst_a, dst_c) = (a as u32, 255u32, 255u32);
    let blend = dst_a * (255 - src_a);
    let outa255 = src_a * 255 + blend;
    let coef1 = src_a * 255 * 255 * (1 << PREC) / outa255;
    let coef2 = 255 * (1 << PREC) - coef1;
    let tmp = c as u32 * coef1 + dst_c * coef2 + (0x80 << PREC);
    ((((tmp >> 8) + tmp) >> 8) >> PREC) as u8
}

/// Pillow's `cmyk2rgb` (`libImaging/Convert.c`): `R = CLIP8(nk - MULDIV255(C, nk))`, `nk = 255-K`.
pub(crate) fn cmyk_to_rgb(cmyk: &[u8]) -> Vec<u8> {
    cmyk.chunks_exact(4)
        .flat_map(|p| {
            let nk = 255 - p[3] as u32;
            let f = |c: u8| (nk - muldiv255(c as u32, nk)) as u8;
            [f(p[0]), f(p[1]), f(p[2])]
        })
        .collect()
}

fn corrupt(e: impl std::fmt::Display) -> PreprocessError {
    PreprocessError::Corrupt(e.to_string())
}

fn map_image_error(e: image::ImageError) -> PreprocessError {
    use image::ImageError as E;
    match e {
        E::Unsupported(u) => PreprocessError::Unsupported(u.to_string()),
        E::Limits(l) => PreprocessError::Corrupt(format!("decoder limit exceeded: {l}")),
        other => corrupt(other),
    }
}

/// What the container header says about the Pillow mode (only what the image crate's output
/// does not tell us).
#[derive(Debug, Default, Clone, Copy)]
struct HeaderInfo {
    palette: bool,
    alpha_from_key: bool,
}

/// PNG: IHDR colour type / bit depth, and whether a `tRNS` chunk precedes the image data.
fn png_info(b: &[u8]) -> HeaderInfo {
    let mut info = HeaderInfo::default();
    if b.len() < 33 || &b[12..16] != b"IHDR" {
        return info;
    }
    let depth = b[24];
    let ctype = b[25];
    info.palette = ctype == 3 || (ctype == 0 && depth == 1);
    let mut pos = 8usize;
    while pos + 8 <= b.len() {
        let len = u32::from_be_bytes([b[pos], b[pos + 1], b[pos + 2], b[pos + 3]]) as usize;
        let kind = &b[pos + 4..pos + 8];
        if kind == b"tRNS" {
            info.alpha_from_key = ctype == 0 || ctype == 2;
            break;
        }
        if kind == b"IDAT" || kind == b"IEND" {
            break;
        }
        pos = match pos.checked_add(12).and_then(|p| p.checked_add(len)) {
            Some(p) => p,
            None => break,
        };
    }
    info
}

/// BMP: bits per pixel ≤ 8 means a palette image (Pillow mode `P`, or `1` / `L`).
fn bmp_info(b: &[u8]) -> HeaderInfo {
    let mut info = HeaderInfo::default();
    if b.len() >= 30 {
        let header_size = u32::from_le_bytes([b[14], b[15], b[16], b[17]]);
        let bpp =
            if header_size == 12 { u16::from_le_bytes([b[24], b[25]]) } else { u16::from_le_bytes([b[28], b[29]]) };
        info.palette = bpp <= 8;
    }
    info
}

/// Does a JPEG carry an Adobe APP14 segment (Pillow then reads CMYK as inverted `CMYK;I`)?
fn jpeg_has_adobe(b: &[u8]) -> bool {
    let mut pos = 2usize;
    while pos + 4 <= b.len() {
        if b[pos] != 0xFF {
            return false;
        }
        let marker = b[pos + 1];
        if marker == 0xFF {
            pos += 1;
            continue;
        }
        if marker == 0xDA || marker == 0xD9 {
            return false;
        }
        let len = u16::from_be_bytes([b[pos + 2], b[pos + 3]]) as usize;
        if marker == 0xEE && b.len() >= pos + 9 && &b[pos + 4..pos + 9] == b"Adobe" {
            return true;
        }
        pos += 2 + len;
    }
    false
}

/// JPEG with 4 components: decode raw CMYK with zune-jpeg and apply Pillow's Adobe inversion.
fn decode_cmyk_jpeg(bytes: &[u8], w: u32, h: u32) -> Result<Pixels, PreprocessError> {
    use zune_core::colorspace::ColorSpace;
    use zune_core::options::DecoderOptions;
    let opts = DecoderOptions::default()
        .jpeg_set_out_colorspace(ColorSpace::CMYK)
        .set_strict_mode(false)
        .set_max_width(w as usize)
        .set_max_height(h as usize);
    let mut dec = zune_jpeg::JpegDecoder::new_with_options(Cursor::new(bytes), opts);
    let mut v = dec.decode().map_err(|e| corrupt(format!("{e:?}")))?;
    if v.len() != w as usize * h as usize * 4 {
        return Err(corrupt("CMYK JPEG decoded to an unexpected size"));
    }
    if jpeg_has_adobe(bytes) {
        v.iter_mut().for_each(|x| *x = 255 - *x);
    }
    Ok(Pixels::Cmyk(v))
}

/// Byte offset of the first start-of-scan marker of a JPEG, if the marker chain reaches one.
fn jpeg_first_sos(b: &[u8]) -> Option<usize> {
    let mut pos = 2usize;
    while pos + 4 <= b.len() {
        if b[pos] != 0xFF {
            return None;
        }
        let marker = b[pos + 1];
        if marker == 0xFF {
            pos += 1;
            continue;
        }
        if marker == 0xDA {
            return Some(pos);
        }
        if marker == 0xD9 {
            return None;
        }
        let len = u16::from_be_bytes([b[pos + 2], b[pos + 3]]) as usize;
        pos += 2 + len;
    }
    None
}

/// Pillow (libjpeg) refuses a JPEG whose data ends before the end-of-image marker ("image file
/// is truncated"), while zune-jpeg would pad it with grey. EOI (`FF D9`) cannot occur inside
/// entropy-coded data (an `FF` byte there is stuffed as `FF 00`), so after the first scan it
/// marks the end of the image.
fn jpeg_is_truncated(b: &[u8]) -> bool {
    match jpeg_first_sos(b) {
        Some(sos) => !b[sos..].windows(2).any(|w| w == [0xFF, 0xD9]),
        None => true,
    }
}

/// GIF: the extent (`left + width`, `top + height`) of the first frame's image descriptor, which
/// may exceed the logical screen the decoder reports (Pillow sizes such an image by the frame).
fn gif_first_frame_extent(b: &[u8]) -> Option<(u32, u32)> {
    let flags = *b.get(10)?;
    let mut pos = 13usize;
    if flags & 0x80 != 0 {
        pos += 3 << ((flags & 7) + 1);
    }
    loop {
        match *b.get(pos)? {
            0x2C => {
                let f = |i: usize| -> Option<u32> {
                    Some(u16::from_le_bytes([*b.get(pos + i)?, *b.get(pos + i + 1)?]) as u32)
                };
                return Some((f(1)? + f(5)?, f(3)? + f(7)?));
            }
            0x21 => {
                // extension: label, then data sub-blocks up to a zero-length one
                pos += 2;
                loop {
                    let n = *b.get(pos)? as usize;
                    pos += 1 + n;
                    if n == 0 {
                        break;
                    }
                }
            }
            _ => return None,
        }
    }
}

/// The size a PNG, BMP, GIF or WebP header declares, read from the raw bytes before any decoder
/// is created (so the bomb check never depends on what a decoder allocates while opening), as
/// `(width, height)` with a zero or negative dimension reported as 0. `None`: not found (the
/// decoder then reports the problem, and the size it reads is checked again).
fn header_dimensions(b: &[u8], format: ImageFormat) -> Option<(u64, u64)> {
    let be32 = |i: usize| -> Option<u64> { Some(u32::from_be_bytes(b.get(i..i + 4)?.try_into().ok()?) as u64) };
    let le32 = |i: usize| -> Option<i64> { Some(i32::from_le_bytes(b.get(i..i + 4)?.try_into().ok()?) as i64) };
    let le16 = |i: usize| -> Option<u64> { Some(u16::from_le_bytes(b.get(i..i + 2)?.try_into().ok()?) as u64) };
    let le24 = |i: usize| -> Option<u64> { Some(le16(i)? | (*b.get(i + 2)? as u64) << 16) };
    match format {
        ImageFormat::Png if b.get(12..16) == Some(b"IHDR") => Some((be32(16)?, be32(20)?)),
        ImageFormat::Bmp => {
            let header_size = le32(14)?;
            let (w, h) = if header_size == 12 { (le16(18)? as i64, le16(20)? as i64) } else { (le32(18)?, le32(22)?) };
            Some((w.max(0) as u64, h.unsigned_abs()))
        }
        ImageFormat::Gif => Some((le16(6)?, le16(8)?)),
        ImageFormat::WebP => match b.get(12..16)? {
            b"VP8X" => Some((le24(24)? + 1, le24(27)? + 1)),
            b"VP8L" if b.get(20) == Some(&0x2f) => {
                let bits = u32::from_le_bytes(b.get(21..25)?.try_into().ok()?) as u64;
                Some(((bits & 0x3fff) + 1, ((bits >> 14) & 0x3fff) + 1))
            }
            b"VP8 " if b.get(23..26) == Some(&[0x9d, 0x01, 0x2a]) => Some((le16(26)? & 0x3fff, le16(28)? & 0x3fff)),
            _ => None,
        },
        _ => None,
    }
}

/// Checks a TIFF's first image file directory (the one decoded) against the file before the
/// tiff crate reads it: every tag's out-of-line data must lie inside the file, and all of them
/// together may not declare more values than the file has bytes. The crate sizes its tag arrays
/// from the declared counts (up to 32 bytes per value, each array capped separately), so
/// without this a 2 KB file declaring millions of strip offsets costs hundreds of MB before
/// the read fails. Also returns the declared size for the decompression-bomb check, which then
/// runs before any tag array is read.
fn tiff_prescan(b: &[u8]) -> Result<Option<(u64, u64)>, PreprocessError> {
    let bad = |m: String| Err(PreprocessError::Corrupt(format!("TIFF {m}")));
    let le = match b.get(0..2) {
        Some(b"II") => true,
        Some(b"MM") => false,
        _ => return bad("header has no byte-order mark".into()),
    };
    let uint = |i: u64, n: usize| -> Option<u64> {
        let i = usize::try_from(i).ok()?;
        let s = b.get(i..i.checked_add(n)?)?;
        let mut v = 0u64;
        for k in 0..n {
            let byte = s[if le { n - 1 - k } else { k }] as u64;
            v = v << 8 | byte;
        }
        Some(v)
    };
    let len = b.len() as u64;
    let big = match uint(2, 2) {
        Some(42) => false,
        Some(43) => true,
        _ => return bad("header has an unknown version".into()),
    };
    // classic: u32 offsets, u16 entry count, 12-byte entries with 4 bytes inline;
    // BigTIFF: u64 offsets, u64 entry count, 20-byte entries with 8 bytes inline
    let (off_n, count_n, entry_n, inline) = if big { (8, 8, 20u64, 8u64) } else { (4, 2, 12u64, 4u64) };
    let ifd = if big { uint(8, 8) } else { uint(4, 4) };
    let Some(ifd) = ifd.filter(|&o| o >= 8 && o < len) else {
        return bad("header's first directory offset lies outside the file".into());
    };
    let Some(entries) = uint(ifd, count_n) else { return bad("directory is cut off".into()) };
    let first = ifd + count_n as u64;
    if entries.checked_mul(entry_n).and_then(|n| n.checked_add(first)).is_none_or(|end| end > len) {
        return bad(format!("directory declares {entries} entries, more than the file holds"));
    }
    let (mut w, mut h, mut values) = (None, None, 0u64);
    for e in 0..entries {
        let at = first + e * entry_n;
        let (tag, ty) = (uint(at, 2).unwrap_or(0), uint(at + 2, 2).unwrap_or(0));
        let count = uint(at + 4, off_n).unwrap_or(0);
        let size = match ty {
            1 | 2 | 6 | 7 => 1u64,
            3 | 8 => 2,
            4 | 9 | 11 | 13 => 4,
            5 | 10 | 12 | 16 | 17 | 18 => 8,
            _ => continue, // an unknown type: the decoder skips it or names it
        };
        let value_at = at + 4 + off_n as u64;
        let bytes = count.checked_mul(size);
        if bytes.is_some_and(|n| n <= inline) {
            if count == 1 && (tag == 256 || tag == 257) {
                let v = uint(value_at, size as usize);
                if tag == 256 {
                    w = v
                } else {
                    h = v
                }
            }
            continue;
        }
        let offset = uint(value_at, off_n).unwrap_or(u64::MAX);
        if bytes.and_then(|n| n.checked_add(offset)).is_none_or(|end| end > len) {
            return bad(format!(
                "tag {tag} declares {count} values of {size} bytes at offset {offset}, beyond the end of the {len}-byte file"
            ));
        }
        values += count;
    }
    if values > len {
        return bad(format!("tags declare {values} values in all, more than the {len}-byte file holds"));
    }
    Ok(w.zip(h))
}

/// Number of components in a JPEG's first SOF segment.
fn jpeg_components(b: &[u8]) -> Option<u8> {
    let mut pos = 2usize;
    while pos + 4 <= b.len() {
        if b[pos] != 0xFF {
            return None;
        }
        let marker = b[pos + 1];
        if marker == 0xFF {
            pos += 1;
            continue;
        }
        if matches!(marker, 0xC0..=0xCF) && !matches!(marker, 0xC4 | 0xC8 | 0xCC) {
            return b.get(pos + 9).copied();
        }
        if marker == 0xDA || marker == 0xD9 {
            return None;
        }
        let len = u16::from_be_bytes([b[pos + 2], b[pos + 3]]) as usize;
        pos += 2 + len;
    }
    None
}

/// Decode bytes into the image Pillow's `Image.open(...)` would give (first frame of animations).
pub fn decode_native(bytes: &[u8], limits: &Limits) -> Result<Decoded, PreprocessError> {
    if bytes.is_empty() {
        return Err(PreprocessError::Empty);
    }
    if bytes.len() as u64 > limits.max_file_bytes {
        return Err(PreprocessError::FileTooLarge { bytes: bytes.len() as u64, limit: limits.max_file_bytes });
    }
    let format = image::guess_format(bytes).map_err(|_| {
        PreprocessError::Unsupported("unrecognised file signature (expected JPEG, PNG, WebP, GIF, BMP or TIFF)".into())
    })?;
    let supported =
        [ImageFormat::Jpeg, ImageFormat::Png, ImageFormat::WebP, ImageFormat::Gif, ImageFormat::Bmp, ImageFormat::Tiff];
    if !supported.contains(&format) {
        return Err(PreprocessError::Unsupported(format!("{format:?} files are not supported")));
    }
    // Decoders should not panic, but a panic on hostile input must not take the process down.
    std::panic::catch_unwind(|| decode_format(bytes, format, limits))
        .unwrap_or_else(|_| Err(corrupt("the decoder panicked on this input")))
}

/// The decompression-bomb check, from the header's size, before any pixel is decoded.
pub(super) fn check_dimensions(w: u32, h: u32, limits: &Limits) -> Result<(), PreprocessError> {
    if w == 0 || h == 0 {
        return Err(PreprocessError::Corrupt(format!("image has a zero dimension ({w}x{h})")));
    }
    if w as u64 * h as u64 > limits.max_pixels || w > 16_000_000 || h > 16_000_000 {
        return Err(PreprocessError::TooManyPixels { width: w, height: h, limit: limits.max_pixels });
    }
    Ok(())
}

fn decode_format(bytes: &[u8], format: ImageFormat, limits: &Limits) -> Result<Decoded, PreprocessError> {
    // libjpeg-turbo, as Pillow: bit-exact samples (the zune-jpeg path below differs by a few
    // levels). It checks the header's size against `limits` itself.
    #[cfg(feature = "libjpeg")]
    if format == ImageFormat::Jpeg {
        return super::jpeg::decode(bytes, limits);
    }
    let declared = match format {
        ImageFormat::Tiff => tiff_prescan(bytes)?,
        _ => header_dimensions(bytes, format),
    };
    if let Some((w, h)) = declared {
        let clamp = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
        check_dimensions(clamp(w), clamp(h), limits)?;
    }
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut il = image::Limits::default();
    // Budget for the largest layout we may hold (RGBA16 = 8 bytes/pixel) plus slack.
    il.max_alloc = Some(limits.max_pixels.saturating_mul(8).saturating_add(64 << 20));
    reader.limits(il);
    let decoder = reader.into_decoder().map_err(map_image_error)?;
    let (w, h) = decoder.dimensions();
    check_dimensions(w, h, limits)?;
    if format == ImageFormat::Gif {
        if let Some((fw, fh)) = gif_first_frame_extent(bytes) {
            check_dimensions(fw.max(w), fh.max(h), limits)?;
        }
    }

    if format == ImageFormat::Jpeg && jpeg_is_truncated(bytes) {
        return Err(corrupt("JPEG data ends before the end-of-image marker"));
    }
    if format == ImageFormat::Jpeg && jpeg_components(bytes) == Some(4) {
        let pixels = decode_cmyk_jpeg(bytes, w, h)?;
        return Ok(Decoded { width: w, height: h, pixels, palette: false, alpha_from_key: false });
    }

    let info = match format {
        ImageFormat::Png => png_info(bytes),
        ImageFormat::Gif => HeaderInfo { palette: true, alpha_from_key: false },
        ImageFormat::Bmp => bmp_info(bytes),
        _ => HeaderInfo::default(),
    };
    let img = DynamicImage::from_decoder(decoder).map_err(map_image_error)?;
    let mut d = Decoded::from_dynamic_owned(img);
    if d.width != w || d.height != h {
        return Err(corrupt("decoded size differs from the header"));
    }
    d.palette = info.palette;
    d.alpha_from_key = info.alpha_from_key && matches!(d.pixels, Pixels::La(_) | Pixels::Rgba(_));
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn muldiv255_is_exact_rounding() {
        for a in 0..256u32 {
            for b in 0..256u32 {
                let exact = ((a * b) as f64 / 255.0).round() as u32;
                assert_eq!(muldiv255(a, b), exact, "{a} {b}");
            }
        }
    }

    #[test]
    fn composite_extremes() {
        for c in 0..=255u8 {
            assert_eq!(composite_on_white(c, 255), c);
            assert_eq!(composite_on_white(c, 0), 255);
        }
        assert_eq!(composite_on_white(0, 128), 127);
    }

    #[test]
    fn cmyk_basics() {
        assert_eq!(cmyk_to_rgb(&[0, 0, 0, 0]), vec![255, 255, 255]);
        assert_eq!(cmyk_to_rgb(&[255, 0, 0, 0]), vec![0, 255, 255]);
        assert_eq!(cmyk_to_rgb(&[0, 0, 0, 255]), vec![0, 0, 0]);
    }

    #[test]
    fn header_sizes() {
        let mut png = vec![0x89, b'P', b'N', b'G', 13, 10, 26, 10, 0, 0, 0, 13];
        png.extend_from_slice(b"IHDR");
        png.extend_from_slice(&[0, 1, 0x86, 0xA0, 0, 0, 0, 0]);
        assert_eq!(header_dimensions(&png, ImageFormat::Png), Some((100_000, 0)));
        assert_eq!(header_dimensions(&png[..20], ImageFormat::Png), None);
        let mut bmp = vec![0u8; 30];
        bmp[14] = 40;
        bmp[18..22].copy_from_slice(&(-5i32).to_le_bytes());
        bmp[22..26].copy_from_slice(&(-7i32).to_le_bytes());
        assert_eq!(header_dimensions(&bmp, ImageFormat::Bmp), Some((0, 7)));
        let mut webp = b"RIFF\0\0\0\0WEBPVP8L\0\0\0\0\x2f".to_vec();
        webp.extend_from_slice(&(16383u32 | 99 << 14).to_le_bytes());
        assert_eq!(header_dimensions(&webp, ImageFormat::WebP), Some((16384, 100)));
    }

    /// A one-directory TIFF with the given entries `(tag, type, count, value or offset)`,
    /// `pad` bytes of data after the header and the directory after them.
    fn tiff(be: bool, entries: &[(u16, u16, u32, u32)], pad: usize) -> Vec<u8> {
        let (u16b, u32b) = if be {
            (u16::to_be_bytes as fn(u16) -> [u8; 2], u32::to_be_bytes as fn(u32) -> [u8; 4])
        } else {
            (u16::to_le_bytes as fn(u16) -> [u8; 2], u32::to_le_bytes as fn(u32) -> [u8; 4])
        };
        let mut b = if be { b"MM".to_vec() } else { b"II".to_vec() };
        b.extend(u16b(42));
        b.extend(u32b(8 + pad as u32));
        b.resize(8 + pad, 0);
        b.extend(u16b(entries.len() as u16));
        for &(tag, ty, count, v) in entries {
            b.extend(u16b(tag));
            b.extend(u16b(ty));
            b.extend(u32b(count));
            // a SHORT held inline sits in the field's first two bytes
            if ty == 3 && count == 1 {
                b.extend(u16b(v as u16));
                b.extend([0, 0]);
            } else {
                b.extend(u32b(v));
            }
        }
        b.extend([0; 4]);
        b
    }

    #[test]
    fn tiff_prescan_reads_sizes_and_refuses_tag_data_beyond_the_file() {
        let mut buf = std::io::Cursor::new(Vec::new());
        DynamicImage::new_rgb8(37, 5).write_to(&mut buf, ImageFormat::Tiff).unwrap();
        assert_eq!(tiff_prescan(buf.get_ref()).ok(), Some(Some((37, 5))));
        for be in [false, true] {
            let ok = tiff(be, &[(256, 3, 1, 300), (257, 4, 1, 70_000), (273, 4, 4, 8)], 16);
            assert_eq!(tiff_prescan(&ok).ok(), Some(Some((300, 70_000))), "big-endian {be}");
            let far = tiff(be, &[(256, 3, 1, 3), (273, 4, 50_000_000, 8)], 16);
            let e = tiff_prescan(&far).unwrap_err().to_string();
            assert!(e.contains("tag 273 declares 50000000 values of 4 bytes at offset 8, beyond the end"), "{e}");
            // in the file, but four arrays over the same 24 bytes: 96 values in 86 bytes
            let shared = tiff(be, &[(273, 1, 24, 8), (279, 1, 24, 8), (320, 1, 24, 8), (700, 1, 24, 8)], 24);
            let e = tiff_prescan(&shared).unwrap_err().to_string();
            assert!(e.contains("96 values in all, more than the 86-byte file"), "{e}");
        }
        let mut cut = tiff(false, &[(256, 3, 1, 3)], 0);
        cut[8] = 200; // 200 entries in a 22-byte file
        assert!(tiff_prescan(&cut).unwrap_err().to_string().contains("200 entries"));
        assert!(tiff_prescan(b"II*\0\xff\xff\0\0").is_err());
    }

    #[test]
    fn gif_frame_extent() {
        let mut b = b"GIF89a".to_vec();
        b.extend_from_slice(&[10, 0, 10, 0, 0x80, 0, 0]); // 10x10 screen, 2-entry colour table
        b.extend_from_slice(&[0; 6]);
        b.extend_from_slice(&[0x21, 0xF9, 4, 1, 0, 0, 0, 0]); // graphic control extension
        b.extend_from_slice(&[0x2C, 5, 0, 0, 0, 0xFF, 0xFF, 3, 0, 0]);
        assert_eq!(gif_first_frame_extent(&b), Some((65540, 3)));
        assert_eq!(gif_first_frame_extent(&b[..20]), None);
        assert_eq!(gif_first_frame_extent(b"GIF89a"), None);
    }

    #[test]
    fn png_header_parsing_survives_garbage() {
        let mut b = vec![0x89, b'P', b'N', b'G', 13, 10, 26, 10, 0, 0, 0, 13];
        b.extend_from_slice(b"IHDR");
        b.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1, 8, 3, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]);
        b.extend_from_slice(&[0xff, 0xff, 0xff, 0xf0]);
        let i = png_info(&b);
        assert!(i.palette && !i.alpha_from_key);
    }
}
