//! Every kernel variant's SPIR-V, as naga writes it for Vulkan, checked by an independent
//! validator: SPIRV-Tools' `spirv-val --target-env vulkan1.3` (found on `PATH`, or named by
//! `CLIP_WGPU_SPIRV_VAL`). Without one the test says so and passes, unless
//! `CLIP_WGPU_REQUIRE_SPIRV_VAL=1` (CI, which installs Debian's `spirv-tools`).
//!
//! One deviation of naga's is known and tolerated by name: it decorates arrays in workgroup
//! memory with `ArrayStride`, an explicit layout that Vulkan allows there only with
//! `WorkgroupMemoryExplicitLayoutKHR` (`VUID-StandaloneSpirv-None-10684`, checked by
//! SPIRV-Tools from 2025 on). Each module is validated as written; if it fails, then only
//! with that VUID, and the same module with the decorations on arrays outside any
//! explicitly laid-out storage class removed must pass. Any other error fails the test.
//! docs/gpu-hardware.md says what to do if a driver refuses the decorated modules.
//!
//! Validators older than `SPV_KHR_cooperative_matrix` (Debian 12's 2023.1) reject its
//! capability (6022) outright: the cooperative-matrix variants are then reported as not
//! validated, by name, and everything else must still pass.

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::Command;

use clip_wgpu::gpu::{shader, KernelKey};

#[path = "common/kernel_naga.rs"]
mod kernel_naga;

const TOLERATED: &str = "VUID-StandaloneSpirv-None-10684";

fn validator() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("CLIP_WGPU_SPIRV_VAL") {
        return Some(PathBuf::from(p));
    }
    let found = Command::new("spirv-val").arg("--version").output().is_ok_and(|o| o.status.success());
    found.then(|| PathBuf::from("spirv-val"))
}

/// naga's SPIR-V of one variant (Vulkan 1.3, its entry point only).
fn spirv_words(key: &KernelKey) -> Vec<u32> {
    let (module, info) = kernel_naga::parse_and_validate(key).unwrap_or_else(|e| panic!("{}: {e}", key.name()));
    kernel_naga::spirv(&module, &info, key).unwrap_or_else(|e| panic!("{}: {e}", key.name()))
}

// The SPIR-V opcodes and enumerants the stripping reads.
const OP_TYPE_ARRAY: u32 = 28;
const OP_TYPE_RUNTIME_ARRAY: u32 = 29;
const OP_TYPE_STRUCT: u32 = 30;
const OP_TYPE_POINTER: u32 = 32;
const OP_DECORATE: u32 = 71;
const OP_CAPABILITY: u32 = 17;
const CAPABILITY_SHADER: u32 = 1;
const DECORATION_ARRAY_STRIDE: u32 = 6;
/// Uniform, PushConstant, StorageBuffer, PhysicalStorageBuffer: the explicitly laid-out ones.
const EXPLICIT_LAYOUT: [u32; 4] = [2, 9, 12, 5349];

/// The instructions of a module after its 5-word header: (opcode, operands).
fn instructions(words: &[u32]) -> Vec<(u32, &[u32])> {
    let mut out = Vec::new();
    let mut i = 5;
    while i < words.len() {
        let count = (words[i] >> 16) as usize;
        assert!(count > 0 && i + count <= words.len(), "malformed SPIR-V at word {i}");
        out.push((words[i] & 0xffff, &words[i + 1..i + count]));
        i += count;
    }
    out
}

/// The module without `ArrayStride` on arrays that no explicitly laid-out storage class
/// reaches (naga's decoration of workgroup arrays), and how many decorations went.
fn strip_implicit_strides(words: &[u32]) -> (Vec<u32>, usize) {
    let insts = instructions(words);
    // Element/member types of each array and struct type.
    let mut children: std::collections::HashMap<u32, Vec<u32>> = Default::default();
    let mut roots = Vec::new();
    for &(op, ops) in &insts {
        match op {
            OP_TYPE_ARRAY | OP_TYPE_RUNTIME_ARRAY => {
                children.insert(ops[0], vec![ops[1]]);
            }
            OP_TYPE_STRUCT => {
                children.insert(ops[0], ops[1..].to_vec());
            }
            OP_TYPE_POINTER if EXPLICIT_LAYOUT.contains(&ops[1]) => roots.push(ops[2]),
            _ => {}
        }
    }
    let mut explicit = HashSet::new();
    while let Some(t) = roots.pop() {
        if explicit.insert(t) {
            roots.extend(children.get(&t).into_iter().flatten().copied());
        }
    }
    let mut out = words[..5].to_vec();
    let mut removed = 0;
    let mut i = 5;
    for &(op, ops) in &insts {
        let count = ops.len() + 1;
        let implicit_stride = op == OP_DECORATE
            && ops.get(1) == Some(&DECORATION_ARRAY_STRIDE)
            && children.contains_key(&ops[0])
            && !explicit.contains(&ops[0]);
        if implicit_stride {
            removed += 1;
        } else {
            out.extend_from_slice(&words[i..i + count]);
        }
        i += count;
    }
    (out, removed)
}

