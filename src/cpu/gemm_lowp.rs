//! Reduced-precision products on x86-64 CPUs with AVX-512 or AMX: `y[m, n] (+)= act(x·W + b)`
//! with W in bf16 or int8, the activations converted at each call (bf16: rounded to nearest
//! even; int8: symmetric per-row scales, q ∈ [−127, 127]) and the products accumulated in
//! f32 (bf16) or i32 (int8), exactly as the instructions define them.
//!
//! | engine | bf16 | int8 |
//! |---|---|---|
//! | [`Engine::Amx`] (AMX-BF16/INT8 tiles) | `tdpbf16ps` | `tdpbssd` (s8×s8) |
//! | [`Engine::Avx512`] (AVX512_BF16, AVX512_VNNI) | `vdpbf16ps` | `vpdpbusd` (u8×s8: activations + 128, corrected by 128·Σq_w per column) |
//!
//! Layout, shared by both engines: W as column panels of 16 (a panel count rounded up to
//! even, so the kernels always take panel pairs, 32 columns), one 64-byte line per k pair
//! (bf16: `[c0k0 c0k1 c1k0 c1k1 … c15k1]`) or per k quad (int8: `[c0k0..c0k3 c1k0 …]`): the
//! AMX B-tile layout and one `zmm` of the AVX-512 kernels. k is padded with zeros to a whole
//! tile step (32 bf16, 64 int8). The activations are converted into a row-major buffer of
//! the padded k, rows padded to a multiple of 32 with zeros: AMX A tiles are read from it in
//! place (16 rows × 64 bytes), the AVX-512 kernels broadcast 4 bytes of a row at a time.
//!
//! AMX: each task configures the tiles (palette 1, eight 16×64-byte tiles: four 16×16 f32
//! accumulators for a 32×32 block of y, two A and two B tiles), runs full-k 32×32 blocks
//! (4 tile products per k step), stores each block through a 4 KiB buffer into the fused
//! epilogue, and releases the tiles. Linux hands out AMX tile state only after the process
//! asks for it (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`), done once by
//! [`amx_available`]. Stable Rust has no AMX intrinsics: the tile instructions are inline
//! assembly (LLVM's assembler knows their mnemonics).

use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
use super::simd;
use crate::model::Activation;

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Columns per panel.
pub const NR: usize = 16;
/// Rows per AMX block (two 16-row A tiles).
const AMX_MR: usize = 32;
/// Rows per AVX-512 microkernel (12 rows × 2 panels = 24 `zmm` accumulators).
const ZMM_MR: usize = 12;
/// Rows per task block (a multiple of 32 and of 12).
const MC: usize = 192;

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
}

