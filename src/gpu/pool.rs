//! The encoder's device side: the resources every chunk uses ([`Resources`]: device,
//! weights, pipelines) and one tower's activation pool ([`Pool`]): one buffer per [`Act`],
//! the pixel or token input, the sequence table, the per-op uniform blocks and the readback
//! buffer, with the bind groups of all ops made once on it (each op's bindings are what its
//! family's [`resources`](super::family::Family::resources) says, bound to the slots its
//! family declares). [`Pool::run`] writes a chunk's inputs and uniforms, records every op in
//! one compute pass, submits once and reads back.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Mutex;

use super::context::Context;
use super::embed::TABLE_PARTS;
use super::family::{Chunk, Res};
use super::pipeline::{create_kernel_cached, Kernel};
use super::pipeline_cache::CacheReport;
use super::shader::KernelKey;
use super::types::{Dt, GpuError};
use super::weights::WeightStore;
use crate::model::{Act, Params, Program, Rows, Seqs};

/// Distance between two ops' uniform blocks (the minimum uniform offset alignment).
pub const UNIFORM_STRIDE: u64 = 256;

/// Counters of what was created and done (tests, `info`).
#[derive(Default)]
pub struct Counters {
    pub buffers: AtomicUsize,
    pub pipelines: AtomicUsize,
    pub bind_groups: AtomicUsize,
    pub submits: AtomicUsize,
}

/// What every chunk of both towers uses.
pub struct Resources {
    pub ctx: Context,
    pub weights: WeightStore,
    pub kernels: HashMap<KernelKey, Kernel>,
    /// Bound where a linear layer has no bias.
    pub dummy: wgpu::Buffer,
    pub counters: Counters,
    /// What became of the persisted pipeline cache (`None` where none was used).
    pub pipeline_cache: Option<CacheReport>,
}

fn align(v: u64, a: u64) -> u64 {
    v.div_ceil(a) * a
}

impl Resources {
    /// The weights uploaded and the pipelines made (see [`create_kernels`]).
    pub fn new(ctx: &Context, weights: WeightStore, kernels: HashMap<KernelKey, Kernel>) -> Resources {
        let counters = Counters::default();
        counters.buffers.fetch_add(weights.buffers.len(), Relaxed);
        counters.pipelines.fetch_add(kernels.len(), Relaxed);
        let res = Resources {
            dummy: ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("clip-wgpu dummy"),
                size: 256,
                usage: wgpu::BufferUsages::STORAGE,
                mapped_at_creation: false,
            }),
            ctx: ctx.clone(),
            weights,
            kernels,
            counters,
            pipeline_cache: None,
        };
        res.counters.buffers.fetch_add(1, Relaxed);
        res
    }

    /// Every op of `program` can be bound: a parameter split across bindings (larger than
    /// one binding may be) only where the op's kernel binds parts, and in no more parts
    /// than it has bindings for; and every op is a shape its variant runs ([`KernelKey::check`]).
    pub fn check_bindings(&self, program: &Program, keys: &[KernelKey], params: &Params) -> Result<(), GpuError> {
        let w = &self.weights;
        for (op, key) in program.ops.iter().zip(keys) {
            key.check(op, program)?;
            for r in key.resources(op) {
                let (id, allowed) = match r {
                    Res::Param(id) | Res::OptParam(Some(id)) => (id, 1),
                    Res::ParamPart(id, _) => (id, TABLE_PARTS),
                    _ => continue,
                };
                if w.part_count(id) > allowed {
                    let p = params.get(id);
                    let bytes = p.data.len() as u64 * w.dt.size();
                    let how = if allowed == 1 {
                        "and that kernel binds it whole".to_string()
                    } else {
                        format!("and that kernel binds at most {allowed} parts of {} rows", w.part_rows[id.0])
                    };
                    return Err(GpuError::Unsupported(format!(
                        "{} of the {:?} tower: parameter {} ({bytes} bytes as {}) exceeds the largest storage \
                         binding ({} bytes) {how}",
                        op.kind(),
                        program.tower,
                        p.name,
                        w.dt.wgsl(),
                        w.cap
                    )));
                }
            }
        }
        Ok(())
    }

    pub fn buffer(&self, label: &str, size: u64, usage: wgpu::BufferUsages) -> wgpu::Buffer {
        self.counters.buffers.fetch_add(1, Relaxed);
        self.ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: align(size.max(16), 16),
            usage,
            mapped_at_creation: false,
        })
    }
}

