//! The CPU backend: interprets a tower's [`Program`] in f32, multithreaded (rayon). The linear
//! layers run on weights prepared once ([`Prepared`]): hand-written packed-panel kernels
//! ([`gemm_f32`] in f32 or bf16, [`gemm_lowp`] in int8 and, on AVX-512/AMX, bf16) with the bias and activation or the
//! residual add fused, or the `gemm` crate on AVX-512 and NEON machines in f32; the
//! instruction-set level is chosen at run time ([`isa`]). It is the reference the GPU backend
//! is validated against.

pub mod auto;
pub mod gemm;
pub mod gemm_f32;
pub mod gemm_lowp;
pub mod isa;
pub mod ops;
pub mod precision;
pub mod simd;
pub mod split;
mod tiles;

pub use isa::Isa;
pub use precision::CpuPrecision;
pub use split::Split;

use std::collections::HashMap;

use rayon::prelude::*;

use crate::model::{Act, ClipConfig, Epilogue, Input, Op, ParamId, Params, Program, Rows, Seqs};

/// How one linear layer is kept for the CPU.
enum Weight {
    /// `[in, out]` f32, multiplied by the `gemm` crate (levels `avx512`, `neon`, f32); the
    /// bias is added after the product.
    Dense(Vec<f32>),
    /// f32 or bf16 packed panels with the bias (`gemm_f32`).
    Packed(gemm_f32::Packed),
    /// bf16 or int8 panels for the reduced-precision engines (`gemm_lowp`).
    Lowp(gemm_lowp::PackedLowp, gemm_lowp::Engine),
}

/// The CPU's own copy of the linear layers, made once for a precision and an instruction-set
/// level: packed panels (f32, bf16) or quantised ones (int8) with their biases for the
/// hand-written kernels, or the matrix transposed to `[in, out]` for the `gemm` crate.
///
/// The final projections stay f32 at every precision (one row per image or text: nothing to
/// gain). The patch embedding runs in the reduced precision like the blocks' layers: once
/// their products ran on AMX it was an eighth of the int8 image tower in f32 (Xeon 6/167,
/// batch 32: 30 → 10 ms, the tower 4.47× → 4.63× ONNX Runtime f32), for a min cosine to f32
/// of 0.999953 instead of 0.999957 (`tests/cpu_precision.rs`).
pub struct Prepared {
    precision: CpuPrecision,
    isa: Isa,
    weights: HashMap<ParamId, Weight>,
    kernels: String,
}

impl Prepared {
    /// Prepares the linear layers the programs use, in f32.
    pub fn new(params: &Params, programs: &[&Program]) -> Prepared {
        Self::with_precision(params, programs, CpuPrecision::F32)
    }

    /// Prepares the linear layers the programs use, stored for `precision`, for the
    /// instruction-set level [`Isa::from_env`] (`CLIP_WGPU_CPU_ISA`, else the best detected).
    pub fn with_precision(params: &Params, programs: &[&Program], precision: CpuPrecision) -> Prepared {
        Self::with_isa(params, programs, precision, Isa::from_env())
    }

