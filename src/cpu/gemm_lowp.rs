//! Reduced-precision products: `y[m, n] (+)= act(x·W + b)` with W in bf16 or int8, the
//! activations converted at each call (bf16: rounded to nearest even; int8: symmetric per-row
//! scales, q ∈ [−127, 127]) and the products accumulated in f32 (bf16) or i32 (int8), exactly
//! as the instructions define them. One packing, one conversion, one task split
//! (`cpu::tiles`) and one epilogue for every engine; only the inner loops differ.
//!
//! | engine | bf16 | int8 |
//! |---|---|---|
//! | [`Engine::Amx`] (AMX-BF16/INT8 tiles) | `tdpbf16ps` | `tdpbssd` (s8×s8) |
//! | [`Engine::Avx512`] (AVX512_BF16, AVX512_VNNI) | `vdpbf16ps` | `vpdpbusd` `zmm` (u8×s8: activations + 128, corrected by 128·Σq_w per column) |
//! | [`Engine::AvxVnni`] (AVX-VNNI, VEX) | – | `vpdpbusd` `ymm` (u8×s8, as above) |
//! | [`Engine::Avx2`] (AVX2) | – | `vpmaddubsw` + `vpmaddwd` by ones (u8×s8 as above, **7-bit weights**) |
//! | [`Engine::Portable`] (plain Rust) | – | i32 sums of s8×s8 |
//!
//! `vpmaddubsw` adds two u8×s8 products into a *saturating* i16. With the activations as
//! u8 = q + 128 ∈ [1, 255] and the weights in [−63, 63] (per-channel scale max|w|/63: ONNX
//! Runtime's `reduce_range`), a pair is at most 2·255·63 = 32130 < 32767, so nothing
//! saturates and the integer sums are exact; the cost is one bit of weight resolution (min
//! cosine to f32 in `tests/cpu_precision.rs`). 7-bit activations instead would cost more:
//! their per-row scale is set by outlier channels, the weights' per-channel scale is not.
//! bf16 on AVX2 and portable machines stays in [`gemm_f32`](super::gemm_f32)'s bf16 panels.
//!
//! Layout, shared by every engine: W as column panels of 16 (a panel count rounded up to
//! even, so the kernels always take panel pairs, 32 columns), one 64-byte line per k pair
//! (bf16: `[c0k0 c0k1 c1k0 c1k1 … c15k1]`) or per k quad (int8: `[c0k0..c0k3 c1k0 …]`): the
//! AMX B-tile layout, one `zmm` of the AVX-512 kernels, two `ymm` of the AVX2 ones. k is
//! padded with zeros to a whole tile step (32 bf16, 64 int8). The activations are converted
//! into a row-major buffer of the padded k, rows padded to a multiple of 32 with zeros: AMX A
//! tiles are read from it in place (16 rows × 64 bytes), the vector kernels broadcast 4 bytes
//! of a row at a time.
//!
//! AMX: each task configures the tiles (palette 1, eight 16×64-byte tiles: four 16×16 f32
//! accumulators for a 32×32 block of y, two A and two B tiles), runs full-k 32×32 blocks
//! (4 tile products per k step), stores each block through a 4 KiB buffer into the fused
//! epilogue, and releases the tiles. Linux hands out AMX tile state only after the process
//! asks for it (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`), done once by
//! [`amx_available`]. Stable Rust has no AMX intrinsics: the tile instructions are inline
//! assembly (LLVM's assembler knows their mnemonics).

use rayon::prelude::*;

use super::simd;
use super::tiles::{for_each_tile, SendPtr};
use crate::model::Activation;

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Columns per panel.
pub const NR: usize = 16;
/// Rows per AMX block (two 16-row A tiles).
const AMX_MR: usize = 32;
/// Rows per AVX-512 microkernel (12 rows × 2 panels = 24 `zmm` accumulators).
const ZMM_MR: usize = 12;
/// Rows per AVX-VNNI microkernel (6 rows × 16 columns = 12 `ymm` accumulators, 2 weights,
/// 1 broadcast).
const VNNI_MR: usize = 6;
/// Rows per AVX2 `vpmaddubsw` microkernel (4 × 16 = 8 accumulators: the products need a
/// temporary and the ones besides).
const AVX2_MR: usize = 4;
/// Rows per portable microkernel.
const PORTABLE_MR: usize = 4;
/// Rows per task block (before the split over threads).
const MC: usize = 192;
/// The largest row count of the microkernels (the epilogue buffer's).
const MAX_MR: usize = AMX_MR;

/// One 64-byte line of a panel.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub struct Line64(pub [u8; 64]);

impl Default for Line64 {
    fn default() -> Self {
        Line64([0; 64])
    }
}

/// The reduced storage type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Bf16,
    Int8,
}

impl Kind {
    /// k values per 64-byte line's column (4 bytes).
    fn per_group(self) -> usize {
        match self {
            Kind::Bf16 => 2,
            Kind::Int8 => 4,
        }
    }
    /// k values per tile step (64 bytes of a row).
    fn kstep(self) -> usize {
        16 * self.per_group()
    }
}

/// Which instructions compute the products.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// AMX tiles (`tdpbf16ps`, `tdpbssd`).
    Amx,
    /// AVX-512 (`vdpbf16ps` with AVX512_BF16, `vpdpbusd` with AVX512_VNNI).
    Avx512,
    /// AVX-VNNI: the VEX `vpdpbusd` on `ymm` (Alder Lake, Sapphire Rapids, Zen 5); int8 only.
    AvxVnni,
    /// AVX2: `vpmaddubsw` + `vpmaddwd` with 7-bit weights (see the module doc); int8 only.
    Avx2,
    /// Plain Rust; int8 only (for machines with neither, and aarch64).
    Portable,
}

impl Engine {
    pub const ALL: [Engine; 5] = [Engine::Amx, Engine::Avx512, Engine::AvxVnni, Engine::Avx2, Engine::Portable];

