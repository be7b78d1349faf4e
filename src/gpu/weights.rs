//! All parameters, uploaded once, in the storage type of the precision (converted to f16
//! once where that is f16), packed into a few large buffers. Each parameter starts at an
//! offset aligned to the device's `min_storage_buffer_offset_alignment` and is bound as its
//! own slice, so no binding exceeds `max_storage_buffer_binding_size` (128 MiB on lavapipe).
//! A parameter larger than that (a 768-wide text tower's token table is 152 MB in f32) is
//! split by rows into parts that each fit; only ops that can bind parts
//! ([`Res::ParamPart`](super::family::Res::ParamPart): the token embedding) accept it, the
//! others are refused at engine build with the parameter, its size and the limit named.

use super::context::Context;
use super::types::{Dt, GpuError};
use crate::model::{ParamId, Params};

/// Where one part of one parameter lives.
#[derive(Debug, Clone, Copy)]
pub struct Slot {
    pub buffer: usize,
    pub offset: u64,
    /// Bytes bound (the data, padded to 16).
    pub size: u64,
}

pub struct WeightStore {
    pub buffers: Vec<wgpu::Buffer>,
    /// The parts of each parameter (one for all that fit a binding), in row order.
    pub parts: Vec<Vec<Slot>>,
    /// Rows of each part (of the last one: at most that).
    pub part_rows: Vec<usize>,
    pub dt: Dt,
    /// Bytes of parameter data (unpadded).
    pub bytes: u64,
    /// The largest binding the store was made for.
    pub cap: u64,
}

fn align(v: u64, a: u64) -> u64 {
    v.div_ceil(a) * a
}

impl WeightStore {
    /// Packs and uploads every parameter of `params` as `dt`, no binding larger than
    /// `max_binding` bytes (the device's limit, or less to test the splitting).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn upload(ctx: &Context, params: &Params, dt: Dt, max_binding: u64) -> Result<WeightStore, GpuError> {
        super::context::block_on(Self::upload_async(ctx, params, dt, max_binding))
    }

    /// [`upload`](Self::upload), awaited (the web's way: its error scopes answer through a
    /// promise).
    pub async fn upload_async(
        ctx: &Context,
        params: &Params,
        dt: Dt,
        max_binding: u64,
    ) -> Result<WeightStore, GpuError> {
        let limits = ctx.device.limits();
        let al = (limits.min_storage_buffer_offset_alignment as u64).max(16);
        // Largest buffer: within one binding and one buffer, and at most 1 GiB.
        let cap = (max_binding.min(ctx.max_binding()).min(1 << 30) / al) * al;
        let mut parts: Vec<Vec<Slot>> = Vec::with_capacity(params.list.len());
        let mut part_rows = Vec::with_capacity(params.list.len());
        // (param, first element, elements, where) of every part
        let mut pieces: Vec<(usize, usize, usize, Slot)> = Vec::new();
        let mut sizes: Vec<u64> = Vec::new();
        for (pi, p) in params.list.iter().enumerate() {
            let rows = p.shape.first().copied().unwrap_or(1).max(1);
            let row = p.data.len() / rows;
            let whole = align((p.data.len() as u64 * dt.size()).max(16), 16);
            let per = if whole <= cap { rows } else { (cap / (row as u64 * dt.size()).max(1)) as usize };
            if per == 0 {
                return Err(GpuError::Unsupported(format!(
                    "parameter {}: one row ({} bytes) exceeds the largest storage binding ({cap} bytes)",
                    p.name,
                    row as u64 * dt.size()
                )));
            }
            let mut list = Vec::new();
            let mut r0 = 0;
            while r0 < rows {
                let n = per.min(rows - r0);
                let size = align((n * row) as u64 * dt.size(), 16).max(16);
                let need_new = match sizes.last() {
                    None => true,
                    Some(&used) => align(used, al) + size > cap,
                };
                if need_new {
                    sizes.push(0);
                }
                let b = sizes.len() - 1;
                let offset = align(sizes[b], al);
                sizes[b] = offset + size;
                list.push(Slot { buffer: b, offset, size });
                pieces.push((pi, r0 * row, n * row, Slot { buffer: b, offset, size }));
                r0 += n;
            }
            parts.push(list);
            part_rows.push(per);
        }
        let scope = ctx.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let mut buffers = Vec::with_capacity(sizes.len());
        for (b, &size) in sizes.iter().enumerate() {
            // Each parameter is written straight into the buffer's mapping (f16: converted
            // through a small scratch block): no copy of the whole buffer on the host. The
            // mapping is write-only (wgpu's `WriteOnly`: it may be write-combining memory).
            let buf = ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(&format!("clip-wgpu weights {b}")),
                size: align(size, 4),
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: true,
            });
            {
                let mut view = buf
                    .get_mapped_range_mut(..)
                    .map_err(|e| GpuError::Backend(format!("mapping a weight buffer: {e}")))?;
                let mut scratch: Vec<u8> = Vec::new();
                for &(pi, start, len, s) in pieces.iter().filter(|p| p.3.buffer == b) {
                    let src = &params.list[pi].data[start..start + len];
                    let at = s.offset as usize;
                    match dt {
                        Dt::F32 => view.slice(at..at + 4 * len).copy_from_slice(bytemuck::cast_slice(src)),
                        Dt::F16 => {
                            const BLOCK: usize = 1 << 15;
                            for (i, part) in src.chunks(BLOCK).enumerate() {
                                scratch.clear();
                                scratch.extend(part.iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()));
                                let o = at + 2 * i * BLOCK;
                                view.slice(o..o + scratch.len()).copy_from_slice(&scratch);
                            }
                        }
                    }
                }
            }
            buf.unmap();
            buffers.push(buf);
        }
        if let Some(e) = scope.pop().await {
            return Err(GpuError::OutOfMemory(format!("uploading the weights: {e}")));
        }
        let bytes = params.list.iter().map(|p| p.data.len() as u64 * dt.size()).sum();
        Ok(WeightStore { buffers, parts, part_rows, dt, bytes, cap })
    }

    /// How many parts parameter `id` was split into (1 when it fits one binding).
    pub fn part_count(&self, id: ParamId) -> usize {
        self.parts[id.0].len()
    }

    /// The binding of part `i` of a parameter (part 0 where it has fewer parts).
    pub fn binding(&self, id: ParamId, i: usize) -> wgpu::BindingResource<'_> {
        let list = &self.parts[id.0];
        let s = list.get(i).unwrap_or(&list[0]);
        wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer: &self.buffers[s.buffer],
            offset: s.offset,
            size: std::num::NonZeroU64::new(s.size),
        })
    }
}
