//! How a packed product is split into tasks, shared by the f32/bf16 panels ([`gemm_f32`]) and
//! the reduced-precision kernels ([`gemm_lowp`]): rows in blocks of at most `mc` (a multiple
//! of the microkernel's row count), the blocks made a multiple of the thread count when the
//! product is big enough to share and has more than one block of rows, and products of few
//! rows split over column units (panels or panel pairs) too, about four tasks per thread: a
//! single block of rows (one image's 50, a text's, the pooled rows) is not cut, so that each
//! weight is read once. Each task owns a disjoint tile of `y`.
//!
//! [`gemm_f32`]: super::gemm_f32
//! [`gemm_lowp`]: super::gemm_lowp

use rayon::prelude::*;

/// Products below this many multiply-adds run on the calling thread.
const PAR_MIN_WORK: usize = 1 << 20;

/// A raw pointer to an output buffer that tasks may carry to other threads.
#[derive(Clone, Copy)]
pub(crate) struct SendPtr(pub(crate) *mut f32);
// SAFETY: the pointer is only used to write disjoint parts of the buffer from different
// tasks (the tiles of `for_each_tile`, attention's (sequence, head) columns), while the buffer
// is exclusively borrowed by the call that made it.
unsafe impl Send for SendPtr {}
// SAFETY: as above.
unsafe impl Sync for SendPtr {}
impl SendPtr {
    pub(crate) fn get(self) -> *mut f32 {
        self.0
    }
}

/// Runs `task(r0, r1, u0, u1)` over tiles covering rows `0..m` and column units `0..units`
/// (rows `r0..r1`, units `u0..u1`; `r0` a multiple of `group`), on rayon's threads when
/// `work` (m·n·k) is big enough, each tile exactly once.
pub(crate) fn for_each_tile(
    m: usize,
    units: usize,
    work: usize,
    group: usize,
    mc: usize,
    task: impl Fn(usize, usize, usize, usize) + Sync,
) {
    if m == 0 || units == 0 {
        return;
    }
    let threads = rayon::current_num_threads();
    let par = threads > 1 && work >= PAR_MIN_WORK;
    let mut mblocks = m.div_ceil(mc);
    if par && m > mc {
        // (one block of few rows is not cut: its tasks split the columns, so that each
        // weight is read once, not once per row block)
        mblocks = mblocks.next_multiple_of(threads).min(m.div_ceil(group));
    }
    let mc = m.div_ceil(mblocks).next_multiple_of(group);
    let mblocks = m.div_ceil(mc);
    let nchunks = if par { (4 * threads).div_ceil(mblocks).clamp(1, units) } else { 1 };
    let upc = units.div_ceil(nchunks);
    let nchunks = units.div_ceil(upc);
    let one = |t: usize| {
        let (mi, ni) = (t / nchunks, t % nchunks);
        task(mi * mc, ((mi + 1) * mc).min(m), ni * upc, ((ni + 1) * upc).min(units));
    };
    if par {
        (0..mblocks * nchunks).into_par_iter().for_each(one);
    } else {
        (0..mblocks * nchunks).for_each(one);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn tiles_cover_every_row_and_unit_once() {
        for &(m, units, work, group, mc) in
            &[(1, 1, 1, 6, 96), (7, 3, 1 << 22, 6, 96), (1600, 48, 1 << 30, 32, 192), (50, 1, 1 << 21, 12, 192)]
        {
            let seen = Mutex::new(vec![0u32; m * units]);
            for_each_tile(m, units, work, group, mc, |r0, r1, u0, u1| {
                assert!(r0 % group == 0 && r1 <= m && u1 <= units && r0 < r1 && u0 < u1);
                let mut s = seen.lock().unwrap();
                for r in r0..r1 {
                    for u in u0..u1 {
                        s[r * units + u] += 1;
                    }
                }
            });
            assert!(seen.into_inner().unwrap().iter().all(|&c| c == 1), "{m}x{units}");
        }
    }
}
