//! Every WGSL kernel variant the GPU engine can use is parsed and validated by naga and
//! written out by its SPIR-V (Vulkan), MSL (Metal), HLSL (DX12) and GLSL (GL) backends, so
//! portability is checked on machines that lack those GPUs.
//!
//! GLSL: naga's GLSL writer has no f16 support, so variants whose entry point uses f16 are
//! allowed to fail there (they are counted; GL adapters lack SHADER_F16 anyway and run the
//! f32 path); every f32 variant, with or without subgroups, must translate.

mod common;
use common::reference::*;
#[path = "common/kernel_naga.rs"]
mod kernel_naga;

use clip_wgpu::gpu::{self, shader, KernelKey, Precision};
use clip_wgpu::model::{self, LoadOptions, Program, Tower};
use naga::valid::{Capabilities, ShaderStages, SubgroupOperationSet, ValidationFlags, Validator};

fn validate(key: &KernelKey) -> Result<(naga::Module, naga::valid::ModuleInfo), String> {
    let (module, info) = kernel_naga::parse_and_validate(key)?;
    let caps = kernel_naga::capabilities(key);
    // It must not validate without the capabilities it claims to need.
    if !caps.is_empty() {
        let mut bare = Validator::new(ValidationFlags::all(), Capabilities::empty());
        assert!(bare.validate(&module).is_err(), "{}: validates without {caps:?}", key.name());
    }
    // Each claimed capability is needed on its own: the validator rejects the module when any
    // one of them is missing (e.g. COOPERATIVE_MATRIX on the tensor-core kernel).
    for one in caps.iter() {
        let mut without = Validator::new(ValidationFlags::all(), caps - one);
        without.subgroup_stages(ShaderStages::COMPUTE);
        without.subgroup_operations(SubgroupOperationSet::all());
        assert!(without.validate(&module).is_err(), "{}: validates without {one:?}", key.name());
    }
    Ok((module, info))
}

fn entry(module: &naga::Module, key: &KernelKey) -> usize {
    module
        .entry_points
        .iter()
        .position(|e| e.name == key.entry())
        .unwrap_or_else(|| panic!("{}: no entry {}", key.name(), key.entry()))
}

fn spirv(m: &naga::Module, info: &naga::valid::ModuleInfo, key: &KernelKey) -> Result<usize, String> {
    kernel_naga::spirv(m, info, key).map(|w| w.len())
}

fn msl(m: &naga::Module, info: &naga::valid::ModuleInfo, key: &KernelKey) -> Result<usize, String> {
    let opts = naga::back::msl::Options { lang_version: (2, 3), fake_missing_bindings: true, ..Default::default() };
    let po = naga::back::msl::PipelineOptions {
        entry_point: Some((naga::ShaderStage::Compute, key.entry().into())),
        ..Default::default()
    };
    naga::back::msl::write_string(m, info, &opts, &po).map(|(s, _)| s.len()).map_err(|e| format!("{e:?}"))
}

fn hlsl(m: &naga::Module, info: &naga::valid::ModuleInfo, key: &KernelKey) -> Result<usize, String> {
    let opts = naga::back::hlsl::Options {
        shader_model: naga::back::hlsl::ShaderModel::V6_2,
        fake_missing_bindings: true,
        ..Default::default()
    };
    let po = naga::back::hlsl::PipelineOptions { entry_point: Some((naga::ShaderStage::Compute, key.entry().into())) };
    let mut s = String::new();
    let mut w = naga::back::hlsl::Writer::new(&mut s, &opts, &po);
    w.write(m, info, None).map_err(|e| format!("{e:?}"))?;
    Ok(s.len())
}

fn glsl(m: &naga::Module, info: &naga::valid::ModuleInfo, key: &KernelKey) -> Result<usize, String> {
    let opts = naga::back::glsl::Options { version: naga::back::glsl::Version::Desktop(430), ..Default::default() };
    let po = naga::back::glsl::PipelineOptions {
        shader_stage: naga::ShaderStage::Compute,
        entry_point: key.entry().into(),
        multiview: None,
    };
    let mut s = String::new();
    let mut w =
        naga::back::glsl::Writer::new(&mut s, m, info, &opts, &po, Default::default()).map_err(|e| format!("{e:?}"))?;
    w.write().map_err(|e| format!("{e:?}"))?;
    Ok(s.len())
}