    /// The instruction that does the products.
    pub fn instruction(self, kind: Kind) -> &'static str {
        match (self, kind) {
            (Engine::Amx, Kind::Bf16) => "AMX tdpbf16ps",
            (Engine::Amx, Kind::Int8) => "AMX tdpbssd",
            (Engine::Avx512, Kind::Bf16) => "AVX512_BF16 vdpbf16ps",
            (Engine::Avx512, Kind::Int8) => "AVX512_VNNI vpdpbusd",
            (Engine::AvxVnni, Kind::Int8) => "AVX-VNNI vpdpbusd",
            (Engine::Avx2, Kind::Int8) => "AVX2 vpmaddubsw (7-bit weights)",
            (Engine::Portable, Kind::Int8) => "portable int8",
            (_, Kind::Bf16) => "none (bf16 is not an engine of this level)",
        }
    }

    /// Whether this machine runs this engine for `kind`.
    pub fn available(self, kind: Kind) -> bool {
        if self == Engine::Portable {
            return kind == Kind::Int8;
        }
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            let avx2 = has!("avx2") && has!("fma");
            let avx512 = avx2 && has!("avx512f") && has!("avx512bw") && has!("avx512vl");
            match (self, kind) {
                (Engine::Amx, k) => avx512 && amx_available(k),
                (Engine::Avx512, Kind::Bf16) => avx512 && has!("avx512bf16"),
                (Engine::Avx512, Kind::Int8) => avx512 && has!("avx512vnni"),
                (Engine::AvxVnni, Kind::Int8) => avx2 && has!("avxvnni"),
                (Engine::Avx2, Kind::Int8) => avx2,
                _ => false,
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }

    /// int8 activations stored as q + 128 (u8) for the u8×s8 instructions, corrected in the
    /// epilogue by 128·Σq_w per column.
    fn unsigned(self, kind: Kind) -> bool {
        kind == Kind::Int8 && matches!(self, Engine::Avx512 | Engine::AvxVnni | Engine::Avx2)
    }

    /// The largest |q| of the int8 weights this engine multiplies exactly.
    pub fn weight_qmax(self) -> i32 {
        match self {
            Engine::Avx2 => 63,
            _ => 127,
        }
    }

    /// Rows of the microkernel (task blocks are multiples of it).
    fn rows(self) -> usize {
        match self {
            Engine::Amx => AMX_MR,
            Engine::Avx512 => ZMM_MR,
            Engine::AvxVnni => VNNI_MR,
            Engine::Avx2 => AVX2_MR,
            Engine::Portable => PORTABLE_MR,
        }
    }

    /// The activation conversion's vector width: AVX-512 for the AVX-512 and AMX engines,
    /// AVX2 for the AVX2 ones (so a forced `avx2` level runs as on an AVX2-only CPU).
    fn convert_simd(self) -> Simd {
        match self {
            Engine::Amx | Engine::Avx512 => Simd::Avx512,
            Engine::AvxVnni | Engine::Avx2 => Simd::Avx2,
            Engine::Portable => Simd::None,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Simd {
    None,
    Avx2,
    Avx512,
}

/// Whether the CPU has AMX tiles with `kind`'s products and Linux granted this process the
/// tile state (asked once per process).
pub fn amx_available(kind: Kind) -> bool {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    {
        use std::sync::OnceLock;
        // (tile, bf16, int8): CPUID leaf 7 subleaf 0, EDX bits 24, 22, 25
        static CPU: OnceLock<(bool, bool, bool)> = OnceLock::new();
        static GRANTED: OnceLock<bool> = OnceLock::new();
        let (tile, bf16, int8) = *CPU.get_or_init(|| {
            // CPUID is available on every x86-64 CPU; leaf 7 exists when the max leaf ≥ 7
            let max = __cpuid(0).eax;
            if max < 7 {
                return (false, false, false);
            }
            let d = __cpuid_count(7, 0).edx;
            (d & (1 << 24) != 0, d & (1 << 22) != 0, d & (1 << 25) != 0)
        });
        if !tile || !(if kind == Kind::Bf16 { bf16 } else { int8 }) {
            return false;
        }
        *GRANTED.get_or_init(|| {
            const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
            const XFEATURE_XTILEDATA: libc::c_long = 18;
            // SAFETY: arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) only asks the kernel
            // to enable the AMX tile state for this process; it touches no memory of ours and
            // fails cleanly (non-zero) on kernels or CPUs without it.
            let r = unsafe { libc::syscall(libc::SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) };
            r == 0
        })
    }
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
    {
        let _ = kind;
        false
    }
}

/// A constant `k×n` right operand in bf16 or int8 (see the module doc), with its bias and,
/// for int8, the per-column scales and sums of the quantised weights.
pub struct PackedLowp {
    pub k: usize,
    pub n: usize,
    kind: Kind,
    /// int8: the weights' range, [−qmax, qmax]
    qmax: i32,
    /// k padded to the tile step
    kpad: usize,
    /// lines per panel (kpad / per_group)
    groups: usize,
    /// panels (even)
    np: usize,
    lines: Vec<Line64>,
    /// `np·16` each: weight scales (int8; 1 for bf16), Σ_k q (int8), bias (0 where none)
    scale: Vec<f32>,
    colsum: Vec<i32>,
    bias: Vec<f32>,
}

impl PackedLowp {
    /// Converts and packs a PyTorch-layout weight `w[n, k]` (`[out, in]`) and its bias, int8
    /// in 8 bits (for every engine but [`Engine::Avx2`]).
    pub fn from_out_in(w: &[f32], bias: Option<&[f32]>, n: usize, k: usize, kind: Kind) -> PackedLowp {
        Self::pack(w, bias, n, k, kind, 127)
    }

    /// As [`from_out_in`](Self::from_out_in), int8 in the range `engine` multiplies exactly.
    pub fn for_engine(engine: Engine, w: &[f32], bias: Option<&[f32]>, n: usize, k: usize, kind: Kind) -> PackedLowp {
        Self::pack(w, bias, n, k, kind, engine.weight_qmax())
    }

    fn pack(w: &[f32], bias: Option<&[f32]>, n: usize, k: usize, kind: Kind, qmax: i32) -> PackedLowp {
        assert!(w.len() >= n * k, "pack: weight has {} values, needs {}", w.len(), n * k);
        let np = n.div_ceil(NR).next_multiple_of(2);
        let kpad = k.div_ceil(kind.kstep()).max(1) * kind.kstep();
        let pg = kind.per_group();
        let groups = kpad / pg;
        let qm = qmax as f32;
        let mut scale = vec![1f32; np * NR];
        if kind == Kind::Int8 {
            scale[..n].par_iter_mut().enumerate().for_each(|(o, s)| {
                let mx = w[o * k..(o + 1) * k].iter().fold(0f32, |m, v| m.max(v.abs()));
                *s = if mx > 0.0 { mx / qm } else { 1.0 };
            });
        }
        let mut colsum = vec![0i32; np * NR];
        let mut lines = vec![Line64::default(); np * groups];
        lines.par_chunks_mut(groups).zip(colsum.par_chunks_mut(NR)).enumerate().for_each(|(p, (pan, cs))| {
            for (c, csum) in cs.iter_mut().enumerate() {
                let o = p * NR + c;
                if o >= n {
                    continue;
                }
                let row = &w[o * k..(o + 1) * k];
                // line g holds values g·pg .. g·pg+pg of every column, column c at byte 4·c
                match kind {
                    Kind::Bf16 => {
                        for (line, vals) in pan.iter_mut().zip(row.chunks(pg)) {
                            for (j, &v) in vals.iter().enumerate() {
                                let at = 4 * c + 2 * j;
                                line.0[at..at + 2].copy_from_slice(&half::bf16::from_f32(v).to_bits().to_le_bytes());
                            }
                        }
                    }
                    Kind::Int8 => {
                        let inv = 1.0 / scale[o];
                        let mut sum = 0i32;
                        for (line, vals) in pan.iter_mut().zip(row.chunks(pg)) {
                            for (j, &v) in vals.iter().enumerate() {
                                let q = quantise(v, inv, qm);
                                sum += q as i32;
                                line.0[4 * c + j] = q as u8;
                            }
                        }
                        *csum = sum;
                    }
                }
            }
        });
        let mut b = vec![0f32; np * NR];
        if let Some(bias) = bias {
            b[..n].copy_from_slice(&bias[..n]);
        }
        PackedLowp { k, n, kind, qmax, kpad, groups, np, lines, scale, colsum, bias: b }
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Bytes of weight storage (the panels, scales and sums).
    pub fn bytes(&self) -> usize {
        self.lines.len() * 64 + self.scale.len() * 8
    }

    /// The weight as the kernels see it, `[n, k]` in f32 (bf16 values, or `s_w·q`), for tests.
    pub fn dequantised(&self) -> Vec<f32> {
        let pg = self.kind.per_group();
        let mut w = vec![0f32; self.n * self.k];
        for o in 0..self.n {
            let (p, c) = (o / NR, o % NR);
            for i in 0..self.k {
                let l = &self.lines[p * self.groups + i / pg].0;
                let at = 4 * c + (i % pg) * (4 / pg);
                w[o * self.k + i] = match self.kind {
                    Kind::Bf16 => half::bf16::from_bits(u16::from_le_bytes([l[at], l[at + 1]])).to_f32(),
                    Kind::Int8 => l[at] as i8 as f32 * self.scale[o],
                };
            }
        }
        w
    }
}

/// `round(v·inv_scale)` (halves away from zero, as `f32::round`) clamped to ±`qmax` (a whole
/// number below 128). Written with a truncating conversion instead of `f32::round`, which the
/// baseline x86-64 target compiles to a call of libm's `roundf` per value (most of the weights'
/// packing time at load): `x − trunc(x)` is exact for |x| ≤ 128.
#[inline]
fn quantise(v: f32, inv_scale: f32, qmax: f32) -> i8 {
    let x = (v * inv_scale).clamp(-qmax, qmax); // NaN stays NaN, and converts to 0 below
    let t = x as i32;
    let f = x - t as f32;
    (t + (f >= 0.5) as i32 - (f <= -0.5) as i32) as i8
}

/// The activations converted for the kernels: `rows` (m padded to 32) rows of `kpad` values,
/// row-major, as bytes; per-row scales for int8.
pub struct Converted {
    data: Vec<Line64>,
    /// bytes per row
    stride: usize,
    scale: Vec<f32>,
}

impl Converted {
    fn ptr(&self) -> *const u8 {
        self.data.as_ptr() as *const u8
    }
    /// The converted row `r`, for tests: bf16 values or i8 values (u8 − 128 when `unsigned`),
    /// as f32.
    pub fn row(&self, r: usize, kind: Kind, k: usize, unsigned: bool) -> (Vec<f32>, f32) {
        // SAFETY: `data` holds rows·stride bytes; row r of `stride` bytes is inside it.
        let b = unsafe { std::slice::from_raw_parts(self.ptr().add(r * self.stride), self.stride) };
        let v = match kind {
            Kind::Bf16 => {
                (0..k).map(|i| half::bf16::from_bits(u16::from_le_bytes([b[2 * i], b[2 * i + 1]])).to_f32()).collect()
            }
            Kind::Int8 => (0..k).map(|i| if unsigned { b[i] as i32 - 128 } else { b[i] as i8 as i32 } as f32).collect(),
        };
        (v, self.scale.get(r).copied().unwrap_or(1.0))
    }
}

/// Converts `x[m, k]` for `w`'s kernels on `engine`: bf16 (round to nearest even), or int8
/// with a symmetric scale per row (stored as q + 128 for the u8×s8 instructions).
pub fn convert(x: &[f32], m: usize, w: &PackedLowp, engine: Engine) -> Converted {
    let (k, kind) = (w.k, w.kind);
    let unsigned = engine.unsigned(kind);
    let esize = if kind == Kind::Bf16 { 2 } else { 1 };
    let stride = w.kpad * esize;
    let rows = m.div_ceil(AMX_MR) * AMX_MR;
    let mut data = vec![Line64::default(); rows * stride / 64];
    let mut scale = vec![1f32; rows];
    // SAFETY: Line64 is 64 plain bytes with no padding; the byte view covers exactly `data`.
    let bytes = unsafe { std::slice::from_raw_parts_mut(data.as_mut_ptr() as *mut u8, data.len() * 64) };
    // the vector conversions: the engine's width, where this machine has the instructions
    // (bf16 on AVX-512 needs AVX512_BF16)
    let simd = match (engine.convert_simd(), kind) {
        (Simd::Avx512, Kind::Bf16) if !Engine::Avx512.available(Kind::Bf16) => Simd::None,
        (Simd::Avx2, Kind::Bf16) => Simd::None,
        (s, _) => s,
    };
    let work = |(r, (d, s)): (usize, (&mut [u8], &mut f32))| {
        if r >= m {
            if unsigned {
                d.fill(128);
            }
            return;
        }
        let xr = &x[r * k..(r + 1) * k];
        match kind {
            Kind::Bf16 => {
                #[cfg(target_arch = "x86_64")]
                if simd == Simd::Avx512 {
                    // SAFETY: AVX512F+BF16 checked just above (the engine is available); d
                    // holds ≥ 2k bytes.
                    unsafe { to_bf16_avx512(xr, d) };
                    return;
                }
                for (i, &v) in xr.iter().enumerate() {
                    d[2 * i..2 * i + 2].copy_from_slice(&half::bf16::from_f32(v).to_bits().to_le_bytes());
                }
            }
            Kind::Int8 => {
                *s = match simd {
                    // SAFETY: the engine is available, so the CPU has AVX512F+BW (Amx,
                    // Avx512) or AVX2 (AvxVnni, Avx2); d holds ≥ k bytes.
                    #[cfg(target_arch = "x86_64")]
                    Simd::Avx512 => unsafe { quantise_avx512(xr, d, unsigned) },
                    // SAFETY: as above (AVX2 for the AVX2 engines).
                    #[cfg(target_arch = "x86_64")]
                    Simd::Avx2 => unsafe { quantise_avx2(xr, d, unsigned) },
                    _ => quantise_row(xr, d, unsigned),
                };
                if unsigned {
                    d[k..].fill(128);
                }
            }
        }
    };
    if m * k >= 1 << 15 {
        bytes.par_chunks_mut(stride).zip(scale.par_iter_mut()).enumerate().for_each(work);
    } else {
        bytes.chunks_mut(stride).zip(scale.iter_mut()).enumerate().for_each(work);
    }
    Converted { data, stride, scale }
}

/// Quantises one row to i8 (or u8 = i8 + 128) with a symmetric scale, which it returns.
fn quantise_row(x: &[f32], d: &mut [u8], unsigned: bool) -> f32 {
    let mx = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let s = if mx > 0.0 { mx / 127.0 } else { 1.0 };
    let inv = 1.0 / s;
    let off = if unsigned { 128u8 } else { 0 };
    for (o, &v) in d.iter_mut().zip(x) {
        *o = (quantise(v, inv, 127.0) as u8).wrapping_add(off);
    }
    s
}

/// # Safety
/// AVX512F and AVX512_BF16; `d` holds at least `2·x.len()` bytes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16,avx512vl")]
unsafe fn to_bf16_avx512(x: &[f32], d: &mut [u8]) {
    let n = x.len();
    let o = d.as_mut_ptr() as *mut u16;
    let mut i = 0;
    while i + 16 <= n {
        let v = _mm512_cvtneps_pbh(_mm512_loadu_ps(x.as_ptr().add(i)));
        _mm256_storeu_si256(o.add(i) as *mut __m256i, std::mem::transmute::<__m256bh, __m256i>(v));
        i += 16;
    }
    for (j, &v) in x.iter().enumerate().skip(i) {
        *o.add(j) = half::bf16::from_f32(v).to_bits();
    }
}

/// Quantises one row to i8 (or u8 = i8 + 128) with a symmetric scale, which it returns.
///
/// # Safety
/// AVX512F+BW; `d` holds at least `x.len()` bytes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn quantise_avx512(x: &[f32], d: &mut [u8], unsigned: bool) -> f32 {
    let n = x.len();
    let p = x.as_ptr();
    let mut mx = _mm512_setzero_ps();
    let mut i = 0;
    while i + 16 <= n {
        mx = _mm512_max_ps(mx, _mm512_abs_ps(_mm512_loadu_ps(p.add(i))));
        i += 16;
    }
    let mut m = _mm512_reduce_max_ps(mx);
    for &v in &x[i..] {
        m = m.max(v.abs());
    }
    let s = if m > 0.0 { m / 127.0 } else { 1.0 };
    let inv = 1.0 / s;
    let vinv = _mm512_set1_ps(inv);
    let off = _mm_set1_epi8(if unsigned { -128 } else { 0 });
    let o = d.as_mut_ptr();
    i = 0;
    while i + 16 <= n {
        // round to nearest even (MXCSR default); |v·inv| ≤ 127 so the saturation never bites
        let q = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(p.add(i)), vinv));
        let b = _mm_xor_si128(_mm512_cvtsepi32_epi8(q), off);
        _mm_storeu_si128(o.add(i) as *mut __m128i, b);
        i += 16;
    }
    for (j, &v) in x.iter().enumerate().skip(i) {
        *o.add(j) = (quantise(v, inv, 127.0) as u8).wrapping_add(if unsigned { 128 } else { 0 });
    }
    s
}

/// [`quantise_avx512`] in AVX2.
///
/// # Safety
/// AVX2; `d` holds at least `x.len()` bytes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn quantise_avx2(x: &[f32], d: &mut [u8], unsigned: bool) -> f32 {
    let n = x.len();
    let p = x.as_ptr();
    let abs = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
    let mut mx = _mm256_setzero_ps();
    let mut i = 0;
    while i + 8 <= n {
        mx = _mm256_max_ps(mx, _mm256_and_ps(_mm256_loadu_ps(p.add(i)), abs));
        i += 8;
    }
    let mut lanes = [0f32; 8];
    _mm256_storeu_ps(lanes.as_mut_ptr(), mx);
    let mut m = lanes.iter().fold(0f32, |a, &b| a.max(b));
    for &v in &x[i..] {
        m = m.max(v.abs());
    }
    let s = if m > 0.0 { m / 127.0 } else { 1.0 };
    let inv = 1.0 / s;
    let vinv = _mm256_set1_ps(inv);
    let off = _mm256_set1_epi8(if unsigned { -128 } else { 0 });
    // packs interleave the 128-bit lanes: dword j of the result comes from dword perm[j]
    let perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    let o = d.as_mut_ptr();
    i = 0;
    while i + 32 <= n {
        // round to nearest even (MXCSR default); |v·inv| ≤ 127 so the saturation never bites
        let q: [__m256i; 4] =
            std::array::from_fn(|j| _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(p.add(i + 8 * j)), vinv)));
        let b = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
        let b = _mm256_xor_si256(_mm256_permutevar8x32_epi32(b, perm), off);
        _mm256_storeu_si256(o.add(i) as *mut __m256i, b);
        i += 32;
    }
    for (j, &v) in x.iter().enumerate().skip(i) {
        *o.add(j) = (quantise(v, inv, 127.0) as u8).wrapping_add(if unsigned { 128 } else { 0 });
    }
    s
}

