//! The CPU backend: interprets a tower's [`Program`] in f32, multithreaded (rayon), with the
//! matrix products in [`gemm`]. It is the reference the GPU backend is validated against.

pub mod gemm;
pub mod ops;
pub mod precision;

pub use precision::CpuPrecision;

use std::collections::HashMap;

use rayon::prelude::*;

use crate::model::{Act, ClipConfig, Input, Op, ParamId, Params, Program, Rows, Seqs};

/// The CPU's own copy of what it reads differently from the canonical weights: every
/// linear layer's matrix transposed to `[in, out]`, made once.
pub struct Prepared {
    transposed: HashMap<ParamId, Vec<f32>>,
}

impl Prepared {
    /// Prepares the linear layers the programs use, in f32.
    pub fn new(params: &Params, programs: &[&Program]) -> Prepared {
        Self::with_precision(params, programs, CpuPrecision::F32)
    }

    /// Prepares the linear layers the programs use, stored for `precision`.
    pub fn with_precision(params: &Params, programs: &[&Program], precision: CpuPrecision) -> Prepared {
        assert!(precision.supported(), "CPU precision {precision} is not supported on this machine");
        let mut lins = Vec::new();
        for p in programs {
            for op in &p.ops {
                match op {
                    Op::Linear { lin, .. } | Op::PatchEmbed { patch: lin, .. } => lins.push(*lin),
                    _ => {}
                }
            }
        }
        let transposed = lins
            .par_iter()
            .map(|l| {
                let w = params.data(l.weight);
                let (n, k) = (l.n_out, l.n_in);
                let mut t = vec![0f32; w.len()];
                // blocked so both sides stay in cache
                for o0 in (0..n).step_by(64) {
                    for i0 in (0..k).step_by(64) {
                        for o in o0..(o0 + 64).min(n) {
                            for i in i0..(i0 + 64).min(k) {
                                t[i * n + o] = w[o * k + i];
                            }
                        }
                    }
                }
                (l.weight, t)
            })
            .collect();
        Prepared { transposed }
    }

    fn weight_t(&self, id: ParamId) -> &[f32] {
        self.transposed.get(&id).expect("linear weight not prepared")
    }
}

/// Runs `program` on one batch and returns the L2-normalised embeddings, `[n, embed_dim]`.
/// Prepares the weights for this call; [`run_prepared`] reuses a [`Prepared`].
pub fn run(program: &Program, cfg: &ClipConfig, params: &Params, input: &Input) -> Vec<f32> {
    run_prepared(program, cfg, params, &Prepared::new(params, &[program]), input)
}

