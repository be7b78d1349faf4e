//! CPU kernels at ViT-B/32's real shapes: the packed f32 / bf16 products of `cpu::gemm_f32`
//! and the int8 (and AVX-512/AMX bf16) products of `cpu::gemm_lowp` on every engine this
//! machine has, against the `gemm` crate (the peer, in the same group and run, so ratios are
//! like for like), and attention and layernorm.
//! `cargo bench --bench cpu_kernels` (`-- matmul/vision_fc1` to pick).
//!
//! Shapes (M×K×N): image batch 32 = 1600 tokens (qkv 768→2304, fc1 768→3072, fc2 3072→768),
//! one image (50 tokens), text batch 32 at 77 tokens (2464 rows; width 512, MLP 2048).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

use clip_wgpu::cpu::gemm_lowp::{self, Engine, Kind, PackedLowp};
use clip_wgpu::cpu::{gemm, gemm_f32, ops, Isa};
use clip_wgpu::model::Activation;
use clip_wgpu::model::Seqs;

fn data(n: usize) -> Vec<f32> {
    (0..n).map(|i| ((i % 97) as f32 - 48.0) / 97.0).collect()
}

fn matmul(c: &mut Criterion) {
    let mut g = c.benchmark_group("matmul");
    g.sample_size(10);
    let isa = Isa::detect();
    for &(name, m, k, n, act) in &[
        ("vision_qkv_b32", 1600, 768, 2304, None),
        ("vision_fc1_b32", 1600, 768, 3072, Some(Activation::QuickGelu)),
        ("vision_fc2_b32", 1600, 3072, 768, None),
        ("vision_fc1_b1", 50, 768, 3072, Some(Activation::QuickGelu)),
        ("text_qkv_77x32", 2464, 512, 1536, None),
        ("text_fc1_77x32", 2464, 512, 2048, Some(Activation::QuickGelu)),
        ("text_fc2_77x32", 2464, 2048, 512, None),
    ] {
        let (x, w) = (data(m * k), data(n * k));
        let wt: Vec<f32> = (0..k * n).map(|i| w[(i % n) * k + i / n]).collect();
        let mut y = vec![0f32; m * n];
        let shape = format!("{m}x{k}x{n}");
        g.throughput(Throughput::Elements((2 * m * n * k) as u64));
        // the peer: the `gemm` crate on [in, out] weights, then the bias/activation pass
        g.bench_function(BenchmarkId::new(format!("{name}/gemm_crate"), &shape), |b| {
            b.iter(|| {
                gemm::matmul(&mut y, &x, &wt, m, k, n, false);
                ops::bias_act_isa(&mut y, n, None, act, isa == Isa::Avx2);
            })
        });
        for (label, bf16) in [("f32", false), ("bf16", true)] {
            let p = gemm_f32::Packed::from_out_in(&w, None, n, k, bf16);
            g.bench_function(BenchmarkId::new(format!("{name}/{label}_{isa}"), &shape), |b| {
                b.iter(|| gemm_f32::matmul(isa, &mut y, &x, m, &p, act, false))
            });
        }
        for kind in [Kind::Bf16, Kind::Int8] {
            for e in Engine::ALL.into_iter().filter(|e| e.available(kind)) {
                let q = PackedLowp::for_engine(e, &w, None, n, k, kind);
                let label = format!("{name}/lowp_{kind:?}_{e:?}").to_lowercase();
                g.bench_function(BenchmarkId::new(label, &shape), |b| {
                    b.iter(|| gemm_lowp::matmul(e, &mut y, &x, m, &q, act, false))
                });
            }
        }
    }
    g.finish();
}

fn attention_and_layernorm(c: &mut Criterion) {
    let mut g = c.benchmark_group("ops");
    g.sample_size(10);
    let avx2 = Isa::detect() != Isa::Scalar && Isa::Avx2.available();
    for &(name, seqs, len, heads, causal) in
        &[("attention_vision_b32", 32, 50, 12, false), ("attention_text_b32", 32, 77, 8, true)]
    {
        let width = heads * 64;
        let s = Seqs::uniform(seqs, len);
        let qkv = data(seqs * len * 3 * width);
        let mut out = vec![0f32; seqs * len * width];
        g.bench_function(name, |b| b.iter(|| ops::attention_isa(&qkv, &mut out, &s, heads, 64, causal, avx2)));
    }
    let x = data(1600 * 768);
    let mut o = vec![0f32; 1600 * 768];
    let (gm, bt) = (vec![1f32; 768], vec![0f32; 768]);
    g.bench_function("layernorm_1600x768/plain", |b| b.iter(|| ops::layer_norm(&x, &mut o, 768, &gm, &bt, 1e-5)));
    g.bench_function("layernorm_1600x768/simd", |b| {
        b.iter(|| ops::layer_norm_isa(&x, &mut o, 768, &gm, &bt, 1e-5, avx2))
    });
    g.finish();
}

criterion_group!(benches, matmul, attention_and_layernorm);
criterion_main!(benches);