/// `y[m, n] = act(x·W + b)`, or `y += x·W + b` when `accumulate`, on `engine` (which must be
/// [`available`](Engine::available) for `w`'s kind, and for int8 multiply `w`'s range exactly).
pub fn matmul(
    engine: Engine,
    y: &mut [f32],
    x: &[f32],
    m: usize,
    w: &PackedLowp,
    act: Option<Activation>,
    accumulate: bool,
) {
    let (k, n) = (w.k, w.n);
    assert!(engine.available(w.kind), "{} is not available on this machine", engine.instruction(w.kind));
    assert!(
        w.kind != Kind::Int8 || w.qmax <= engine.weight_qmax(),
        "{}: int8 weights in ±{} would saturate (pack them with PackedLowp::for_engine)",
        engine.instruction(w.kind),
        w.qmax
    );
    assert!(x.len() >= m * k, "matmul_lowp: x has {} values, needs {}", x.len(), m * k);
    assert!(y.len() >= m * n, "matmul_lowp: y has {} values, needs {}", y.len(), m * n);
    if m == 0 || n == 0 {
        return;
    }
    if accumulate && act.is_some() {
        let mut t = vec![0f32; m * n];
        matmul(engine, &mut t, x, m, w, act, false);
        y[..m * n].iter_mut().zip(&t).for_each(|(a, b)| *a += b);
        return;
    }
    let a = convert(x, m, w, engine);
    let yp = SendPtr(y.as_mut_ptr());
    let ep = Epilogue { act, accumulate, sub128: engine.unsigned(w.kind), lanes: Lanes::of(engine) };
    for_each_tile(m, w.np / 2, m * n * k, engine.rows(), MC, |r0, r1, q0, q1| {
        // SAFETY: tasks own disjoint tiles (rows r0..r1 × columns 32·q0..32·q1) of y (m·n
        // values, asserted); `a` holds m rounded up to 32 rows of kpad values (`convert`),
        // the panels np·groups lines; the engine's CPU features were asserted above.
        unsafe { task(engine, yp.get(), &a, n, w, r0, r1, q0, q1, ep) }
    });
}