fn check_all(keys: &[KernelKey]) {
    let mut failures = Vec::new();
    let mut glsl_f16_failures = 0;
    let mut coop = 0;
    for key in keys {
        let (m, info) = match validate(key) {
            Ok(v) => v,
            Err(e) => {
                failures.push(format!("{}: naga validation:\n{e}", key.name()));
                continue;
            }
        };
        entry(&m, key);
        if key.needs_coop() {
            // Cooperative matrices: wgpu exposes them on Vulkan (SPIR-V) and Metal only;
            // SPIR-V is what the H100 runs and must be written. The MSL/HLSL/GLSL writers
            // are not asked (Metal's simdgroup matrices are 8×8; DX12/GL have none in wgpu).
            if let Err(e) = spirv(&m, &info, key) {
                failures.push(format!("{}: spirv: {e}", key.name()));
            }
            coop += 1;
            continue;
        }
        for (backend, r) in
            [("spirv", spirv(&m, &info, key)), ("msl", msl(&m, &info, key)), ("hlsl", hlsl(&m, &info, key))]
        {
            if let Err(e) = r {
                failures.push(format!("{}: {backend}: {e}", key.name()));
            }
        }
        match (glsl(&m, &info, key), key.needs_f16()) {
            (Ok(_), false) => {}
            (Err(e), false) => failures.push(format!("{}: glsl: {e}", key.name())),
            (Err(_), true) => glsl_f16_failures += 1,
            // (variants that declare f16 but whose entry point does not use it translate)
            (Ok(_), true) => {}
        }
    }
    eprintln!(
        "{} variants: naga-validated; {} cooperative-matrix ones written as SPIR-V; the others as SPIR-V, MSL, HLSL; GLSL for all f32 ones ({} f16 variants not written by naga's GLSL backend)",
        keys.len(),
        coop,
        glsl_f16_failures
    );
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn every_variant_in_the_catalog_translates() {
    // Head sizes: tiny text (4), tiny vision (16), ViT-B/32 (64).
    let keys = shader::catalog(&[4, 16, 64]);
    check_all(&keys);
    // Every shader file is reached.
    for (file, _) in shader::FILES {
        assert!(keys.iter().any(|k| k.file() == file), "{file} has no variant");
    }
    let in_dir: Vec<String> = std::fs::read_dir(root().join("shaders"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".wgsl"))
                .collect()
        })
        .unwrap_or_default();
    for f in &in_dir {
        assert!(
            shader::FILES.iter().chain(&shader::SNIPPETS).any(|(n, _)| n == f),
            "shaders/{f} is not known to gpu::shader::FILES or SNIPPETS"
        );
    }
    // Every snippet is appended to some variant.
    for (name, text) in shader::SNIPPETS {
        assert!(keys.iter().any(|k| k.source().contains(text.trim())), "{name} is used by no variant");
    }
}

