//! Row-wise and per-sequence operations of the CPU backend: layernorm, activations,
//! attention, embeddings, pooling, normalisation. Each mirrors one [`Op`](crate::model::Op).

use rayon::prelude::*;

use super::gemm::{self, small_matmul, Strided};
use super::simd;
use super::tiles::SendPtr;
use crate::model::{Activation, PoolAt, Seqs};

/// `out[r] = (x[r] - mean) / sqrt(var + eps) · gamma + beta` per row of width `w`
/// (plain Rust, f64 sums).
pub fn layer_norm(x: &[f32], out: &mut [f32], w: usize, gamma: &[f32], beta: &[f32], eps: f32) {
    layer_norm_isa(x, out, w, gamma, beta, eps, false)
}

/// [`layer_norm`], with the AVX2+FMA row kernel when `avx2` (the caller checked the CPU:
/// [`Isa::avx2_kernels`](super::Isa)).
pub fn layer_norm_isa(x: &[f32], out: &mut [f32], w: usize, gamma: &[f32], beta: &[f32], eps: f32, avx2: bool) {
    out.par_chunks_mut(w * 8).zip(x.par_chunks(w * 8)).for_each(|(o, r)| {
        for (o, r) in o.chunks_mut(w).zip(r.chunks(w)) {
            simd::layer_norm_row(r, o, gamma, beta, eps, avx2);
        }
    });
}

/// In-place layernorm.
pub fn layer_norm_inplace(x: &mut [f32], w: usize, gamma: &[f32], beta: &[f32], eps: f32) {
    layer_norm_inplace_isa(x, w, gamma, beta, eps, false)
}

/// In-place [`layer_norm_isa`].
pub fn layer_norm_inplace_isa(x: &mut [f32], w: usize, gamma: &[f32], beta: &[f32], eps: f32, avx2: bool) {
    x.par_chunks_mut(w * 8).for_each(|rows| {
        let mut copy = vec![0f32; w];
        for r in rows.chunks_mut(w) {
            copy.copy_from_slice(r);
            simd::layer_norm_row(&copy, r, gamma, beta, eps, avx2);
        }
    });
}

pub use super::simd::{gelu, quick_gelu};

/// Adds the bias to every row and applies the activation (vectorised when `avx2`).
pub fn bias_act_isa(y: &mut [f32], n: usize, bias: Option<&[f32]>, act: Option<Activation>, avx2: bool) {
    if bias.is_none() && act.is_none() {
        return;
    }
    y.par_chunks_mut(n.max(1) * 16).for_each(|rows| {
        for r in rows.chunks_mut(n) {
            if let Some(b) = bias {
                for (v, &bb) in r.iter_mut().zip(b) {
                    *v += bb;
                }
            }
            simd::act_slice(r, act, avx2);
        }
    });
}

/// Adds the bias to every row and applies the activation.
pub fn bias_act(y: &mut [f32], n: usize, bias: Option<&[f32]>, act: Option<Activation>) {
    if bias.is_none() && act.is_none() {
        return;
    }
    y.par_chunks_mut(n.max(1) * 16).for_each(|rows| {
        for r in rows.chunks_mut(n) {
            if let Some(b) = bias {
                for (v, &bb) in r.iter_mut().zip(b) {
                    *v += bb;
                }
            }
            match act {
                Some(Activation::QuickGelu) => r.iter_mut().for_each(|v| *v = quick_gelu(*v)),
                Some(Activation::Gelu) => r.iter_mut().for_each(|v| *v = gelu(*v)),
                None => {}
            }
        }
    });
}

/// Adds `bias` to every row of `y` (the residual path's bias, added after the product).
pub fn add_bias(y: &mut [f32], n: usize, bias: &[f32]) {
    bias_act(y, n, Some(bias), None)
}

/// Multi-head attention inside each sequence. `qkv` rows are `[q | k | v]`, each `width`
/// wide and split into heads of `hd`; `out` rows are the heads' outputs side by side.
/// One job per (sequence, head): `S = Q·Kᵀ·scale`, masked row softmax, `O = P·V`.
pub fn attention(qkv: &[f32], out: &mut [f32], seqs: &Seqs, heads: usize, hd: usize, causal: bool) {
    attention_isa(qkv, out, seqs, heads, hd, causal, false)
}

