//! Which instruction set the CPU engine's kernels use: the best one detected at run time,
//! or one forced by `CLIP_WGPU_CPU_ISA=scalar|avx2|avxvnni|avx512|amx|neon|auto` (read once per process),
//! or one given to [`Prepared::with_isa`](super::Prepared::with_isa) (what tests use, since
//! an environment variable is process-wide).
//!
//! | level | f32 products | int8 / bf16 products | row ops (layernorm, softmax, GELU) |
//! |---|---|---|---|
//! | `scalar` | portable packed-panel kernel (plain Rust) | portable kernels | plain Rust |
//! | `avx2` | AVX2+FMA 6×16 packed-panel kernel | int8 `vpmaddubsw`+`vpmaddwd` (7-bit weights), bf16 AVX2 panels | AVX2+FMA |
//! | `avxvnni` | as `avx2` | int8 AVX-VNNI `vpdpbusd` (`ymm`), bf16 as `avx2` | AVX2+FMA |
//! | `avx512` | the `gemm` crate (its AVX-512 kernels) | AVX512_VNNI `vpdpbusd` / AVX512_BF16 `vdpbf16ps` where the CPU has them, else as `avxvnni` / `avx2` | AVX2+FMA |
//! | `amx` | as `avx512` | AMX tiles (`tdpbssd` / `tdpbf16ps`), else as `avx512` | AVX2+FMA |
//! | `neon` | the `gemm` crate (its NEON kernels) | portable kernels | plain Rust |
//!
//! Each level's kernels run only the instructions of that level, so forcing `avx2` on a
//! bigger CPU measures what an AVX2-only CPU (AMD Zen 1–3, Intel Haswell–Comet Lake) runs.
//!
//! A forced level this machine lacks is not an error: the engine prints one line on stderr
//! and uses the detected level instead (so does an unknown value).

use std::sync::OnceLock;

/// AVX-512 f32: the packed-panel kernels (true) or the `gemm` crate (false) by default.
const PACKED_F32_DEFAULT: bool = false;

/// An instruction-set level of the CPU kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Isa {
    /// Plain Rust (whatever the compiler vectorises for the build's baseline target).
    Scalar,
    /// x86-64 AVX2 + FMA (+ F16C not needed).
    Avx2,
    /// x86-64 AVX2 + FMA + AVX-VNNI (the VEX `vpdpbusd`): int8 products on `ymm` VNNI,
    /// everything else as `Avx2`.
    AvxVnni,
    /// x86-64 AVX-512F (with AVX2 + FMA): f32 products through the `gemm` crate's kernels.
    Avx512,
    /// aarch64 NEON: f32 products through the `gemm` crate's kernels.
    Neon,
    /// x86-64 AVX-512 plus AMX tiles (Linux, granted by the kernel): int8 and bf16 products
    /// on AMX, f32 as `Avx512`.
    Amx,
}

