//! Matrix products on the CPU: `y = x·Wᵀ` with `W` stored `[out, in]`.
//!
//! Backed by the `gemm` crate (packed panels, runtime AVX-512/AVX2/NEON dispatch, rayon
//! threads), which measured faster here than a hand-written kernel would start out; see
//! docs/rejected-optimizations.md.

/// `y[m, n] (+)= x[m, k] · w[n, k]ᵀ`; `accumulate` adds into `y` instead of overwriting.
pub fn matmul_wt(y: &mut [f32], x: &[f32], w: &[f32], m: usize, k: usize, n: usize, accumulate: bool) {
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
    // x is m×k with row stride k, and wᵀ (k×n) is w (n×k) read with row stride 1 and
    // column stride k. `y` is borrowed mutably and does not alias `x` or `w`.
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
            k as isize,
            1,
            1.0,
            1.0,
            false,
            false,
            false,
            par,
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
        }
    }
}