/// [`run`] with weights prepared once.
pub fn run_prepared(program: &Program, cfg: &ClipConfig, params: &Params, prep: &Prepared, input: &Input) -> Vec<f32> {
    let seqs = Seqs::of(input, cfg);
    if seqs.count() == 0 {
        return Vec::new();
    }
    let mut acts: HashMap<Act, Vec<f32>> = program
        .widths
        .iter()
        .map(|&(a, w, rows)| {
            let r = match rows {
                Rows::Tokens => seqs.tokens(),
                Rows::Seqs => seqs.count(),
            };
            (a, vec![0f32; r * w])
        })
        .collect();
    // CLIP_WGPU_PROFILE=1 prints the time spent per kind of op (stderr).
    let profile = std::env::var_os("CLIP_WGPU_PROFILE").is_some_and(|v| v == "1");
    let mut spent: Vec<(&'static str, f64)> = Vec::new();
    for op in &program.ops {
        let t = std::time::Instant::now();
        exec(op, program, cfg, params, prep, input, &seqs, &mut acts);
        if profile {
            let kind = op.kind();
            let dt = t.elapsed().as_secs_f64();
            match spent.iter_mut().find(|s| s.0 == kind) {
                Some(s) => s.1 += dt,
                None => spent.push((kind, dt)),
            }
        }
    }
    if profile {
        let total: f64 = spent.iter().map(|s| s.1).sum();
        let parts: Vec<String> =
            spent.iter().map(|(k, t)| format!("{k} {:.1} ms ({:.0}%)", t * 1e3, 100.0 * t / total)).collect();
        eprintln!("cpu {:?} x{}: {:.1} ms: {}", program.tower, seqs.count(), total * 1e3, parts.join(", "));
    }
    acts.remove(&program.output).unwrap_or_default()
}

#[allow(clippy::too_many_arguments)]
fn exec(
    op: &Op,
    program: &Program,
    cfg: &ClipConfig,
    params: &Params,
    prep: &Prepared,
    input: &Input,
    seqs: &Seqs,
    acts: &mut HashMap<Act, Vec<f32>>,
) {
    match *op {
        Op::PatchEmbed { patch, class, pos, out } => {
            let Input::Pixels { data, n } = *input else { panic!("vision program given tokens") };
            let v = &cfg.vision;
            let (d, g2) = (patch.n_out, v.grid() * v.grid());
            let cols = ops::im2col(data, n, v.image_size, v.patch_size);
            let mut pe = vec![0f32; n * g2 * d];
            gemm::matmul(&mut pe, &cols, prep.weight_t(patch.weight), n * g2, patch.n_in, d, false);
            let (class, pos) = (params.data(class), params.data(pos));
            let x = acts.get_mut(&out).unwrap();
            for s in 0..n {
                let base = s * (g2 + 1) * d;
                for (i, v) in x[base..base + d].iter_mut().enumerate() {
                    *v = class[i] + pos[i];
                }
                for p in 0..g2 {
                    let dst = base + (p + 1) * d;
                    let src = (s * g2 + p) * d;
                    for i in 0..d {
                        x[dst + i] = pe[src + i] + pos[(p + 1) * d + i];
                    }
                }
            }
        }
        Op::TokenEmbed { table, pos, out } => {
            let Input::Tokens(texts) = input else { panic!("text program given pixels") };
            let d = program.width(out);
            let (table, pos) = (params.data(table), params.data(pos));
            let x = acts.get_mut(&out).unwrap();
            for (s, ids) in texts.iter().enumerate() {
                for (j, &id) in ids.iter().take(seqs.lens[s]).enumerate() {
                    let dst = (seqs.offsets[s] + j) * d;
                    let (t, p) = (&table[id as usize * d..][..d], &pos[j * d..][..d]);
                    for i in 0..d {
                        x[dst + i] = t[i] + p[i];
                    }
                }
            }
        }
        Op::LayerNorm { x, ln, eps, out } => {
            let w = program.width(x);
            let (g, b) = (params.data(ln.gamma), params.data(ln.beta));
            if x == out {
                ops::layer_norm_inplace(acts.get_mut(&x).unwrap(), w, g, b, eps);
            } else {
                let src = acts.remove(&x).unwrap();
                ops::layer_norm(&src, acts.get_mut(&out).unwrap(), w, g, b, eps);
                acts.insert(x, src);
            }
        }
        Op::Linear { x, lin, act, accumulate, out } => {
            let src = acts.remove(&x).expect("linear input");
            let rows = src.len() / lin.n_in;
            let y = acts.get_mut(&out).expect("linear output");
            gemm::matmul(y, &src, prep.weight_t(lin.weight), rows, lin.n_in, lin.n_out, accumulate);
            let bias = lin.bias.map(|b| params.data(b));
            ops::bias_act(y, lin.n_out, bias, act);
            acts.insert(x, src);
        }
        Op::Attention { qkv, out, heads, head_dim, causal } => {
            let src = acts.remove(&qkv).unwrap();
            ops::attention(&src, acts.get_mut(&out).unwrap(), seqs, heads, head_dim, causal);
            acts.insert(qkv, src);
        }
        Op::Pool { x, at, out } => {
            let w = program.width(x);
            let src = acts.remove(&x).unwrap();
            ops::pool(&src, acts.get_mut(&out).unwrap(), w, seqs, at);
            acts.insert(x, src);
        }
        Op::L2Normalize { x } => {
            let w = program.width(x);
            ops::l2_normalize(acts.get_mut(&x).unwrap(), w);
        }
    }
}
