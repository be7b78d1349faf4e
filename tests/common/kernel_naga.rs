//! A kernel variant through naga, as the GPU engine's shader tests need it: the WGSL parsed
//! and validated with exactly the capabilities the variant claims, and its SPIR-V for Vulkan
//! 1.3 (its entry point only). Included by path (`#[path = "common/kernel_naga.rs"]`).
#![allow(dead_code)]

use clip_wgpu::gpu::KernelKey;
use naga::valid::{Capabilities, ModuleInfo, ShaderStages, SubgroupOperationSet, ValidationFlags, Validator};

/// The validator capabilities a variant claims: f16, subgroups, cooperative matrices.
pub fn capabilities(key: &KernelKey) -> Capabilities {
    let mut caps = Capabilities::empty();
    if key.needs_f16() {
        caps |= Capabilities::SHADER_FLOAT16;
    }
    if key.needs_subgroup() {
        caps |= Capabilities::SUBGROUP;
    }
    if key.needs_coop() {
        caps |= Capabilities::COOPERATIVE_MATRIX;
    }
    caps
}

/// A validator with `caps` and, where they include subgroups, every subgroup operation in
/// compute shaders.
pub fn validator(caps: Capabilities) -> Validator {
    let mut v = Validator::new(ValidationFlags::all(), caps);
    if caps.contains(Capabilities::SUBGROUP) {
        v.subgroup_stages(ShaderStages::COMPUTE);
        v.subgroup_operations(SubgroupOperationSet::all());
    }
    v
}

/// The variant's WGSL parsed and validated with its own capabilities (naga's messages on error).
pub fn parse_and_validate(key: &KernelKey) -> Result<(naga::Module, ModuleInfo), String> {
    let src = key.source();
    let module = naga::front::wgsl::parse_str(&src).map_err(|e| e.emit_to_string(&src))?;
    let info = validator(capabilities(key)).validate(&module).map_err(|e| e.emit_to_string(&src))?;
    Ok((module, info))
}

/// naga's SPIR-V (Vulkan 1.3) of the variant's entry point.
pub fn spirv(m: &naga::Module, info: &ModuleInfo, key: &KernelKey) -> Result<Vec<u32>, String> {
    let opts = naga::back::spv::Options { lang_version: (1, 3), ..Default::default() };
    let po =
        naga::back::spv::PipelineOptions { shader_stage: naga::ShaderStage::Compute, entry_point: key.entry().into() };
    naga::back::spv::write_vec(m, info, &opts, Some(&po)).map_err(|e| format!("{e:?}"))
}
