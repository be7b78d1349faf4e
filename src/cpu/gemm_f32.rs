//! Packed-panel products with constant weights: `y[m, n] (+)= act(x[m, k]·W + b)`, for the
//! linear layers (weights packed once, in [`Prepared`](super::Prepared)).
//!
//! - W is stored as column panels of [`NR`] = 16: panel `p` holds `W[0..k, 16p..16p+16]`,
//!   one 64-byte line (f32) or 32-byte line (bf16) per k, zero-padded past `n`; the bias is
//!   stored with it, padded to whole panels.
//! - x is read in place (row-major, row stride k): the microkernel broadcasts from [`MR`] = 6
//!   row pointers (rows past `m` repeat the last row, computed and never stored), so there is
//!   no packing of the activations.
//! - Microkernel 6×16: 12 `ymm` accumulators, per k two panel loads, six broadcasts, twelve
//!   FMAs (AVX2+FMA); a plain-Rust version of the same loop is the portable path.
//! - Blocking: k in near-equal chunks of ≤ [`KC`] (the 16-wide panel chunk, 16 KiB, stays in
//!   L1 while the 6-row tiles of a block of ≤ [`MC`] rows pass over it; the block's x rows stay
//!   in L2). Threads (rayon) take (row block, panel range) tiles: row blocks are made a
//!   multiple of the thread count, and small-m products are split over panels too.
//! - Epilogue fused in the last k chunk's store: `+ bias`, then QuickGELU / GELU, or the
//!   residual add (`accumulate`: y is read back on the first chunk).

use rayon::prelude::*;

use super::isa::Isa;
use super::simd;
use super::tiles::{for_each_tile, SendPtr};
use crate::model::Activation;

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

pub const MR: usize = 6;
pub const NR: usize = 16;
pub const KC: usize = 256;
pub const MC: usize = 96;

/// 16 f32 weights of one k row of a panel (one cache line).
#[derive(Clone, Copy, Default)]
#[repr(C, align(64))]
pub struct LineF32(pub [f32; NR]);

/// 16 bf16 weights (upper halves of f32) of one k row of a panel.
#[derive(Clone, Copy, Default)]
#[repr(C, align(32))]
pub struct LineBf16(pub [u16; NR]);

/// The panels, in one of the storage types.
pub enum Panels {
    F32(Vec<LineF32>),
    Bf16(Vec<LineBf16>),
}

/// A constant `k×n` right operand (a linear layer's weight, transposed) with its bias.
pub struct Packed {
    pub k: usize,
    pub n: usize,
    panels: Panels,
    /// `panels·16` values, zeros past `n` or where the layer has no bias.
    bias: Vec<f32>,
}

/// f32 → bf16 bits, rounding to nearest even (NaN kept a NaN).
pub fn bf16_bits(v: f32) -> u16 {
    half::bf16::from_f32(v).to_bits()
}

impl Packed {
    /// Packs a PyTorch-layout weight `w[n, k]` (`[out, in]`) and its bias.
    pub fn from_out_in(w: &[f32], bias: Option<&[f32]>, n: usize, k: usize, bf16: bool) -> Packed {
        Self::pack(|o, i| w[o * k + i], bias, n, k, bf16, w.len())
    }

    /// Packs a row-major `w[k, n]` (`[in, out]`) and its bias.
    pub fn from_in_out(w: &[f32], bias: Option<&[f32]>, k: usize, n: usize, bf16: bool) -> Packed {
        Self::pack(|o, i| w[i * n + o], bias, n, k, bf16, w.len())
    }

    fn pack(
        at: impl Fn(usize, usize) -> f32 + Sync,
        bias: Option<&[f32]>,
        n: usize,
        k: usize,
        bf16: bool,
        len: usize,
    ) -> Packed {
        assert!(len >= n * k, "pack: weight has {len} values, needs {}", n * k);
        let np = n.div_ceil(NR);
        let line = |p: usize, i: usize| {
            let mut v = [0f32; NR];
            for (c, x) in v.iter_mut().enumerate() {
                let o = p * NR + c;
                if o < n {
                    *x = at(o, i);
                }
            }
            v
        };
        let panels = if bf16 {
            let mut d = vec![LineBf16::default(); np * k];
            if k > 0 {
                d.par_chunks_mut(k).enumerate().for_each(|(p, pan)| {
                    for (i, l) in pan.iter_mut().enumerate() {
                        l.0 = line(p, i).map(bf16_bits);
                    }
                });
            }
            Panels::Bf16(d)
        } else {
            let mut d = vec![LineF32::default(); np * k];
            if k > 0 {
                d.par_chunks_mut(k).enumerate().for_each(|(p, pan)| {
                    for (i, l) in pan.iter_mut().enumerate() {
                        l.0 = line(p, i);
                    }
                });
            }
            Panels::F32(d)
        };
        let mut b = vec![0f32; np * NR];
        if let Some(bias) = bias {
            b[..n].copy_from_slice(&bias[..n]);
        }
        Packed { k, n, panels, bias: b }
    }