    /// [`with_precision`](Self::with_precision) at a given instruction-set level (which this
    /// machine must have: [`Isa::available`]). Tests use it to run every level in one process.
    pub fn with_isa(params: &Params, programs: &[&Program], precision: CpuPrecision, isa: Isa) -> Prepared {
        assert!(precision.supported(), "CPU precision {precision} is not supported on this machine");
        assert!(isa.available(), "CPU instruction set {isa} is not available on this machine");
        // (weight, bias, n_out, n_in, reduced precision allowed)
        let mut lins = Vec::new();
        for p in programs {
            for op in &p.ops {
                match op {
                    Op::Linear { lin, .. } => lins.push((lin.weight, lin.bias, lin.n_out, lin.n_in, true)),
                    Op::PatchEmbed { patch, .. } => lins.push((patch.weight, None, patch.n_out, patch.n_in, true)),
                    Op::Head { proj, .. } => lins.push((proj.weight, proj.bias, proj.n_out, proj.n_in, false)),
                    _ => {}
                }
            }
        }
        lins.sort_by_key(|l| l.0 .0);
        lins.dedup_by_key(|l| l.0 .0);
        let crate_f32 = isa.f32_gemm_crate();
        let lowp = |kind| isa.lowp_engine(kind).map(|e| (kind, e));
        let lowp = match precision {
            CpuPrecision::F32 => None,
            CpuPrecision::Bf16 => lowp(gemm_lowp::Kind::Bf16),
            CpuPrecision::Int8 => lowp(gemm_lowp::Kind::Int8),
        };
        let weights = lins
            .par_iter()
            .map(|&(id, bias, n, k, reduced)| {
                let w = params.data(id);
                let b = bias.map(|b| params.data(b));
                let prec = if reduced { precision } else { CpuPrecision::F32 };
                let weight = match prec {
                    CpuPrecision::Bf16 | CpuPrecision::Int8 if lowp.is_some() => {
                        let (kind, engine) = lowp.unwrap();
                        Weight::Lowp(gemm_lowp::PackedLowp::for_engine(engine, w, b, n, k, kind), engine)
                    }
                    CpuPrecision::F32 if crate_f32 => Weight::Dense(transpose(w, n, k)),
                    CpuPrecision::F32 => Weight::Packed(gemm_f32::Packed::from_out_in(w, b, n, k, false)),
                    CpuPrecision::Bf16 => Weight::Packed(gemm_f32::Packed::from_out_in(w, b, n, k, true)),
                    CpuPrecision::Int8 => unreachable!("every level has an int8 engine"),
                };
                (id, weight)
            })
            .collect();
        Prepared { precision, isa, weights, kernels: Self::kernels_for(precision, isa) }
    }

    /// The kernels the transformer layers' products run on for `precision` at `isa`, in words.
    pub fn kernels_for(precision: CpuPrecision, isa: Isa) -> String {
        let lowp = match precision {
            CpuPrecision::F32 => None,
            CpuPrecision::Bf16 => isa.lowp_engine(gemm_lowp::Kind::Bf16).map(|e| (gemm_lowp::Kind::Bf16, e)),
            CpuPrecision::Int8 => isa.lowp_engine(gemm_lowp::Kind::Int8).map(|e| (gemm_lowp::Kind::Int8, e)),
        };
        match (precision, lowp) {
            (_, Some((kind, engine))) => engine.instruction(kind).to_string(),
            (CpuPrecision::F32, _) if isa.f32_gemm_crate() => "gemm crate f32".into(),
            (CpuPrecision::F32, _) if isa.avx512_kernels() => "AVX-512 f32 panels".into(),
            (p, _) if isa.avx2_kernels() => format!("AVX2 {p} panels"),
            (p, _) => format!("portable {p} panels"),
        }
    }

    /// The kernels the transformer layers' products run on, in words (`AMX tdpbssd`, …).
    pub fn kernels(&self) -> &str {
        &self.kernels
    }

    pub fn precision(&self) -> CpuPrecision {
        self.precision
    }

    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// Bytes of prepared weight storage.
    pub fn weight_bytes(&self) -> usize {
        self.weights
            .values()
            .map(|w| match w {
                Weight::Dense(d) => d.len() * 4,
                Weight::Packed(p) => p.bytes(),
                Weight::Lowp(q, _) => q.bytes(),
            })
            .sum()
    }

    fn weight(&self, id: ParamId) -> &Weight {
        self.weights.get(&id).expect("linear weight not prepared")
    }

    fn avx2(&self) -> bool {
        self.isa.avx2_kernels()
    }

    /// Whether each output row of this layer's product is the same bits whatever rows come
    /// with it: true of the hand-written kernels (packed f32/bf16 panels, the reduced
    /// precisions: the same order of sums at every row count), not of the `gemm` crate, whose
    /// blocking of k follows the shape.
    fn row_independent(&self, id: ParamId) -> bool {
        !matches!(self.weights.get(&id), Some(Weight::Dense(_)))
    }

    /// The op after which only the pooled rows are computed ([`Program::pooled_tail`]), where
    /// that leaves every embedding the same bits: when the tail's products are
    /// [`row_independent`](Self::row_independent) (else the tail's row count, the batch's
    /// size, would move the last bits of an embedding with the batch it came in).
    fn pooled_tail(&self, program: &Program) -> Option<(usize, crate::model::PoolAt)> {
        let (cut, at) = program.pooled_tail()?;
        let rows_free = program.ops[cut + 1..].iter().all(|op| match op {
            Op::Linear { lin, .. } => self.row_independent(lin.weight),
            _ => true,
        });
        (rows_free && !all_rows()).then_some((cut, at))
    }

