//! Int8 products: `y[m, n] (+)= act(x[m, k]·W + b)` with W quantised once per output channel
//! (symmetric, `w ≈ s_w[c]·q`, q ∈ [−127, 127], stored as i8) and x quantised per row at each
//! call (symmetric, `x ≈ s_x[r]·q`, q ∈ [−127, 127]); integer products accumulate in i32 and
//! the epilogue computes `s_x[r]·s_w[c]·acc + b[c]`, then the activation or the residual add
//! (the f32 epilogue of [`gemm_f32`](super::gemm_f32)).
//!
//! Arithmetic (AVX2): `vpmaddwd` on sign-extended pairs — each 32-bit lane gets
//! `a[2j]·w[2j] + a[2j+1]·w[2j+1]` exactly (|·| ≤ 2·127², no saturation anywhere), with the
//! weights widened on load (`vpmovsxbw` from the i8 panel) and the activations quantised
//! straight to i16 pairs (broadcast as one 32-bit value per row). `vpmaddubsw` was not used:
//! its i16 pair sums saturate for u8×s8 unless one side is cut to 7 bits, and without VNNI it
//! needs a `vpmaddwd` after it anyway (docs/rejected-optimizations.md).
//!
//! Layout: panels of 16 columns as in the f32 kernel; per pair of k, one 32-byte line
//! `[c0k0, c0k1, c1k0, c1k1, …, c15k1]`, k padded to even with zeros. Microkernel 6×16 (12
//! i32 accumulators), k blocked by [`KCP`] pairs, threads as in the f32 kernel.

use rayon::prelude::*;

use super::gemm_f32::{Epi, SendPtr, MC, MR, NR};
use super::isa::Isa;
use super::simd;
use crate::model::Activation;

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// k pairs per block.
pub const KCP: usize = 256;

/// One pair of k of a 16-column panel.
#[derive(Clone, Copy, Default)]
#[repr(C, align(32))]
pub struct LineI8(pub [i8; 2 * NR]);

/// A quantised constant `k×n` right operand with per-column scales and the bias.
pub struct PackedI8 {
    pub k: usize,
    pub n: usize,
    /// k pairs (k rounded up to even, halved)
    kp: usize,
    lines: Vec<LineI8>,
    scale: Vec<f32>,
    bias: Vec<f32>,
}

impl PackedI8 {
    /// Quantises and packs a PyTorch-layout weight `w[n, k]` (`[out, in]`) and its bias.
    pub fn from_out_in(w: &[f32], bias: Option<&[f32]>, n: usize, k: usize) -> PackedI8 {
        assert!(w.len() >= n * k, "pack: weight has {} values, needs {}", w.len(), n * k);
        let np = n.div_ceil(NR);
        let kp = k.div_ceil(2);
        let mut scale = vec![0f32; np * NR];
        scale[..n].par_iter_mut().enumerate().for_each(|(o, s)| {
            let mx = w[o * k..(o + 1) * k].iter().fold(0f32, |m, v| m.max(v.abs()));
            *s = if mx > 0.0 { mx / 127.0 } else { 1.0 };
        });
        let mut lines = vec![LineI8::default(); np * kp];
        if kp > 0 {
            lines.par_chunks_mut(kp).enumerate().for_each(|(p, pan)| {
                for (g, l) in pan.iter_mut().enumerate() {
                    for c in 0..NR {
                        let o = p * NR + c;
                        for h in 0..2 {
                            let i = 2 * g + h;
                            if o < n && i < k {
                                l.0[2 * c + h] = quantise(w[o * k + i], 1.0 / scale[o]) as i8;
                            }
                        }
                    }
                }
            });
        }
        let mut b = vec![0f32; np * NR];
        if let Some(bias) = bias {
            b[..n].copy_from_slice(&bias[..n]);
        }
        PackedI8 { k, n, kp, lines, scale, bias: b }
    }

    /// Bytes of weight storage (the i8 panels and the scales).
    pub fn bytes(&self) -> usize {
        self.lines.len() * 32 + self.scale.len() * 4
    }