impl Engine {
    /// The instruction that does the products.
    pub fn instruction(self, kind: Kind) -> &'static str {
        match (self, kind) {
            (Engine::Amx, Kind::Bf16) => "AMX tdpbf16ps",
            (Engine::Amx, Kind::Int8) => "AMX tdpbssd",
            (Engine::Avx512, Kind::Bf16) => "AVX512_BF16 vdpbf16ps",
            (Engine::Avx512, Kind::Int8) => "AVX512_VNNI vpdpbusd",
        }
    }

    /// Whether this machine runs this engine for `kind`.
    pub fn available(self, kind: Kind) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            let base = std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512vl")
                && std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma");
            base && match (self, kind) {
                (Engine::Amx, k) => amx_available(k),
                (Engine::Avx512, Kind::Bf16) => std::arch::is_x86_feature_detected!("avx512bf16"),
                (Engine::Avx512, Kind::Int8) => std::arch::is_x86_feature_detected!("avx512vnni"),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (self, kind);
            false
        }
    }
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
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub struct PackedLowp {
    pub k: usize,
    pub n: usize,
    kind: Kind,
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
    /// Converts and packs a PyTorch-layout weight `w[n, k]` (`[out, in]`) and its bias.
    pub fn from_out_in(w: &[f32], bias: Option<&[f32]>, n: usize, k: usize, kind: Kind) -> PackedLowp {
        assert!(w.len() >= n * k, "pack: weight has {} values, needs {}", w.len(), n * k);
        let np = n.div_ceil(NR).next_multiple_of(2);
        let kpad = k.div_ceil(kind.kstep()).max(1) * kind.kstep();
        let pg = kind.per_group();
        let groups = kpad / pg;
        let mut scale = vec![1f32; np * NR];
        if kind == Kind::Int8 {
            scale[..n].par_iter_mut().enumerate().for_each(|(o, s)| {
                let mx = w[o * k..(o + 1) * k].iter().fold(0f32, |m, v| m.max(v.abs()));
                *s = if mx > 0.0 { mx / 127.0 } else { 1.0 };
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
                for (i, &v) in row.iter().enumerate() {
                    let l = &mut pan[i / pg].0;
                    let at = 4 * c + (i % pg) * (4 / pg);
                    match kind {
                        Kind::Bf16 => l[at..at + 2].copy_from_slice(&half::bf16::from_f32(v).to_bits().to_le_bytes()),
                        Kind::Int8 => {
                            let q = quantise(v, 1.0 / scale[o]);
                            *csum += q as i32;
                            l[at] = q as u8;
                        }
                    }
                }
            }
        });
        let mut b = vec![0f32; np * NR];
        if let Some(bias) = bias {
            b[..n].copy_from_slice(&bias[..n]);
        }
        PackedLowp { k, n, kind, kpad, groups, np, lines, scale, colsum, bias: b }
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

#[inline]
fn quantise(v: f32, inv_scale: f32) -> i8 {
    (v * inv_scale).round().clamp(-127.0, 127.0) as i8
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
    /// The converted row `r`, for tests: bf16 values or i8 values (u8 − 128 for VNNI), as f32.
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

/// Converts `x[m, k]` for `w`'s kernels: bf16 (round to nearest even), or int8 with a
/// symmetric scale per row (`unsigned`: stored as q + 128, for `vpdpbusd`).
pub fn convert(x: &[f32], m: usize, w: &PackedLowp, unsigned: bool) -> Converted {
    let (k, kind) = (w.k, w.kind);
    let esize = if kind == Kind::Bf16 { 2 } else { 1 };
    let stride = w.kpad * esize;
    let rows = m.div_ceil(AMX_MR) * AMX_MR;
    let mut data = vec![Line64::default(); rows * stride / 64];
    let mut scale = vec![1f32; rows];
    // SAFETY: Line64 is 64 plain bytes with no padding; the byte view covers exactly `data`.
    let bytes = unsafe { std::slice::from_raw_parts_mut(data.as_mut_ptr() as *mut u8, data.len() * 64) };
    // the AVX-512 conversions (bf16: AVX512_BF16; int8: AVX512F/BW)
    let avx512 = match kind {
        Kind::Bf16 => Engine::Avx512.available(Kind::Bf16),
        Kind::Int8 => Engine::Avx512.available(Kind::Int8) || Engine::Amx.available(Kind::Int8),
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
                if avx512 {
                    // SAFETY: AVX512F+BF16 checked just above; d holds ≥ 2k bytes.
                    unsafe { to_bf16_avx512(xr, d) };
                    return;
                }
                let _ = avx512;
                for (i, &v) in xr.iter().enumerate() {
                    d[2 * i..2 * i + 2].copy_from_slice(&half::bf16::from_f32(v).to_bits().to_le_bytes());
                }
            }
            Kind::Int8 => {
                #[cfg(target_arch = "x86_64")]
                if avx512 {
                    // SAFETY: AVX512F+BW checked just above; d holds ≥ k bytes.
                    *s = unsafe { quantise_avx512(xr, d, unsigned) };
                    if unsigned {
                        d[k..].fill(128);
                    }
                    return;
                }
                let mx = xr.iter().fold(0f32, |m, v| m.max(v.abs()));
                *s = if mx > 0.0 { mx / 127.0 } else { 1.0 };
                let inv = 1.0 / *s;
                let off = if unsigned { 128u8 } else { 0 };
                for (o, &v) in d.iter_mut().zip(xr) {
                    *o = (quantise(v, inv) as u8).wrapping_add(off);
                }
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
        *o.add(j) = (quantise(v, inv) as u8).wrapping_add(if unsigned { 128 } else { 0 });
    }
    s
}

#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: only used to write disjoint tiles of `y` from different tasks while `y` is
// exclusively borrowed by the call that made it (see `matmul`).
unsafe impl Send for SendPtr {}
// SAFETY: as above.
unsafe impl Sync for SendPtr {}
impl SendPtr {
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// `y[m, n] = act(x·W + b)`, or `y += x·W + b` when `accumulate`, on `engine` (which must be
/// [`available`](Engine::available) for `w`'s kind).
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
    let unsigned = engine == Engine::Avx512 && w.kind == Kind::Int8;
    let a = convert(x, m, w, unsigned);
    let threads = rayon::current_num_threads();
    let pairs = w.np / 2;
    let par = threads > 1 && m * n * k >= 1 << 20;
    let group = if engine == Engine::Amx { AMX_MR } else { ZMM_MR };
    let mut mblocks = m.div_ceil(MC);
    if par {
        mblocks = mblocks.next_multiple_of(threads).min(m.div_ceil(group));
    }
    let mc = m.div_ceil(mblocks).next_multiple_of(group);
    let mblocks = m.div_ceil(mc);
    let nchunks = if par { (4 * threads).div_ceil(mblocks).clamp(1, pairs) } else { 1 };
    let ppc = pairs.div_ceil(nchunks);
    let nchunks = pairs.div_ceil(ppc);
    let yp = SendPtr(y.as_mut_ptr());
    let ep = Epilogue { act, accumulate, sub128: unsigned };
    let task = |t: usize| {
        let (mi, ni) = (t / nchunks, t % nchunks);
        let (r0, r1) = (mi * mc, ((mi + 1) * mc).min(m));
        let (q0, q1) = (ni * ppc, ((ni + 1) * ppc).min(pairs));
        // SAFETY: tasks own disjoint tiles (rows r0..r1 × columns 32·q0..32·q1) of y (m·n
        // values, asserted); `a` holds m rounded up to 32 rows of kpad values (`convert`),
        // the panels np·groups lines; the engine's CPU features were asserted above.
        unsafe {
            match engine {
                Engine::Amx => amx_task(yp.get(), &a, m, n, w, r0, r1, q0, q1, ep),
                Engine::Avx512 => zmm_task(yp.get(), &a, m, n, w, r0, r1, q0, q1, ep),
            }
        }
    };
    if par {
        (0..mblocks * nchunks).into_par_iter().for_each(task);
    } else {
        (0..mblocks * nchunks).for_each(task);
    }
}

#[derive(Clone, Copy)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
struct Epilogue {
    act: Option<Activation>,
    accumulate: bool,
    /// int8 through `vpdpbusd`: subtract 128·Σq_w from each column
    sub128: bool,
}

/// Finishes 16 columns of one row: `v` is the raw sum (i32 bits for int8), written to `dst`
/// (`cols` ≤ 16 of them) as `s_x·s_w·v + b`, activated, or added to what is there.
///
/// # Safety
/// AVX512F+AVX2+FMA; `dst` addresses `cols` values; `sw`, `cs`, `bias` 16 values each.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn finish16(
    v: __m512i,
    kind: Kind,
    dst: *mut f32,
    cols: usize,
    sx: f32,
    sw: *const f32,
    cs: *const i32,
    bias: *const f32,
    ep: Epilogue,
) {
    let mask: __mmask16 = if cols >= 16 { 0xffff } else { (1u16 << cols) - 1 };
    let mut f = match kind {
        Kind::Bf16 => _mm512_castsi512_ps(v),
        Kind::Int8 => {
            let v =
                if ep.sub128 { _mm512_sub_epi32(v, _mm512_slli_epi32::<7>(_mm512_loadu_si512(cs as _))) } else { v };
            _mm512_mul_ps(_mm512_cvtepi32_ps(v), _mm512_mul_ps(_mm512_set1_ps(sx), _mm512_loadu_ps(sw)))
        }
    };
    if ep.accumulate {
        f = _mm512_add_ps(f, _mm512_maskz_loadu_ps(mask, dst));
    }
    f = _mm512_add_ps(f, _mm512_loadu_ps(bias));
    if ep.act.is_some() {
        let lo = simd::act256(_mm512_castps512_ps256(f), ep.act);
        let hi = simd::act256(_mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(f))), ep.act);
        f = _mm512_castpd_ps(_mm512_insertf64x4::<1>(
            _mm512_castpd256_pd512(_mm256_castps_pd(lo)),
            _mm256_castps_pd(hi),
        ));
    }
    _mm512_mask_storeu_ps(dst, mask, f);
}

