//! Pillow-exact resampling.
//!
//! This is a re-implementation of the parts of Pillow's `libImaging/Resample.c`
//! (`precompute_coeffs`, `normalize_coeffs_8bpc`, `ImagingResample{Horizontal,Vertical}_{8,16}bpc`,
//! `ImagingResampleInner`) and `libImaging/Geometry.c` (`ImagingScaleAffine`, used by
//! `Image.resize(..., NEAREST)`) that `Image.resize(size, BICUBIC)` runs, with the default
//! `box = (0, 0, w, h)` and `reducing_gap = None` (no pre-reduction).
//!
//! Every output pixel of Pillow's separable resampler depends only on its own row/column
//! coefficients, so the functions here compute just a window (`x0..x0+cw`, `y0..y0+ch`) of the
//! full `out_w × out_h` result: the values are bit-identical to resizing everything and cropping
//! afterwards, which is what the preprocessing pipeline does (resize, then center-crop).

/// Pillow's `PRECISION_BITS` (`32 - 8 - 2`).
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Pillow's `bicubic_filter` (a = -0.5), evaluated in the same order of operations.
#[inline]
fn bicubic_filter(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = if x < 0.0 { -x } else { x };
    if x < 1.0 {
        return ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    }
    if x < 2.0 {
        return (((x - 5.0) * x + 8.0) * x - 4.0) * A;
    }
    0.0
}

const BICUBIC_SUPPORT: f64 = 2.0;

/// Filter coefficients for one axis (Pillow's `precompute_coeffs`).
#[derive(Debug, Clone)]
pub(crate) struct Coeffs {
    /// Taps per output pixel (row stride of `k`).
    pub ksize: usize,
    /// For each output pixel: first source index and number of taps.
    pub bounds: Vec<(usize, usize)>,
    /// `out_size × ksize` normalised double coefficients.
    pub k: Vec<f64>,
}