    pub fn is_bf16(&self) -> bool {
        matches!(self.panels, Panels::Bf16(_))
    }

    /// Bytes of weight storage.
    pub fn bytes(&self) -> usize {
        match &self.panels {
            Panels::F32(d) => d.len() * 64,
            Panels::Bf16(d) => d.len() * 32,
        }
    }
}

/// `y[m, n] = act(x[m, k]·W + b)`, or `y += x·W + b` when `accumulate`. `isa` picks the
/// microkernel (AVX2+FMA where `Isa::avx2_kernels`, else plain Rust).
pub fn matmul(isa: Isa, y: &mut [f32], x: &[f32], m: usize, w: &Packed, act: Option<Activation>, accumulate: bool) {
    let (k, n) = (w.k, w.n);
    assert!(x.len() >= m * k, "matmul: x has {} values, needs {}", x.len(), m * k);
    assert!(y.len() >= m * n, "matmul: y has {} values, needs {}", y.len(), m * n);
    if m == 0 || n == 0 {
        return;
    }
    if accumulate && act.is_some() {
        // not a model op; kept correct: out += act(x·W + b)
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
    let avx = if isa.avx512_kernels() && !w.is_bf16() {
        Kern::Avx512
    } else if isa.avx2_kernels() {
        Kern::Avx2
    } else {
        Kern::Portable
    };
    let np = n.div_ceil(NR);
    let yp = SendPtr(y.as_mut_ptr());
    for_each_tile(m, np, m * n * k, MR, MC, |r0, r1, p0, p1| {
        // SAFETY: tasks own disjoint tiles (rows r0..r1 × columns 16·p0..16·p1) of y, which
        // holds m·n values (asserted); x holds m·k (asserted); the panels hold np·k lines.
        unsafe { block(avx, yp.get(), x.as_ptr(), k, n, w, r0, r1, p0, p1, act, accumulate) };
    });
}

/// One task: rows `r0..r1`, panels `p0..p1`, all of k.
///
/// # Safety
/// `y` must address `m×n` values (row stride n) with rows `r0..r1` < m and columns of panels
/// `p0..p1` not written concurrently by anyone else; `x` must address `r1×k` values.
#[allow(clippy::too_many_arguments)]
unsafe fn block(
    avx: Kern,
    y: *mut f32,
    x: *const f32,
    k: usize,
    n: usize,
    w: &Packed,
    r0: usize,
    r1: usize,
    p0: usize,
    p1: usize,
    act: Option<Activation>,
    accumulate: bool,
) {
    let kcs = k.div_ceil(k.div_ceil(KC));
    let mut pc = 0;
    while pc < k {
        let kc = kcs.min(k - pc);
        let (first, last) = (pc == 0, pc + kc == k);
        let ep = Epi { load_c: !first || accumulate, last, act };
        for p in p0..p1 {
            let nr = NR.min(n - p * NR);
            let bias = w.bias.as_ptr().add(p * NR);
            let (bp, bf16) = match &w.panels {
                Panels::F32(d) => (d.as_ptr().add(p * k + pc) as *const u8, false),
                Panels::Bf16(d) => (d.as_ptr().add(p * k + pc) as *const u8, true),
            };
            #[cfg(target_arch = "x86_64")]
            if avx == Kern::Avx512 {
                // pairs of panels (32 columns), 12 rows a tile; a last odd panel alone
                if (p - p0) % 2 == 1 {
                    continue;
                }
                let two = p + 1 < p1;
                let mut r = r0;
                while r < r1 {
                    let mr = MR512.min(r1 - r);
                    let a = x.add(r * k + pc);
                    let c = y.add(r * n + p * NR);
                    let ncols = (n - p * NR).min(if two { 2 * NR } else { NR });
                    if two {
                        kernel_avx512::<2>(kc, a, k, mr, bp, k * 64, c, n, ncols, bias, ep);
                    } else {
                        kernel_avx512::<1>(kc, a, k, mr, bp, k * 64, c, n, ncols, bias, ep);
                    }
                    r += MR512;
                }
                continue;
            }
            let mut r = r0;
            while r < r1 {
                let mr = MR.min(r1 - r);
                let a = x.add(r * k + pc);
                let c = y.add(r * n + p * NR);
                #[cfg(target_arch = "x86_64")]
                if avx == Kern::Avx2 {
                    if bf16 {
                        kernel_avx2::<true>(kc, a, k, mr, bp, c, n, nr, bias, ep);
                    } else {
                        kernel_avx2::<false>(kc, a, k, mr, bp, c, n, nr, bias, ep);
                    }
                    r += MR;
                    continue;
                }
                let _ = avx;
                if bf16 {
                    kernel_portable::<true>(kc, a, k, mr, bp, c, n, nr, bias, ep);
                } else {
                    kernel_portable::<false>(kc, a, k, mr, bp, c, n, nr, bias, ep);
                }
                r += MR;
            }
        }
        pc += kc;
    }
}

/// Which microkernel a product runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kern {
    Portable,
    Avx2,
    /// AVX-512F, f32 panels only
    Avx512,
}

