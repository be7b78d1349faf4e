//! How the CPU engine cuts a batch before it runs a tower's program: whole, or in sub-batches
//! of [`SUB_BATCH`] items (in parallel on the thread pool, each op inside still splitting over
//! whichever threads are free; one after another on one thread). The choice is made here,
//! once per call, with its reason; the embeddings are the same bits either way (every op is
//! per row or per sequence, and no kernel's arithmetic depends on how many rows it is given:
//! `tests/cpu_precision.rs` compares them at every level and precision).
//!
//! Measured (full-size ViT-B/32, batch 32, 12-token texts, `cargo xtask bench --cpu-only
//! --cpu-sub 0,8`: both in the same run; the tables with their machines are in
//! `docs/kernel-archetypes.md`), sub-batches of 8 against whole batches:
//! - on two threads every configuration but f32 texts gains (images 0 to +32 %, bf16 and
//!   int8 texts +16 to +51 %): two sub-batches at once keep both threads busy through the
//!   ends of ops, where the threads of one big product wait for each other;
//! - f32 texts lose (−19 to −33 %): eight 12-token texts give the products only 96 rows;
//! - on one thread only int8 and bf16 images gain (+5 to +20 %): their products do the
//!   arithmetic two to four times faster than f32's while moving as many activation bytes,
//!   and the 768-wide activations of eight images (8·50·768·4 B = 1.2 MB) stay in a core's L2
//!   cache where those of 32 (4.9 MB) do not; f32 images (−5 %) and texts (−18 to −25 %)
//!   lose rows per weight pass.

use super::CpuPrecision;
use crate::model::Tower;

/// Items per sub-batch where the batch is cut.
pub const SUB_BATCH: usize = 8;

/// Why a batch is cut as it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// `CLIP_WGPU_CPU_SUB=N` (0: never cut).
    Env,
    /// Several threads: sub-batches at once keep them busy through the ends of ops.
    Parallel,
    /// f32 texts: a sub-batch of short texts gives the products too few rows.
    F32Texts,
    /// bf16 or int8 images on one thread: a sub-batch's activations stay in L2.
    ReducedImagesOneThread,
    /// One thread, f32 images or texts: more rows per weight pass.
    OneThread,
    /// The batch is no larger than a sub-batch.
    Small,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Reason::Env => "set by CLIP_WGPU_CPU_SUB",
            Reason::Parallel => "several threads: sub-batches at once keep them busy",
            Reason::F32Texts => "f32 texts: a sub-batch of short texts has too few rows",
            Reason::ReducedImagesOneThread => "reduced-precision images on one thread: activations stay in L2",
            Reason::OneThread => "one thread: more rows per weight pass",
            Reason::Small => "no larger than a sub-batch",
        })
    }
}

/// How one batch runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Split {
    /// Items per sub-batch; 0 for the whole batch at once.
    pub size: usize,
    /// Sub-batches run at once on the thread pool (more than one thread), else one by one.
    pub parallel: bool,
    pub reason: Reason,
}

impl Split {
    /// The split of a batch of `n` items of `tower` at `precision` on `threads` threads, or
    /// as `CLIP_WGPU_CPU_SUB` says where it is set (items per sub-batch; 0: whole batches).
    pub fn choose(tower: Tower, precision: CpuPrecision, n: usize, threads: usize) -> Split {
        Self::choose_with(env_size(), tower, precision, n, threads)
    }

    fn choose_with(env: Option<usize>, tower: Tower, precision: CpuPrecision, n: usize, threads: usize) -> Split {
        let parallel = threads > 1;
        let reduced = precision != CpuPrecision::F32;
        let (size, reason) = match (env, tower) {
            (Some(s), _) => (s, Reason::Env),
            (None, Tower::Text) if !reduced => (0, Reason::F32Texts),
            (None, _) if parallel => (SUB_BATCH, Reason::Parallel),
            (None, Tower::Vision) if reduced => (SUB_BATCH, Reason::ReducedImagesOneThread),
            (None, _) => (0, Reason::OneThread),
        };
        match size {
            0 => Split { size: 0, parallel, reason },
            s if n <= s => {
                Split { size: 0, parallel, reason: if reason == Reason::Env { reason } else { Reason::Small } }
            }
            s => Split { size: s, parallel, reason },
        }
    }

    /// In words, for the benchmark records.
    pub fn describe(&self) -> String {
        match self.size {
            0 => format!("whole batches ({})", self.reason),
            s => format!("sub-batches of {s}{} ({})", if self.parallel { ", in parallel" } else { "" }, self.reason),
        }
    }
}

fn env_size() -> Option<usize> {
    static SIZE: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();
    *SIZE.get_or_init(|| std::env::var("CLIP_WGPU_CPU_SUB").ok().and_then(|v| v.trim().parse().ok()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use CpuPrecision::*;
    use Tower::*;

    #[test]
    fn the_measured_rules_and_the_setting_wins() {
        let c = |tower, p, n, threads| Split::choose_with(None, tower, p, n, threads);
        assert_eq!(c(Vision, Int8, 32, 2), Split { size: SUB_BATCH, parallel: true, reason: Reason::Parallel });
        assert_eq!(c(Text, Bf16, 32, 2), Split { size: SUB_BATCH, parallel: true, reason: Reason::Parallel });
        assert_eq!(c(Vision, F32, 32, 2).size, SUB_BATCH);
        assert_eq!((c(Text, F32, 32, 2).size, c(Text, F32, 32, 2).reason), (0, Reason::F32Texts));
        let one = c(Vision, Int8, 32, 1);
        assert_eq!((one.size, one.parallel, one.reason), (SUB_BATCH, false, Reason::ReducedImagesOneThread));
        assert_eq!((c(Text, Int8, 32, 1).size, c(Text, Int8, 32, 1).reason), (0, Reason::OneThread));
        assert_eq!(c(Vision, F32, 32, 1).size, 0);
        assert_eq!(c(Vision, Int8, SUB_BATCH, 2).reason, Reason::Small);
        assert_eq!(Split::choose_with(Some(4), Text, F32, 32, 2).size, 4);
        let off = Split::choose_with(Some(0), Vision, Int8, 32, 2);
        assert_eq!((off.size, off.reason), (0, Reason::Env));
        assert!(c(Vision, Int8, 32, 2).describe().starts_with("sub-batches of 8, in parallel"));
    }
}