/// Pillow's `precompute_coeffs(inSize, in0=0, in1=inSize, outSize, BICUBIC)`.
pub(crate) fn precompute_coeffs(in_size: u32, out_size: u32) -> Coeffs {
    // `in0`/`in1` are C floats in Pillow; the box is (0, inSize), exact in f32 for any
    // size we accept (< 2^24).
    let in0 = 0.0f32;
    let in1 = in_size as f32;
    let scale = (in1 - in0) as f64 / out_size as f64;
    let filterscale = if scale < 1.0 { 1.0 } else { scale };
    let support = BICUBIC_SUPPORT * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut k = vec![0.0f64; out_size as usize * ksize];
    let mut bounds = Vec::with_capacity(out_size as usize);
    for xx in 0..out_size as usize {
        let center = in0 as f64 + (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        // C: `(int)(center - support + 0.5)` truncates toward zero, then clamps.
        let mut xmin = (center - support + 0.5) as i64;
        if xmin < 0 {
            xmin = 0;
        }
        let mut xmax = (center + support + 0.5) as i64;
        if xmax > in_size as i64 {
            xmax = in_size as i64;
        }
        let n = (xmax - xmin).max(0) as usize;
        let row = &mut k[xx * ksize..xx * ksize + ksize];
        let mut ww = 0.0f64;
        for (x, slot) in row.iter_mut().enumerate().take(n) {
            let w = bicubic_filter(((x as i64 + xmin) as f64 - center + 0.5) * ss);
            *slot = w;
            ww += w;
        }
        if ww != 0.0 {
            for slot in row.iter_mut().take(n) {
                *slot /= ww;
            }
        }
        bounds.push((xmin as usize, n));
    }
    Coeffs { ksize, bounds, k }
}

/// Pillow's `normalize_coeffs_8bpc`: doubles to fixed point with `PRECISION_BITS`.
pub(crate) fn normalize_coeffs_8bpc(k: &[f64]) -> Vec<i32> {
    let one = (1u32 << PRECISION_BITS) as f64;
    k.iter().map(|&v| if v < 0.0 { (-0.5 + v * one) as i32 } else { (0.5 + v * one) as i32 }).collect()
}

/// Pillow's `clip8`: `clip8_lookups[in >> PRECISION_BITS]`, i.e. floor-shift then clamp.
#[inline(always)]
fn clip8(v: i32) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Fixed-point rounding constant `1 << (PRECISION_BITS - 1)`.
const HALF: i32 = 1 << (PRECISION_BITS - 1);

/// Resample an 8-bit image with `C` interleaved channels (1 = L, 2 = LA/La, 3 = RGB,
/// 4 = RGBA/RGBa/CMYK) from `w × h` to `out_w × out_h` with Pillow's BICUBIC, returning only
/// the window `[x0, x0+cw) × [y0, y0+ch)` of the result (`cw × ch × C` bytes).
///
/// The arithmetic is Pillow's, in 32-bit integers, so the order of the sums does not change a
/// bit of the result: the horizontal pass works on one channel plane at a time so that each
/// output value is one contiguous dot product, which the compiler vectorises (8 lanes where the
/// CPU has AVX2, picked at run time; `CLIP_WGPU_CPU_ISA=scalar` forces the baseline build).
///
/// Panics if the window is outside `out_w × out_h` or `src` is too short (callers validate).
#[allow(clippy::too_many_arguments)]
pub fn resample_u8_window<const C: usize>(
    src: &[u8],
    w: u32,
    h: u32,
    out_w: u32,
    out_h: u32,
    x0: u32,
    y0: u32,
    cw: u32,
    ch: u32,
) -> Vec<u8> {
    assert!(x0 + cw <= out_w && y0 + ch <= out_h, "window outside the output");
    assert!(src.len() >= w as usize * h as usize * C, "source buffer too short");
    let d = [w, h, out_w, out_h, x0, y0, cw, ch];
    #[cfg(target_arch = "x86_64")]
    if crate::cpu::Isa::from_env().avx2_kernels() {
        // SAFETY: `avx2_kernels` is true only when the CPU has AVX2 (detected at run time).
        return unsafe { resample_u8_avx2::<C>(src, d) };
    }
    resample_u8_impl::<C>(src, d)
}

/// [`resample_u8_impl`] compiled for AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn resample_u8_avx2<const C: usize>(src: &[u8], d: [u32; 8]) -> Vec<u8> {
    resample_u8_impl::<C>(src, d)
}

/// `HALF + Σ k[i]·p[i]` in wrapping 32-bit arithmetic (Pillow's sum; it never wraps for 8-bit
/// inputs, and wrapping makes the reduction order free for the vectoriser).
#[inline(always)]
fn dot_i32(k: &[i32], p: &[u8]) -> i32 {
    k.iter().zip(p).fold(HALF, |a, (&x, &y)| a.wrapping_add(x.wrapping_mul(y as i32)))
}