/// Rows of the AVX-512 tile (12 rows × 32 columns: 24 `zmm` accumulators).
pub const MR512: usize = 12;

/// The `MR512 × 16·NP` tile at `c` gets `a[0..mr, 0..kc]·B + …` (see [`Epi`]); B is `NP`
/// f32 panels `pstride` bytes apart.
///
/// # Safety
/// AVX-512F+AVX2+FMA; `a` addresses `mr` rows of `kc` values (row stride lda), `b` `kc` lines
/// of each of the NP panels, `c` `mr` rows of `ncols` values (row stride ldc), `bias` 16·NP.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn kernel_avx512<const NP: usize>(
    kc: usize,
    a: *const f32,
    lda: usize,
    mr: usize,
    b: *const u8,
    pstride: usize,
    c: *mut f32,
    ldc: usize,
    ncols: usize,
    bias: *const f32,
    ep: Epi,
) {
    let ar: [*const f32; MR512] = std::array::from_fn(|r| a.add(lda * r.min(mr - 1)));
    let bp: [*const f32; NP] = std::array::from_fn(|j| b.add(j * pstride) as *const f32);
    let mut acc = [[_mm512_setzero_ps(); NP]; MR512];
    for kk in 0..kc {
        let bv: [__m512; NP] = std::array::from_fn(|j| _mm512_load_ps(bp[j].add(kk * NR)));
        for r in 0..MR512 {
            let av = _mm512_set1_ps(*ar[r].add(kk));
            for j in 0..NP {
                acc[r][j] = _mm512_fmadd_ps(av, bv[j], acc[r][j]);
            }
        }
    }
    for (r, row) in acc.iter().enumerate().take(mr) {
        for (j, &v) in row.iter().enumerate() {
            let c0 = j * NR;
            if c0 >= ncols {
                break;
            }
            let cols = (ncols - c0).min(NR);
            let mask: __mmask16 = if cols >= 16 { 0xffff } else { (1u16 << cols) - 1 };
            let p = c.add(r * ldc + c0);
            let mut v = v;
            if ep.load_c {
                v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mask, p));
            }
            if ep.last {
                v = _mm512_add_ps(v, _mm512_loadu_ps(bias.add(c0)));
                if ep.act.is_some() {
                    let lo = simd::act256(_mm512_castps512_ps256(v), ep.act);
                    let hi = simd::act256(_mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v))), ep.act);
                    v = _mm512_castpd_ps(_mm512_insertf64x4::<1>(
                        _mm512_castpd256_pd512(_mm256_castps_pd(lo)),
                        _mm256_castps_pd(hi),
                    ));
                }
            }
            _mm512_mask_storeu_ps(p, mask, v);
        }
    }
}

/// What the store of a tile does.
#[derive(Clone, Copy)]
pub(crate) struct Epi {
    /// add the tile's previous contents (a later k chunk, or the residual add)
    pub(crate) load_c: bool,
    /// the last k chunk: add the bias and apply `act`
    pub(crate) last: bool,
    pub(crate) act: Option<Activation>,
}

