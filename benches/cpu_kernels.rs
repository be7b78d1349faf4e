//! CPU kernels at ViT-B/32's real shapes (batch 1 image = 50 tokens; text 77 tokens).
//! `cargo bench --bench cpu_kernels`

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

use clip_wgpu::cpu::{gemm, ops};
use clip_wgpu::model::Seqs;

fn data(n: usize) -> Vec<f32> {
    (0..n).map(|i| ((i % 97) as f32 - 48.0) / 97.0).collect()
}

fn matmul(c: &mut Criterion) {
    let mut g = c.benchmark_group("matmul");
    g.sample_size(10);
    // (name, M, K, N): qkv, fc1, fc2 of the vision tower at batch 8, and the text MLP.
    for &(name, m, k, n) in &[
        ("vision_qkv_b8", 400, 768, 2304),
        ("vision_fc1_b8", 400, 768, 3072),
        ("vision_fc2_b8", 400, 3072, 768),
        ("text_fc1_77x8", 616, 512, 2048),
    ] {
        let (x, w) = (data(m * k), data(n * k));
        let mut y = vec![0f32; m * n];
        g.throughput(Throughput::Elements((2 * m * n * k) as u64));
        g.bench_function(BenchmarkId::new(name, format!("{m}x{k}x{n}")), |b| {
            b.iter(|| gemm::matmul(&mut y, &x, &w, m, k, n, false))
        });
    }
    g.finish();
}

fn attention_and_layernorm(c: &mut Criterion) {
    let mut g = c.benchmark_group("ops");
    g.sample_size(10);
    for &(name, seqs, len, heads, causal) in
        &[("attention_vision_b8", 8, 50, 12, false), ("attention_text_b8", 8, 77, 8, true)]
    {
        let width = heads * 64;
        let s = Seqs::uniform(seqs, len);
        let qkv = data(seqs * len * 3 * width);
        let mut out = vec![0f32; seqs * len * width];
        g.bench_function(name, |b| b.iter(|| ops::attention(&qkv, &mut out, &s, heads, 64, causal)));
    }
    let x = data(400 * 768);
    let mut o = vec![0f32; 400 * 768];
    let (gm, bt) = (vec![1f32; 768], vec![0f32; 768]);
    g.bench_function("layernorm_400x768", |b| b.iter(|| ops::layer_norm(&x, &mut o, 768, &gm, &bt, 1e-5)));
    g.finish();
}

criterion_group!(benches, matmul, attention_and_layernorm);
criterion_main!(benches);