/// The pipelines of `keys`, each made once, through `cache` where given. Natively they are
/// made on all cores at once (shader translation and the driver's compilation are per
/// pipeline), each thread within its own error scope (wgpu's scopes are per thread); on the
/// web one after the other.
pub async fn create_kernels(
    ctx: &Context,
    keys: &[KernelKey],
    cache: Option<&wgpu::PipelineCache>,
) -> Result<HashMap<KernelKey, Kernel>, GpuError> {
    let mut unique: Vec<KernelKey> = keys.to_vec();
    unique.sort();
    unique.dedup();
    let make = |key: &KernelKey| {
        let scope = ctx.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let kernel = create_kernel_cached(&ctx.device, key, cache);
        (*key, kernel, scope)
    };
    #[cfg(not(target_arch = "wasm32"))]
    let made: Vec<(KernelKey, Kernel, Option<wgpu::Error>)> = {
        use rayon::prelude::*;
        unique
            .par_iter()
            .map(|k| {
                let (key, kernel, scope) = make(k);
                (key, kernel, super::context::block_on(scope.pop()))
            })
            .collect()
    };
    #[cfg(target_arch = "wasm32")]
    let made: Vec<(KernelKey, Kernel, Option<wgpu::Error>)> = {
        let mut v = Vec::new();
        for k in &unique {
            let (key, kernel, scope) = make(k);
            v.push((key, kernel, scope.pop().await));
        }
        v
    };
    let mut kernels = HashMap::new();
    for (key, kernel, err) in made {
        if let Some(e) = err {
            return Err(GpuError::Backend(format!("creating the pipeline of {}: {e}", key.name())));
        }
        kernels.insert(key, kernel);
    }
    Ok(kernels)
}

/// What one chunk cost the CPU (and how long it waited for the device): `info --gpu-stats`
/// and the bench report it. Times in microseconds (zero on the web, which has no clock here).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct ChunkCost {
    /// Compute dispatches recorded (one per op that has work in this chunk).
    pub dispatches: usize,
    /// Bind groups made for this chunk: 0 when the pool's, made with it (once per tower, again
    /// only when a larger chunk grows it), serve it.
    pub bind_groups: usize,
    /// Bytes of uniform blocks written: 0 when the chunk has the previous chunk's shape on
    /// this pool (its blocks are already on the device), all ops' otherwise.
    pub uniform_bytes: usize,
    /// The inputs, sequence table and every op's uniform block computed and written.
    pub write_us: f64,
    /// The compute pass and the readback copy recorded, the command buffer finished.
    pub record_us: f64,
    /// `queue.submit`.
    pub submit_us: f64,
    /// From the submit to the results mapped (the device's work and the readback).
    pub wait_us: f64,
}

/// A start time (none on the web: `Instant::now` panics there).
fn now() -> Option<std::time::Instant> {
    (!cfg!(target_arch = "wasm32")).then(std::time::Instant::now)
}

/// Microseconds since `t`.
fn us(t: Option<std::time::Instant>) -> f64 {
    t.map_or(0.0, |t| t.elapsed().as_secs_f64() * 1e6)
}