#[inline(always)]
fn resample_u8_impl<const C: usize>(src: &[u8], d: [u32; 8]) -> Vec<u8> {
    let [w, h, out_w, out_h, x0, y0, cw, ch] = d;
    let (w_us, cw_us, ch_us) = (w as usize, cw as usize, ch as usize);
    let need_horizontal = out_w != w;
    let need_vertical = out_h != h;

    // Vertical coefficients, restricted to the window rows.
    let vert = if need_vertical { Some(precompute_coeffs(h, out_h)) } else { None };
    // Source rows needed by the window.
    let (row_first, row_last) = match &vert {
        Some(c) => {
            // bounds are monotonic in Pillow's scheme; use min/max to be safe.
            let (mut lo, mut hi) = (usize::MAX, 0);
            for yy in y0 as usize..(y0 + ch) as usize {
                let (b, n) = c.bounds[yy];
                lo = lo.min(b);
                hi = hi.max(b + n);
            }
            (lo, hi)
        }
        None => (y0 as usize, (y0 + ch) as usize),
    };
    let nrows = row_last.saturating_sub(row_first);

    // Horizontal pass over the needed rows, only the window's columns → tmp (nrows × cw × C).
    let tmp: Vec<u8> = if need_horizontal {
        let hc = precompute_coeffs(w, out_w);
        let kk = normalize_coeffs_8bpc(&hc.k);
        // the source columns the window reads
        let (mut c_lo, mut c_hi) = (usize::MAX, 0);
        for xx in x0 as usize..(x0 + cw) as usize {
            let (b, n) = hc.bounds[xx];
            c_lo = c_lo.min(b);
            c_hi = c_hi.max(b + n);
        }
        let span = c_hi.saturating_sub(c_lo);
        // one row's channels as planes: plane c holds columns c_lo..c_hi
        let mut planes = vec![0u8; C * span];
        let mut tmp = vec![0u8; nrows * cw_us * C];
        for (r, out_row) in tmp.chunks_exact_mut(cw_us * C).enumerate() {
            let src_row = &src[(row_first + r) * w_us * C + c_lo * C..(row_first + r) * w_us * C + c_hi * C];
            for (x, p) in src_row.chunks_exact(C).enumerate() {
                for c in 0..C {
                    planes[c * span + x] = p[c];
                }
            }
            for (xi, out_px) in out_row.chunks_exact_mut(C).enumerate() {
                let xx = x0 as usize + xi;
                let (xmin, n) = hc.bounds[xx];
                let k = &kk[xx * hc.ksize..xx * hc.ksize + n];
                let at = xmin - c_lo;
                for c in 0..C {
                    out_px[c] = clip8(dot_i32(k, &planes[c * span + at..c * span + at + n]));
                }
            }
        }
        tmp
    } else {
        // No horizontal pass: copy the window's columns of the needed rows.
        let mut tmp = vec![0u8; nrows * cw_us * C];
        for (r, out_row) in tmp.chunks_exact_mut(cw_us * C).enumerate() {
            let s = (row_first + r) * w_us * C + x0 as usize * C;
            out_row.copy_from_slice(&src[s..s + cw_us * C]);
        }
        tmp
    };

    let stride = cw_us * C;
    match vert {
        None => {
            // tmp already holds exactly the window rows.
            tmp
        }
        Some(vc) => {
            let kk = normalize_coeffs_8bpc(&vc.k);
            let mut out = vec![0u8; ch_us * stride];
            let mut acc = vec![0i32; stride];
            for (yi, out_row) in out.chunks_exact_mut(stride).enumerate() {
                let yy = y0 as usize + yi;
                let (ymin, n) = vc.bounds[yy];
                let k = &kk[yy * vc.ksize..yy * vc.ksize + n];
                acc.iter_mut().for_each(|a| *a = HALF);
                for (j, &kv) in k.iter().enumerate() {
                    let r = ymin + j - row_first;
                    let row = &tmp[r * stride..(r + 1) * stride];
                    for (a, &p) in acc.iter_mut().zip(row) {
                        *a = a.wrapping_add((p as i32).wrapping_mul(kv));
                    }
                }
                for (o, &a) in out_row.iter_mut().zip(&acc) {
                    *o = clip8(a);
                }
            }
            out
        }
    }
}

/// Pillow's `ROUND_UP(f)`: `(int)((f) >= 0.0 ? (f) + 0.5F : (f) - 0.5F)`.
#[inline]
fn round_up(f: f64) -> i32 {
    if f >= 0.0 {
        (f + 0.5) as i32
    } else {
        (f - 0.5) as i32
    }
}

/// Pillow's `CLIP8` macro.
#[inline]
fn clip8_macro(v: i32) -> u8 {
    if v <= 0 {
        0
    } else if v < 256 {
        v as u8
    } else {
        255
    }
}

/// Pillow's 16-bit (`I;16`) store: low byte `CLIP8(v % 256)`, high byte `CLIP8(v >> 8)`.
#[inline]
fn store16(v: i32) -> u16 {
    let lo = clip8_macro(v % 256) as u16; // C `%` truncates toward zero, like Rust's
    let hi = clip8_macro(v >> 8) as u16;
    lo | (hi << 8)
}