impl Isa {
    pub const ALL: [Isa; 6] = [Isa::Scalar, Isa::Avx2, Isa::AvxVnni, Isa::Avx512, Isa::Amx, Isa::Neon];

    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::AvxVnni => "avxvnni",
            Isa::Avx512 => "avx512",
            Isa::Neon => "neon",
            Isa::Amx => "amx",
        }
    }

    /// `Some(None)` for `auto`, `Some(Some(level))` for a level, `None` if unknown.
    pub fn parse(s: &str) -> Option<Option<Isa>> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" | "" => Some(None),
            "scalar" | "portable" | "generic" => Some(Some(Isa::Scalar)),
            "avx2" => Some(Some(Isa::Avx2)),
            "avxvnni" | "avx-vnni" | "avx_vnni" => Some(Some(Isa::AvxVnni)),
            "avx512" | "avx-512" => Some(Some(Isa::Avx512)),
            "neon" => Some(Some(Isa::Neon)),
            "amx" => Some(Some(Isa::Amx)),
            _ => None,
        }
    }

    /// Whether this machine (and build) can run this level.
    pub fn available(self) -> bool {
        match self {
            Isa::Scalar => true,
            Isa::Avx2 => has_avx2_fma(),
            Isa::AvxVnni => {
                #[cfg(target_arch = "x86_64")]
                {
                    has_avx2_fma() && std::arch::is_x86_feature_detected!("avxvnni")
                }
                #[cfg(not(target_arch = "x86_64"))]
                {
                    false
                }
            }
            Isa::Avx512 => {
                #[cfg(target_arch = "x86_64")]
                {
                    has_avx2_fma() && std::arch::is_x86_feature_detected!("avx512f")
                }
                #[cfg(not(target_arch = "x86_64"))]
                {
                    false
                }
            }
            Isa::Neon => cfg!(target_arch = "aarch64"),
            Isa::Amx => {
                use super::gemm_lowp::{Engine, Kind};
                Isa::Avx512.available() && (Engine::Amx.available(Kind::Int8) || Engine::Amx.available(Kind::Bf16))
            }
        }
    }

    /// The best level this machine runs.
    pub fn detect() -> Isa {
        static DETECTED: OnceLock<Isa> = OnceLock::new();
        *DETECTED.get_or_init(|| {
            [Isa::Amx, Isa::Avx512, Isa::AvxVnni, Isa::Avx2, Isa::Neon]
                .into_iter()
                .find(|i| i.available())
                .unwrap_or(Isa::Scalar)
        })
    }

    /// The level the engine uses unless told otherwise: `CLIP_WGPU_CPU_ISA` if set to an
    /// available level, else [`Isa::detect`]. Read once per process.
    pub fn from_env() -> Isa {
        static CHOSEN: OnceLock<Isa> = OnceLock::new();
        *CHOSEN.get_or_init(|| {
            let Ok(v) = std::env::var("CLIP_WGPU_CPU_ISA") else { return Isa::detect() };
            match Isa::parse(&v) {
                Some(None) => Isa::detect(),
                Some(Some(i)) if i.available() => i,
                Some(Some(i)) => {
                    eprintln!(
                        "clip-wgpu: CLIP_WGPU_CPU_ISA={} is not available on this machine; using {}",
                        i.name(),
                        Isa::detect().name()
                    );
                    Isa::detect()
                }
                None => {
                    eprintln!(
                        "clip-wgpu: unknown CLIP_WGPU_CPU_ISA={v:?} (scalar|avx2|avxvnni|avx512|amx|neon|auto); using {}",
                        Isa::detect().name()
                    );
                    Isa::detect()
                }
            }
        })
    }

    /// Whether the hand-written AVX2+FMA kernels may run at this level (on this machine).
    pub(crate) fn avx2_kernels(self) -> bool {
        matches!(self, Isa::Avx2 | Isa::AvxVnni | Isa::Avx512 | Isa::Amx) && has_avx2_fma()
    }

    /// Whether f32 products go to the `gemm` crate at this level (`avx512`, `amx`, `neon`)
    /// rather than the packed-panel kernels. `CLIP_WGPU_CPU_F32=gemm|packed` overrides it on
    /// AVX-512 machines (read once per process; for measuring one against the other).
    pub fn f32_gemm_crate(self) -> bool {
        static PACKED: OnceLock<Option<bool>> = OnceLock::new();
        let forced = *PACKED.get_or_init(|| match std::env::var("CLIP_WGPU_CPU_F32").as_deref() {
            Ok("packed") => Some(true),
            Ok("gemm") => Some(false),
            _ => None,
        });
        match self {
            Isa::Neon => true,
            Isa::Avx512 | Isa::Amx => !forced.unwrap_or(PACKED_F32_DEFAULT),
            _ => false,
        }
    }

    /// Whether the packed-panel AVX-512 f32 microkernel runs at this level (on this machine).
    pub(crate) fn avx512_kernels(self) -> bool {
        matches!(self, Isa::Avx512 | Isa::Amx) && Isa::Avx512.available()
    }

    /// The engine of the reduced-precision kernels at this level for `kind`: the best this
    /// machine has among the level's own (AMX at `amx`; AVX512_VNNI / AVX512_BF16 at
    /// `avx512` and `amx`; AVX-VNNI from `avxvnni` up; AVX2 from `avx2` up; portable at
    /// `scalar` and `neon`). `None`: no engine for `kind` here, bf16 runs on the packed
    /// panels ([`gemm_f32`](super::gemm_f32)).
    pub fn lowp_engine(self, kind: super::gemm_lowp::Kind) -> Option<super::gemm_lowp::Engine> {
        use super::gemm_lowp::Engine;
        let candidates: &[Engine] = match self {
            Isa::Amx => &[Engine::Amx, Engine::Avx512, Engine::AvxVnni, Engine::Avx2],
            Isa::Avx512 => &[Engine::Avx512, Engine::AvxVnni, Engine::Avx2],
            Isa::AvxVnni => &[Engine::AvxVnni, Engine::Avx2],
            Isa::Avx2 => &[Engine::Avx2],
            Isa::Scalar | Isa::Neon => &[Engine::Portable],
        };
        candidates.iter().copied().find(|e| e.available(kind))
    }
}

impl std::fmt::Display for Isa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

fn has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}