/// The epilogue of a `rows×32` block held in `buf` (row stride 32 values) for rows
/// `r..r+rows` and panel pair `q` of y.
///
/// # Safety
/// AVX512F+AVX2+FMA; rows `r..r+rows` (< m) and pair q's columns of y (`m×n`) are this task's.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn finish_block(
    buf: *const i32,
    rows: usize,
    y: *mut f32,
    n: usize,
    a: &Converted,
    w: &PackedLowp,
    r: usize,
    q: usize,
    ep: Epilogue,
) {
    for i in 0..rows {
        for h in 0..2 {
            let c0 = (2 * q + h) * NR;
            if c0 >= n {
                continue;
            }
            let v = _mm512_loadu_si512(buf.add(i * 32 + 16 * h) as _);
            finish16(
                v,
                w.kind,
                y.add((r + i) * n + c0),
                n - c0,
                *a.scale.get_unchecked(r + i),
                w.scale.as_ptr().add(c0),
                w.colsum.as_ptr().add(c0),
                w.bias.as_ptr().add(c0),
                ep,
            );
        }
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

/// One AMX task: rows `r0..r1`, panel pairs `q0..q1`, all of k.
///
/// # Safety
/// AMX with `w`'s kind granted ([`amx_available`]) and AVX512F; as [`finish_block`] for y;
/// `a` from [`convert`] for `w` (rows padded to 32, so 32-row blocks past `r1` read zeros).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn amx_task(
    y: *mut f32,
    a: &Converted,
    m: usize,
    n: usize,
    w: &PackedLowp,
    r0: usize,
    r1: usize,
    q0: usize,
    q1: usize,
    ep: Epilogue,
) {
    let _ = m;
    let mut buf = [Line64::default(); 64]; // 32 rows × 32 i32/f32
    let bufp = buf.as_mut_ptr() as *mut u8;
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
                    Kind::Bf16 => std::arch::asm!(
                        "tileloadd tmm4, [{a0} + {lda}*1]",
                        "tileloadd tmm6, [{b0} + {s64}*1]",
                        "tdpbf16ps tmm0, tmm4, tmm6",
                        "tileloadd tmm7, [{b1} + {s64}*1]",
                        "tdpbf16ps tmm1, tmm4, tmm7",
                        "tileloadd tmm5, [{a1} + {lda}*1]",
                        "tdpbf16ps tmm2, tmm5, tmm6",
                        "tdpbf16ps tmm3, tmm5, tmm7",
                        a0 = in(reg) pa0, a1 = in(reg) pa1, b0 = in(reg) pb0, b1 = in(reg) pb1,
                        lda = in(reg) lda, s64 = in(reg) 64usize,
                        options(nostack, readonly),
                    ),
                    Kind::Int8 => std::arch::asm!(
                        "tileloadd tmm4, [{a0} + {lda}*1]",
                        "tileloadd tmm6, [{b0} + {s64}*1]",
                        "tdpbssd tmm0, tmm4, tmm6",
                        "tileloadd tmm7, [{b1} + {s64}*1]",
                        "tdpbssd tmm1, tmm4, tmm7",
                        "tileloadd tmm5, [{a1} + {lda}*1]",
                        "tdpbssd tmm2, tmm5, tmm6",
                        "tdpbssd tmm3, tmm5, tmm7",
                        a0 = in(reg) pa0, a1 = in(reg) pa1, b0 = in(reg) pb0, b1 = in(reg) pb1,
                        lda = in(reg) lda, s64 = in(reg) 64usize,
                        options(nostack, readonly),
                    ),
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
            let rows = AMX_MR.min(r1 - r);
            finish_block(bufp as *const i32, rows, y, n, a, w, r, q, ep);
            r += AMX_MR;
        }
    }
    // SAFETY: returns the tile registers to their initial state (no operands).
    std::arch::asm!("tilerelease", options(nostack, nomem));
}

