//! The GPU kernels (WGSL through wgpu) at ViT-B/32's real shapes, on every GPU adapter of the
//! primary backends (lavapipe in CI: `VK_ICD_FILENAMES=/usr/share/vulkan/icd.d/lvp_icd.x86_64.json`).
//! Each sample is one dispatch, submitted and waited for. Skips with a message when there is
//! no adapter.
//!
//! `cargo bench --bench gpu_kernels`; `CLIP_WGPU_BENCH_BATCH=1,8` sets the batches (images
//! or texts; default 1: one matmul of the image tower takes about a second on lavapipe),
//! `CLIP_WGPU_BENCH_PRECISION=f32,f16` the storage precisions (default f32; f16 only where the
//! adapter has SHADER_F16). About 5 minutes on lavapipe with the defaults.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion, SamplingMode, Throughput};

use clip_wgpu::gpu::attention::{self, AttentionKey};
use clip_wgpu::gpu::matmul::{self, MatmulKey};
use clip_wgpu::gpu::norm::{self, NormKey};
use clip_wgpu::gpu::pipeline::{bind_all, create_kernel, Kernel};
use clip_wgpu::gpu::{Context, Dt, KernelKey, Precision};
use clip_wgpu::model::{Activation, Epilogue};

const VISION_TOKENS: usize = 50;
const TEXT_TOKENS: usize = 77;

fn env_list(name: &str) -> Option<Vec<String>> {
    std::env::var(name).ok().map(|v| v.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect())
}

fn batches() -> Vec<usize> {
    env_list("CLIP_WGPU_BENCH_BATCH")
        .map(|l| l.iter().filter_map(|s| s.parse().ok()).filter(|&b| b > 0).collect())
        .unwrap_or_else(|| vec![1])
}

fn precisions(ctx: &Context) -> Vec<Precision> {
    let wanted = env_list("CLIP_WGPU_BENCH_PRECISION").unwrap_or_else(|| vec!["f32".into()]);
    wanted.iter().filter_map(|p| Precision::parse(p)).filter(|p| *p == Precision::F32 || ctx.has_f16()).collect()
}

fn dt(p: Precision) -> Dt {
    match p {
        Precision::F32 => Dt::F32,
        Precision::F16 => Dt::F16,
    }
}

/// A kernel with its buffers bound, ready to dispatch.
struct Launch {
    kernel: Kernel,
    bind: wgpu::BindGroup,
    groups: [u32; 3],
    buffers: Vec<wgpu::Buffer>,
}

impl Launch {
    /// Binds `params` to the uniform slot and `sizes[i]` bytes of storage to the i-th other
    /// slot of the kernel (its family's slot list, in order).
    fn new(ctx: &Context, key: KernelKey, params: &[u8], sizes: &[u64], groups: [u32; 3]) -> Launch {
        let dev = &ctx.device;
        let kernel = create_kernel(dev, &key);
        let uniform = dev.create_buffer(&wgpu::BufferDescriptor {
            label: Some("bench params"),
            size: params.len() as u64,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        ctx.queue.write_buffer(&uniform, 0, params);
        let mut buffers: Vec<wgpu::Buffer> = sizes
            .iter()
            .map(|&size| {
                dev.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("bench data"),
                    size: size.div_ceil(16).max(1) * 16,
                    usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                })
            })
            .collect();
        let resources = std::iter::once(&uniform).chain(&buffers).map(|b| b.as_entire_binding()).collect();
        let bind = bind_all(dev, &kernel, &key, resources);
        buffers.push(uniform);
        Launch { kernel, bind, groups, buffers }
    }

    /// One dispatch, submitted and waited for.
    fn run(&self, ctx: &Context) {
        let mut enc = ctx.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("bench") });
        {
            let mut pass =
                enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("bench"), timestamp_writes: None });
            pass.set_pipeline(&self.kernel.pipeline);
            pass.set_bind_group(0, &self.bind, &[]);
            let [x, y, z] = self.groups;
            pass.dispatch_workgroups(x, y, z);
        }
        ctx.queue.submit([enc.finish()]);
        ctx.device.poll(wgpu::PollType::wait_indefinitely()).expect("device lost");
    }
}

fn setup(g: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    g.sample_size(10);
    g.sampling_mode(SamplingMode::Flat);
    g.warm_up_time(Duration::from_millis(500));
    g.measurement_time(Duration::from_secs(2));
}

fn adapter_tag(ctx: &Context) -> String {
    let name = ctx.report.name.split(" (").next().unwrap_or(&ctx.report.name).replace(' ', "_");
    format!("{name}-{}", ctx.report.backend)
}

fn contexts() -> Vec<Context> {
    let all: Vec<Context> = Context::all().into_iter().filter_map(|c| c.ok()).collect();
    if all.is_empty() {
        eprintln!("gpu_kernels: no GPU adapter found (install a Vulkan driver, e.g. mesa-vulkan-drivers): skipped");
    }
    all
}

