//! `bench --cpu-as avx2`: the whole benchmark (clip-wgpu's workers and the baselines' Python
//! processes alike) run as on an AVX2-only x86-64 CPU, by CPUID faulting (`xtask/cpuid_mask.c`,
//! built here with the system C compiler and loaded with LD_PRELOAD). The bench re-executes
//! itself under the mask, so that everything it records (the CPU's features, the kernels
//! chosen) is what the masked processes see.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// Set in the re-executed bench: the mask it runs under.
const MASKED: &str = "CLIP_WGPU_CPUID_MASKED";

/// The instruction sets a run can be limited to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum CpuAs {
    /// x86-64-v3: AVX2, FMA, F16C; no AVX-512 of any kind, no AVX-VNNI, no AMX (an AMD EPYC
    /// of Zen 1–3, an Intel core before Ice Lake without AVX-512).
    Avx2,
}

impl CpuAs {
    pub fn name(self) -> &'static str {
        match self {
            CpuAs::Avx2 => "avx2",
        }
    }

    /// What the caption says.
    pub fn describe(self) -> &'static str {
        match self {
            CpuAs::Avx2 => {
                "every process ran as on an AVX2-only CPU (`--cpu-as avx2`: CPUID faulting hid AVX-512, \
                 AVX-VNNI, AVX512_BF16/FP16 and AMX from clip-wgpu and the baselines alike): the kernels \
                 such a CPU runs, on this machine's cores"
            }
        }
    }
}

/// The mask this process runs under, if it is the re-executed bench.
pub fn active() -> Option<CpuAs> {
    use clap::ValueEnum;
    let v = std::env::var(MASKED).ok()?;
    CpuAs::value_variants().iter().copied().find(|l| l.name() == v)
}

/// Runs this bench again under the mask and returns its exit code; errors when the machine
/// cannot mask CPUID.
pub fn reexec(level: CpuAs, root: &Path) -> Result<i32> {
    if !cfg!(all(target_os = "linux", target_arch = "x86_64")) {
        bail!("--cpu-as needs Linux on x86-64 (CPUID faulting)");
    }
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").context("reading /proc/cpuinfo")?;
    if !cpuinfo.lines().any(|l| l.starts_with("flags") && l.split_whitespace().any(|f| f == "cpuid_fault")) {
        bail!("--cpu-as {}: this CPU (or its hypervisor) has no CPUID faulting (no cpuid_fault in /proc/cpuinfo), so other engines' CPU detection cannot be masked", level.name());
    }
    let lib = build(root)?;
    let preload = match std::env::var("LD_PRELOAD") {
        Ok(p) if !p.is_empty() => format!("{} {p}", lib.display()),
        _ => lib.display().to_string(),
    };
    let exe = std::env::current_exe().context("the bench's own executable")?;
    eprintln!("xtask: running the bench again as on an AVX2-only CPU (LD_PRELOAD={})", lib.display());
    let status = Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env("LD_PRELOAD", preload)
        // glibc picked its string functions before the mask: the same choice an AVX2 CPU gets
        .env(
            "GLIBC_TUNABLES",
            "glibc.cpu.hwcaps=-AVX512F,-AVX512CD,-AVX512BW,-AVX512DQ,-AVX512VL,-AVX512ER,-AVX512PF,-AVX_VNNI",
        )
        .env(MASKED, level.name())
        .status()
        .context("re-running the bench under the CPUID mask")?;
    Ok(status.code().unwrap_or(1))
}

/// In the masked process: the mask took (the CPU no longer reports AVX-512F).
pub fn check(level: CpuAs) -> Result<()> {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        bail!("--cpu-as {}: the CPU still reports AVX-512F under the CPUID mask", level.name());
    }
    let _ = level;
    Ok(())
}

/// `target/cpuid_mask/libcpuid_mask.so`, built from `xtask/cpuid_mask.c` when older.
fn build(root: &Path) -> Result<PathBuf> {
    let src = root.join("xtask/cpuid_mask.c");
    let dir = root.join("target/cpuid_mask");
    let lib = dir.join("libcpuid_mask.so");
    let source = std::fs::metadata(&src).and_then(|m| m.modified()).with_context(|| src.display().to_string())?;
    if lib.metadata().and_then(|m| m.modified()).map_or(true, |b| b < source) {
        std::fs::create_dir_all(&dir)?;
        let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
        let out =
            Command::new(&cc).args(["-O2", "-shared", "-fPIC", "-o"]).arg(&lib).arg(&src).output().with_context(
                || format!("running the C compiler `{cc}` (set CC to use another) for {}", src.display()),
            )?;
        if !out.status.success() {
            bail!("building {}: {}", src.display(), String::from_utf8_lossy(&out.stderr));
        }
    }
    Ok(lib)
}