/// The 6×16 tile at `c` (row stride ldc) gets `a[0..mr, 0..kc]·B + …` (see [`Epi`]).
///
/// # Safety
/// AVX2+FMA; `a` addresses `mr` rows of `kc` values (row stride lda), `b` `kc` lines of the
/// panel type, `c` `mr` rows of `nr` values (row stride ldc), `bias` 16 values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn kernel_avx2<const BF16: bool>(
    kc: usize,
    a: *const f32,
    lda: usize,
    mr: usize,
    b: *const u8,
    c: *mut f32,
    ldc: usize,
    nr: usize,
    bias: *const f32,
    ep: Epi,
) {
    let ar: [*const f32; MR] = std::array::from_fn(|r| a.add(lda * r.min(mr - 1)));
    let mut acc = [_mm256_setzero_ps(); 2 * MR];
    for kk in 0..kc {
        let (b0, b1) = if BF16 {
            let p = b.add(kk * 32) as *const __m128i;
            let lo = _mm256_cvtepu16_epi32(_mm_load_si128(p));
            let hi = _mm256_cvtepu16_epi32(_mm_load_si128(p.add(1)));
            (_mm256_castsi256_ps(_mm256_slli_epi32::<16>(lo)), _mm256_castsi256_ps(_mm256_slli_epi32::<16>(hi)))
        } else {
            let p = b.add(kk * 64) as *const f32;
            (_mm256_load_ps(p), _mm256_load_ps(p.add(8)))
        };
        for r in 0..MR {
            let av = _mm256_broadcast_ss(&*ar[r].add(kk));
            acc[2 * r] = _mm256_fmadd_ps(av, b0, acc[2 * r]);
            acc[2 * r + 1] = _mm256_fmadd_ps(av, b1, acc[2 * r + 1]);
        }
    }
    store_tile_avx2(&acc, c, ldc, mr, nr, bias, ep);
}

/// Stores a tile of `mr×nr` (≤ 6×16) at `c`, through a full-tile buffer when partial.
///
/// # Safety
/// AVX2+FMA; `c` addresses `mr` rows of `nr` values (row stride ldc), `bias` 16 values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
pub(crate) unsafe fn store_tile_avx2(
    acc: &[__m256; 2 * MR],
    c: *mut f32,
    ldc: usize,
    mr: usize,
    nr: usize,
    bias: *const f32,
    ep: Epi,
) {
    if mr == MR && nr == NR {
        store_avx2(acc, c, ldc, bias, ep);
    } else {
        let mut t = [0f32; MR * NR];
        if ep.load_c {
            for r in 0..mr {
                std::ptr::copy_nonoverlapping(c.add(r * ldc), t.as_mut_ptr().add(r * NR), nr);
            }
        }
        store_avx2(acc, t.as_mut_ptr(), NR, bias, ep);
        for r in 0..mr {
            std::ptr::copy_nonoverlapping(t.as_ptr().add(r * NR), c.add(r * ldc), nr);
        }
    }
}

/// # Safety
/// AVX2+FMA; `c` addresses a full 6×16 tile (row stride ldc), `bias` 16 values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
pub(crate) unsafe fn store_avx2(acc: &[__m256; 2 * MR], c: *mut f32, ldc: usize, bias: *const f32, ep: Epi) {
    for r in 0..MR {
        for h in 0..2 {
            let p = c.add(r * ldc + 8 * h);
            let mut v = acc[2 * r + h];
            if ep.load_c {
                v = _mm256_add_ps(v, _mm256_loadu_ps(p));
            }
            if ep.last {
                v = simd::act256(_mm256_add_ps(v, _mm256_loadu_ps(bias.add(8 * h))), ep.act);
            }
            _mm256_storeu_ps(p, v);
        }
    }
}

