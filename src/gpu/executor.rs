//! [`GpuEncoder`]: executes a tower's [`Program`] on the GPU, one dispatch per [`Op`].
//!
//! * Pipelines are created once, in [`GpuEncoder::new`], for every kernel variant the two
//!   programs use ([`plan_kernels`]).
//! * Weights are uploaded once ([`WeightStore`]).
//! * Activations live in a per-tower pool: one buffer per [`Act`], the pixel or token input,
//!   the sequence table, the per-op uniform blocks and the readback buffer, sized for the
//!   largest chunk seen and grown only when a larger one comes; the bind groups of all ops
//!   are made with the pool and reused until it grows.
//! * A batch is cut into chunks that fit the pool limits; each chunk is one command
//!   encoder, one compute pass with all the ops, one copy of the embeddings, one submit.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Mutex;

use super::attention;
use super::context::Context;
use super::embed;
use super::matmul;
use super::matmul_coop::{self, MatmulPath};
use super::norm;
use super::pipeline::{create_kernel, Kernel};
use super::plan::{act_dt, plan_kernels_with};
use super::selfcheck::choose_matmul;
use super::shader::KernelKey;
use super::types::{GpuError, Precision};
use super::weights::WeightStore;
use crate::model::program::text_len;
use crate::model::{Act, ClipConfig, Input, Op, PoolAt, Program, Rows, Seqs, Tower, Weights};

/// Chunk limits. The pool also never exceeds the device's binding limit or 65535 rows.
#[derive(Debug, Clone)]
pub struct GpuOptions {
    /// Most sequences (images or texts) per chunk.
    pub max_seqs: usize,
    /// Most token rows per chunk.
    pub max_tokens: usize,
    /// Use subgroup reductions where the device has SUBGROUP (`false` forces the
    /// workgroup-memory fallback, for testing it on devices that have subgroups).
    pub subgroups: bool,
    /// Which matmul kernel runs the linear layers (see [`MatmulPath`]).
    pub matmul: MatmulPath,
}

impl Default for GpuOptions {
    fn default() -> Self {
        GpuOptions { max_seqs: 256, max_tokens: 256 * 77, subgroups: true, matmul: MatmulPath::Auto }
    }
}

/// What the encoder created and did (counters for the tests and `info`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct GpuStats {
    pub buffers_created: usize,
    pub pipelines_created: usize,
    pub bind_groups_created: usize,
    pub submits: usize,
    pub weight_buffers: usize,
    pub weight_bytes: u64,
}

#[derive(Default)]
struct Counters {
    buffers: AtomicUsize,
    pipelines: AtomicUsize,
    bind_groups: AtomicUsize,
    submits: AtomicUsize,
}

const UNIFORM_STRIDE: u64 = 256;
const UNIFORM_SIZE: u64 = 32;
const MAX_ROWS: usize = 65535;

/// One tower's activation pool and the bind groups made on it.
struct Pool {
    tokens: usize,
    seqs: usize,
    acts: HashMap<Act, wgpu::Buffer>,
    input: wgpu::Buffer,
    seqbuf: wgpu::Buffer,
    uniforms: wgpu::Buffer,
    readback: wgpu::Buffer,
    bind_groups: Vec<wgpu::BindGroup>,
}

impl Pool {
    fn bytes(&self) -> u64 {
        let fixed = [&self.input, &self.seqbuf, &self.uniforms, &self.readback];
        self.acts.values().chain(fixed).map(|b| b.size()).sum()
    }
}

struct TowerExec {
    program: Program,
    keys: Vec<KernelKey>,
    pool: Mutex<Option<Pool>>,
}

/// A model on one device: weights uploaded, pipelines created; [`encode`](Self::encode)
/// runs a batch through one tower.
pub struct GpuEncoder {
    ctx: Context,
    precision: Precision,
    cfg: ClipConfig,
    opts: GpuOptions,
    weights: WeightStore,
    kernels: HashMap<KernelKey, Kernel>,
    dummy: wgpu::Buffer,
    vision: TowerExec,
    text: TowerExec,
    counters: Counters,
    /// The linear layers run the cooperative-matrix kernel.
    coop: bool,
    /// Why the plain kernel runs (`None` when the coop one does).
    plain_reason: Option<String>,
}

