//! WGSL sources and their variants.
//!
//! Each file of `shaders/` is one kernel family. A variant is made by prepending a generated
//! header (`enable f16;` where an f16 type is used, `alias XT = f16;`-style storage types and
//! `const` switches) and by keeping or dropping `//#if FLAG` … `//#else` … `//#endif`
//! blocks (`//#if !FLAG` negates; blocks nest). [`KernelKey`] names one variant: its source,
//! entry point, bindings and required features all follow from it.

use std::collections::BTreeSet;

use super::{attention, embed, matmul, matmul_coop, norm};

pub const MATMUL_WGSL: &str = include_str!("../../shaders/matmul.wgsl");
pub const MATMUL_COOP_WGSL: &str = include_str!("../../shaders/matmul_coop.wgsl");
pub const ATTENTION_WGSL: &str = include_str!("../../shaders/attention.wgsl");
pub const NORM_WGSL: &str = include_str!("../../shaders/norm.wgsl");
pub const EMBED_WGSL: &str = include_str!("../../shaders/embed.wgsl");

/// The shader files, by name (for the tests: every file must be reached by some variant).
pub const FILES: [(&str, &str); 5] = [
    ("matmul.wgsl", MATMUL_WGSL),
    ("matmul_coop.wgsl", MATMUL_COOP_WGSL),
    ("attention.wgsl", ATTENTION_WGSL),
    ("norm.wgsl", NORM_WGSL),
    ("embed.wgsl", EMBED_WGSL),
];

/// A storage type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum Dt {
    F32,
    F16,
}

impl Dt {
    pub fn wgsl(self) -> &'static str {
        match self {
            Dt::F32 => "f32",
            Dt::F16 => "f16",
        }
    }
    pub fn size(self) -> u64 {
        match self {
            Dt::F32 => 4,
            Dt::F16 => 2,
        }
    }
}

/// The generated part of a variant.
#[derive(Debug, Clone, Default)]
pub struct Header {
    /// Extra `enable NAME;` directives (`enable f16;` follows from the aliases).
    pub enables: Vec<&'static str>,
    pub aliases: Vec<(&'static str, Dt)>,
    /// `const NAME = value;` lines; the value is WGSL (`true`, `2u`, …).
    pub consts: Vec<(&'static str, String)>,
    pub flags: Vec<&'static str>,
}

impl Header {
    pub fn enable(mut self, name: &'static str) -> Self {
        self.enables.push(name);
        self
    }
    pub fn alias(mut self, name: &'static str, t: Dt) -> Self {
        self.aliases.push((name, t));
        self
    }
    pub fn constant(mut self, name: &'static str, v: impl std::fmt::Display) -> Self {
        self.consts.push((name, v.to_string()));
        self
    }
    pub fn flag(mut self, name: &'static str, on: bool) -> Self {
        if on {
            self.flags.push(name);
        }
        self
    }
}

/// The source of a variant: header, then `src` with its `//#if` blocks resolved.
pub fn generate(src: &str, h: &Header) -> String {
    let mut out = String::new();
    if h.aliases.iter().any(|a| a.1 == Dt::F16) {
        out.push_str("enable f16;\n");
    }
    for e in &h.enables {
        out.push_str(&format!("enable {e};\n"));
    }
    for (n, t) in &h.aliases {
        out.push_str(&format!("alias {n} = {};\n", t.wgsl()));
    }
    for (n, v) in &h.consts {
        out.push_str(&format!("const {n} = {v};\n"));
    }
    let flags: BTreeSet<&str> = h.flags.iter().copied().collect();
    out.push_str(&preprocess(src, &flags));
    out
}

/// Resolves `//#if [!]FLAG`, `//#else`, `//#endif` (nestable). Panics on unbalanced blocks
/// (the sources are ours; the shader tests reach every file).
pub fn preprocess(src: &str, flags: &BTreeSet<&str>) -> String {
    // Stack of (this block is active, the enclosing one is active).
    let mut stack: Vec<(bool, bool)> = Vec::new();
    let mut out = String::with_capacity(src.len());
    let active = |s: &Vec<(bool, bool)>| s.last().is_none_or(|&(a, p)| a && p);
    for line in src.lines() {
        let t = line.trim();
        if let Some(cond) = t.strip_prefix("//#if ") {
            let cond = cond.trim();
            let v = match cond.strip_prefix('!') {
                Some(f) => !flags.contains(f.trim()),
                None => flags.contains(cond),
            };
            let parent = active(&stack);
            stack.push((v, parent));
        } else if t == "//#else" {
            let top = stack.last_mut().expect("//#else without //#if");
            top.0 = !top.0;
        } else if t == "//#endif" {
            stack.pop().expect("//#endif without //#if");
        } else if active(&stack) {
            out.push_str(line);
            out.push('\n');
        }
    }
    assert!(stack.is_empty(), "unterminated //#if");
    out
}

/// How a kernel sees one binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binding {
    Uniform,
    Read,
    ReadWrite,
}

/// One kernel variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KernelKey {
    Matmul(matmul::MatmulKey),
    /// The cooperative-matrix matmul (tensor cores).
    MatmulCoop(matmul_coop::CoopKey),
    Attention(attention::AttentionKey),
    Norm(norm::NormKey),
    Embed(embed::EmbedKey),
}

