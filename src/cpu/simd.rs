//! Vector math of the CPU kernels: `exp`, QuickGELU, GELU, and the row operations
//! (layernorm, softmax, scaling), each as an AVX2+FMA version and a plain-Rust one.
//! The AVX2 `exp` is Cephes' `expf` (range reduction by ln 2 split in two, degree-5
//! polynomial), within 2 ulp of `f32::exp` over the range the model sees; GELU's `erf` is
//! Abramowitz–Stegun 7.1.26 (|ε| ≤ 1.5e-7), taken on the tail so negative inputs don't cancel.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use crate::model::Activation;

/// Cephes `expf`: the input's clamp, ln 2 in two parts (one exact in f32), and the degree-5
/// polynomial's coefficients, highest first. One copy for the 8- and 16-lane versions, so that
/// they stay the same function bit for bit.
#[cfg(target_arch = "x86_64")]
const EXP_MIN: f32 = -87.336_55;
#[cfg(target_arch = "x86_64")]
const EXP_MAX: f32 = 88.376_26;
#[cfg(target_arch = "x86_64")]
const LN2_HI: f32 = 0.693_359_4;
#[cfg(target_arch = "x86_64")]
const LN2_LO: f32 = -2.121_944_4e-4;
#[cfg(target_arch = "x86_64")]
const EXP_POLY: [f32; 6] = [1.987_569_1e-4, 1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 0.166_666_66, 0.5];
/// QuickGELU: `x·σ(1.702·x)`.
const QUICK_GELU_SLOPE: f32 = 1.702;
/// Abramowitz–Stegun 7.1.26: `erfc(z) ≈ t·(a1 + t·(a2 + … + t·a5))·e^(−z²)`, `t = 1/(1 + p·z)`;
/// `AS_A` is a5 … a1 (Horner order).
#[cfg(target_arch = "x86_64")]
const AS_P: f32 = 0.327_591_1;
#[cfg(target_arch = "x86_64")]
const AS_A: [f32; 5] = [1.061_405_4, -1.453_152_1, 1.421_413_7, -0.284_496_72, 0.254_829_6];

/// Scalar QuickGELU.
#[inline]
pub fn quick_gelu(x: f32) -> f32 {
    x / (1.0 + (-QUICK_GELU_SLOPE * x).exp())
}

/// Scalar exact GELU (libm's erf, in f64).
#[inline]
pub fn gelu(x: f32) -> f32 {
    (0.5 * x as f64 * (1.0 + libm::erf(x as f64 / std::f64::consts::SQRT_2))) as f32
}

#[inline]
pub fn act_scalar(x: f32, act: Option<Activation>) -> f32 {
    match act {
        None => x,
        Some(Activation::QuickGelu) => quick_gelu(x),
        Some(Activation::Gelu) => gelu(x),
    }
}

/// `exp` of 8 lanes.
///
/// # Safety
/// The CPU must have AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
pub unsafe fn exp256(x: __m256) -> __m256 {
    let x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(EXP_MIN)), _mm256_set1_ps(EXP_MAX));
    // n = round(x / ln 2); r = x - n·ln 2 (ln 2 split into a part exact in f32 and the rest)
    let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(
        x,
        _mm256_set1_ps(std::f32::consts::LOG2_E),
    ));
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), x);
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LO), r);
    let mut p = _mm256_set1_ps(EXP_POLY[0]);
    for c in &EXP_POLY[1..] {
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(*c));
    }
    let r2 = _mm256_mul_ps(r, r);
    let y = _mm256_add_ps(_mm256_fmadd_ps(p, r2, r), _mm256_set1_ps(1.0));
    // 2^n, built in the exponent field
    let e = _mm256_slli_epi32::<23>(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)));
    _mm256_mul_ps(y, _mm256_castsi256_ps(e))
}

/// QuickGELU of 8 lanes.
///
/// # Safety
/// The CPU must have AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
pub unsafe fn quick_gelu256(x: __m256) -> __m256 {
    let e = exp256(_mm256_mul_ps(x, _mm256_set1_ps(-QUICK_GELU_SLOPE)));
    _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0), e))
}