fn matmuls(c: &mut Criterion) {
    for ctx in contexts() {
        let mut g = c.benchmark_group(format!("gpu_matmul/{}", adapter_tag(&ctx)));
        setup(&mut g);
        for p in precisions(&ctx) {
            let t = dt(p);
            for b in batches() {
                // (name, rows, K, N, activation, accumulate): the linear layers of one block
                let shapes = [
                    ("vision_qkv", VISION_TOKENS * b, 768, 2304, None, false),
                    ("vision_fc1", VISION_TOKENS * b, 768, 3072, Some(Activation::QuickGelu), false),
                    ("vision_fc2", VISION_TOKENS * b, 3072, 768, None, true),
                    ("text_qkv", TEXT_TOKENS * b, 512, 1536, None, false),
                    ("text_fc1", TEXT_TOKENS * b, 512, 2048, Some(Activation::QuickGelu), false),
                    ("text_fc2", TEXT_TOKENS * b, 2048, 512, None, true),
                ];
                for (name, m, k, n, act, accumulate) in shapes {
                    let key = MatmulKey {
                        x: t,
                        w: t,
                        y: t,
                        epi: Epilogue { bias: true, act, accumulate },
                        tile: matmul::Tile::REG32,
                    };
                    let s = t.size();
                    // x, w, bias, y
                    let l = Launch::new(
                        &ctx,
                        KernelKey::Matmul(key),
                        bytemuck::bytes_of(&matmul::params(m, n, k)),
                        &[(m * k) as u64 * s, (n * k) as u64 * s, n as u64 * s, (m * n) as u64 * s],
                        matmul::dispatch(m, n),
                    );
                    g.throughput(Throughput::Elements((2 * m * n * k) as u64));
                    g.bench_function(BenchmarkId::new(format!("{name}_{p}"), format!("b{b}_{m}x{k}x{n}")), |bench| {
                        bench.iter(|| l.run(&ctx))
                    });
                }
            }
        }
        g.finish();
    }
}

fn attention_and_layernorm(c: &mut Criterion) {
    for ctx in contexts() {
        let mut g = c.benchmark_group(format!("gpu_ops/{}", adapter_tag(&ctx)));
        setup(&mut g);
        for p in precisions(&ctx) {
            let t = dt(p);
            let s = t.size();
            for b in batches() {
                for (name, len, width, heads, causal) in
                    [("attention_vision", VISION_TOKENS, 768, 12, false), ("attention_text", TEXT_TOKENS, 512, 8, true)]
                {
                    let head_dim = width / heads;
                    let tokens = b * len;
                    let key = AttentionKey { qkv: t, out: t, hd4: (head_dim / 4) as u32, causal };
                    let l = Launch::new(
                        &ctx,
                        KernelKey::Attention(key),
                        bytemuck::bytes_of(&attention::params(width, heads, head_dim)),
                        // qkv, seqs, out
                        &[(tokens * 3 * width) as u64 * s, (b * 2 * 4) as u64, (tokens * width) as u64 * s],
                        attention::dispatch(heads, b),
                    );
                    // the sequence table: (offset, length) per sequence
                    let table: Vec<u32> = (0..b).flat_map(|i| [(i * len) as u32, len as u32]).collect();
                    ctx.queue.write_buffer(&l.buffers[1], 0, bytemuck::cast_slice(&table));
                    g.throughput(Throughput::Elements(b as u64));
                    g.bench_function(BenchmarkId::new(format!("{name}_{p}"), format!("b{b}_{len}tok")), |bench| {
                        bench.iter(|| l.run(&ctx))
                    });
                }
                for (name, rows, width) in
                    [("layernorm_vision", VISION_TOKENS * b, 768), ("layernorm_text", TEXT_TOKENS * b, 512)]
                {
                    let key = NormKey { x: t, y: t, g: t, inplace: false, subgroup: ctx.has_subgroup() };
                    let l = Launch::new(
                        &ctx,
                        KernelKey::Norm(key),
                        bytemuck::bytes_of(&norm::params(width, rows, 1e-5)),
                        // y, x, gamma, beta
                        &[(rows * width) as u64 * s, (rows * width) as u64 * s, width as u64 * s, width as u64 * s],
                        norm::dispatch(rows),
                    );
                    g.throughput(Throughput::Elements(rows as u64));
                    g.bench_function(
                        BenchmarkId::new(format!("{name}_{p}"), format!("b{b}_{rows}x{width}")),
                        |bench| bench.iter(|| l.run(&ctx)),
                    );
                }
            }
        }
        g.finish();
    }
}

criterion_group!(benches, matmuls, attention_and_layernorm);
criterion_main!(benches);