/// The uniform block of every variant: the Rust struct (`#[repr(C)]`, its family's file) and
/// the WGSL `struct Params`, as naga lays it out, agree field by field (name, offset, scalar
/// type) and in size; and the generated binding declarations are exactly the family's slots.
#[test]
fn uniform_blocks_and_bindings_agree_with_the_wgsl() {
    let keys = shader::catalog(&[4, 16, 64]);
    for key in &keys {
        let (m, _) = validate(key).unwrap();
        let mut layouter = naga::proc::Layouter::default();
        layouter.update(m.to_ctx()).unwrap();
        let (handle, ty) = m
            .types
            .iter()
            .find(|(_, t)| t.name.as_deref() == Some("Params"))
            .unwrap_or_else(|| panic!("{}: no struct Params", key.name()));
        let naga::TypeInner::Struct { members, span } = &ty.inner else {
            panic!("{}: Params is not a struct", key.name())
        };
        let rust = key.params_fields();
        assert_eq!(*span as u64, key.params_size(), "{}: size of Params", key.name());
        assert_eq!(layouter[handle].size as u64, key.params_size(), "{}", key.name());
        assert_eq!(members.len(), rust.len(), "{}: fields of Params", key.name());
        for (mem, &(name, offset, scalar)) in members.iter().zip(rust) {
            assert_eq!(mem.name.as_deref(), Some(name), "{}: field order", key.name());
            assert_eq!(mem.offset as usize, offset, "{}: offset of {name}", key.name());
            let wgsl = match m.types[mem.ty].inner {
                naga::TypeInner::Scalar(naga::Scalar { kind: naga::ScalarKind::Uint, width: 4 }) => "u32",
                naga::TypeInner::Scalar(naga::Scalar { kind: naga::ScalarKind::Float, width: 4 }) => "f32",
                naga::TypeInner::Scalar(naga::Scalar { kind: naga::ScalarKind::Sint, width: 4 }) => "i32",
                ref other => panic!("{}: field {name} of Params is {other:?}", key.name()),
            };
            assert_eq!(wgsl, scalar, "{}: type of {name}", key.name());
        }
        // The module's bindings are the slots, with their access.
        let mut bound: Vec<(u32, String, naga::AddressSpace)> = m
            .global_variables
            .iter()
            .filter_map(|(_, g)| g.binding.as_ref().map(|b| (b.binding, g.name.clone().unwrap_or_default(), g.space)))
            .collect();
        bound.sort_by_key(|b| b.0);
        let slots = key.slots();
        assert_eq!(bound.len(), slots.len(), "{}: {bound:?}", key.name());
        for (b, s) in bound.iter().zip(&slots) {
            assert_eq!((b.0, b.1.as_str()), (s.binding, s.name), "{}", key.name());
            let want = match s.access {
                shader::Binding::Uniform => naga::AddressSpace::Uniform,
                shader::Binding::Read => naga::AddressSpace::Storage { access: naga::StorageAccess::LOAD },
                shader::Binding::ReadWrite => {
                    naga::AddressSpace::Storage { access: naga::StorageAccess::LOAD | naga::StorageAccess::STORE }
                }
            };
            assert_eq!(b.2, want, "{}: access of {}", key.name(), s.name);
        }
    }
    eprintln!("{} variants: uniform blocks and bindings agree with their WGSL", keys.len());
}

#[test]
fn every_planned_kernel_is_in_the_catalog_and_translates() {
    let ck = model::load(&tiny_dir().join("hf"), &LoadOptions::default()).unwrap();
    let catalog = shader::catalog(&[4, 16, 64]);
    let mut keys = Vec::new();
    for tower in [Tower::Vision, Tower::Text] {
        let program = Program::new(tower, &ck.config, &ck.weights);
        for precision in [Precision::F32, Precision::F16] {
            for subgroup in [false, true] {
                keys.extend(gpu::plan_kernels(&program, precision, subgroup));
                keys.extend(gpu::plan_kernels_with(&program, precision, subgroup, true));
            }
        }
    }
    keys.sort();
    keys.dedup();
    // The tiny vision tower (width 32, MLP 64) has K = 32 and 64 linear layers: the coop plan
    // puts them on the cooperative-matrix kernel (the text tower's K = 8 stays plain).
    assert!(keys.iter().any(|k| k.needs_coop()), "no linear layer planned on cooperative matrices");
    for k in &keys {
        assert!(catalog.contains(k), "{} planned but not in the catalog", k.name());
    }
    check_all(&keys);
}

#[test]
fn preprocessor_blocks() {
    let flags = ["A"].into_iter().collect();
    let src = "x\n//#if A\na\n//#if !B\nnb\n//#else\nb\n//#endif\n//#else\nnot a\n//#endif\ny\n";
    assert_eq!(shader::preprocess(src, &flags), "x\na\nnb\ny\n");
}

