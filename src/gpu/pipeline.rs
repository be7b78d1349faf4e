//! Compute pipelines: one per kernel variant, with its bind group layout made from the
//! variant's bindings.

use super::shader::KernelKey;
use super::wgsl::Binding;

/// A compute pipeline and its bind group layout.
pub struct Kernel {
    pub pipeline: wgpu::ComputePipeline,
    pub layout: wgpu::BindGroupLayout,
}

/// Creates the pipeline of one kernel variant (the engine, the self-check, the tests and the
/// benches all make theirs here).
pub fn create_kernel(device: &wgpu::Device, key: &KernelKey) -> Kernel {
    create_kernel_cached(device, key, None)
}

/// [`create_kernel`] through a pipeline cache (the engine's, persisted across runs: see
/// [`pipeline_cache`](super::pipeline_cache)).
pub fn create_kernel_cached(device: &wgpu::Device, key: &KernelKey, cache: Option<&wgpu::PipelineCache>) -> Kernel {
    let name = key.name();
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some(&name),
        source: wgpu::ShaderSource::Wgsl(key.source().into()),
    });
    let entries: Vec<wgpu::BindGroupLayoutEntry> = key
        .bindings()
        .into_iter()
        .map(|(binding, b)| wgpu::BindGroupLayoutEntry {
            binding,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: match b {
                    Binding::Uniform => wgpu::BufferBindingType::Uniform,
                    Binding::Read => wgpu::BufferBindingType::Storage { read_only: true },
                    Binding::ReadWrite => wgpu::BufferBindingType::Storage { read_only: false },
                },
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        })
        .collect();
    let layout =
        device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor { label: Some(&name), entries: &entries });
    let pl = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
        label: Some(&name),
        bind_group_layouts: &[Some(&layout)],
        immediate_size: 0,
    });
    let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some(&name),
        layout: Some(&pl),
        module: &module,
        entry_point: Some(key.entry()),
        compilation_options: Default::default(),
        cache,
    });
    Kernel { pipeline, layout }
}

/// A bind group of `key`'s kernel with `resources` bound to its slots in order (the uniform
/// block first): the self-check, the tests and the benches bind through the same slot list
/// as the engine.
pub fn bind_all(
    device: &wgpu::Device,
    kernel: &Kernel,
    key: &KernelKey,
    resources: Vec<wgpu::BindingResource<'_>>,
) -> wgpu::BindGroup {
    let slots = key.slots();
    assert_eq!(slots.len(), resources.len(), "{}: {} slots, {} resources", key.name(), slots.len(), resources.len());
    let entries: Vec<wgpu::BindGroupEntry> = slots
        .iter()
        .zip(resources)
        .map(|(s, resource)| wgpu::BindGroupEntry { binding: s.binding, resource })
        .collect();
    device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some(&key.name()),
        layout: &kernel.layout,
        entries: &entries,
    })
}
