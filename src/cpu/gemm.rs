//! Matrix products on the CPU.
//!
//! Backed by the `gemm` crate (packed panels, runtime AVX-512/AVX2/NEON dispatch, rayon
//! threads). Weights are kept transposed, `[in, out]`, for the CPU: with `[out, in]` the
//! small-M products of batch 1 ran up to 6× slower (docs/rejected-optimizations.md).

/// `y[m, n] (+)= x[m, k] · w[k, n]` (`w` row-major `[in, out]`); `accumulate` adds into `y`.
pub fn matmul(y: &mut [f32], x: &[f32], w: &[f32], m: usize, k: usize, n: usize, accumulate: bool) {
    gemm_strided(y, x, w, m, k, n, accumulate, (n as isize, 1));
}

/// `y[m, n] (+)= x[m, k] · w[n, k]ᵀ` with `w` stored `[out, in]`; `accumulate` adds into `y`.
pub fn matmul_wt(y: &mut [f32], x: &[f32], w: &[f32], m: usize, k: usize, n: usize, accumulate: bool) {
    gemm_strided(y, x, w, m, k, n, accumulate, (1, k as isize));
}

/// `y = x · R` where `R` (k×n) is `w` read with (row stride, column stride) `rhs`.
#[allow(clippy::too_many_arguments)]
fn gemm_strided(
    y: &mut [f32],
    x: &[f32],
    w: &[f32],
    m: usize,
    k: usize,
    n: usize,
    accumulate: bool,
    (rhs_rs, rhs_cs): (isize, isize),
) {
    assert!(x.len() >= m * k, "matmul: x has {} values, needs {}", x.len(), m * k);
    assert!(w.len() >= n * k, "matmul: w has {} values, needs {}", w.len(), n * k);
    assert!(y.len() >= m * n, "matmul: y has {} values, needs {}", y.len(), m * n);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            y[..m * n].fill(0.0);
        }
        return;
    }
    let threads = rayon::current_num_threads();
    let par = if m * n * k >= 64 * 64 * 64 && threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the asserts above guarantee that every element addressed through the
    // pointers and strides below lies inside `y`, `x` and `w`: y is m×n with row stride n,
    // x is m×k with row stride k, and the right operand (k×n) is w (k·n values) read either
    // row-major (strides n, 1) or as the transpose of an n×k matrix (strides 1, k), the only
    // two stride pairs the callers pass. `y` is borrowed mutably and aliases neither input.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            y.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            x.as_ptr(),
            1,
            k as isize,
            w.as_ptr(),
            rhs_cs,
            rhs_rs,
            1.0,
            1.0,
            false,
            false,
            false,
            par,
        );
    }
}

/// A strided row-major matrix view: element `(r, c)` is `data[r * row_stride + c]`.
#[derive(Clone, Copy)]
pub struct Strided<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
}

impl Strided<'_> {
    fn check(&self, what: &str) {
        if self.rows > 0 && self.cols > 0 {
            let need = (self.rows - 1) * self.row_stride + self.cols;
            assert!(self.data.len() >= need, "{what}: view needs {need} values, has {}", self.data.len());
            assert!(self.cols <= self.row_stride || self.rows == 1, "{what}: rows overlap");
        }
    }
}

/// Single-threaded `y[m, n] = a[m, k] · b[n, k]ᵀ` (if `b_transposed`) or `a · b[k, n]`, on
/// strided views; `y` is dense `m×n`. For the small per-head products of attention.
pub fn small_matmul(y: &mut [f32], a: Strided, b: Strided, b_transposed: bool) {
    let (m, n) = shape(a, b, b_transposed);
    assert!(y.len() >= m * n, "small_matmul: y too small");
    // SAFETY: y holds m·n values (asserted), dense (row stride n), and is borrowed mutably,
    // so it aliases neither input.
    unsafe { small_matmul_into(y.as_mut_ptr(), n, a, b, b_transposed) }
}