    /// `y (+)= act(x·Wᵀ + b)` with the layer's prepared weight and epilogue; `bias` is the
    /// layer's (used only by the dense path: the packed ones carry their own).
    #[allow(clippy::too_many_arguments)]
    fn linear(
        &self,
        y: &mut [f32],
        x: &[f32],
        rows: usize,
        id: ParamId,
        k: usize,
        n: usize,
        bias: Option<&[f32]>,
        epi: Epilogue,
    ) {
        debug_assert_eq!(epi.bias, bias.is_some());
        let Epilogue { act, accumulate, .. } = epi;
        match self.weight(id) {
            Weight::Dense(wt) if accumulate && act.is_some() => {
                // not a model op; kept correct, as in the packed kernels: y += act(x·Wᵀ + b)
                let mut t = vec![0f32; rows * n];
                gemm::matmul(&mut t, x, wt, rows, k, n, false);
                ops::bias_act_isa(&mut t, n, bias, act, self.avx2());
                y[..rows * n].iter_mut().zip(&t).for_each(|(a, b)| *a += b);
            }
            Weight::Dense(wt) => {
                gemm::matmul(y, x, wt, rows, k, n, accumulate);
                ops::bias_act_isa(&mut y[..rows * n], n, bias, act, self.avx2());
            }
            Weight::Packed(p) => gemm_f32::matmul(self.isa, y, x, rows, p, act, accumulate),
            Weight::Lowp(q, e) => gemm_lowp::matmul(*e, y, x, rows, q, act, accumulate),
        }
    }
}

/// `[out, in]` → `[in, out]`, blocked so both sides stay in cache.
fn transpose(w: &[f32], n: usize, k: usize) -> Vec<f32> {
    let mut t = vec![0f32; w.len()];
    for o0 in (0..n).step_by(64) {
        for i0 in (0..k).step_by(64) {
            for o in o0..(o0 + 64).min(n) {
                for i in i0..(i0 + 64).min(k) {
                    t[i * n + o] = w[o * k + i];
                }
            }
        }
    }
    t
}

/// Runs `program` on one batch and returns the L2-normalised embeddings, `[n, embed_dim]`.
/// Prepares the weights for this call; [`run_prepared`] reuses a [`Prepared`].
pub fn run(program: &Program, cfg: &ClipConfig, params: &Params, input: &Input) -> Vec<f32> {
    run_prepared(program, cfg, params, &Prepared::new(params, &[program]), input)
}

/// [`run`] with weights prepared once; the batch is cut as [`Split::choose`] decides for the
/// prepared precision.
pub fn run_prepared(program: &Program, cfg: &ClipConfig, params: &Params, prep: &Prepared, input: &Input) -> Vec<f32> {
    let split = Split::choose(program.tower, prep.precision, input.len(), rayon::current_num_threads());
    run_split(program, cfg, params, prep, input, split)
}

/// [`run_prepared`] with the batch cut as `split` says (the same embeddings, byte for byte,
/// however it is cut).
pub fn run_split(
    program: &Program,
    cfg: &ClipConfig,
    params: &Params,
    prep: &Prepared,
    input: &Input,
    split: Split,
) -> Vec<f32> {
    let n = input.len();
    if split.size == 0 || n <= split.size {
        return run_batch(program, cfg, params, prep, input);
    }
    let sub = split.size;
    let one = |part: &Input| run_batch(program, cfg, params, prep, part);
    let parts: Vec<Vec<f32>> = match input {
        Input::Pixels { data, .. } => {
            let per = data.len() / n;
            let part = |c: &[f32]| one(&Input::Pixels { data: c, n: c.len() / per });
            if split.parallel {
                data.par_chunks(sub * per).map(part).collect()
            } else {
                data.chunks(sub * per).map(part).collect()
            }
        }
        Input::Tokens(t) => {
            let part = |c: &[Vec<u32>]| one(&Input::Tokens(c));
            if split.parallel {
                t.par_chunks(sub).map(part).collect()
            } else {
                t.chunks(sub).map(part).collect()
            }
        }
    };
    parts.concat()
}