#[cfg(not(target_arch = "x86_64"))]
#[allow(clippy::too_many_arguments)]
unsafe fn amx_task(
    _: *mut f32,
    _: &Converted,
    _: usize,
    _: usize,
    _: &PackedLowp,
    _: usize,
    _: usize,
    _: usize,
    _: usize,
    _: Epilogue,
) {
    unreachable!("AMX is x86-64 only")
}

/// One AVX-512 task (`vpdpbusd` or `vdpbf16ps`): rows `r0..r1`, panel pairs `q0..q1`.
///
/// # Safety
/// As [`amx_task`], with AVX512_VNNI (int8) or AVX512_BF16 (bf16) instead of AMX.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
unsafe fn zmm_task(
    y: *mut f32,
    a: &Converted,
    m: usize,
    n: usize,
    w: &PackedLowp,
    r0: usize,
    r1: usize,
    q0: usize,
    q1: usize,
    ep: Epilogue,
) {
    let _ = m;
    match w.kind {
        Kind::Bf16 => zmm_task_bf16(y, a, n, w, r0, r1, q0, q1, ep),
        Kind::Int8 => zmm_task_vnni(y, a, n, w, r0, r1, q0, q1, ep),
    }
}

#[cfg(not(target_arch = "x86_64"))]
#[allow(clippy::too_many_arguments)]
unsafe fn zmm_task(
    _: *mut f32,
    _: &Converted,
    _: usize,
    _: usize,
    _: &PackedLowp,
    _: usize,
    _: usize,
    _: usize,
    _: usize,
    _: Epilogue,
) {
    unreachable!("AVX-512 is x86-64 only")
}