/// [`attention`], with the AVX2+FMA softmax when `avx2`. Each job writes its head's output
/// straight into its columns of the output rows (no per-job output buffer, no copy after),
/// and each rayon task reuses one scores buffer for all its jobs.
pub fn attention_isa(qkv: &[f32], out: &mut [f32], seqs: &Seqs, heads: usize, hd: usize, causal: bool, avx2: bool) {
    let width = heads * hd;
    let scale = 1.0 / (hd as f32).sqrt();
    // the writes below rely on these: sequences in order, disjoint, inside `out`
    let ends = seqs.offsets.iter().zip(&seqs.lens).map(|(o, l)| o + l);
    assert!(
        ends.clone().zip(seqs.offsets.iter().skip(1)).all(|(end, next)| end <= *next)
            && ends.clone().next_back().is_none_or(|end| end * width <= out.len()),
        "attention: sequences overlap or lie outside the output"
    );
    let jobs: Vec<(usize, usize)> = (0..seqs.count()).flat_map(|s| (0..heads).map(move |h| (s, h))).collect();
    let dst = SendPtr(out.as_mut_ptr());
    jobs.par_iter().for_each_init(Vec::new, |p: &mut Vec<f32>, &(s, h)| {
        let (off, len) = (seqs.offsets[s], seqs.lens[s]);
        let view = |part: usize| Strided {
            data: &qkv[off * 3 * width + part * width + h * hd..],
            rows: len,
            cols: hd,
            row_stride: 3 * width,
        };
        p.clear();
        p.resize(len * len, 0.0);
        small_matmul(p, view(0), view(1), true);
        for (i, row) in p.chunks_mut(len).enumerate() {
            let end = if causal { i + 1 } else { len };
            simd::softmax_row(row, end, scale, avx2);
        }
        let probs = Strided { data: p, rows: len, cols: len, row_stride: len };
        // SAFETY: this job alone writes columns h·hd..(h+1)·hd of rows off..off+len of `out`
        // (jobs are distinct (sequence, head) pairs, sequences' rows are disjoint, and those
        // rows lie inside `out`: asserted above); `out` is borrowed mutably for the whole call
        // and overlaps neither `qkv` nor the job's scores buffer.
        unsafe { gemm::small_matmul_into(dst.get().add(off * width + h * hd), width, probs, view(2), false) };
    });
}

/// Gathers each sequence's pooled row.
pub fn pool(x: &[f32], out: &mut [f32], w: usize, seqs: &Seqs, at: PoolAt) {
    for s in 0..seqs.count() {
        let r = seqs.pooled_row(s, at);
        out[s * w..(s + 1) * w].copy_from_slice(&x[r * w..(r + 1) * w]);
    }
}

/// Keeps only each sequence's pooled row of `x` (rows `w` wide, laid out as `seqs` says):
/// row `s` becomes sequence `s`'s pooled row, and `x` is cut to one row per sequence.
pub fn pool_in_place(x: &mut Vec<f32>, w: usize, seqs: &Seqs, at: PoolAt) {
    for s in 0..seqs.count() {
        let r = seqs.pooled_row(s, at);
        // r ≥ offsets[s] ≥ s: row s is written after every row it reads, before any later
        // sequence's pooled row (≥ offsets[s + 1] > s) is read
        x.copy_within(r * w..(r + 1) * w, s * w);
    }
    x.truncate(seqs.count() * w);
}

/// Scales each row to unit L2 norm.
pub fn l2_normalize(x: &mut [f32], w: usize) {
    for r in x.chunks_mut(w) {
        let n = r.iter().map(|&v| v as f64 * v as f64).sum::<f64>().sqrt() as f32;
        if n > 0.0 {
            r.iter_mut().for_each(|v| *v /= n);
        }
    }
}