/// Exact GELU of 8 lanes (erf by Abramowitz–Stegun 7.1.26).
///
/// # Safety
/// The CPU must have AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
pub unsafe fn gelu256(x: __m256) -> __m256 {
    let z = _mm256_mul_ps(x, _mm256_set1_ps(std::f32::consts::FRAC_1_SQRT_2));
    let az = _mm256_andnot_ps(_mm256_set1_ps(-0.0), z);
    let t = _mm256_div_ps(_mm256_set1_ps(1.0), _mm256_fmadd_ps(az, _mm256_set1_ps(AS_P), _mm256_set1_ps(1.0)));
    let mut p = _mm256_set1_ps(AS_A[0]);
    for c in &AS_A[1..] {
        p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(*c));
    }
    let erfc = _mm256_mul_ps(_mm256_mul_ps(p, t), exp256(_mm256_sub_ps(_mm256_setzero_ps(), _mm256_mul_ps(az, az))));
    // x ≥ 0: 0.5x(2 − erfc(|z|)); x < 0: 0.5x·erfc(|z|)
    let pos = _mm256_sub_ps(_mm256_set1_ps(2.0), erfc);
    let neg = _mm256_cmp_ps::<_CMP_LT_OQ>(x, _mm256_setzero_ps());
    let f = _mm256_blendv_ps(pos, erfc, neg);
    _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5), x), f)
}

/// The activation of 8 lanes.
///
/// # Safety
/// The CPU must have AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
pub unsafe fn act256(x: __m256, act: Option<Activation>) -> __m256 {
    match act {
        None => x,
        Some(Activation::QuickGelu) => quick_gelu256(x),
        Some(Activation::Gelu) => gelu256(x),
    }
}

/// [`exp256`] on 16 lanes: the same operations in the same order, so each lane's result is
/// the same bits as the AVX2 version's.
///
/// # Safety
/// The CPU must have AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
pub unsafe fn exp512(x: __m512) -> __m512 {
    let x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(EXP_MIN)), _mm512_set1_ps(EXP_MAX));
    let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm512_mul_ps(
        x,
        _mm512_set1_ps(std::f32::consts::LOG2_E),
    ));
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HI), x);
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_LO), r);
    let mut p = _mm512_set1_ps(EXP_POLY[0]);
    for c in &EXP_POLY[1..] {
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(*c));
    }
    let r2 = _mm512_mul_ps(r, r);
    let y = _mm512_add_ps(_mm512_fmadd_ps(p, r2, r), _mm512_set1_ps(1.0));
    let e = _mm512_slli_epi32::<23>(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)));
    _mm512_mul_ps(y, _mm512_castsi512_ps(e))
}

/// [`quick_gelu256`] on 16 lanes (same bits per lane).
///
/// # Safety
/// The CPU must have AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
pub unsafe fn quick_gelu512(x: __m512) -> __m512 {
    let e = exp512(_mm512_mul_ps(x, _mm512_set1_ps(-QUICK_GELU_SLOPE)));
    _mm512_div_ps(x, _mm512_add_ps(_mm512_set1_ps(1.0), e))
}

/// [`gelu256`] on 16 lanes (same bits per lane).
///
/// # Safety
/// The CPU must have AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
pub unsafe fn gelu512(x: __m512) -> __m512 {
    let z = _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::FRAC_1_SQRT_2));
    let az = _mm512_abs_ps(z);
    let t = _mm512_div_ps(_mm512_set1_ps(1.0), _mm512_fmadd_ps(az, _mm512_set1_ps(AS_P), _mm512_set1_ps(1.0)));
    let mut p = _mm512_set1_ps(AS_A[0]);
    for c in &AS_A[1..] {
        p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(*c));
    }
    let erfc = _mm512_mul_ps(_mm512_mul_ps(p, t), exp512(_mm512_sub_ps(_mm512_setzero_ps(), _mm512_mul_ps(az, az))));
    let pos = _mm512_sub_ps(_mm512_set1_ps(2.0), erfc);
    let neg = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x, _mm512_setzero_ps());
    let f = _mm512_mask_blend_ps(neg, pos, erfc);
    _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.5), x), f)
}