/// One task on `engine`: rows `r0..r1`, panel pairs `q0..q1`, all of k.
///
/// # Safety
/// `engine` available for `w`'s kind; rows `r0..r1` (< m) and pairs `q0..q1` of y (`m×n`) are
/// this task's alone; `a` from [`convert`] for `w` and `engine` (rows padded to 32).
#[allow(clippy::too_many_arguments)]
unsafe fn task(
    engine: Engine,
    y: *mut f32,
    a: &Converted,
    n: usize,
    w: &PackedLowp,
    r0: usize,
    r1: usize,
    q0: usize,
    q1: usize,
    ep: Epilogue,
) {
    let t = Task { y, a, n, w, ep };
    match (engine, w.kind) {
        (Engine::Portable, _) => portable_task(&t, r0, r1, q0, q1),
        #[cfg(target_arch = "x86_64")]
        (Engine::Amx, _) => amx_task(&t, r0, r1, q0, q1),
        #[cfg(target_arch = "x86_64")]
        (Engine::Avx512, Kind::Bf16) => zmm_task_bf16(&t, r0, r1, q0, q1),
        #[cfg(target_arch = "x86_64")]
        (Engine::Avx512, Kind::Int8) => zmm_task_vnni(&t, r0, r1, q0, q1),
        #[cfg(target_arch = "x86_64")]
        (Engine::AvxVnni, _) => ymm_task_vnni(&t, r0, r1, q0, q1),
        #[cfg(target_arch = "x86_64")]
        (Engine::Avx2, _) => ymm_task_avx2(&t, r0, r1, q0, q1),
        #[allow(unreachable_patterns)]
        _ => unreachable!("{engine:?} is never available on this architecture"),
    }
}