    /// The dequantised weight `[n, k]` (`s_w·q`), for tests.
    pub fn dequantised(&self) -> Vec<f32> {
        let mut w = vec![0f32; self.n * self.k];
        for o in 0..self.n {
            let (p, c) = (o / NR, o % NR);
            for i in 0..self.k {
                w[o * self.k + i] = self.lines[p * self.kp + i / 2].0[2 * c + i % 2] as f32 * self.scale[o];
            }
        }
        w
    }
}

#[inline]
fn quantise(v: f32, inv_scale: f32) -> i16 {
    (v * inv_scale).round().clamp(-127.0, 127.0) as i16
}

/// Quantises each row of `x[m, k]` to i16 values in [−127, 127] (k padded to even with 0);
/// returns the values and the per-row scales.
pub fn quantise_rows(x: &[f32], m: usize, k: usize) -> (Vec<i16>, Vec<f32>) {
    let kp2 = k.div_ceil(2) * 2;
    let mut q = vec![0i16; m * kp2];
    let mut s = vec![0f32; m];
    if k == 0 {
        return (q, s);
    }
    q.par_chunks_mut(kp2).zip(s.par_iter_mut()).zip(x.par_chunks(k)).for_each(|((qr, sr), xr)| {
        let mx = xr.iter().fold(0f32, |m, v| m.max(v.abs()));
        *sr = if mx > 0.0 { mx / 127.0 } else { 1.0 };
        let inv = 1.0 / *sr;
        for (d, &v) in qr.iter_mut().zip(xr) {
            *d = quantise(v, inv);
        }
    });
    (q, s)
}

/// `y[m, n] = act(x·W + b)` or `y += x·W + b`, W int8 (see the module doc).
pub fn matmul(isa: Isa, y: &mut [f32], x: &[f32], m: usize, w: &PackedI8, act: Option<Activation>, accumulate: bool) {
    let (k, n) = (w.k, w.n);
    assert!(x.len() >= m * k, "matmul_i8: x has {} values, needs {}", x.len(), m * k);
    assert!(y.len() >= m * n, "matmul_i8: y has {} values, needs {}", y.len(), m * n);
    if m == 0 || n == 0 {
        return;
    }
    if accumulate && act.is_some() {
        let mut t = vec![0f32; m * n];
        matmul(isa, &mut t, x, m, w, act, false);
        y[..m * n].iter_mut().zip(&t).for_each(|(a, b)| *a += b);
        return;
    }
    if k == 0 {
        for r in y[..m * n].chunks_mut(n) {
            for (v, b) in r.iter_mut().zip(&w.bias) {
                *v = if accumulate { *v + b } else { simd::act_scalar(*b, act) };
            }
        }
        return;
    }
    let (q, sx) = quantise_rows(x, m, k);
    let avx = isa.avx2_kernels();
    let threads = rayon::current_num_threads();
    let np = n.div_ceil(NR);
    let par = threads > 1 && m * n * k >= 1 << 20;
    let mut mblocks = m.div_ceil(MC);
    if par {
        mblocks = mblocks.next_multiple_of(threads).min(m.div_ceil(MR));
    }
    let mc = m.div_ceil(mblocks).next_multiple_of(MR);
    let mblocks = m.div_ceil(mc);
    let nchunks = if par { (4 * threads).div_ceil(mblocks).clamp(1, np) } else { 1 };
    let ppc = np.div_ceil(nchunks);
    let nchunks = np.div_ceil(ppc);
    let yp = SendPtr(y.as_mut_ptr());
    let task = |t: usize| {
        let (mi, ni) = (t / nchunks, t % nchunks);
        let (r0, r1) = (mi * mc, ((mi + 1) * mc).min(m));
        let (p0, p1) = (ni * ppc, ((ni + 1) * ppc).min(np));
        // SAFETY: tasks own disjoint tiles (rows r0..r1 × panels p0..p1) of y (m·n values,
        // asserted); q holds m rows of 2·kp i16 and sx m scales; the panels np·kp lines.
        unsafe { block(avx, yp.get(), &q, &sx, n, w, r0, r1, p0, p1, act, accumulate) };
    };
    if par {
        (0..mblocks * nchunks).into_par_iter().for_each(task);
    } else {
        (0..mblocks * nchunks).for_each(task);
    }
}