/// Flattens each image's patches (row-major over the grid, each `[3, P, P]`) into rows.
pub fn im2col(pixels: &[f32], n: usize, image: usize, patch: usize) -> Vec<f32> {
    let grid = image / patch;
    let pd = 3 * patch * patch;
    let mut cols = vec![0f32; n * grid * grid * pd];
    cols.par_chunks_mut(pd).enumerate().for_each(|(r, dst)| {
        let (s, p) = (r / (grid * grid), r % (grid * grid));
        let (gy, gx) = (p / grid, p % grid);
        let img = &pixels[s * 3 * image * image..(s + 1) * 3 * image * image];
        for c in 0..3 {
            for dy in 0..patch {
                let src = c * image * image + (gy * patch + dy) * image + gx * patch;
                let d = c * patch * patch + dy * patch;
                dst[d..d + patch].copy_from_slice(&img[src..src + patch]);
            }
        }
    });
    cols
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gelu_values() {
        // torch.nn.functional.gelu and QuickGELU at a few points.
        assert!((gelu(1.0) - 0.841_344_7).abs() < 1e-6);
        assert!((gelu(-0.5) - -0.154_269_4).abs() < 1e-6);
        assert!((quick_gelu(1.0) - 0.845_795_3).abs() < 1e-6);
    }

    #[test]
    fn causal_attention_of_first_token_is_its_value() {
        // One sequence, one head: with a causal mask token 0 only sees itself.
        let hd = 4;
        let qkv: Vec<f32> = (0..3 * 3 * hd).map(|i| i as f32 * 0.1).collect();
        let mut out = vec![0f32; 3 * hd];
        attention(&qkv, &mut out, &Seqs::uniform(1, 3), 1, hd, true);
        assert_eq!(&out[..hd], &qkv[2 * hd..3 * hd]);
    }

    #[test]
    fn attention_of_ragged_sequences_matches_a_direct_computation() {
        // three sequences of 3, 1 and 5 tokens, 3 heads of 4: every head's output lands in its
        // own columns of its own rows, at both ISA levels, causal or not
        let (heads, hd, lens) = (3, 4, vec![3, 1, 5]);
        let width = heads * hd;
        let seqs = Seqs::from_lens(lens.clone());
        let rows: usize = lens.iter().sum();
        let qkv: Vec<f32> = (0..rows * 3 * width).map(|i| ((i * 29 % 53) as f32 - 26.0) / 13.0).collect();
        for causal in [false, true] {
            let mut want = vec![0f64; rows * width];
            for (&off, &len) in seqs.offsets.iter().zip(&lens) {
                for h in 0..heads {
                    let at =
                        |r: usize, part: usize, c: usize| qkv[(off + r) * 3 * width + part * width + h * hd + c] as f64;
                    for i in 0..len {
                        let end = if causal { i + 1 } else { len };
                        let s: Vec<f64> = (0..end)
                            .map(|j| (0..hd).map(|c| at(i, 0, c) * at(j, 1, c)).sum::<f64>() / (hd as f64).sqrt())
                            .collect();
                        let mx = s.iter().cloned().fold(f64::MIN, f64::max);
                        let e: Vec<f64> = s.iter().map(|v| (v - mx).exp()).collect();
                        let z: f64 = e.iter().sum();
                        for c in 0..hd {
                            want[(off + i) * width + h * hd + c] = (0..end).map(|j| e[j] / z * at(j, 2, c)).sum();
                        }
                    }
                }
            }
            for avx2 in [false, cfg!(target_arch = "x86_64") && std::is_x86_feature_detected!("avx2")] {
                let mut out = vec![f32::NAN; rows * width];
                attention_isa(&qkv, &mut out, &seqs, heads, hd, causal, avx2);
                for (i, (&g, &w)) in out.iter().zip(&want).enumerate() {
                    assert!((g as f64 - w).abs() < 1e-5, "causal={causal} avx2={avx2} [{i}]: {g} vs {w}");
                }
            }
        }
    }

    #[test]
    fn layer_norm_normalises() {
        let x = [1.0f32, 2.0, 3.0, 4.0];
        let mut o = [0f32; 4];
        layer_norm(&x, &mut o, 4, &[1.0; 4], &[0.0; 4], 1e-5);
        let mean: f32 = o.iter().sum::<f32>() / 4.0;
        let var: f32 = o.iter().map(|v| v * v).sum::<f32>() / 4.0;
        assert!(mean.abs() < 1e-6 && (var - 1.0).abs() < 1e-4, "{o:?}");
    }
}