macro_rules! zmm_task_impl {
    ($name:ident, $features:literal, $dp:expr) => {
        /// # Safety
        /// See [`zmm_task`].
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $features)]
        #[allow(clippy::too_many_arguments)]
        unsafe fn $name(
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
            let mut buf = [Line64::default(); ZMM_MR * 2];
            let bufp = buf.as_mut_ptr() as *mut __m512i;
            let lines = w.lines.as_ptr() as *const __m512i;
            let groups = w.groups;
            for q in q0..q1 {
                let (b0, b1) = (lines.add(2 * q * groups), lines.add((2 * q + 1) * groups));
                let mut r = r0;
                while r < r1 {
                    let mr = ZMM_MR.min(r1 - r);
                    let ar: [*const i32; ZMM_MR] =
                        std::array::from_fn(|i| a.ptr().add((r + i.min(mr - 1)) * a.stride) as *const i32);
                    let mut acc = [_mm512_setzero_si512(); 2 * ZMM_MR];
                    for g in 0..groups {
                        let (v0, v1) = (_mm512_load_si512(b0.add(g) as _), _mm512_load_si512(b1.add(g) as _));
                        for i in 0..ZMM_MR {
                            let av = _mm512_set1_epi32(ar[i].add(g).read_unaligned());
                            acc[2 * i] = $dp(acc[2 * i], av, v0);
                            acc[2 * i + 1] = $dp(acc[2 * i + 1], av, v1);
                        }
                    }
                    for (i, v) in acc.iter().enumerate() {
                        _mm512_storeu_si512(bufp.add(i) as _, *v);
                    }
                    finish_block(bufp as *const i32, mr, y, n, a, w, r, q, ep);
                    r += ZMM_MR;
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

zmm_task_impl!(zmm_task_bf16, "avx512f,avx512bw,avx512vl,avx512bf16,avx2,fma", dp_bf16);
zmm_task_impl!(zmm_task_vnni, "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma", dp_u8s8);

#[cfg(test)]
mod tests {
    use super::*;

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
        for engine in [Engine::Amx, Engine::Avx512] {
            for kind in [Kind::Bf16, Kind::Int8] {
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
                    let p = PackedLowp::from_out_in(&w, Some(&bias), n, k, kind);
                    let unsigned = engine == Engine::Avx512 && kind == Kind::Int8;
                    let a = convert(&x, m, &p, unsigned);
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
}
