//! `cargo xtask web`: the browser package. Builds the `web/` crate for
//! `wasm32-unknown-unknown` (release), runs `wasm-bindgen --target web` on it (the version in
//! Cargo.lock, checked) into `target/web/pkg/` (`clip_wgpu.js`, `clip_wgpu_bg.wasm` and their
//! TypeScript types), and prints the `.wasm` size, raw and gzip-compressed.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

#[derive(clap::Parser)]
pub struct Web {
    /// Output directory (default: `target/web/pkg` under the repository).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// The wasm-bindgen version in Cargo.lock: the CLI must be the same.
fn locked_wasm_bindgen(root: &Path) -> Result<String> {
    let lock = std::fs::read_to_string(root.join("Cargo.lock")).context("reading Cargo.lock")?;
    let mut lines = lock.lines();
    while let Some(l) = lines.next() {
        if l == "name = \"wasm-bindgen\"" {
            if let Some(v) = lines.next().and_then(|v| v.strip_prefix("version = \"")) {
                return Ok(v.trim_end_matches('"').to_string());
            }
        }
    }
    bail!("Cargo.lock has no wasm-bindgen package")
}

pub fn build(a: &Web, root: &Path) -> Result<()> {
    let version = locked_wasm_bindgen(root)?;
    let install = format!("cargo install wasm-bindgen-cli --version {version}");
    let found = Command::new("wasm-bindgen").arg("--version").output();
    match found {
        Ok(o) if String::from_utf8_lossy(&o.stdout).split_whitespace().nth(1) == Some(version.as_str()) => {}
        Ok(o) => bail!(
            "wasm-bindgen-cli {} found, Cargo.lock has wasm-bindgen {version}: `{install}`",
            String::from_utf8_lossy(&o.stdout).trim()
        ),
        Err(_) => bail!("wasm-bindgen-cli not found: `{install}`"),
    }

    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(&cargo)
        .current_dir(root)
        .args(["build", "--release", "--target", "wasm32-unknown-unknown", "-p", "clip-wgpu-web", "--lib"])
        // no line tables in the .wasm (the native release profile keeps them in a .dwp)
        .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
        .env("CARGO_PROFILE_RELEASE_SPLIT_DEBUGINFO", "off")
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("cargo build --target wasm32-unknown-unknown -p clip-wgpu-web failed");
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target"));
    let target = if target.is_absolute() { target } else { root.join(target) };
    let wasm = target.join("wasm32-unknown-unknown/release/clip_wgpu_web.wasm");
    let out = a.out.clone().unwrap_or_else(|| root.join("target/web/pkg"));
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let status = Command::new("wasm-bindgen")
        .args(["--target", "web", "--out-name", "clip_wgpu", "--out-dir"])
        .arg(&out)
        .arg(&wasm)
        .status()
        .context("running wasm-bindgen")?;
    if !status.success() {
        bail!("wasm-bindgen failed on {}", wasm.display());
    }
    let bg = out.join("clip_wgpu_bg.wasm");
    let raw = std::fs::read(&bg).with_context(|| format!("reading {}", bg.display()))?;
    let gz = gzip_len(&bg)?;
    println!(
        "{}: {:.2} MiB, {:.2} MiB gzip -9 ({}); ES module {}",
        bg.display(),
        raw.len() as f64 / (1 << 20) as f64,
        gz as f64 / (1 << 20) as f64,
        gz,
        out.join("clip_wgpu.js").display()
    );
    Ok(())
}

/// Bytes of `gzip -9` of `path` (the system's gzip).
fn gzip_len(path: &Path) -> Result<u64> {
    let o = Command::new("gzip").args(["-9", "-c"]).arg(path).output().context("running gzip")?;
    if !o.status.success() {
        bail!("gzip failed on {}", path.display());
    }
    Ok(o.stdout.len() as u64)
}