/// What every task shares: the output, the converted activations, the weight, the epilogue.
struct Task<'a> {
    y: *mut f32,
    a: &'a Converted,
    n: usize,
    w: &'a PackedLowp,
    ep: Epilogue,
}

#[derive(Clone, Copy)]
struct Epilogue {
    act: Option<Activation>,
    accumulate: bool,
    /// int8 through u8×s8 instructions: subtract 128·Σq_w from each column
    sub128: bool,
    /// the vector width the engine's CPU features allow the epilogue
    lanes: Lanes,
}

/// How the epilogue runs: a property of the engine (its CPU features), decided once per call.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Lanes {
    /// plain Rust (the portable engine)
    Scalar,
    /// two `ymm` of 8 (AVX2+FMA: the AVX2 and AVX-VNNI engines)
    Ymm,
    /// one `zmm` of 16 (AVX-512F: the AVX-512 and AMX engines)
    Zmm,
}

impl Lanes {
    fn of(engine: Engine) -> Lanes {
        match engine {
            Engine::Portable => Lanes::Scalar,
            Engine::Avx2 | Engine::AvxVnni => Lanes::Ymm,
            Engine::Avx512 | Engine::Amx => Lanes::Zmm,
        }
    }
}

/// The epilogue of a `rows×32` block of raw sums held in `buf` (row stride 32 values; i32
/// for int8, f32 bits for bf16) for rows `r..r+rows` and panel pair `q` of y:
/// `s_x·s_w·v + b`, activated, or added to what is there, on the engine's lanes (`t.ep.lanes`).
///
/// # Safety
/// The CPU has the features of `t.ep.lanes` (those of the engine the task runs on); `buf`
/// holds `rows·32` values; rows `r..r+rows` (< m) and pair q's columns of y are this task's.
unsafe fn finish_block(buf: *const i32, rows: usize, t: &Task, r: usize, q: usize) {
    let w = t.w;
    for i in 0..rows {
        for h in 0..2 {
            let c0 = (2 * q + h) * NR;
            if c0 >= t.n {
                continue;
            }
            let v = buf.add(i * 32 + 16 * h);
            let dst = t.y.add((r + i) * t.n + c0);
            let cols = (t.n - c0).min(NR);
            let sx = *t.a.scale.get_unchecked(r + i);
            let (sw, cs, bias) = (w.scale.as_ptr().add(c0), w.colsum.as_ptr().add(c0), w.bias.as_ptr().add(c0));
            // the other engines (and so these lanes) exist on x86-64 only
            match t.ep.lanes {
                #[cfg(target_arch = "x86_64")]
                Lanes::Zmm => {
                    finish16_avx512(v, w.kind, dst, cols, sx, sw, cs, bias, t.ep);
                    continue;
                }
                #[cfg(target_arch = "x86_64")]
                Lanes::Ymm => {
                    finish16_avx2(v, w.kind, dst, cols, sx, sw, cs, bias, t.ep);
                    continue;
                }
                _ => {}
            }
            for j in 0..cols {
                let raw = *v.add(j);
                let mut f = match w.kind {
                    Kind::Bf16 => f32::from_bits(raw as u32),
                    Kind::Int8 => {
                        let raw = if t.ep.sub128 { raw - 128 * *cs.add(j) } else { raw };
                        raw as f32 * (sx * *sw.add(j))
                    }
                };
                if t.ep.accumulate {
                    f += *dst.add(j);
                }
                *dst.add(j) = simd::act_scalar(f + *bias.add(j), t.ep.act);
            }
        }
    }
}

/// [`finish_block`] for 16 columns of one row, in AVX2 (`cols` ≤ 16 written to `dst`).
///
/// # Safety
/// AVX2+FMA; `v`, `sw`, `cs`, `bias` 16 values each; `dst` addresses `cols` values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn finish16_avx2(
    v: *const i32,
    kind: Kind,
    dst: *mut f32,
    cols: usize,
    sx: f32,
    sw: *const f32,
    cs: *const i32,
    bias: *const f32,
    ep: Epilogue,
) {
    let mut tmp = [0f32; NR];
    let out = if cols == NR {
        dst
    } else {
        if ep.accumulate {
            std::ptr::copy_nonoverlapping(dst, tmp.as_mut_ptr(), cols);
        }
        tmp.as_mut_ptr()
    };
    for h in 0..2 {
        let raw = _mm256_loadu_si256(v.add(8 * h) as *const __m256i);
        let mut f = match kind {
            Kind::Bf16 => _mm256_castsi256_ps(raw),
            Kind::Int8 => {
                let raw = if ep.sub128 {
                    _mm256_sub_epi32(raw, _mm256_slli_epi32::<7>(_mm256_loadu_si256(cs.add(8 * h) as *const __m256i)))
                } else {
                    raw
                };
                _mm256_mul_ps(
                    _mm256_cvtepi32_ps(raw),
                    _mm256_mul_ps(_mm256_set1_ps(sx), _mm256_loadu_ps(sw.add(8 * h))),
                )
            }
        };
        if ep.accumulate {
            f = _mm256_add_ps(f, _mm256_loadu_ps(out.add(8 * h)));
        }
        f = simd::act256(_mm256_add_ps(f, _mm256_loadu_ps(bias.add(8 * h))), ep.act);
        _mm256_storeu_ps(out.add(8 * h), f);
    }
    if cols < NR {
        std::ptr::copy_nonoverlapping(tmp.as_ptr(), dst, cols);
    }
}

