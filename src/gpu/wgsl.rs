//! The WGSL variant generator: a header (`enable` directives, storage-type aliases, `const`
//! switches) prepended to a shader file whose `//#if FLAG` … `//#else` … `//#endif` blocks
//! are resolved (`//#if !FLAG` negates; blocks nest).

use std::collections::BTreeSet;

use super::types::Dt;

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
