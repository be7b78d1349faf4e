//! The encoder's device side: the resources every chunk uses ([`Resources`]: device,
//! weights, pipelines) and one tower's activation pool ([`Pool`]): one buffer per [`Act`],
//! the pixel or token input, the sequence table, the per-op uniform blocks and the readback
//! buffer, with the bind groups of all ops made once on it (each op's bindings are what its
//! family's [`resources`](super::family::Family::resources) says, bound to the slots its
//! family declares). [`Pool::run`] writes a chunk's inputs and uniforms, records every op in
//! one compute pass, submits once and reads back.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use super::context::Context;
use super::embed::TABLE_PARTS;
use super::family::{Chunk, Res};
use super::pipeline::{create_kernel, Kernel};
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
}

fn align(v: u64, a: u64) -> u64 {
    v.div_ceil(a) * a
}

impl Resources {
    pub fn new(ctx: &Context, weights: WeightStore) -> Resources {
        let counters = Counters::default();
        counters.buffers.fetch_add(weights.buffers.len(), Relaxed);
        let res = Resources {
            dummy: ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("clip-wgpu dummy"),
                size: 256,
                usage: wgpu::BufferUsages::STORAGE,
                mapped_at_creation: false,
            }),
            ctx: ctx.clone(),
            weights,
            kernels: HashMap::new(),
            counters,
        };
        res.counters.buffers.fetch_add(1, Relaxed);
        res
    }

    /// Creates the pipelines of `keys` not made yet.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn add_kernels(&mut self, keys: &[KernelKey]) -> Result<(), GpuError> {
        super::context::block_on(self.add_kernels_async(keys))
    }

    /// [`add_kernels`](Self::add_kernels), awaited.
    pub async fn add_kernels_async(&mut self, keys: &[KernelKey]) -> Result<(), GpuError> {
        let scope = self.ctx.device.push_error_scope(wgpu::ErrorFilter::Validation);
        for key in keys {
            if !self.kernels.contains_key(key) {
                self.kernels.insert(*key, create_kernel(&self.ctx.device, key));
                self.counters.pipelines.fetch_add(1, Relaxed);
            }
        }
        match scope.pop().await {
            Some(e) => Err(GpuError::Backend(format!("creating the pipelines: {e}"))),
            None => Ok(()),
        }
    }

    /// Every op of `program` can be bound: a parameter split across bindings (larger than
    /// one binding may be) only where the op's kernel binds parts, and in no more parts
    /// than it has bindings for.
    pub fn check_bindings(&self, program: &Program, keys: &[KernelKey], params: &Params) -> Result<(), GpuError> {
        let w = &self.weights;
        for (op, key) in program.ops.iter().zip(keys) {
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
        let mut pool = Pool { tokens, seqs, acts, input, seqbuf, uniforms, readback, bind_groups: Vec::new() };
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
        queue.write_buffer(&self.uniforms, 0, &uni);

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
        queue.submit([enc.finish()]);
        res.counters.submits.fetch_add(1, Relaxed);

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