/// The activation of 16 lanes.
///
/// # Safety
/// The CPU must have AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
pub unsafe fn act512(x: __m512, act: Option<Activation>) -> __m512 {
    match act {
        None => x,
        Some(Activation::QuickGelu) => quick_gelu512(x),
        Some(Activation::Gelu) => gelu512(x),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn hsum256(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn hmax256(v: __m256) -> f32 {
    let s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_max_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// Applies `act` to every element (in place).
pub fn act_slice(v: &mut [f32], act: Option<Activation>, avx2: bool) {
    if act.is_none() {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if avx2 {
        // SAFETY: `avx2` is only true where the caller checked AVX2+FMA (Isa::avx2_kernels).
        unsafe { act_slice_avx2(v, act) };
        return;
    }
    let _ = avx2;
    v.iter_mut().for_each(|x| *x = act_scalar(*x, act));
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn act_slice_avx2(v: &mut [f32], act: Option<Activation>) {
    let mut chunks = v.chunks_exact_mut(8);
    for c in &mut chunks {
        // SAFETY: `c` is exactly 8 f32s; unaligned loads/stores.
        let x = _mm256_loadu_ps(c.as_ptr());
        _mm256_storeu_ps(c.as_mut_ptr(), act256(x, act));
    }
    let rest = chunks.into_remainder();
    if !rest.is_empty() {
        let mut t = [0f32; 8];
        t[..rest.len()].copy_from_slice(rest);
        let x = _mm256_loadu_ps(t.as_ptr());
        _mm256_storeu_ps(t.as_mut_ptr(), act256(x, act));
        rest.copy_from_slice(&t[..rest.len()]);
    }
}

/// One row of layernorm: `o = (r − mean)/√(var + eps)·g + b` (two passes, f32 lanes).
pub fn layer_norm_row(r: &[f32], o: &mut [f32], g: &[f32], b: &[f32], eps: f32, avx2: bool) {
    let w = r.len();
    assert!(o.len() == w && g.len() == w && b.len() == w, "layer_norm_row: widths differ");
    #[cfg(target_arch = "x86_64")]
    if avx2 && w.is_multiple_of(8) {
        // SAFETY: AVX2+FMA checked by the caller (Isa::avx2_kernels); all four slices
        // have w values, w a multiple of 8.
        unsafe { layer_norm_row_avx2(r, o, g, b, eps) };
        return;
    }
    let _ = avx2;
    let mean = r.iter().map(|&v| v as f64).sum::<f64>() / w as f64;
    let var = r.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / w as f64;
    let inv = 1.0 / (var + eps as f64).sqrt();
    let (mean, inv) = (mean as f32, inv as f32);
    for i in 0..w {
        o[i] = (r[i] - mean) * inv * g[i] + b[i];
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn layer_norm_row_avx2(r: &[f32], o: &mut [f32], g: &[f32], b: &[f32], eps: f32) {
    let w = r.len();
    let p = r.as_ptr();
    let (mut s0, mut s1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let mut i = 0;
    while i + 16 <= w {
        s0 = _mm256_add_ps(s0, _mm256_loadu_ps(p.add(i)));
        s1 = _mm256_add_ps(s1, _mm256_loadu_ps(p.add(i + 8)));
        i += 16;
    }
    if i < w {
        s0 = _mm256_add_ps(s0, _mm256_loadu_ps(p.add(i)));
    }
    let mean = hsum256(_mm256_add_ps(s0, s1)) / w as f32;
    let m = _mm256_set1_ps(mean);
    let (mut v0, mut v1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let mut i = 0;
    while i + 16 <= w {
        let d0 = _mm256_sub_ps(_mm256_loadu_ps(p.add(i)), m);
        let d1 = _mm256_sub_ps(_mm256_loadu_ps(p.add(i + 8)), m);
        v0 = _mm256_fmadd_ps(d0, d0, v0);
        v1 = _mm256_fmadd_ps(d1, d1, v1);
        i += 16;
    }
    if i < w {
        let d0 = _mm256_sub_ps(_mm256_loadu_ps(p.add(i)), m);
        v0 = _mm256_fmadd_ps(d0, d0, v0);
    }
    let var = hsum256(_mm256_add_ps(v0, v1)) / w as f32;
    let inv = _mm256_set1_ps(1.0 / (var + eps).sqrt());
    let mut i = 0;
    while i < w {
        let x = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(p.add(i)), m), inv);
        let y = _mm256_fmadd_ps(x, _mm256_loadu_ps(g.as_ptr().add(i)), _mm256_loadu_ps(b.as_ptr().add(i)));
        _mm256_storeu_ps(o.as_mut_ptr().add(i), y);
        i += 8;
    }
}

/// Softmax of `row[..end]` after scaling by `scale` (in place); `row[end..]` becomes 0.
pub fn softmax_row(row: &mut [f32], end: usize, scale: f32, avx2: bool) {
    #[cfg(target_arch = "x86_64")]
    if avx2 {
        // SAFETY: AVX2+FMA checked by the caller (Isa::avx2_kernels).
        unsafe { softmax_row_avx2(row, end, scale) };
        return;
    }
    let _ = avx2;
    let max = row[..end].iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v * scale));
    let mut sum = 0f32;
    for v in &mut row[..end] {
        *v = (*v * scale - max).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    row[..end].iter_mut().for_each(|v| *v *= inv);
    row[end..].fill(0.0);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn softmax_row_avx2(row: &mut [f32], end: usize, scale: f32) {
    let (head, tail) = row.split_at_mut(end);
    let n8 = end / 8 * 8;
    let p = head.as_mut_ptr();
    let sc = _mm256_set1_ps(scale);
    let mut mx = _mm256_set1_ps(f32::NEG_INFINITY);
    let mut i = 0;
    while i < n8 {
        mx = _mm256_max_ps(mx, _mm256_mul_ps(_mm256_loadu_ps(p.add(i)), sc));
        i += 8;
    }
    let mut max = hmax256(mx);
    for &v in &head[n8..] {
        max = max.max(v * scale);
    }
    let m = _mm256_set1_ps(max);
    let mut s = _mm256_setzero_ps();
    let mut i = 0;
    while i < n8 {
        let e = exp256(_mm256_fmsub_ps(_mm256_loadu_ps(p.add(i)), sc, m));
        _mm256_storeu_ps(p.add(i), e);
        s = _mm256_add_ps(s, e);
        i += 8;
    }
    let mut sum = hsum256(s);
    for v in &mut head[n8..] {
        *v = (*v * scale - max).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    let iv = _mm256_set1_ps(inv);
    let mut i = 0;
    while i < n8 {
        _mm256_storeu_ps(p.add(i), _mm256_mul_ps(_mm256_loadu_ps(p.add(i)), iv));
        i += 8;
    }
    head[n8..].iter_mut().for_each(|v| *v *= inv);
    tail.fill(0.0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_arch = "x86_64")]
    fn avx2() -> bool {
        super::super::isa::Isa::Avx2.available()
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn vector_activations_match_scalar() {
        if !avx2() {
            return;
        }
        let xs: Vec<f32> = (0..4001).map(|i| (i as f32 - 2000.0) / 150.0).chain([-100.0, 100.0, 0.0, -0.0]).collect();
        for act in [Some(Activation::QuickGelu), Some(Activation::Gelu)] {
            let mut v = xs.clone();
            act_slice(&mut v, act, true);
            for (x, y) in xs.iter().zip(&v) {
                let want = act_scalar(*x, act) as f64;
                let err = (*y as f64 - want).abs();
                // A–S 7.1.26 is good to 1.5e-7 absolute in erf, so GELU's tail is too
                let tol = if act == Some(Activation::Gelu) { 4e-7 } else { 2e-7 };
                assert!(err <= tol * want.abs().max(1.0), "{act:?}({x}) = {y}, want {want}");
            }
        }
        for &x in &xs {
            let mut t = [x; 8];
            // SAFETY: AVX2+FMA checked above; t holds 8 values.
            unsafe { _mm256_storeu_ps(t.as_mut_ptr(), exp256(_mm256_loadu_ps(t.as_ptr()))) };
            let want = (x as f64).exp();
            if want < 1e38 && want > 1e-37 {
                assert!(((t[0] as f64 - want) / want).abs() < 3e-7, "exp({x}) = {}, want {want}", t[0]);
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn zmm_activations_are_the_ymm_ones_bit_for_bit() {
        if !(avx2() && std::is_x86_feature_detected!("avx512f")) {
            eprintln!("SKIPPED: AVX-512F (not on this machine)");
            return;
        }
        // 7994 + 6 = 500 whole vectors of 16
        let xs: Vec<f32> =
            (0..7994).map(|i| (i as f32 - 3997.0) / 97.0).chain([-1e4, 1e4, 0.0, -0.0, 88.5, -88.0]).collect();
        assert_eq!(xs.len() % 16, 0);
        for act in [None, Some(Activation::QuickGelu), Some(Activation::Gelu)] {
            for x in xs.chunks_exact(16) {
                let (mut y8, mut y16) = ([0f32; 16], [0f32; 16]);
                // SAFETY: AVX2+FMA and AVX-512F checked above; x, y8, y16 hold 16 values.
                unsafe {
                    for h in 0..2 {
                        let v = act256(_mm256_loadu_ps(x.as_ptr().add(8 * h)), act);
                        _mm256_storeu_ps(y8.as_mut_ptr().add(8 * h), v);
                    }
                    _mm512_storeu_ps(y16.as_mut_ptr(), act512(_mm512_loadu_ps(x.as_ptr()), act));
                }
                for j in 0..16 {
                    assert_eq!(y8[j].to_bits(), y16[j].to_bits(), "{act:?}({}): ymm {} zmm {}", x[j], y8[j], y16[j]);
                }
            }
        }
    }

    #[test]
    fn rows_match_reference() {
        for avx in [false, true] {
            #[cfg(target_arch = "x86_64")]
            if avx && !avx2() {
                continue;
            }
            for &w in &[8usize, 24, 768, 5] {
                let r: Vec<f32> = (0..w).map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0).collect();
                let g: Vec<f32> = (0..w).map(|i| 1.0 + i as f32 / w as f32).collect();
                let b: Vec<f32> = (0..w).map(|i| i as f32 * 0.01).collect();
                let mut o = vec![0f32; w];
                layer_norm_row(&r, &mut o, &g, &b, 1e-5, avx);
                let mean = r.iter().map(|&v| v as f64).sum::<f64>() / w as f64;
                let var = r.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / w as f64;
                for i in 0..w {
                    let want = (r[i] as f64 - mean) / (var + 1e-5).sqrt() * g[i] as f64 + b[i] as f64;
                    assert!((o[i] as f64 - want).abs() < 2e-6, "layernorm w={w} avx={avx}");
                }
                for end in [1, w / 2 + 1, w] {
                    let mut s = r.clone();
                    softmax_row(&mut s, end, 0.3, avx);
                    let max = r[..end].iter().map(|&v| v as f64 * 0.3).fold(f64::MIN, f64::max);
                    let tot: f64 = r[..end].iter().map(|&v| (v as f64 * 0.3 - max).exp()).sum();
                    for i in 0..w {
                        let want = if i < end { (r[i] as f64 * 0.3 - max).exp() / tot } else { 0.0 };
                        assert!((s[i] as f64 - want).abs() < 1e-6, "softmax w={w} end={end} avx={avx}");
                    }
                }
            }
        }
    }
}
