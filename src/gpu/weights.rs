//! All parameters, uploaded once, in the storage type of the precision (converted to f16
//! once where that is f16), packed into a few large buffers. Each parameter starts at an
//! offset aligned to the device's `min_storage_buffer_offset_alignment` and is bound as its
//! own slice, so no binding exceeds `max_storage_buffer_binding_size` (128 MiB on lavapipe)
//! however large the model.

use super::context::Context;
use super::types::{Dt, GpuError};
use crate::model::{ParamId, Params};

/// Where one parameter lives.
#[derive(Debug, Clone, Copy)]
pub struct Slot {
    pub buffer: usize,
    pub offset: u64,
    /// Bytes bound (the data, padded to 16).
    pub size: u64,
}

pub struct WeightStore {
    pub buffers: Vec<wgpu::Buffer>,
    pub slots: Vec<Slot>,
    pub dt: Dt,
    /// Bytes of parameter data (unpadded).
    pub bytes: u64,
}

fn align(v: u64, a: u64) -> u64 {
    v.div_ceil(a) * a
}

impl WeightStore {
    /// Packs and uploads every parameter of `params` as `dt`.
    pub fn upload(ctx: &Context, params: &Params, dt: Dt) -> Result<WeightStore, GpuError> {
        let limits = ctx.device.limits();
        let al = (limits.min_storage_buffer_offset_alignment as u64).max(16);
        // Largest buffer: within one binding and one buffer, and at most 1 GiB.
        let cap = (ctx.max_binding().min(1 << 30) / al) * al;
        let mut slots = Vec::with_capacity(params.list.len());
        let mut sizes: Vec<u64> = Vec::new();
        for p in &params.list {
            let size = align((p.data.len() as u64 * dt.size()).max(16), 16);
            if size > cap {
                return Err(GpuError::Unsupported(format!(
                    "parameter {} ({} bytes) exceeds the largest storage binding ({} bytes)",
                    p.name, size, cap
                )));
            }
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
            slots.push(Slot { buffer: b, offset, size });
        }
        let scope = ctx.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let mut buffers = Vec::with_capacity(sizes.len());
        for (b, &size) in sizes.iter().enumerate() {
            let buf = ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(&format!("clip-wgpu weights {b}")),
                size: align(size, 4),
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: true,
            });
            let mut host = vec![0u8; align(size, 4) as usize];
            for (p, s) in params.list.iter().zip(&slots).filter(|(_, s)| s.buffer == b) {
                let dst = &mut host[s.offset as usize..];
                match dt {
                    Dt::F32 => {
                        let src: &[u8] = bytemuck::cast_slice(&p.data);
                        dst[..src.len()].copy_from_slice(src);
                    }
                    Dt::F16 => {
                        for (i, &v) in p.data.iter().enumerate() {
                            dst[2 * i..2 * i + 2].copy_from_slice(&half::f16::from_f32(v).to_le_bytes());
                        }
                    }
                }
            }
            buf.get_mapped_range_mut(..)
                .map_err(|e| GpuError::Backend(format!("mapping a weight buffer: {e}")))?
                .copy_from_slice(&host);
            buf.unmap();
            buffers.push(buf);
        }
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(GpuError::OutOfMemory(format!("uploading the weights: {e}")));
        }
        let bytes = params.list.iter().map(|p| p.data.len() as u64 * dt.size()).sum();
        Ok(WeightStore { buffers, slots, dt, bytes })
    }

    /// The binding of one parameter.
    pub fn binding(&self, id: ParamId) -> wgpu::BindingResource<'_> {
        let s = self.slots[id.0];
        wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer: &self.buffers[s.buffer],
            offset: s.offset,
            size: std::num::NonZeroU64::new(s.size),
        })
    }
}