/// The tensor-core matmul: its SPIR-V really holds cooperative-matrix instructions, its
/// workgroup memory is the stated constant (≤ the H100's 48 KiB), and naga rejects it when it
/// breaks one of the rules in docs/gpu-hardware.md, so the validation above is not vacuous.
#[test]
fn cooperative_matrix_kernel() {
    use gpu::matmul_coop::{CoopKey, WORKGROUP_BYTES};
    let epi = model::Epilogue { bias: true, act: Some(model::Activation::QuickGelu), accumulate: true };
    let key = KernelKey::MatmulCoop(CoopKey { y: gpu::Dt::F16, epi });
    let src = key.source();
    assert!(src.starts_with("enable f16;\nenable wgpu_cooperative_matrix;\n"), "{src:.80}");
    let (m, info) = validate(&key).unwrap();

    // Workgroup memory: the sum of the var<workgroup> arrays, as naga lays them out.
    let mut layouter = naga::proc::Layouter::default();
    layouter.update(m.to_ctx()).unwrap();
    let wg: u32 = m
        .global_variables
        .iter()
        .filter(|(_, g)| g.space == naga::AddressSpace::WorkGroup)
        .map(|(_, g)| layouter[g.ty].size)
        .sum();
    assert_eq!(wg, WORKGROUP_BYTES);
    assert!(wg <= 48 * 1024);
    let stated = src.lines().find_map(|l| l.strip_prefix("const WG_BYTES: u32 = ")).expect("WG_BYTES const");
    assert_eq!(stated.split("u;").next(), Some(WORKGROUP_BYTES.to_string().as_str()));

    // SPIR-V: the CooperativeMatrixKHR capability (6022), OpCooperativeMatrixLoadKHR (4457),
    // StoreKHR (4458) and MulAddKHR (4459) are there.
    let opts = naga::back::spv::Options { lang_version: (1, 3), ..Default::default() };
    let po = naga::back::spv::PipelineOptions { shader_stage: naga::ShaderStage::Compute, entry_point: "main".into() };
    let words = naga::back::spv::write_vec(&m, &info, &opts, Some(&po)).unwrap();
    let mut ops = std::collections::BTreeSet::new();
    let mut caps = std::collections::BTreeSet::new();
    let mut i = 5;
    while i < words.len() {
        let (len, op) = ((words[i] >> 16) as usize, words[i] & 0xffff);
        ops.insert(op);
        if op == 17 {
            caps.insert(words[i + 1]);
        }
        assert!(len > 0);
        i += len;
    }
    assert!(caps.contains(&6022), "no CooperativeMatrixKHR capability: {caps:?}");
    for op in [4457, 4458, 4459] {
        assert!(ops.contains(&op), "no opcode {op} in the SPIR-V");
    }

    let reject = |bad: String, why: &str| {
        let caps = Capabilities::SHADER_FLOAT16 | Capabilities::SUBGROUP | Capabilities::COOPERATIVE_MATRIX;
        let ok = naga::front::wgsl::parse_str(&bad).ok().and_then(|module| {
            let mut v = Validator::new(ValidationFlags::all(), caps);
            v.subgroup_stages(ShaderStages::COMPUTE);
            v.subgroup_operations(SubgroupOperationSet::all());
            v.validate(&module).ok()
        });
        assert!(ok.is_none(), "a broken variant ({why}) was accepted");
    };
    // A module-level variable named `A` shadows the matrix role (docs/gpu-hardware.md).
    reject(src.replace("var<workgroup> xs:", "var<workgroup> A:").replace("&xs[", "&A["), "module var named A");
    // Without the enable directive.
    reject(src.replace("enable wgpu_cooperative_matrix;\n", ""), "no enable directive");
    // Operands in the wrong roles.
    reject(src.replace("coopMultiplyAdd(a0, b0, c00)", "coopMultiplyAdd(b0, a0, c00)"), "A and B swapped");
}