fn align(v: u64, a: u64) -> u64 {
    v.div_ceil(a) * a
}

fn check_model(cfg: &ClipConfig) -> Result<(), String> {
    let v = &cfg.vision;
    for (name, t) in [("vision", &v.tower), ("text", &cfg.text.tower)] {
        if !t.width.is_multiple_of(4) || !t.mlp.is_multiple_of(4) || !t.head_dim().is_multiple_of(4) {
            return Err(format!(
                "{name} tower: width {}, MLP {} and head size {} must be multiples of 4",
                t.width,
                t.mlp,
                t.head_dim()
            ));
        }
    }
    if !v.patch_size.is_multiple_of(4) || !v.image_size.is_multiple_of(4) {
        return Err(format!("patch size {} and image size {} must be multiples of 4", v.patch_size, v.image_size));
    }
    if !cfg.embed_dim.is_multiple_of(4) {
        return Err(format!("projection size {} must be a multiple of 4", cfg.embed_dim));
    }
    Ok(())
}

impl GpuEncoder {
    pub fn new(ctx: &Context, cfg: &ClipConfig, weights: &Weights, precision: Precision) -> Result<Self, GpuError> {
        Self::with_options(ctx, cfg, weights, precision, GpuOptions::default())
    }

    pub fn from_checkpoint(
        ctx: &Context,
        ck: &crate::model::Checkpoint,
        precision: Precision,
    ) -> Result<Self, GpuError> {
        Self::new(ctx, &ck.config, &ck.weights, precision)
    }