/// `CLIP_WGPU_CPU_ALL_ROWS=1`: compute every row to the end of the tower (what transformers
/// does), not only the pooled rows after the last attention ([`Program::pooled_tail`]); for
/// measuring one against the other. Read once per process.
fn all_rows() -> bool {
    static ALL: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ALL.get_or_init(|| std::env::var("CLIP_WGPU_CPU_ALL_ROWS").is_ok_and(|v| v == "1"))
}

fn run_batch(program: &Program, cfg: &ClipConfig, params: &Params, prep: &Prepared, input: &Input) -> Vec<f32> {
    let mut seqs = Seqs::of(input, cfg);
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
    // after the last attention, only each sequence's pooled row (the head's) is computed
    let tail = prep.pooled_tail(program);
    for (i, op) in program.ops.iter().enumerate() {
        // (no clock unless profiling: wasm32-unknown-unknown has none)
        let t = profile.then(std::time::Instant::now);
        run_op(op, program, cfg, params, prep, input, &seqs, &mut acts);
        if let Some((_, at)) = tail.filter(|&(cut, _)| cut == i) {
            for (&a, buf) in acts.iter_mut() {
                if program.rows(a) == Rows::Tokens {
                    ops::pool_in_place(buf, program.width(a), &seqs, at);
                }
            }
            seqs = Seqs::uniform(seqs.count(), 1);
        }
        if let Some(t) = t {
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
        eprintln!(
            "cpu {:?} x{} ({}, {}): {:.1} ms: {}",
            program.tower,
            seqs.count(),
            prep.precision,
            prep.isa,
            total * 1e3,
            parts.join(", ")
        );
    }
    acts.remove(&program.output).unwrap_or_default()
}

/// Runs one op of `program` on the activations `acts` (each `[rows, width]` f32, rows as
/// `seqs` says): the CPU engine's op, which the GPU's per-kernel tests compare with.
#[allow(clippy::too_many_arguments)]
pub fn run_op(
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
            prep.linear(&mut pe, &cols, n * g2, patch.weight, patch.n_in, d, None, Epilogue::default());
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
                ops::layer_norm_inplace_isa(acts.get_mut(&x).unwrap(), w, g, b, eps, prep.avx2());
            } else {
                let src = acts.remove(&x).unwrap();
                ops::layer_norm_isa(&src, acts.get_mut(&out).unwrap(), w, g, b, eps, prep.avx2());
                acts.insert(x, src);
            }
        }
        Op::Linear { x, lin, out, .. } => {
            let src = acts.remove(&x).expect("linear input");
            let rows = src.len() / lin.n_in;
            let y = acts.get_mut(&out).expect("linear output");
            let bias = lin.bias.map(|b| params.data(b));
            let epi = op.epilogue().expect("a linear layer");
            prep.linear(y, &src, rows, lin.weight, lin.n_in, lin.n_out, bias, epi);
            acts.insert(x, src);
        }
        Op::Attention { qkv, out, heads, head_dim, causal } => {
            let src = acts.remove(&qkv).unwrap();
            ops::attention_isa(&src, acts.get_mut(&out).unwrap(), seqs, heads, head_dim, causal, prep.avx2());
            acts.insert(qkv, src);
        }
        Op::Head { x, at, ln, eps, proj, out } => {
            let w = program.width(x);
            let mut pooled = vec![0f32; seqs.count() * w];
            ops::pool(&acts[&x], &mut pooled, w, seqs, at);
            let (g, b) = (params.data(ln.gamma), params.data(ln.beta));
            ops::layer_norm_inplace_isa(&mut pooled, w, g, b, eps, prep.avx2());
            let y = acts.get_mut(&out).expect("head output");
            let bias = proj.bias.map(|b| params.data(b));
            let epi = Epilogue { bias: bias.is_some(), ..Epilogue::default() };
            prep.linear(y, &pooled, seqs.count(), proj.weight, w, proj.n_out, bias, epi);
            ops::l2_normalize(y, proj.n_out);
        }
    }
}