/// [`finish16_avx2`] on one `zmm` (the same operations per lane, so the same bits), the
/// partial columns through a write mask instead of a stack copy.
///
/// # Safety
/// AVX-512F; `v`, `sw`, `cs`, `bias` 16 values each; `dst` addresses `cols` values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn finish16_avx512(
    v: *const i32,
    kind: Kind,
    dst: *mut f32,
    cols: usize,
    sx: f32,
    sw: *const f32,
    cs: *const i32,
    bias: *const f32,
    ep: Epilogue,
) {
    let mask: __mmask16 = if cols >= NR { 0xffff } else { (1u16 << cols) - 1 };
    let raw = _mm512_loadu_si512(v as *const __m512i);
    let mut f = match kind {
        Kind::Bf16 => _mm512_castsi512_ps(raw),
        Kind::Int8 => {
            let raw = if ep.sub128 {
                _mm512_sub_epi32(raw, _mm512_slli_epi32::<7>(_mm512_loadu_si512(cs as *const __m512i)))
            } else {
                raw
            };
            _mm512_mul_ps(_mm512_cvtepi32_ps(raw), _mm512_mul_ps(_mm512_set1_ps(sx), _mm512_loadu_ps(sw)))
        }
    };
    if ep.accumulate {
        f = _mm512_add_ps(f, _mm512_maskz_loadu_ps(mask, dst));
    }
    f = simd::act512(_mm512_add_ps(f, _mm512_loadu_ps(bias)), ep.act);
    _mm512_mask_storeu_ps(dst, mask, f);
}

/// The epilogue buffer of one microkernel block: up to [`MAX_MR`] rows × 32 values.
#[repr(C, align(64))]
struct BlockBuf([i32; MAX_MR * 32]);

impl BlockBuf {
    fn new() -> BlockBuf {
        BlockBuf([0; MAX_MR * 32])
    }
}

/// The 64-byte tile configuration: palette 1, tiles 0–7 all 16 rows × 64 bytes.
#[cfg(target_arch = "x86_64")]
#[repr(C, align(64))]
struct TileConfig([u8; 64]);

#[cfg(target_arch = "x86_64")]
const TILE_CONFIG: TileConfig = {
    let mut c = [0u8; 64];
    c[0] = 1;
    let mut t = 0;
    while t < 8 {
        c[16 + 2 * t] = 64; // bytes per row (u16, little endian)
        c[48 + t] = 16; // rows
        t += 1;
    }
    TileConfig(c)
};

/// The tile products of one 64-byte k step of a 32×32 AMX block: `$op` is `tdpbf16ps` or
/// `tdpbssd` (tiles 0–3 accumulate, 4–5 hold A, 6–7 hold B).
#[cfg(target_arch = "x86_64")]
macro_rules! amx_step {
    ($op:literal, $a0:expr, $a1:expr, $b0:expr, $b1:expr, $lda:expr) => {
        std::arch::asm!(
            "tileloadd tmm4, [{a0} + {lda}*1]",
            "tileloadd tmm6, [{b0} + {s64}*1]",
            concat!($op, " tmm0, tmm4, tmm6"),
            "tileloadd tmm7, [{b1} + {s64}*1]",
            concat!($op, " tmm1, tmm4, tmm7"),
            "tileloadd tmm5, [{a1} + {lda}*1]",
            concat!($op, " tmm2, tmm5, tmm6"),
            concat!($op, " tmm3, tmm5, tmm7"),
            a0 = in(reg) $a0, a1 = in(reg) $a1, b0 = in(reg) $b0, b1 = in(reg) $b1,
            lda = in(reg) $lda, s64 = in(reg) 64usize,
            options(nostack, readonly),
        )
    };
}

/// One AMX task: rows `r0..r1`, panel pairs `q0..q1`, all of k.
///
/// # Safety
/// AMX with `w`'s kind granted ([`amx_available`]) and AVX2+FMA; as [`task`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn amx_task(t: &Task, r0: usize, r1: usize, q0: usize, q1: usize) {
    let (a, w) = (t.a, t.w);
    let mut buf = BlockBuf::new(); // 32 rows × 32 i32/f32
    let bufp = buf.0.as_mut_ptr() as *mut u8;
    let steps = w.kpad / w.kind.kstep();
    let lda = a.stride;
    let panel_bytes = w.groups * 64;
    let lines = w.lines.as_ptr() as *const u8;
    // SAFETY: TILE_CONFIG is a valid palette-1 configuration (64 bytes, 64-byte aligned);
    // the tile registers are this thread's and no other code here uses them.
    std::arch::asm!("ldtilecfg [{0}]", in(reg) TILE_CONFIG.0.as_ptr(), options(nostack, readonly));
    for q in q0..q1 {
        let b0 = lines.add(2 * q * panel_bytes);
        let b1 = b0.add(panel_bytes);
        let mut r = r0;
        while r < r1 {
            let a0 = a.ptr().add(r * lda);
            let a1 = a0.add(16 * lda);
            // SAFETY (all tile asm below): tiles 0–3 accumulate, 4–5 hold A (16 rows × 64
            // bytes of rows r..r+32, inside the padded buffer), 6–7 hold B (16 lines of 64
            // bytes of panels 2q and 2q+1, inside the panels); the asm reads only those
            // bytes and writes only the tile registers, or (tilestored) `buf`'s 4 KiB.
            std::arch::asm!(
                "tilezero tmm0",
                "tilezero tmm1",
                "tilezero tmm2",
                "tilezero tmm3",
                options(nostack, nomem)
            );
            for s in 0..steps {
                let (pa0, pa1) = (a0.add(64 * s), a1.add(64 * s));
                let (pb0, pb1) = (b0.add(1024 * s), b1.add(1024 * s));
                match w.kind {
                    Kind::Bf16 => amx_step!("tdpbf16ps", pa0, pa1, pb0, pb1, lda),
                    Kind::Int8 => amx_step!("tdpbssd", pa0, pa1, pb0, pb1, lda),
                }
            }
            std::arch::asm!(
                "tilestored [{c} + {s128}*1], tmm0",
                "tilestored [{c1} + {s128}*1], tmm1",
                "tilestored [{c2} + {s128}*1], tmm2",
                "tilestored [{c3} + {s128}*1], tmm3",
                c = in(reg) bufp, c1 = in(reg) bufp.add(64), c2 = in(reg) bufp.add(2048), c3 = in(reg) bufp.add(2112),
                s128 = in(reg) 128usize,
                options(nostack),
            );
            finish_block(bufp as *const i32, AMX_MR.min(r1 - r), t, r, q);
            r += AMX_MR;
        }
    }
    // SAFETY: returns the tile registers to their initial state (no operands).
    std::arch::asm!("tilerelease", options(nostack, nomem));
}

