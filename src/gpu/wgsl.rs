//! The WGSL variant generator. A variant of a shader file is: a generated header (`enable`
//! directives, storage-type aliases such as `alias XT = f16;`, `const` switches, and the
//! declarations of the variant's bindings, made from the family's [`Slot`]s), then the file
//! with its `//#if FLAG` … `//#else` … `//#endif` blocks resolved (`//#if !FLAG` negates;
//! blocks nest), then the shared snippets it asks for (the matmul epilogue).
//!
//! Also here: [`Uniform`], the Rust side of a kernel's uniform block (declared with
//! the `uniform!` macro, checked against the WGSL struct by the tests).

use std::collections::BTreeSet;

use super::types::Dt;
use crate::model::{Activation, Epilogue};

/// The matmul epilogue, shared by the plain and cooperative-matrix matmuls: `activation(v)`
/// (QuickGELU or the erf GELU, as the `ACT` const says) and `epilogue(v, b, y)`.
pub const EPILOGUE_WGSL: &str = include_str!("../../shaders/epilogue.wgsl");

/// How a kernel sees one binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binding {
    Uniform,
    Read,
    ReadWrite,
}

/// One binding of group 0, declared once by its kernel family: the WGSL declaration is
/// generated from it, and the bind group layouts and bind groups (engine, tests, benches)
/// are made from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    pub binding: u32,
    /// The variable's name in the WGSL.
    pub name: &'static str,
    pub access: Binding,
    /// Its WGSL type (`Params`, `array<vec4<XT>>`, …).
    pub ty: &'static str,
}

impl Slot {
    /// The uniform block, `var<uniform> p: Params` (always binding 0).
    pub const UNIFORM: Slot = Slot { binding: 0, name: "p", access: Binding::Uniform, ty: "Params" };
    pub const fn read(binding: u32, name: &'static str, ty: &'static str) -> Slot {
        Slot { binding, name, access: Binding::Read, ty }
    }
    pub const fn read_write(binding: u32, name: &'static str, ty: &'static str) -> Slot {
        Slot { binding, name, access: Binding::ReadWrite, ty }
    }
    /// The WGSL declaration.
    pub fn wgsl(&self) -> String {
        let space = match self.access {
            Binding::Uniform => "uniform",
            Binding::Read => "storage, read",
            Binding::ReadWrite => "storage, read_write",
        };
        format!("@group(0) @binding({}) var<{space}> {}: {};", self.binding, self.name, self.ty)
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
    pub slots: Vec<Slot>,
    /// Shared WGSL appended to the variant.
    pub snippets: Vec<&'static str>,
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
    /// The variant's bindings (declared in the header).
    pub fn bind(mut self, slots: &[Slot]) -> Self {
        self.slots.extend_from_slice(slots);
        self
    }
    /// The matmul epilogue: consts `HAS_BIAS`, `ACT`, `ACCUMULATE` and the snippet that
    /// uses them.
    pub fn epilogue(self, e: Epilogue) -> Self {
        let act = match e.act {
            None => "ACT_NONE",
            Some(Activation::QuickGelu) => "ACT_QUICK_GELU",
            Some(Activation::Gelu) => "ACT_GELU",
        };
        let mut h = self.constant("HAS_BIAS", e.bias).constant("ACT", act).constant("ACCUMULATE", e.accumulate);
        h.snippets.push(EPILOGUE_WGSL);
        h
    }
}

/// The name suffix of an epilogue in kernel names: `_bias`, `_quickgelu`/`_gelu`, `_acc`.
pub fn epilogue_suffix(e: Epilogue) -> String {
    let act = match e.act {
        None => "",
        Some(Activation::QuickGelu) => "_quickgelu",
        Some(Activation::Gelu) => "_gelu",
    };
    format!("{}{act}{}", if e.bias { "_bias" } else { "" }, if e.accumulate { "_acc" } else { "" })
}

/// The source of a variant: header, then `src` with its `//#if` blocks resolved, then the
/// snippets.
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
    for s in &h.slots {
        out.push_str(&s.wgsl());
        out.push('\n');
    }
    let flags: BTreeSet<&str> = h.flags.iter().copied().collect();
    out.push_str(&preprocess(src, &flags));
    for s in &h.snippets {
        out.push_str(&preprocess(s, &flags));
    }
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

/// One field of a uniform block: name, byte offset, WGSL scalar type.
pub type Field = (&'static str, usize, &'static str);

/// A kernel's uniform block, `struct Params` in its WGSL: a `#[repr(C)]` plain-old-data
/// struct of 4-byte scalars whose fields the tests compare with naga's layout of the WGSL
/// struct (names, offsets, types and size). Declared with the `uniform!` macro.
pub trait Uniform: bytemuck::Pod + Default + std::fmt::Debug {
    const FIELDS: &'static [Field];
}

/// Declares a uniform block: `uniform!(NormParams { w: u32, rows: u32, eps: f32, _pad: u32 });`
/// makes the `#[repr(C)]` Pod struct and its [`Uniform`] field list.
macro_rules! uniform {
    ($(#[$m:meta])* $name:ident { $($(#[$fm:meta])* $f:ident: $t:ident),* $(,)? }) => {
        $(#[$m])*
        #[repr(C)]
        #[derive(Debug, Clone, Copy, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
        pub struct $name {
            $($(#[$fm])* pub $f: $t,)*
        }
        impl $crate::gpu::wgsl::Uniform for $name {
            const FIELDS: &'static [$crate::gpu::wgsl::Field] =
                &[$((stringify!($f), std::mem::offset_of!($name, $f), stringify!($t)),)*];
        }
    };
}
pub(crate) use uniform;