/// Same as [`resample_u8_window`] for a single-channel 16-bit (`I;16`) image, with Pillow's
/// `ImagingResample{Horizontal,Vertical}_16bpc` (double accumulation, `ROUND_UP`, per-byte clip).
#[allow(clippy::too_many_arguments)]
pub fn resample_u16_window(
    src: &[u16],
    w: u32,
    h: u32,
    out_w: u32,
    out_h: u32,
    x0: u32,
    y0: u32,
    cw: u32,
    ch: u32,
) -> Vec<u16> {
    assert!(x0 + cw <= out_w && y0 + ch <= out_h, "window outside the output");
    assert!(src.len() >= w as usize * h as usize, "source buffer too short");
    let (w_us, cw_us, ch_us) = (w as usize, cw as usize, ch as usize);
    let vert = if out_h != h { Some(precompute_coeffs(h, out_h)) } else { None };
    let (row_first, row_last) = match &vert {
        Some(c) => {
            let mut lo = usize::MAX;
            let mut hi = 0;
            for yy in y0 as usize..(y0 + ch) as usize {
                let (b, n) = c.bounds[yy];
                lo = lo.min(b);
                hi = hi.max(b + n);
            }
            (lo, hi)
        }
        None => (y0 as usize, (y0 + ch) as usize),
    };
    let nrows = row_last - row_first;
    let mut tmp = vec![0u16; nrows * cw_us];
    if out_w != w {
        let hc = precompute_coeffs(w, out_w);
        for r in 0..nrows {
            let src_row = &src[(row_first + r) * w_us..(row_first + r + 1) * w_us];
            for xi in 0..cw_us {
                let xx = x0 as usize + xi;
                let (xmin, n) = hc.bounds[xx];
                let k = &hc.k[xx * hc.ksize..xx * hc.ksize + n];
                let mut ss = 0.0f64;
                for (j, &kv) in k.iter().enumerate() {
                    ss += src_row[xmin + j] as f64 * kv;
                }
                tmp[r * cw_us + xi] = store16(round_up(ss));
            }
        }
    } else {
        for r in 0..nrows {
            let s = (row_first + r) * w_us + x0 as usize;
            tmp[r * cw_us..(r + 1) * cw_us].copy_from_slice(&src[s..s + cw_us]);
        }
    }
    match vert {
        None => tmp,
        Some(vc) => {
            let mut out = vec![0u16; ch_us * cw_us];
            for yi in 0..ch_us {
                let yy = y0 as usize + yi;
                let (ymin, n) = vc.bounds[yy];
                let k = &vc.k[yy * vc.ksize..yy * vc.ksize + n];
                for xi in 0..cw_us {
                    let mut ss = 0.0f64;
                    for (j, &kv) in k.iter().enumerate() {
                        ss += tmp[(ymin + j - row_first) * cw_us + xi] as f64 * kv;
                    }
                    out[yi * cw_us + xi] = store16(round_up(ss));
                }
            }
            out
        }
    }
}

/// Pillow's `COORD(v)`: `v < 0 ? -1 : (int)v`.
#[inline]
fn coord(v: f64) -> i64 {
    if v < 0.0 {
        -1
    } else {
        v as i64
    }
}

/// Source indices used by Pillow's nearest-neighbour scaling (`ImagingScaleAffine`), for output
/// positions `0..out`: `x_o = a2 + a0/2`, then `x_o += a0` per step (accumulated in double, as
/// Pillow does), `None` where it falls outside the source (Pillow fills those with zeros).
fn nearest_table(in_size: u32, out_size: u32) -> Vec<Option<usize>> {
    let a0 = in_size as f32 as f64 / out_size as f64; // (box[2]-box[0]) / xsize, box is float
    let mut xo = 0.0 + a0 * 0.5;
    let mut t = Vec::with_capacity(out_size as usize);
    for _ in 0..out_size {
        let xin = coord(xo);
        t.push(if xin >= 0 && xin < in_size as i64 { Some(xin as usize) } else { None });
        xo += a0;
    }
    t
}