/// # Safety
/// As `gemm_f32::block`: rows `r0..r1` and panels `p0..p1` of `y` (`m×n`) are this task's.
#[allow(clippy::too_many_arguments)]
unsafe fn block(
    avx: bool,
    y: *mut f32,
    q: &[i16],
    sx: &[f32],
    n: usize,
    w: &PackedI8,
    r0: usize,
    r1: usize,
    p0: usize,
    p1: usize,
    act: Option<Activation>,
    accumulate: bool,
) {
    let kp = w.kp;
    let lda = 2 * kp;
    let cs = kp.div_ceil(kp.div_ceil(KCP));
    let mut g0 = 0;
    while g0 < kp {
        let gc = cs.min(kp - g0);
        let ep = Epi { load_c: g0 > 0 || accumulate, last: g0 + gc == kp, act };
        for p in p0..p1 {
            let nr = NR.min(n - p * NR);
            let bias = w.bias.as_ptr().add(p * NR);
            let sw = w.scale.as_ptr().add(p * NR);
            let bp = w.lines.as_ptr().add(p * kp + g0);
            let mut r = r0;
            while r < r1 {
                let mr = MR.min(r1 - r);
                let a = q.as_ptr().add(r * lda + 2 * g0);
                let c = y.add(r * n + p * NR);
                let sa = sx.as_ptr().add(r);
                #[cfg(target_arch = "x86_64")]
                if avx {
                    kernel_avx2(gc, a, lda, mr, bp, c, n, nr, sa, sw, bias, ep);
                    r += MR;
                    continue;
                }
                let _ = avx;
                kernel_portable(gc, a, lda, mr, bp, c, n, nr, sa, sw, bias, ep);
                r += MR;
            }
        }
        g0 += gc;
    }
}

/// # Safety
/// AVX2+FMA; `a` addresses `mr` rows of `2·gc` i16 (row stride lda), `b` `gc` lines, `c` `mr`
/// rows of `nr` values (row stride ldc), `sa` `mr` scales, `sw` and `bias` 16 values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn kernel_avx2(
    gc: usize,
    a: *const i16,
    lda: usize,
    mr: usize,
    b: *const LineI8,
    c: *mut f32,
    ldc: usize,
    nr: usize,
    sa: *const f32,
    sw: *const f32,
    bias: *const f32,
    ep: Epi,
) {
    let ar: [*const i32; MR] = std::array::from_fn(|r| a.add(lda * r.min(mr - 1)) as *const i32);
    let mut acc = [_mm256_setzero_si256(); 2 * MR];
    for g in 0..gc {
        let p = b.add(g) as *const __m128i;
        let b0 = _mm256_cvtepi8_epi16(_mm_load_si128(p));
        let b1 = _mm256_cvtepi8_epi16(_mm_load_si128(p.add(1)));
        for r in 0..MR {
            let av = _mm256_set1_epi32(ar[r].add(g).read_unaligned());
            acc[2 * r] = _mm256_add_epi32(acc[2 * r], _mm256_madd_epi16(av, b0));
            acc[2 * r + 1] = _mm256_add_epi32(acc[2 * r + 1], _mm256_madd_epi16(av, b1));
        }
    }
    let (sw0, sw1) = (_mm256_loadu_ps(sw), _mm256_loadu_ps(sw.add(8)));
    let mut f = [_mm256_setzero_ps(); 2 * MR];
    for r in 0..MR {
        let s = _mm256_set1_ps(*sa.add(r.min(mr - 1)));
        f[2 * r] = _mm256_mul_ps(_mm256_cvtepi32_ps(acc[2 * r]), _mm256_mul_ps(s, sw0));
        f[2 * r + 1] = _mm256_mul_ps(_mm256_cvtepi32_ps(acc[2 * r + 1]), _mm256_mul_ps(s, sw1));
    }
    super::gemm_f32::store_tile_avx2(&f, c, ldc, mr, nr, bias, ep);
}