/// The portable microkernel: the same tile in plain Rust (the compiler vectorises the
/// 16-wide rows for the build's baseline target).
///
/// # Safety
/// As [`kernel_avx2`], without the CPU requirement.
#[allow(clippy::too_many_arguments)]
unsafe fn kernel_portable<const BF16: bool>(
    kc: usize,
    a: *const f32,
    lda: usize,
    mr: usize,
    b: *const u8,
    c: *mut f32,
    ldc: usize,
    nr: usize,
    bias: *const f32,
    ep: Epi,
) {
    let mut acc = [[0f32; NR]; MR];
    for kk in 0..kc {
        let bl: [f32; NR] = if BF16 {
            let l = &*(b.add(kk * 32) as *const [u16; NR]);
            l.map(|h| f32::from_bits((h as u32) << 16))
        } else {
            *(b.add(kk * 64) as *const [f32; NR])
        };
        for (r, row) in acc.iter_mut().enumerate().take(mr) {
            let av = *a.add(r * lda + kk);
            for (o, bv) in row.iter_mut().zip(bl) {
                *o += av * bv;
            }
        }
    }
    for (r, row) in acc.iter().enumerate().take(mr) {
        for (j, &v) in row.iter().enumerate().take(nr) {
            let p = c.add(r * ldc + j);
            let mut v = v;
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

    fn naive(x: &[f32], w: &[f32], b: Option<&[f32]>, m: usize, k: usize, n: usize) -> Vec<f64> {
        let mut y = vec![0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut s = b.map_or(0.0, |b| b[j] as f64);
                for l in 0..k {
                    s += x[i * k + l] as f64 * w[j * k + l] as f64;
                }
                y[i * n + j] = s;
            }
        }
        y
    }

    fn isas() -> Vec<Isa> {
        let v: Vec<Isa> = [Isa::Scalar, Isa::Avx2, Isa::Avx512].into_iter().filter(|i| i.available()).collect();
        for i in Isa::ALL.iter().filter(|i| !v.contains(i) && !matches!(i, Isa::Amx | Isa::AvxVnni)) {
            eprintln!("SKIPPED: packed f32 kernels at level {i} (not on this machine)");
        }
        v
    }

    #[test]
    fn packed_matches_naive_f64_at_edge_shapes() {
        let shapes = [
            (1, 1, 1),
            (1, 7, 5),
            (6, 16, 16),
            (7, 1, 17),
            (13, 300, 33),
            (50, 96, 130),
            (77, 64, 65),
            (130, 513, 70),
            (200, 700, 300),
        ];
        for isa in isas() {
            for bf16 in [false, true] {
                for &(m, k, n) in &shapes {
                    let x: Vec<f32> = (0..m * k).map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0).collect();
                    let mut w: Vec<f32> = (0..n * k).map(|i| ((i * 53 % 89) as f32 - 44.0) / 44.0).collect();
                    if bf16 {
                        w.iter_mut().for_each(|v| *v = half::bf16::from_f32(*v).to_f32());
                    }
                    let bias: Vec<f32> = (0..n).map(|i| i as f32 * 0.1 - 1.0).collect();
                    let tol = 1e-5 * (k as f64).sqrt() * 4.0;
                    for (act, acc) in [
                        (None, false),
                        (None, true),
                        (Some(Activation::QuickGelu), false),
                        (Some(Activation::Gelu), false),
                    ] {
                        let r = naive(&x, &w, Some(&bias), m, k, n);
                        let p = Packed::from_out_in(&w, Some(&bias), n, k, bf16);
                        let init = if acc { 0.5f32 } else { 7.0 };
                        let mut y = vec![init; m * n];
                        matmul(isa, &mut y, &x, m, &p, act, acc);
                        let mut err = 0f64;
                        for (i, (&got, &want)) in y.iter().zip(&r).enumerate() {
                            let want = match (act, acc) {
                                (_, true) => want + 0.5,
                                (Some(Activation::QuickGelu), _) => simd::quick_gelu(want as f32) as f64,
                                (Some(Activation::Gelu), _) => simd::gelu(want as f32) as f64,
                                _ => want,
                            };
                            let e = (got as f64 - want).abs() / want.abs().max(1.0);
                            assert!(e.is_finite(), "{i}");
                            err = err.max(e);
                        }
                        assert!(err < tol, "{isa} bf16={bf16} {m}x{k}x{n} {act:?} acc={acc}: err {err}");
                    }
                }
            }
        }
    }

    #[test]
    fn in_out_layout_packs_the_same() {
        let (k, n) = (19, 37);
        let w: Vec<f32> = (0..n * k).map(|i| i as f32).collect();
        let wt: Vec<f32> = (0..k * n).map(|i| w[(i % n) * k + i / n]).collect();
        let (a, b) = (Packed::from_out_in(&w, None, n, k, false), Packed::from_in_out(&wt, None, k, n, false));
        let (Panels::F32(a), Panels::F32(b)) = (&a.panels, &b.panels) else { panic!() };
        assert!(a.iter().zip(b).all(|(x, y)| x.0 == y.0));
    }
}