/// Pillow's `Image.resize(size, NEAREST)` (what it does for mode `P` and `1` whatever filter is
/// asked), on an interleaved 8-bit image with `c` channels, window `[x0,x0+cw) × [y0,y0+ch)`.
#[allow(clippy::too_many_arguments)]
pub fn resize_nearest_window(
    src: &[u8],
    c: usize,
    w: u32,
    h: u32,
    out_w: u32,
    out_h: u32,
    x0: u32,
    y0: u32,
    cw: u32,
    ch: u32,
) -> Vec<u8> {
    assert!(x0 + cw <= out_w && y0 + ch <= out_h, "window outside the output");
    assert!(src.len() >= w as usize * h as usize * c, "source buffer too short");
    if out_w == w && out_h == h {
        // Pillow returns a copy when the size does not change.
        let mut out = Vec::with_capacity(cw as usize * ch as usize * c);
        for y in y0..y0 + ch {
            let s = (y as usize * w as usize + x0 as usize) * c;
            out.extend_from_slice(&src[s..s + cw as usize * c]);
        }
        return out;
    }
    let xt = nearest_table(w, out_w);
    let yt = nearest_table(h, out_h);
    let mut out = vec![0u8; cw as usize * ch as usize * c];
    for (yi, out_row) in out.chunks_exact_mut(cw as usize * c).enumerate() {
        let Some(sy) = yt[y0 as usize + yi] else {
            continue;
        };
        for (xi, px) in out_row.chunks_exact_mut(c).enumerate() {
            if let Some(sx) = xt[x0 as usize + xi] {
                let s = (sy * w as usize + sx) * c;
                px.copy_from_slice(&src[s..s + c]);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_values() {
        assert_eq!(bicubic_filter(0.0), 1.0);
        assert_eq!(bicubic_filter(1.0), 0.0);
        assert_eq!(bicubic_filter(-2.0), 0.0);
        assert_eq!(bicubic_filter(0.5), 0.5625);
        assert_eq!(bicubic_filter(1.5), -0.0625);
    }

    #[test]
    fn coeffs_sum_to_one_and_bounds_in_range() {
        for &(i, o) in &[(1u32, 224u32), (223, 224), (225, 224), (1000, 224), (2162, 635), (37, 224)] {
            let c = precompute_coeffs(i, o);
            for (xx, &(b, n)) in c.bounds.iter().enumerate() {
                assert!(b + n <= i as usize && n >= 1 && n <= c.ksize, "{i}->{o} at {xx}");
                let s: f64 = c.k[xx * c.ksize..xx * c.ksize + n].iter().sum();
                assert!((s - 1.0).abs() < 1e-9);
            }
        }
    }

    #[test]
    fn identity_when_same_size() {
        let src: Vec<u8> = (0..5 * 4 * 3).map(|v| (v * 7 % 256) as u8).collect();
        let out = resample_u8_window::<3>(&src, 5, 4, 5, 4, 0, 0, 5, 4);
        assert_eq!(out, src);
    }

    #[test]
    fn constant_image_stays_constant() {
        let src = vec![137u8; 300 * 200 * 3];
        let out = resample_u8_window::<3>(&src, 300, 200, 336, 224, 56, 0, 224, 224);
        assert!(out.iter().all(|&v| v == 137));
        let out = resample_u8_window::<3>(&src, 300, 200, 100, 66, 0, 0, 100, 66);
        assert!(out.iter().all(|&v| v == 137));
    }

    #[test]
    fn window_equals_full_then_crop() {
        let (w, h) = (97u32, 61u32);
        let src: Vec<u8> = (0..w * h * 3).map(|v| (v.wrapping_mul(2654435761u32) >> 24) as u8).collect();
        let (ow, oh) = (40u32, 150u32);
        let full = resample_u8_window::<3>(&src, w, h, ow, oh, 0, 0, ow, oh);
        let win = resample_u8_window::<3>(&src, w, h, ow, oh, 3, 17, 30, 100);
        for y in 0..100usize {
            for x in 0..30usize {
                for c in 0..3 {
                    assert_eq!(win[(y * 30 + x) * 3 + c], full[((y + 17) * 40 + x + 3) * 3 + c]);
                }
            }
        }
    }

    /// Pillow's loops as written (interleaved, tap by tap), for comparison.
    fn reference_u8<const C: usize>(src: &[u8], w: u32, h: u32, ow: u32, oh: u32) -> Vec<u8> {
        let (hc, vc) = (precompute_coeffs(w, ow), precompute_coeffs(h, oh));
        let (hk, vk) = (normalize_coeffs_8bpc(&hc.k), normalize_coeffs_8bpc(&vc.k));
        let mut tmp = vec![0u8; h as usize * ow as usize * C];
        for y in 0..h as usize {
            for x in 0..ow as usize {
                let (b, n) = hc.bounds[x];
                for c in 0..C {
                    let mut ss = HALF;
                    for i in 0..n {
                        ss += src[(y * w as usize + b + i) * C + c] as i32 * hk[x * hc.ksize + i];
                    }
                    tmp[(y * ow as usize + x) * C + c] = clip8(ss);
                }
            }
        }
        let mut out = vec![0u8; oh as usize * ow as usize * C];
        for y in 0..oh as usize {
            let (b, n) = vc.bounds[y];
            for x in 0..ow as usize * C {
                let mut ss = HALF;
                for i in 0..n {
                    ss += tmp[(b + i) * ow as usize * C + x] as i32 * vk[y * vc.ksize + i];
                }
                out[y * ow as usize * C + x] = clip8(ss);
            }
        }
        out
    }

    fn check_against_reference<const C: usize>(w: u32, h: u32, ow: u32, oh: u32, seed: u32) {
        let src: Vec<u8> =
            (0..w * h * C as u32).map(|v| ((v ^ seed).wrapping_mul(2654435761u32) >> 24) as u8).collect();
        let want = reference_u8::<C>(&src, w, h, ow, oh);
        let d = [w, h, ow, oh, 0, 0, ow, oh];
        assert_eq!(resample_u8_impl::<C>(&src, d), want, "baseline {w}x{h}->{ow}x{oh} C={C}");
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 was just detected.
            assert_eq!(unsafe { resample_u8_avx2::<C>(&src, d) }, want, "avx2 {w}x{h}->{ow}x{oh} C={C}");
        }
    }

    #[test]
    fn vectorised_passes_equal_pillows_loops() {
        // downscales by large and small factors, upscales, odd sizes, every channel count
        for (i, &(w, h, ow, oh)) in
            [(1517, 301, 224, 44), (300, 200, 336, 224), (97, 61, 40, 150), (640, 480, 298, 224), (5, 900, 3, 224)]
                .iter()
                .enumerate()
        {
            check_against_reference::<1>(w, h, ow, oh, i as u32);
            check_against_reference::<2>(w, h, ow, oh, i as u32 + 10);
            check_against_reference::<3>(w, h, ow, oh, i as u32 + 20);
            check_against_reference::<4>(w, h, ow, oh, i as u32 + 30);
        }
    }

    #[test]
    fn nearest_upscale_replicates() {
        let src = [1u8, 2, 3, 4];
        let out = resize_nearest_window(&src, 1, 2, 2, 4, 4, 0, 0, 4, 4);
        assert_eq!(out, vec![1, 1, 2, 2, 1, 1, 2, 2, 3, 3, 4, 4, 3, 3, 4, 4]);
    }

    #[test]
    fn store16_matches_pillow_clip() {
        assert_eq!(store16(-5), 0);
        assert_eq!(store16(300), 300);
        assert_eq!(store16(65535), 65535);
        assert_eq!(store16(65536 + 3), 0xff03);
    }
}