    pub fn with_options(
        ctx: &Context,
        cfg: &ClipConfig,
        weights: &Weights,
        precision: Precision,
        opts: GpuOptions,
    ) -> Result<Self, GpuError> {
        check_model(cfg).map_err(GpuError::Unsupported)?;
        if precision == Precision::F16 && !ctx.has_f16() {
            return Err(GpuError::Unsupported(format!("f16 precision: {} lacks SHADER_F16", ctx.report.name)));
        }
        let ctx = ctx.clone();
        let counters = Counters::default();
        let subgroup = ctx.has_subgroup() && opts.subgroups;
        let (coop, plain_reason) = choose_matmul(&ctx, precision, opts.matmul)?;
        let make = |tower| {
            let program = Program::new(tower, cfg, weights);
            let keys = plan_kernels_with(&program, precision, subgroup, coop);
            TowerExec { program, keys, pool: Mutex::new(None) }
        };
        let (vision, text) = (make(Tower::Vision), make(Tower::Text));
        let store = WeightStore::upload(&ctx, &weights.params, precision.weights())?;
        counters.buffers.fetch_add(store.buffers.len(), Relaxed);

        let scope = ctx.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let mut kernels = HashMap::new();
        for key in vision.keys.iter().chain(&text.keys) {
            if !kernels.contains_key(key) {
                kernels.insert(*key, create_kernel(&ctx.device, key));
                counters.pipelines.fetch_add(1, Relaxed);
            }
        }
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(GpuError::Backend(format!("creating the pipelines: {e}")));
        }
        let dummy = ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("clip-wgpu dummy"),
            size: 256,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
        counters.buffers.fetch_add(1, Relaxed);
        if let Some(e) = ctx.take_error() {
            return Err(e);
        }
        Ok(GpuEncoder {
            ctx,
            precision,
            cfg: cfg.clone(),
            opts,
            weights: store,
            kernels,
            dummy,
            vision,
            text,
            counters,
            coop,
            plain_reason,
        })
    }

    /// The linear layers run on cooperative matrices (tensor cores).
    pub fn uses_coop(&self) -> bool {
        self.coop
    }

    /// The matmul path in words: `coop (…)` or `plain (why)`.
    pub fn matmul_description(&self) -> String {
        match &self.plain_reason {
            None => "coop (16x16x16 f16→f32 cooperative matrices, self-check passed)".into(),
            Some(why) => format!("plain ({why})"),
        }
    }

    pub fn precision(&self) -> Precision {
        self.precision
    }
    pub fn context(&self) -> &Context {
        &self.ctx
    }
    pub fn config(&self) -> &ClipConfig {
        &self.cfg
    }
    pub fn program(&self, tower: Tower) -> &Program {
        &self.tower(tower).program
    }

    pub fn stats(&self) -> GpuStats {
        GpuStats {
            buffers_created: self.counters.buffers.load(Relaxed),
            pipelines_created: self.counters.pipelines.load(Relaxed),
            bind_groups_created: self.counters.bind_groups.load(Relaxed),
            submits: self.counters.submits.load(Relaxed),
            weight_buffers: self.weights.buffers.len(),
            weight_bytes: self.weights.bytes,
        }
    }

    /// Bytes of GPU memory the activation pools (both towers) hold now: activations, inputs,
    /// sequence tables, parameter blocks and readback buffers (weights excluded: see
    /// `GpuStats::weight_bytes`).
    pub fn pool_bytes(&self) -> u64 {
        [&self.vision, &self.text]
            .iter()
            .map(|t| t.pool.lock().unwrap_or_else(|e| e.into_inner()).as_ref().map_or(0, Pool::bytes))
            .sum()
    }

    fn tower(&self, t: Tower) -> &TowerExec {
        match t {
            Tower::Vision => &self.vision,
            Tower::Text => &self.text,
        }
    }

    /// Most token rows and sequences one chunk of `tower` may hold on this device.
    pub fn chunk_limits(&self, tower: Tower) -> (usize, usize) {
        let te = self.tower(tower);
        let maxb = self.ctx.max_binding().min(1 << 30) as usize;
        let mut tokens = self.opts.max_tokens.min(MAX_ROWS);
        let mut seqs = self.opts.max_seqs.min(MAX_ROWS);
        for &(a, w, rows) in &te.program.widths {
            let per = w * act_dt(&te.program, self.precision, a).size() as usize;
            match rows {
                Rows::Tokens => tokens = tokens.min(maxb / per),
                Rows::Seqs => seqs = seqs.min(maxb / per),
            }
        }
        match tower {
            Tower::Vision => {
                let v = &self.cfg.vision;
                seqs = seqs.min(maxb / (3 * v.image_size * v.image_size * 4)).min(tokens / v.tokens());
            }
            Tower::Text => tokens = tokens.min(maxb / 8),
        }
        (tokens, seqs.max(1))
    }

    /// The L2-normalised embeddings of a batch, `[n, embed_dim]`, exactly like
    /// [`cpu::run`](crate::cpu::run) with this tower's program.
    pub fn encode(&self, tower: Tower, input: &Input) -> Result<Vec<f32>, GpuError> {
        if let Some(e) = self.ctx.take_error() {
            return Err(e);
        }
        let (max_tokens, max_seqs) = self.chunk_limits(tower);
        let mut out = Vec::new();
        match (tower, input) {
            (Tower::Vision, Input::Pixels { data, n }) => {
                let v = &self.cfg.vision;
                let px = 3 * v.image_size * v.image_size;
                if data.len() != n * px {
                    return Err(GpuError::InvalidInput(format!(
                        "{} pixel values for {n} images of {}×{} (expected {})",
                        data.len(),
                        v.image_size,
                        v.image_size,
                        n * px
                    )));
                }
                let per = max_seqs.min(max_tokens / v.tokens()).max(1);
                let mut s = 0;
                while s < *n {
                    let k = per.min(n - s);
                    let seqs = Seqs::uniform(k, v.tokens());
                    let chunk = ChunkInput::Pixels(&data[s * px..(s + k) * px]);
                    out.extend(self.run_chunk(tower, &seqs, &chunk)?);
                    s += k;
                }
            }
            (Tower::Text, Input::Tokens(texts)) => {
                let t = &self.cfg.text;
                for (i, ids) in texts.iter().enumerate() {
                    if ids.is_empty() || ids.len() > t.context_length {
                        return Err(GpuError::InvalidInput(format!(
                            "text {i} has {} tokens (1 to {} allowed)",
                            ids.len(),
                            t.context_length
                        )));
                    }
                    if let Some(&bad) = ids.iter().find(|&&id| id as usize >= t.vocab_size) {
                        return Err(GpuError::InvalidInput(format!(
                            "text {i}: token id {bad} ≥ vocabulary {}",
                            t.vocab_size
                        )));
                    }
                }
                // Only the positions up to the pooled (first highest-id) token are computed:
                // the same ragged layout as the CPU engine (`Seqs::of`).
                let lens: Vec<usize> = texts.iter().map(|t| text_len(t)).collect();
                let mut s = 0;
                while s < texts.len() {
                    let mut e = s;
                    let mut tok = 0;
                    while e < texts.len() && e - s < max_seqs && tok + lens[e] <= max_tokens {
                        tok += lens[e];
                        e += 1;
                    }
                    let e = e.max(s + 1);
                    let seqs = Seqs::from_lens(lens[s..e].to_vec());
                    out.extend(self.run_chunk(tower, &seqs, &ChunkInput::Tokens(&texts[s..e]))?);
                    s = e;
                }
            }
            _ => return Err(GpuError::InvalidInput(format!("{tower:?} tower given the other tower's input"))),
        }
        Ok(out)
    }

    fn run_chunk(&self, tower: Tower, seqs: &Seqs, input: &ChunkInput) -> Result<Vec<f32>, GpuError> {
        let te = self.tower(tower);
        let dev = &self.ctx.device;
        let oom = dev.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let val = dev.push_error_scope(wgpu::ErrorFilter::Validation);

        let mut guard = te.pool.lock().unwrap_or_else(|e| e.into_inner());
        let grow = match &*guard {
            Some(p) => p.tokens < seqs.tokens() || p.seqs < seqs.count(),
            None => true,
        };
        if grow {
            // Room for the larger of the old pool and this chunk, rounded up to a power of
            // two within the chunk limits, so that growth happens a few times at most.
            let (max_tokens, max_seqs) = self.chunk_limits(tower);
            let round = |need: usize, limit: usize| need.next_power_of_two().min(limit).max(need);
            let (t, s) = match &*guard {
                Some(p) => (p.tokens.max(seqs.tokens()), p.seqs.max(seqs.count())),
                None => (seqs.tokens(), seqs.count()),
            };
            *guard = None; // free the old pool first
            *guard = Some(self.make_pool(te, tower, round(t, max_tokens), round(s, max_seqs)));
        }
        let pool = guard.as_ref().unwrap();
        let (pool_bytes, slots) = (pool.bytes(), pool.seqs);
        let result = self.record_and_run(te, pool, seqs, input);
        let val_err = pollster::block_on(val.pop()).map(|e| GpuError::Backend(e.to_string()));
        let oom_err = pollster::block_on(oom.pop()).map(|e| {
            let what = if tower == Tower::Vision { "images" } else { "texts" };
            GpuError::OutOfMemory(format!(
                "{e} (a chunk of {} {what} in buffers for {slots}, {:.0} MiB; a smaller --batch-size needs less)",
                seqs.count(),
                pool_bytes as f64 / (1 << 20) as f64
            ))
        });
        let result = match oom_err.or(val_err).or_else(|| self.ctx.take_error()) {
            Some(e) => Err(e),
            None => result,
        };
        if result.is_err() {
            // The pool may hold buffers that failed to allocate or a mapped readback buffer:
            // start afresh next time, and let the device free them now (after an out-of-memory
            // error the CPU that takes over needs that memory back).
            *guard = None;
            let _ = dev.poll(wgpu::PollType::Poll);
        }
        result
    }

    /// Writes a chunk's inputs and parameters, records every op into one command encoder,
    /// submits it and reads the embeddings back.
    fn record_and_run(
        &self,
        te: &TowerExec,
        pool: &Pool,
        seqs: &Seqs,
        input: &ChunkInput,
    ) -> Result<Vec<f32>, GpuError> {
        let program = &te.program;
        let dev = &self.ctx.device;
        let queue = &self.ctx.queue;
        // Inputs, sequence table and the per-op parameters.
        match input {
            ChunkInput::Pixels(px) => queue.write_buffer(&pool.input, 0, bytemuck::cast_slice(px)),
            ChunkInput::Tokens(texts) => {
                let tok: Vec<u32> = texts
                    .iter()
                    .zip(&seqs.lens)
                    .flat_map(|(ids, &len)| ids[..len].iter().enumerate().flat_map(|(j, &id)| [id, j as u32]))
                    .collect();
                queue.write_buffer(&pool.input, 0, bytemuck::cast_slice(&tok));
            }
        }
        let table: Vec<u32> = seqs.offsets.iter().zip(&seqs.lens).flat_map(|(&o, &l)| [o as u32, l as u32]).collect();
        queue.write_buffer(&pool.seqbuf, 0, bytemuck::cast_slice(&table));
        let launches: Vec<([u32; 8], [u32; 3])> =
            program.ops.iter().zip(&te.keys).map(|(op, key)| self.launch(program, op, key, seqs)).collect();
        let mut uni = vec![0u8; program.ops.len() * UNIFORM_STRIDE as usize];
        for (i, (p, _)) in launches.iter().enumerate() {
            let o = i * UNIFORM_STRIDE as usize;
            uni[o..o + 32].copy_from_slice(bytemuck::cast_slice(p));
        }
        queue.write_buffer(&pool.uniforms, 0, &uni);

        let mut enc = dev.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("clip-wgpu batch") });
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("clip-wgpu tower"),
                timestamp_writes: None,
            });
            for (i, ((_, d), key)) in launches.iter().zip(&te.keys).enumerate() {
                if d.contains(&0) {
                    continue;
                }
                pass.set_pipeline(&self.kernels[key].pipeline);
                pass.set_bind_group(0, &pool.bind_groups[i], &[]);
                pass.dispatch_workgroups(d[0], d[1], d[2]);
            }
        }
        let bytes = (seqs.count() * program.embed_dim * 4) as u64;
        enc.copy_buffer_to_buffer(&pool.acts[&program.output], 0, &pool.readback, 0, bytes);
        queue.submit([enc.finish()]);
        self.counters.submits.fetch_add(1, Relaxed);

        let (tx, rx) = std::sync::mpsc::channel();
        let slice = pool.readback.slice(0..bytes);
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        dev.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| GpuError::DeviceLost(e.to_string()))?;
        if let Some(e) = self.ctx.take_error() {
            return Err(e);
        }
        match rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(GpuError::Backend(format!("reading the embeddings back: {e}"))),
            Err(_) => return Err(GpuError::Backend("the readback never completed".into())),
        }
        let out: Vec<f32> = {
            let view = slice.get_mapped_range().map_err(|e| GpuError::Backend(e.to_string()))?;
            view.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
        };
        pool.readback.unmap();
        Ok(out)
    }

    /// Uniform parameters and dispatch shape of one op on a chunk.
    fn launch(&self, program: &Program, op: &Op, key: &KernelKey, seqs: &Seqs) -> ([u32; 8], [u32; 3]) {
        let rows = |a: Act| match program.rows(a) {
            Rows::Tokens => seqs.tokens(),
            Rows::Seqs => seqs.count(),
        };
        match *op {
            Op::PatchEmbed { patch, .. } => {
                let v = &self.cfg.vision;
                let p = matmul::patch_params(seqs.count(), patch.n_out, v.image_size, v.patch_size);
                (p, matmul::dispatch(seqs.count() * v.tokens(), patch.n_out))
            }
            Op::TokenEmbed { out, .. } => embed::token_params(seqs.tokens(), program.width(out)),
            Op::LayerNorm { x, eps, .. } => (norm::params(program.width(x), rows(x), eps), norm::dispatch(rows(x))),
            Op::Linear { x, lin, .. } if matches!(key, KernelKey::MatmulCoop(_)) => {
                (matmul_coop::params(rows(x), lin.n_out, lin.n_in), matmul_coop::dispatch(rows(x), lin.n_out))
            }
            Op::Linear { x, lin, .. } => {
                (matmul::params(rows(x), lin.n_out, lin.n_in), matmul::dispatch(rows(x), lin.n_out))
            }
            Op::Attention { out, heads, head_dim, .. } => {
                (attention::params(program.width(out), heads, head_dim), attention::dispatch(heads, seqs.count()))
            }
            Op::Pool { x, at, .. } => embed::pool_params(seqs.count(), program.width(x), at == PoolAt::Last),
            Op::L2Normalize { x } => (norm::params(program.width(x), rows(x), 0.0), norm::dispatch(rows(x))),
        }
    }

    fn buffer(&self, label: &str, size: u64, usage: wgpu::BufferUsages) -> wgpu::Buffer {
        self.counters.buffers.fetch_add(1, Relaxed);
        self.ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: align(size.max(16), 16),
            usage,
            mapped_at_creation: false,
        })
    }

    fn make_pool(&self, te: &TowerExec, tower: Tower, tokens: usize, seqs: usize) -> Pool {
        use wgpu::BufferUsages as U;
        let program = &te.program;
        let acts: HashMap<Act, wgpu::Buffer> = program
            .widths
            .iter()
            .map(|&(a, w, rows)| {
                let r = match rows {
                    Rows::Tokens => tokens,
                    Rows::Seqs => seqs,
                };
                let size = (r * w) as u64 * act_dt(program, self.precision, a).size();
                (a, self.buffer(&format!("clip-wgpu {a:?}"), size, U::STORAGE | U::COPY_SRC | U::COPY_DST))
            })
            .collect();
        let input_size = match tower {
            Tower::Vision => (seqs * 3 * self.cfg.vision.image_size * self.cfg.vision.image_size * 4) as u64,
            Tower::Text => (tokens * 8) as u64,
        };
        let input = self.buffer("clip-wgpu input", input_size, U::STORAGE | U::COPY_DST);
        let seqbuf = self.buffer("clip-wgpu seqs", (seqs * 8) as u64, U::STORAGE | U::COPY_DST);
        let uniforms =
            self.buffer("clip-wgpu params", program.ops.len() as u64 * UNIFORM_STRIDE, U::UNIFORM | U::COPY_DST);
        let readback =
            self.buffer("clip-wgpu readback", (seqs * program.embed_dim * 4) as u64, U::MAP_READ | U::COPY_DST);
        let mut pool = Pool { tokens, seqs, acts, input, seqbuf, uniforms, readback, bind_groups: Vec::new() };
        pool.bind_groups = program
            .ops
            .iter()
            .zip(&te.keys)
            .enumerate()
            .map(|(i, (op, key))| self.bind_group(&pool, i, op, key))
            .collect();
        pool
    }

    fn bind_group(&self, pool: &Pool, i: usize, op: &Op, key: &KernelKey) -> wgpu::BindGroup {
        let act = |a: Act| pool.acts[&a].as_entire_binding();
        let w = |id| self.weights.binding(id);
        let dummy = || self.dummy.as_entire_binding();
        let res: Vec<(u32, wgpu::BindingResource)> = match *op {
            Op::PatchEmbed { patch, class, pos, out } => {
                vec![
                    (1, pool.input.as_entire_binding()),
                    (2, w(patch.weight)),
                    (3, w(pos)),
                    (4, act(out)),
                    (5, w(class)),
                ]
            }
            Op::TokenEmbed { table, pos, out } => {
                vec![(1, act(out)), (2, w(table)), (3, w(pos)), (4, pool.input.as_entire_binding())]
            }
            Op::LayerNorm { x, ln, out, .. } => {
                let mut r = vec![(1, act(out))];
                if x != out {
                    r.push((2, act(x)));
                }
                r.push((3, w(ln.gamma)));
                r.push((4, w(ln.beta)));
                r
            }
            Op::Linear { x, lin, out, .. } => {
                vec![(1, act(x)), (2, w(lin.weight)), (3, lin.bias.map(w).unwrap_or_else(dummy)), (4, act(out))]
            }
            Op::Attention { qkv, out, .. } => vec![(1, act(qkv)), (2, pool.seqbuf.as_entire_binding()), (3, act(out))],
            Op::Pool { x, out, .. } => vec![(5, act(out)), (6, act(x)), (7, pool.seqbuf.as_entire_binding())],
            Op::L2Normalize { x } => vec![(1, act(x))],
        };
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: &pool.uniforms,
                offset: i as u64 * UNIFORM_STRIDE,
                size: std::num::NonZeroU64::new(UNIFORM_SIZE),
            }),
        }];
        entries.extend(res.into_iter().map(|(binding, resource)| wgpu::BindGroupEntry { binding, resource }));
        debug_assert_eq!(entries.len(), key.bindings().len(), "{}", key.name());
        self.counters.bind_groups.fetch_add(1, Relaxed);
        self.ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(&key.name()),
            layout: &self.kernels[key].layout,
            entries: &entries,
        })
    }
}

enum ChunkInput<'a> {
    Pixels(&'a [f32]),
    Tokens(&'a [Vec<u32>]),
}