/// A vector task (`$vec` registers of `$lanes` i32, `$mr` rows × 16 columns per panel of
/// the pair, `$panels` panels at once: 1 or 2): rows `r0..r1`, panel pairs `q0..q1`; each k
/// quad (int8) or pair (bf16) of a row is broadcast as one 32-bit value and `$dp`
/// accumulates its products with the panel line.
macro_rules! vec_task_impl {
    ($name:ident, $features:literal, $vec:ty, $zero:ident, $load:ident, $set1:ident, $store:ident, $dp:ident, $mr:expr, $panels:expr) => {
        /// # Safety
        /// As [`task`], with this kernel's CPU features.
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $features)]
        #[allow(clippy::modulo_one)] // PER_LINE is 1 for `zmm`, 2 for `ymm`
        unsafe fn $name(t: &Task, r0: usize, r1: usize, q0: usize, q1: usize) {
            const LANES: usize = std::mem::size_of::<$vec>() / 4;
            const PER_LINE: usize = 16 / LANES;
            const NV: usize = PER_LINE * $panels;
            let (a, w) = (t.a, t.w);
            let mut buf = BlockBuf::new();
            let bufp = buf.0.as_mut_ptr();
            let lines = w.lines.as_ptr() as *const u8;
            let groups = w.groups;
            for q in q0..q1 {
                let mut r = r0;
                while r < r1 {
                    let mr = $mr.min(r1 - r);
                    let ar: [*const i32; $mr] =
                        std::array::from_fn(|i| a.ptr().add((r + i.min(mr - 1)) * a.stride) as *const i32);
                    for h0 in (0..2).step_by($panels) {
                        let b = lines.add((2 * q + h0) * groups * 64);
                        let mut acc = [[$zero(); NV]; $mr];
                        for g in 0..groups {
                            let v: [$vec; NV] = std::array::from_fn(|j| {
                                $load(b.add((j / PER_LINE) * groups * 64 + 64 * g + (j % PER_LINE) * 4 * LANES) as _)
                            });
                            for i in 0..$mr {
                                let av = $set1(ar[i].add(g).read_unaligned());
                                for j in 0..NV {
                                    acc[i][j] = $dp(acc[i][j], av, v[j]);
                                }
                            }
                        }
                        for (i, row) in acc.iter().enumerate() {
                            for (j, v) in row.iter().enumerate() {
                                $store(bufp.add(i * 32 + 16 * h0 + LANES * j) as _, *v);
                            }
                        }
                    }
                    finish_block(bufp, mr, t, r, q);
                    r += $mr;
                }
            }
        }
    };
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
#[inline]
unsafe fn dp_bf16(acc: __m512i, a: __m512i, b: __m512i) -> __m512i {
    // the bf16 pairs are reinterpreted, not converted: both sides hold bf16 bit patterns
    let r = _mm512_dpbf16_ps(
        _mm512_castsi512_ps(acc),
        std::mem::transmute::<__m512i, __m512bh>(a),
        std::mem::transmute::<__m512i, __m512bh>(b),
    );
    _mm512_castps_si512(r)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vnni")]
#[inline]
unsafe fn dp_u8s8(acc: __m512i, a: __m512i, b: __m512i) -> __m512i {
    _mm512_dpbusd_epi32(acc, a, b)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,avxvnni")]
#[inline]
unsafe fn dp_u8s8_vex(acc: __m256i, a: __m256i, b: __m256i) -> __m256i {
    _mm256_dpbusd_avx_epi32(acc, a, b)
}

/// u8×s8 quads summed into i32 without VNNI: `vpmaddubsw` makes saturating i16 pair sums,
/// exact here because |b| ≤ 63 ([`Engine::weight_qmax`]): 2·255·63 < 2¹⁵; `vpmaddwd` by
/// ones widens and adds the pairs.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn dp_u8s8_avx2(acc: __m256i, a: __m256i, b: __m256i) -> __m256i {
    _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(a, b), _mm256_set1_epi16(1)))
}

vec_task_impl!(
    zmm_task_bf16,
    "avx512f,avx512bw,avx512vl,avx512bf16,avx2,fma",
    __m512i,
    _mm512_setzero_si512,
    _mm512_load_si512,
    _mm512_set1_epi32,
    _mm512_storeu_si512,
    dp_bf16,
    ZMM_MR,
    2
);
vec_task_impl!(
    zmm_task_vnni,
    "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma",
    __m512i,
    _mm512_setzero_si512,
    _mm512_load_si512,
    _mm512_set1_epi32,
    _mm512_storeu_si512,
    dp_u8s8,
    ZMM_MR,
    2
);
vec_task_impl!(
    ymm_task_vnni,
    "avx2,fma,avxvnni",
    __m256i,
    _mm256_setzero_si256,
    _mm256_load_si256,
    _mm256_set1_epi32,
    _mm256_storeu_si256,
    dp_u8s8_vex,
    VNNI_MR,
    1
);
vec_task_impl!(
    ymm_task_avx2,
    "avx2,fma",
    __m256i,
    _mm256_setzero_si256,
    _mm256_load_si256,
    _mm256_set1_epi32,
    _mm256_storeu_si256,
    dp_u8s8_avx2,
    AVX2_MR,
    1
);