/// The product's `(m, n)`, after checking the views and their inner dimensions.
fn shape(a: Strided, b: Strided, b_transposed: bool) -> (usize, usize) {
    a.check("small_matmul a");
    b.check("small_matmul b");
    let n = if b_transposed { b.rows } else { b.cols };
    let kb = if b_transposed { b.cols } else { b.rows };
    assert_eq!(a.cols, kb, "small_matmul: inner dimensions differ");
    (a.rows, n)
}

/// [`small_matmul`] into rows of `y` `y_stride` values apart (the `m×n` product written at
/// `y[i·y_stride + j]`): attention writes each head's output straight into its columns of
/// the output rows.
///
/// # Safety
/// `y[i·y_stride + j]` for `i < m`, `j < n` must be valid for writes, not read or written by
/// anyone else during the call, and not overlap `a` or `b`; `y_stride ≥ n`.
pub unsafe fn small_matmul_into(y: *mut f32, y_stride: usize, a: Strided, b: Strided, b_transposed: bool) {
    let (m, n) = shape(a, b, b_transposed);
    let k = a.cols;
    debug_assert!(y_stride >= n || m <= 1);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        for i in 0..m {
            // SAFETY: row i's n values are the caller's (contract above).
            unsafe { std::ptr::write_bytes(y.add(i * y_stride), 0, n) };
        }
        return;
    }
    // (row stride, column stride) of the k×n right operand
    let (rhs_rs, rhs_cs) = if b_transposed { (1isize, b.row_stride as isize) } else { (b.row_stride as isize, 1) };
    // SAFETY: `check` (in `shape`) guarantees every addressed element of `a` and `b` is in
    // bounds: a is m×k with row stride a.row_stride; the right operand is k×n read from `b`
    // with the strides above. y's m×n elements at row stride y_stride are the caller's alone
    // (contract above). read_dst is false: y is written, not read.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            y,
            1,
            y_stride as isize,
            false,
            a.data.as_ptr(),
            1,
            a.row_stride as isize,
            b.data.as_ptr(),
            rhs_cs,
            rhs_rs,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(x: &[f32], w: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        let mut y = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut s = 0f64;
                for l in 0..k {
                    s += x[i * k + l] as f64 * w[j * k + l] as f64;
                }
                y[i * n + j] = s as f32;
            }
        }
        y
    }

    #[test]
    fn matches_naive_product_and_accumulates() {
        for &(m, k, n) in &[(1, 1, 1), (3, 5, 7), (50, 96, 130), (77, 64, 65), (130, 200, 70)] {
            let x: Vec<f32> = (0..m * k).map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0).collect();
            let w: Vec<f32> = (0..n * k).map(|i| ((i * 53 % 89) as f32 - 44.0) / 44.0).collect();
            let r = naive(&x, &w, m, k, n);
            let mut y = vec![0f32; m * n];
            matmul_wt(&mut y, &x, &w, m, k, n, false);
            let err = y.iter().zip(&r).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(err < 1e-4 * k as f32, "{m}x{k}x{n}: max err {err}");
            let mut y2 = vec![1f32; m * n];
            matmul_wt(&mut y2, &x, &w, m, k, n, true);
            let err = y2.iter().zip(&r).map(|(a, b)| (a - 1.0 - b).abs()).fold(0f32, f32::max);
            assert!(err < 1e-4 * k as f32, "accumulate {m}x{k}x{n}: max err {err}");
            // the same product with w stored transposed, [k, n]
            let wt: Vec<f32> = (0..k * n).map(|i| w[(i % n) * k + i / n]).collect();
            let mut y3 = vec![0f32; m * n];
            matmul(&mut y3, &x, &wt, m, k, n, false);
            let err = y3.iter().zip(&r).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(err < 1e-4 * k as f32, "transposed {m}x{k}x{n}: max err {err}");
        }
    }
}