/// The modules of `src/gpu/` and the modules of `src/gpu/` each imports (`use super::…`,
/// `use crate::gpu::…` and inline `super::module::` paths, comments excluded). `mod.rs` is
/// the facade (it declares and re-exports); the others must not import it.
fn gpu_imports() -> std::collections::BTreeMap<String, std::collections::BTreeSet<String>> {
    let dir = root().join("src/gpu");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".rs") && n != "mod.rs")
        .map(|n| n.trim_end_matches(".rs").to_string())
        .collect();
    names.sort();
    let mut graph = std::collections::BTreeMap::new();
    for name in &names {
        let src = std::fs::read_to_string(dir.join(format!("{name}.rs"))).unwrap();
        let code: String = src.lines().map(|l| l.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n");
        let mut deps = std::collections::BTreeSet::new();
        for prefix in ["super::", "crate::gpu::"] {
            let mut rest = code.as_str();
            while let Some(i) = rest.find(prefix) {
                rest = &rest[i + prefix.len()..];
                // `super::{a, b::{c, d}}`: the first segment of each top-level item.
                let items: Vec<String> = if let Some(inner) = rest.strip_prefix('{') {
                    let (mut depth, mut end) = (1, 0);
                    for (j, ch) in inner.char_indices() {
                        match ch {
                            '{' => depth += 1,
                            '}' => depth -= 1,
                            _ => {}
                        }
                        if depth == 0 {
                            end = j;
                            break;
                        }
                    }
                    let (mut depth, mut cur, mut out) = (0, String::new(), Vec::new());
                    for ch in inner[..end].chars() {
                        match ch {
                            '{' => depth += 1,
                            '}' => depth -= 1,
                            ',' if depth == 0 => {
                                out.push(std::mem::take(&mut cur));
                                continue;
                            }
                            _ => {}
                        }
                        cur.push(ch);
                    }
                    out.push(cur);
                    out
                } else {
                    vec![rest.to_string()]
                };
                for item in items {
                    let first: String = item.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                    if first.is_empty() || first == "self" {
                        continue;
                    }
                    assert!(
                        names.contains(&first),
                        "src/gpu/{name}.rs imports `{first}` from the gpu module itself (mod.rs): import it from its own module"
                    );
                    if &first != name {
                        deps.insert(first);
                    }
                }
            }
        }
        graph.insert(name.clone(), deps);
    }
    graph
}

/// No import circle in `src/gpu/`: the modules are layered, each importing only modules
/// below it. Prints the listing (`cargo test --test shaders gpu_modules -- --nocapture`).
#[test]
fn gpu_modules_import_no_circle() {
    let graph = gpu_imports();
    for (m, deps) in &graph {
        let list: Vec<&str> = deps.iter().map(|s| s.as_str()).collect();
        eprintln!(
            "src/gpu/{m}.rs imports: {}",
            if list.is_empty() { "(nothing of gpu)".into() } else { list.join(", ") }
        );
    }
    // Depth-first search for a cycle.
    fn visit<'a>(
        m: &'a str,
        graph: &'a std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
        path: &mut Vec<&'a str>,
        done: &mut std::collections::BTreeSet<&'a str>,
    ) {
        if done.contains(m) {
            return;
        }
        if let Some(i) = path.iter().position(|p| *p == m) {
            panic!("import circle in src/gpu: {} -> {m}", path[i..].join(" -> "));
        }
        path.push(m);
        for d in &graph[m] {
            visit(d, graph, path, done);
        }
        path.pop();
        done.insert(m);
    }
    let mut done = std::collections::BTreeSet::new();
    for m in graph.keys() {
        visit(m, &graph, &mut Vec::new(), &mut done);
    }
    // The layering the docs describe: the leaf and the device-free planner.
    assert!(graph["types"].is_empty(), "types.rs must import nothing of gpu: {:?}", graph["types"]);
    for dev in ["context", "pipeline", "weights", "executor", "selfcheck"] {
        assert!(!graph["plan"].contains(dev), "the planner imports {dev}");
    }
}