impl KernelKey {
    /// Short unique name (labels, test output).
    pub fn name(&self) -> String {
        match self {
            KernelKey::Matmul(k) => k.name(),
            KernelKey::MatmulCoop(k) => k.name(),
            KernelKey::Attention(k) => k.name(),
            KernelKey::Norm(k) => k.name(),
            KernelKey::Embed(k) => k.name(),
        }
    }
    /// The shader file it comes from.
    pub fn file(&self) -> &'static str {
        match self {
            KernelKey::Matmul(_) => "matmul.wgsl",
            KernelKey::MatmulCoop(_) => "matmul_coop.wgsl",
            KernelKey::Attention(_) => "attention.wgsl",
            KernelKey::Norm(_) => "norm.wgsl",
            KernelKey::Embed(_) => "embed.wgsl",
        }
    }
    pub fn source(&self) -> String {
        match self {
            KernelKey::Matmul(k) => k.source(),
            KernelKey::MatmulCoop(k) => k.source(),
            KernelKey::Attention(k) => k.source(),
            KernelKey::Norm(k) => k.source(),
            KernelKey::Embed(k) => k.source(),
        }
    }
    pub fn entry(&self) -> &'static str {
        match self {
            KernelKey::Matmul(_) | KernelKey::MatmulCoop(_) | KernelKey::Attention(_) => "main",
            KernelKey::Norm(k) => k.entry(),
            KernelKey::Embed(k) => k.entry(),
        }
    }
    /// The bindings of group 0 that the entry point uses, in binding order.
    pub fn bindings(&self) -> Vec<(u32, Binding)> {
        match self {
            KernelKey::Matmul(k) => k.bindings(),
            KernelKey::MatmulCoop(k) => k.bindings(),
            KernelKey::Attention(_) => attention::BINDINGS.to_vec(),
            KernelKey::Norm(k) => k.bindings(),
            KernelKey::Embed(k) => k.bindings(),
        }
    }
    pub fn needs_f16(&self) -> bool {
        self.source().starts_with("enable f16;")
    }
    /// Uses subgroup builtins or operations (Features::SUBGROUP).
    pub fn needs_subgroup(&self) -> bool {
        matches!(self, KernelKey::Norm(k) if k.subgroup) || matches!(self, KernelKey::MatmulCoop(_))
    }
    /// Uses cooperative matrices (Features::EXPERIMENTAL_COOPERATIVE_MATRIX).
    pub fn needs_coop(&self) -> bool {
        matches!(self, KernelKey::MatmulCoop(_))
    }
}

/// Every variant the engine can use with the given head sizes: all storage-type
/// combinations of both precisions, every epilogue, both subgroup settings, and every
/// cooperative-matrix matmul variant.
pub fn catalog(head_dims: &[usize]) -> Vec<KernelKey> {
    let mut v = Vec::new();
    for precision in [super::Precision::F32, super::Precision::F16] {
        let wt = precision.weights();
        let at = super::executor::token_dt(precision);
        for (x, y) in [(at, at), (Dt::F32, Dt::F32)] {
            for bias in [false, true] {
                for act in 0..3 {
                    for acc in [false, true] {
                        v.push(KernelKey::Matmul(matmul::MatmulKey { x, w: wt, y, bias, act, acc, patch: false }));
                    }
                }
            }
        }
        v.push(KernelKey::Matmul(matmul::MatmulKey {
            x: Dt::F32,
            w: wt,
            y: at,
            bias: true,
            act: 0,
            acc: false,
            patch: true,
        }));
        for &hd in head_dims {
            for causal in [false, true] {
                v.push(KernelKey::Attention(attention::AttentionKey {
                    qkv: at,
                    out: at,
                    hd4: (hd / 4) as u32,
                    causal,
                }));
            }
        }
        for subgroup in [false, true] {
            for (x, y, inplace) in [(at, at, false), (at, at, true), (Dt::F32, Dt::F32, true)] {
                v.push(KernelKey::Norm(norm::NormKey { x, y, g: wt, inplace, subgroup, l2: false }));
            }
            v.push(KernelKey::Norm(norm::NormKey { x: Dt::F32, y: Dt::F32, g: wt, inplace: true, subgroup, l2: true }));
        }
        for pool in [false, true] {
            v.push(KernelKey::Embed(embed::EmbedKey { pool, tokens: at, table: wt, pooled: Dt::F32 }));
        }
    }
    v.extend(matmul_coop::CoopKey::all().into_iter().map(KernelKey::MatmulCoop));
    v.sort();
    v.dedup();
    v
}