/// A chunk's input.
pub enum ChunkInput<'a> {
    /// CHW f32 pixels of the chunk's images.
    Pixels(&'a [f32]),
    /// The chunk's texts (only the first `seqs.lens[i]` ids of text `i` are used).
    Tokens(&'a [Vec<u32>]),
}

/// One tower's activation pool and the bind groups made on it.
pub struct Pool {
    /// Token rows and sequences it has room for.
    pub tokens: usize,
    pub seqs: usize,
    pub acts: HashMap<Act, (wgpu::Buffer, Dt)>,
    input: wgpu::Buffer,
    seqbuf: wgpu::Buffer,
    uniforms: wgpu::Buffer,
    readback: wgpu::Buffer,
    bind_groups: Vec<wgpu::BindGroup>,
    /// The uniform blocks last written to `uniforms` (a chunk of the same shape skips the write).
    written: Mutex<Vec<u8>>,
    /// What the last chunk run on this pool cost.
    pub last_cost: Mutex<Option<ChunkCost>>,
}

impl Pool {
    /// A pool for `tokens` rows and `seqs` sequences of `program`, activations stored as
    /// `dt` says, `input_bytes` of input, `readback_bytes` to read back.
    pub fn new(
        res: &Resources,
        program: &Program,
        keys: &[KernelKey],
        dt: impl Fn(Act) -> Dt,
        (tokens, seqs): (usize, usize),
        input_bytes: u64,
        readback_bytes: u64,
    ) -> Pool {
        use wgpu::BufferUsages as U;
        let acts: HashMap<Act, (wgpu::Buffer, Dt)> = program
            .widths
            .iter()
            .map(|&(a, w, rows)| {
                let r = match rows {
                    Rows::Tokens => tokens,
                    Rows::Seqs => seqs,
                };
                let size = (r * w) as u64 * dt(a).size();
                (a, (res.buffer(&format!("clip-wgpu {a:?}"), size, U::STORAGE | U::COPY_SRC | U::COPY_DST), dt(a)))
            })
            .collect();
        let input = res.buffer("clip-wgpu input", input_bytes, U::STORAGE | U::COPY_DST);
        let seqbuf = res.buffer("clip-wgpu seqs", (seqs * 8) as u64, U::STORAGE | U::COPY_DST);
        let uniforms =
            res.buffer("clip-wgpu params", program.ops.len() as u64 * UNIFORM_STRIDE, U::UNIFORM | U::COPY_DST);
        let readback = res.buffer("clip-wgpu readback", readback_bytes, U::MAP_READ | U::COPY_DST);
        let mut pool = Pool {
            tokens,
            seqs,
            acts,
            input,
            seqbuf,
            uniforms,
            readback,
            bind_groups: Vec::new(),
            written: Mutex::new(Vec::new()),
            last_cost: Mutex::new(None),
        };
        pool.bind_groups =
            program.ops.iter().zip(keys).enumerate().map(|(i, (op, key))| pool.bind_group(res, i, op, key)).collect();
        pool
    }

    /// Bytes of GPU memory the pool holds.
    pub fn bytes(&self) -> u64 {
        let fixed = [&self.input, &self.seqbuf, &self.uniforms, &self.readback];
        self.acts.values().map(|a| &a.0).chain(fixed).map(|b| b.size()).sum()
    }

    fn bind_group(&self, res: &Resources, i: usize, op: &crate::model::Op, key: &KernelKey) -> wgpu::BindGroup {
        let w = &res.weights;
        let entries: Vec<wgpu::BindGroupEntry> = key
            .slots()
            .iter()
            .zip(key.resources(op))
            .map(|(slot, r)| wgpu::BindGroupEntry {
                binding: slot.binding,
                resource: match r {
                    Res::Uniform => wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                        buffer: &self.uniforms,
                        offset: i as u64 * UNIFORM_STRIDE,
                        size: std::num::NonZeroU64::new(key.params_size()),
                    }),
                    Res::Act(a) => self.acts[&a].0.as_entire_binding(),
                    Res::Param(id) | Res::OptParam(Some(id)) => w.binding(id, 0),
                    Res::OptParam(None) => res.dummy.as_entire_binding(),
                    Res::ParamPart(id, part) => w.binding(id, part),
                    Res::Input => self.input.as_entire_binding(),
                    Res::Seqs => self.seqbuf.as_entire_binding(),
                },
            })
            .collect();
        debug_assert_eq!(entries.len(), key.slots().len(), "{}", key.name());
        res.counters.bind_groups.fetch_add(1, Relaxed);
        res.ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(&key.name()),
            layout: &res.kernels[key].layout,
            entries: &entries,
        })
    }

    /// Writes a chunk's inputs, the activations of `init` (f32, converted to their storage
    /// type) and every op's uniform block, records every op into one compute pass, submits
    /// once and returns the first `rows × width` values of each activation of `read`.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn run(
        &self,
        res: &Resources,
        keys: &[KernelKey],
        chunk: &Chunk,
        input: &ChunkInput,
        init: &[(Act, &[f32])],
        read: &[Act],
    ) -> Result<Vec<Vec<f32>>, GpuError> {
        super::context::block_on(self.run_async(res, keys, chunk, input, init, read))
    }

    /// [`run`](Self::run), awaited: on the web the readback's mapping completes when the
    /// browser says so, with nothing polled or blocked.
    pub async fn run_async(
        &self,
        res: &Resources,
        keys: &[KernelKey],
        chunk: &Chunk<'_>,
        input: &ChunkInput<'_>,
        init: &[(Act, &[f32])],
        read: &[Act],
    ) -> Result<Vec<Vec<f32>>, GpuError> {
        let program = chunk.program;
        let seqs: &Seqs = chunk.seqs;
        let dev = &res.ctx.device;
        let queue = &res.ctx.queue;
        let mut cost = ChunkCost::default();
        let t = now();
        match input {
            ChunkInput::Pixels(px) => queue.write_buffer(&self.input, 0, bytemuck::cast_slice(px)),
            ChunkInput::Tokens(texts) => {
                let tok: Vec<u32> = texts
                    .iter()
                    .zip(&seqs.lens)
                    .flat_map(|(ids, &len)| ids[..len].iter().enumerate().flat_map(|(j, &id)| [id, j as u32]))
                    .collect();
                queue.write_buffer(&self.input, 0, bytemuck::cast_slice(&tok));
            }
        }
        let table: Vec<u32> = seqs.offsets.iter().zip(&seqs.lens).flat_map(|(&o, &l)| [o as u32, l as u32]).collect();
        queue.write_buffer(&self.seqbuf, 0, bytemuck::cast_slice(&table));
        for (a, data) in init {
            let (buf, dt) = &self.acts[a];
            queue.write_buffer(buf, 0, &to_bytes(data, *dt));
        }
        let launches: Vec<(Vec<u8>, [u32; 3])> =
            program.ops.iter().zip(keys).map(|(op, k)| k.launch(op, chunk)).collect();
        let mut uni = vec![0u8; program.ops.len() * UNIFORM_STRIDE as usize];
        for (i, (p, _)) in launches.iter().enumerate() {
            let o = i * UNIFORM_STRIDE as usize;
            uni[o..o + p.len()].copy_from_slice(p);
        }
        {
            // the blocks depend on the chunk's shape only: a batch of the previous one's shape
            // (every full batch of images) finds them on the device already
            let mut written = self.written.lock().unwrap_or_else(|e| e.into_inner());
            if *written != uni {
                queue.write_buffer(&self.uniforms, 0, &uni);
                cost.uniform_bytes = uni.len();
                *written = uni;
            }
        }
        cost.write_us = us(t);

        let t = now();
        let mut enc = dev.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("clip-wgpu batch") });
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("clip-wgpu tower"),
                timestamp_writes: None,
            });
            for (i, ((_, d), key)) in launches.iter().zip(keys).enumerate() {
                if d.contains(&0) {
                    continue;
                }
                pass.set_pipeline(&res.kernels[key].pipeline);
                pass.set_bind_group(0, &self.bind_groups[i], &[]);
                pass.dispatch_workgroups(d[0], d[1], d[2]);
                cost.dispatches += 1;
            }
        }
        // The activations to read, back to back (16-byte aligned) in the readback buffer, or
        // in a larger one made for this call.
        let mut spans = Vec::new();
        let mut total = 0u64;
        for a in read {
            let dt = self.acts[a].1;
            let bytes = (chunk.rows(*a) * chunk.width(*a)) as u64 * dt.size();
            spans.push((*a, total, bytes, dt));
            total = align(total + bytes, 16);
        }
        let temp;
        let readback = if total <= self.readback.size() {
            &self.readback
        } else {
            temp = res.buffer(
                "clip-wgpu readback (extra)",
                total,
                wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            );
            &temp
        };
        for &(a, off, bytes, _) in &spans {
            if bytes > 0 {
                enc.copy_buffer_to_buffer(&self.acts[&a].0, 0, readback, off, bytes);
            }
        }
        let commands = enc.finish();
        cost.record_us = us(t);
        let t = now();
        queue.submit([commands]);
        cost.submit_us = us(t);
        res.counters.submits.fetch_add(1, Relaxed);
        let t = now();

        let total = total.max(16);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let slice = readback.slice(0..total);
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        // Natively the mapping completes inside this wait (the receive below is then ready);
        // the browser completes it on its own, and the receive waits for it.
        #[cfg(not(target_arch = "wasm32"))]
        dev.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| GpuError::DeviceLost(e.to_string()))?;
        let mapped = rx.await;
        cost.wait_us = us(t);
        *self.last_cost.lock().unwrap_or_else(|e| e.into_inner()) = Some(cost);
        if let Some(e) = res.ctx.take_error() {
            return Err(e);
        }
        match mapped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(GpuError::Backend(format!("reading the results back: {e}"))),
            Err(_) => return Err(GpuError::Backend("the readback never completed".into())),
        }
        let out = {
            let view = slice.get_mapped_range().map_err(|e| GpuError::Backend(e.to_string()))?;
            spans
                .iter()
                .map(|&(_, off, bytes, dt)| from_bytes(&view[off as usize..(off + bytes) as usize], dt))
                .collect()
        };
        readback.unmap();
        Ok(out)
    }
}

/// f32 values as bytes of storage type `dt`.
pub fn to_bytes(v: &[f32], dt: Dt) -> Vec<u8> {
    match dt {
        Dt::F32 => bytemuck::cast_slice(v).to_vec(),
        Dt::F16 => v.iter().flat_map(|x| half::f16::from_f32(*x).to_le_bytes()).collect(),
    }
}

/// Bytes of storage type `dt` as f32 values.
pub fn from_bytes(b: &[u8], dt: Dt) -> Vec<f32> {
    match dt {
        Dt::F32 => b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        Dt::F16 => b.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
    }
}