/// The portable task: s8×s8 in i32, [`PORTABLE_MR`] rows × 16 columns at a time.
///
/// # Safety
/// As [`task`].
unsafe fn portable_task(t: &Task, r0: usize, r1: usize, q0: usize, q1: usize) {
    let (a, w) = (t.a, t.w);
    debug_assert!(w.kind == Kind::Int8 && !t.ep.sub128);
    let mut buf = BlockBuf::new();
    for q in q0..q1 {
        let mut r = r0;
        while r < r1 {
            let mr = PORTABLE_MR.min(r1 - r);
            for h in 0..2 {
                let pan = &w.lines[(2 * q + h) * w.groups..][..w.groups];
                for i in 0..mr {
                    // SAFETY: row r+i < m of the converted buffer, `stride` bytes.
                    let row = std::slice::from_raw_parts(a.ptr().add((r + i) * a.stride), a.stride);
                    let mut acc = [0i32; NR];
                    for (l, x) in pan.iter().zip(row.chunks_exact(4)) {
                        for (c, s) in acc.iter_mut().enumerate() {
                            let wl = &l.0[4 * c..4 * c + 4];
                            *s += (0..4).map(|j| x[j] as i8 as i32 * wl[j] as i8 as i32).sum::<i32>();
                        }
                    }
                    buf.0[i * 32 + 16 * h..][..NR].copy_from_slice(&acc);
                }
            }
            finish_block(buf.0.as_ptr(), mr, t, r, q);
            r += PORTABLE_MR;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantise_rounds_as_f32_round_and_clamps() {
        // ties both ways, values just beside them, the clamp, zero, NaN, and a sweep
        let mut vals = vec![0.5f32, -0.5, 1.5, -1.5, 2.5, 126.5, -126.5, 127.49, 127.5, 200.0, -1e9, 0.0, -0.0];
        vals.extend([0.5f32, 1.5, -2.5].iter().flat_map(|&v: &f32| [v.next_up(), v.next_down()]));
        vals.extend((-3000..=3000).map(|i| i as f32 * 0.0437));
        for v in vals {
            let want = v.round().clamp(-127.0, 127.0) as i8;
            assert_eq!(quantise(v, 1.0, 127.0), want, "quantise({v})");
        }
        assert_eq!(quantise(f32::NAN, 1.0, 127.0), 0);
        assert_eq!(quantise(100.0, 1.0, 63.0), 63);
        assert_eq!(quantise(-63.5, 1.0, 63.0), -63);
    }

    /// The exact result of the converted operands, in f64.
    fn reference(a: &Converted, w: &PackedLowp, m: usize, unsigned: bool) -> Vec<f64> {
        let (k, n) = (w.k, w.n);
        let wd = w.dequantised();
        let mut y = vec![0f64; m * n];
        for i in 0..m {
            let (row, s) = a.row(i, w.kind, k, unsigned);
            for j in 0..n {
                let d: f64 = (0..k).map(|l| row[l] as f64 * wd[j * k + l] as f64).sum();
                y[i * n + j] = d * s as f64 + w.bias[j] as f64;
            }
        }
        y
    }

    #[test]
    fn every_available_engine_matches_the_converted_operands_at_edge_shapes() {
        for engine in Engine::ALL {
            for kind in [Kind::Bf16, Kind::Int8] {
                if kind == Kind::Bf16 && matches!(engine, Engine::AvxVnni | Engine::Avx2 | Engine::Portable) {
                    continue; // not an engine of bf16
                }
                if !engine.available(kind) {
                    eprintln!("SKIPPED: {} (not on this machine)", engine.instruction(kind));
                    continue;
                }
                for &(m, k, n) in &[
                    (1, 1, 1),
                    (1, 7, 5),
                    (6, 16, 16),
                    (7, 1, 17),
                    (13, 301, 33),
                    (77, 64, 65),
                    (130, 1100, 70),
                    (200, 768, 2304),
                ] {
                    let x: Vec<f32> = (0..m * k).map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0).collect();
                    let w: Vec<f32> = (0..n * k).map(|i| ((i * 53 % 89) as f32 - 44.0) / 44.0).collect();
                    let bias: Vec<f32> = (0..n).map(|i| i as f32 * 0.1 - 1.0).collect();
                    let p = PackedLowp::for_engine(engine, &w, Some(&bias), n, k, kind);
                    let unsigned = engine.unsigned(kind);
                    let a = convert(&x, m, &p, engine);
                    let r = reference(&a, &p, m, unsigned);
                    for (act, acc) in [
                        (None, false),
                        (None, true),
                        (Some(Activation::QuickGelu), false),
                        (Some(Activation::Gelu), false),
                    ] {
                        let mut y = vec![0.5f32; m * n];
                        matmul(engine, &mut y, &x, m, &p, act, acc);
                        for (i, (&got, &want)) in y.iter().zip(&r).enumerate() {
                            let want = match (act, acc) {
                                (_, true) => want + 0.5,
                                (Some(Activation::QuickGelu), _) => simd::quick_gelu(want as f32) as f64,
                                (Some(Activation::Gelu), _) => simd::gelu(want as f32) as f64,
                                _ => want,
                            };
                            let e = (got as f64 - want).abs() / want.abs().max(1.0);
                            assert!(
                                e < 2e-5,
                                "{engine:?} {kind:?} {m}x{k}x{n} {act:?} acc={acc} [{i}]: {got} vs {want}"
                            );
                        }
                    }
                    // and close to the f32 product
                    let mut y = vec![0f32; m * n];
                    matmul(engine, &mut y, &x, m, &p, None, false);
                    for i in 0..m {
                        for j in 0..n {
                            let e: f64 =
                                (0..k).map(|l| x[i * k + l] as f64 * w[j * k + l] as f64).sum::<f64>() + bias[j] as f64;
                            assert!(
                                (y[i * n + j] as f64 - e).abs() < 0.02 * (k as f64).sqrt() + 1e-3,
                                "{engine:?} {kind:?} {m}x{k}x{n}"
                            );
                        }
                    }
                }
                eprintln!("{}: ok", engine.instruction(kind));
            }
        }
    }

    /// Operands at the ends of their ranges (every activation 255 or 1 as u8, every weight
    /// ±qmax): where `vpmaddubsw` would saturate with 8-bit weights; the sums must stay exact.
    #[test]
    fn int8_sums_stay_exact_at_the_ends_of_the_ranges() {
        let (m, k, n) = (5, 256, 32);
        for engine in Engine::ALL {
            if !engine.available(Kind::Int8) {
                eprintln!("SKIPPED: {} (not on this machine)", engine.instruction(Kind::Int8));
                continue;
            }
            for xs in [1f32, -1.0] {
                let x: Vec<f32> = (0..m * k).map(|i| if i / k == 3 { -xs } else { xs }).collect();
                let w: Vec<f32> = (0..n * k).map(|i| if (i / k) % 2 == 0 { 0.5 } else { -0.25 }).collect();
                let p = PackedLowp::for_engine(engine, &w, None, n, k, Kind::Int8);
                let mut y = vec![0f32; m * n];
                matmul(engine, &mut y, &x, m, &p, None, false);
                for i in 0..m {
                    for j in 0..n {
                        let want = k as f32 * x[i * k] * w[j * k];
                        let got = y[i * n + j];
                        assert!(
                            (got - want).abs() <= 1e-4 * want.abs(),
                            "{engine:?} x={xs} [{i},{j}]: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }
}