/// The portable microkernel.
///
/// # Safety
/// As [`kernel_avx2`], without the CPU requirement.
#[allow(clippy::too_many_arguments)]
unsafe fn kernel_portable(
    gc: usize,
    a: *const i16,
    lda: usize,
    mr: usize,
    b: *const LineI8,
    c: *mut f32,
    ldc: usize,
    nr: usize,
    sa: *const f32,
    sw: *const f32,
    bias: *const f32,
    ep: Epi,
) {
    let mut acc = [[0i32; NR]; MR];
    for g in 0..gc {
        let l = &(*b.add(g)).0;
        for (r, row) in acc.iter_mut().enumerate().take(mr) {
            let (a0, a1) = (*a.add(r * lda + 2 * g) as i32, *a.add(r * lda + 2 * g + 1) as i32);
            for (cc, o) in row.iter_mut().enumerate() {
                *o += a0 * l[2 * cc] as i32 + a1 * l[2 * cc + 1] as i32;
            }
        }
    }
    for (r, row) in acc.iter().enumerate().take(mr) {
        let s = *sa.add(r);
        for (j, &v) in row.iter().enumerate().take(nr) {
            let p = c.add(r * ldc + j);
            let mut v = v as f32 * (s * *sw.add(j));
            if ep.load_c {
                v += *p;
            }
            if ep.last {
                v = simd::act_scalar(v + *bias.add(j), ep.act);
            }
            *p = v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn isas() -> Vec<Isa> {
        [Isa::Scalar, Isa::Avx2].into_iter().filter(|i| i.available()).collect()
    }

    /// The exact result of the quantised operands, in f64: the kernels must match it to
    /// f32 rounding (the integer part is exact).
    fn reference(xq: &[i16], sx: &[f32], wd: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f64> {
        let kp2 = k.div_ceil(2) * 2;
        let mut y = vec![0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut s = 0f64;
                for l in 0..k {
                    s += xq[i * kp2 + l] as f64 * sx[i] as f64 * wd[j * k + l] as f64;
                }
                y[i * n + j] = s + b[j] as f64;
            }
        }
        y
    }

    #[test]
    fn int8_matches_dequantised_reference_at_edge_shapes() {
        for isa in isas() {
            for &(m, k, n) in
                &[(1, 1, 1), (1, 7, 5), (6, 16, 16), (7, 1, 17), (13, 301, 33), (77, 64, 65), (130, 1100, 70)]
            {
                let x: Vec<f32> = (0..m * k).map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0).collect();
                let w: Vec<f32> = (0..n * k).map(|i| ((i * 53 % 89) as f32 - 44.0) / 44.0).collect();
                let bias: Vec<f32> = (0..n).map(|i| i as f32 * 0.1 - 1.0).collect();
                let p = PackedI8::from_out_in(&w, Some(&bias), n, k);
                let (xq, sx) = quantise_rows(&x, m, k);
                let r = reference(&xq, &sx, &p.dequantised(), &bias, m, k, n);
                for (act, acc) in [(None, false), (None, true), (Some(Activation::QuickGelu), false)] {
                    let mut y = vec![0.5f32; m * n];
                    matmul(isa, &mut y, &x, m, &p, act, acc);
                    for (i, (&got, &want)) in y.iter().zip(&r).enumerate() {
                        let want = match (act, acc) {
                            (_, true) => want + 0.5,
                            (Some(Activation::QuickGelu), _) => simd::quick_gelu(want as f32) as f64,
                            _ => want,
                        };
                        let e = (got as f64 - want).abs() / want.abs().max(1.0);
                        assert!(e < 2e-5, "{isa} {m}x{k}x{n} {act:?} acc={acc} [{i}]: {got} vs {want}");
                    }
                }
                // and close to the f32 product (quantisation error only)
                let mut y = vec![0f32; m * n];
                matmul(isa, &mut y, &x, m, &p, None, false);
                for i in 0..m {
                    for j in 0..n {
                        let e: f64 =
                            (0..k).map(|l| x[i * k + l] as f64 * w[j * k + l] as f64).sum::<f64>() + bias[j] as f64;
                        assert!((y[i * n + j] as f64 - e).abs() < 0.02 * (k as f64).sqrt() + 1e-3, "{m}x{k}x{n}");
                    }
                }
            }
        }
    }
}