/// `Ok(())` or the validator's message.
fn validate(val: &PathBuf, words: &[u32], path: &PathBuf) -> Result<(), String> {
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    std::fs::write(path, bytes).unwrap();
    let out = Command::new(val)
        .args(["--target-env", "vulkan1.3"])
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", val.display()));
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
            .trim()
            .to_string())
    }
}

/// The validator predates SPV_KHR_cooperative_matrix: it refuses the capability itself.
fn predates_coop(message: &str) -> bool {
    message.contains("6022") || (message.contains("CooperativeMatrix") && message.contains("apabilit"))
}

#[test]
fn stripping_removes_only_strides_outside_explicit_layouts() {
    // A module with a storage-buffer runtime array (stride kept) and a workgroup array
    // (stride removed), built from the layernorm variant naga writes with workgroup memory.
    let key = shader::catalog(&[64])
        .into_iter()
        .find(|k| k.source().contains("var<workgroup>"))
        .expect("a workgroup variant");
    let words = spirv_words(&key);
    let strides = |w: &[u32]| {
        instructions(w)
            .iter()
            .filter(|(op, ops)| *op == OP_DECORATE && ops.get(1) == Some(&DECORATION_ARRAY_STRIDE))
            .count()
    };
    let (stripped, removed) = strip_implicit_strides(&words);
    assert!(removed >= 1, "{}: no workgroup stride found", key.name());
    assert_eq!(strides(&stripped), strides(&words) - removed);
    assert!(strides(&stripped) >= 1, "{}: the storage buffers' strides must stay", key.name());
    assert_eq!(instructions(&stripped).len(), instructions(&words).len() - removed);
}

#[test]
fn every_variant_passes_spirv_val_for_vulkan_1_3() {
    let Some(val) = validator() else {
        if std::env::var("CLIP_WGPU_REQUIRE_SPIRV_VAL").is_ok_and(|v| v == "1") {
            panic!("CLIP_WGPU_REQUIRE_SPIRV_VAL=1 but no spirv-val on PATH (apt install spirv-tools)");
        }
        eprintln!("skipped: no spirv-val on PATH (apt install spirv-tools, or set CLIP_WGPU_SPIRV_VAL)");
        return;
    };
    let version = Command::new(&val).arg("--version").output().map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    eprintln!("validator: {}", version.unwrap_or_default().lines().next().unwrap_or("?"));
    // The validator really validates: a module without its `OpCapability Shader` is refused.
    let plain = shader::catalog(&[64]).into_iter().find(|k| !k.needs_coop()).expect("a plain variant");
    let words = spirv_words(&plain);
    let mut broken = words[..5].to_vec();
    let mut i = 5;
    for (op, ops) in instructions(&words) {
        if !(op == OP_CAPABILITY && ops == [CAPABILITY_SHADER]) {
            broken.extend_from_slice(&words[i..i + ops.len() + 1]);
        }
        i += ops.len() + 1;
    }
    assert!(broken.len() < words.len(), "{}: no OpCapability Shader", plain.name());
    let probe = std::env::temp_dir().join(format!("clip-wgpu-spirv-probe-{}.spv", std::process::id()));
    let refused = validate(&val, &broken, &probe);
    let _ = std::fs::remove_file(&probe);
    assert!(refused.is_err(), "{} accepted a module without OpCapability Shader", val.display());

    // Head sizes: tiny text (4), tiny vision (16), B/32 (64), L/14 text's 12 heads of 64,
    // and a 32-wide head.
    let keys = shader::catalog(&[4, 16, 32, 64]);
    let dir = std::env::temp_dir().join(format!("clip-wgpu-spirv-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (mut as_written, mut after_strip, mut not_validated) = (0, 0, Vec::new());
    let mut failures = Vec::new();
    for key in &keys {
        let words = spirv_words(key);
        let path = dir.join(format!("{}.spv", key.name().replace(['/', ' '], "_")));
        match validate(&val, &words, &path) {
            Ok(()) => as_written += 1,
            Err(e) if key.needs_coop() && predates_coop(&e) => not_validated.push(key.name()),
            Err(e) if e.contains(TOLERATED) => {
                let (stripped, removed) = strip_implicit_strides(&words);
                match validate(&val, &stripped, &path) {
                    Ok(()) => after_strip += 1,
                    Err(e2) => failures.push(format!("{} ({removed} strides removed): {e2}", key.name())),
                }
            }
            Err(e) => failures.push(format!("{}: {e}", key.name())),
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!(
        "{} variants: {as_written} valid as written, {after_strip} valid once naga's workgroup ArrayStride ({TOLERATED}) is removed, {} not validated (the validator predates SPV_KHR_cooperative_matrix): {}",
        keys.len(),
        not_validated.len(),
        not_validated.join(", ")
    );
    assert!(failures.is_empty(), "{} variants refused:\n{}", failures.len(), failures.join("\n\n"));
    // Only cooperative-matrix variants may go unvalidated.
    assert!(keys.iter().filter(|k| !k.needs_coop()).all(|k| !not_validated.contains(&k.name())));
}
