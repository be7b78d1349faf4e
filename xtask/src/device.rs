//! `cargo xtask device-pack DIR`: everything a GPU machine with no Rust on it needs to run the
//! device check, built here. DIR (inside the repository and git-ignored, so it travels only
//! when carried) gets `bin.tar.xz` (the stripped `clip-wgpu`, `xtask` and `gpu_coop` test
//! binaries, xz-compressed: the carry limit is 64 MiB for everything carried), `lib/` (the
//! Vulkan loader, which the GPU machine lacks), `check.sh` (scripts/device_check.sh) and
//! `device_summary.py`. On the device: `DIR/check.sh OUT [--quick]`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// The most DIR may hold (the device tool carries 64 MiB in all, the tree included).
const BUDGET: u64 = 48 << 20;

#[derive(clap::Parser)]
pub struct Pack {
    /// Output directory, inside the repository and ignored by git (e.g. `.device`).
    pub dir: PathBuf,
    /// Build with the dev profile instead of release, resolving features as
    /// `cargo test --workspace` does (CI's quick check on lavapipe then reuses the test build
    /// as it is, compiling nothing; the device runs the release build).
    #[arg(long)]
    pub dev: bool,
}

pub fn pack(a: &Pack, root: &Path) -> Result<()> {
    let dir = if a.dir.is_absolute() { a.dir.clone() } else { std::env::current_dir()?.join(&a.dir) };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = dir.canonicalize()?;
    let root = root.canonicalize()?;
    let rel = dir
        .strip_prefix(&root)
        .with_context(|| {
            format!(
                "{} is outside the repository {}: the device tool carries only paths inside it",
                dir.display(),
                root.display()
            )
        })?
        .to_path_buf();
    if rel.as_os_str().is_empty() {
        bail!("DIR must be a folder inside the repository, not its root");
    }
    let ignored = Command::new("git").arg("-C").arg(&root).args(["check-ignore", "-q"]).arg(&rel).status();
    if !matches!(ignored, Ok(s) if s.success()) {
        bail!(
            "{} is not ignored by git: add `/{}/` to .gitignore (or .git/info/exclude) so the binaries are never committed",
            rel.display(),
            rel.display()
        );
    }

    let profile_args: &[&str] = if a.dev { &[] } else { &["--release"] };
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!(
        "device-pack: building clip-wgpu, xtask and the gpu_coop test ({})",
        if a.dev { "dev" } else { "release" }
    );
    // Which packages and targets decide the dependencies' features (cargo unifies them over
    // what is selected): in dev mode, everything `cargo test --workspace` selects, so the test
    // build is reused rather than half of it rebuilt with other features; in release, only
    // what is carried.
    let (build_sel, test_sel): (&[&str], &[&str]) = if a.dev {
        (&["--workspace", "--all-targets"], &["--workspace"])
    } else {
        (&["-p", "clip-wgpu", "--bin", "clip-wgpu", "-p", "xtask"], &["-p", "clip-wgpu", "--test", "gpu_coop"])
    };
    run(Command::new(&cargo).current_dir(&root).arg("build").args(profile_args).args(build_sel))?;
    let out = Command::new(&cargo)
        .current_dir(&root)
        .arg("test")
        .args(profile_args)
        .args(test_sel)
        .args(["--no-run", "--message-format=json-render-diagnostics"])
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running cargo test --no-run")?;
    if !out.status.success() {
        bail!("building the gpu_coop test failed");
    }
    let coop = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"]["name"] == "gpu_coop")
        .find_map(|v| v["executable"].as_str().map(PathBuf::from))
        .context("cargo did not name the gpu_coop test executable")?;
    let target = root.join("target").join(if a.dev { "debug" } else { "release" });

    // stage, strip, compress
    let stage = tempdir(&dir)?;
    for (src, name) in [(target.join("clip-wgpu"), "clip-wgpu"), (target.join("xtask"), "xtask"), (coop, "gpu_coop")] {
        let dst = stage.join(name);
        std::fs::copy(&src, &dst).with_context(|| format!("copying {}", src.display()))?;
        match Command::new("strip").arg("--strip-debug").arg(&dst).status() {
            Ok(s) if s.success() => {}
            _ => eprintln!("device-pack: `strip` unavailable or failed; {name} keeps its debug info"),
        }
    }
    let tar = dir.join("bin.tar.xz");
    run(Command::new("tar").arg("-cJf").arg(&tar).arg("-C").arg(&stage).args(["clip-wgpu", "xtask", "gpu_coop"]))?;
    std::fs::remove_dir_all(&stage)?;

    // the Vulkan loader
    let lib = dir.join("lib");
    std::fs::create_dir_all(&lib)?;
    let loader = ["/usr/lib/x86_64-linux-gnu/libvulkan.so.1", "/usr/lib64/libvulkan.so.1", "/usr/lib/libvulkan.so.1"]
        .iter()
        .map(Path::new)
        .find(|p| p.exists())
        .context("no Vulkan loader (libvulkan.so.1) here to carry: apt-get install libvulkan1")?;
    std::fs::copy(loader.canonicalize()?, lib.join("libvulkan.so.1"))?;

    // the scripts
    let up = vec![".."; rel.components().count()].join("/");
    for (src, name) in [("scripts/device_check.sh", "check.sh"), ("scripts/device_summary.py", "device_summary.py")] {
        let text = std::fs::read_to_string(root.join(src)).with_context(|| format!("reading {src}"))?;
        // check.sh finds the repository root from its own folder
        let text = text.replace("ROOT=$(cd \"$HERE/..\" && pwd)", &format!("ROOT=$(cd \"$HERE/{up}\" && pwd)"));
        let dst = dir.join(name);
        std::fs::write(&dst, text).with_context(|| format!("writing {}", dst.display()))?;
        set_executable(&dst)?;
    }

    let total = du(&dir)?;
    for e in std::fs::read_dir(&dir)? {
        let e = e?;
        eprintln!("  {:>8.1} MiB  {}", du(&e.path())? as f64 / (1 << 20) as f64, e.file_name().to_string_lossy());
    }
    eprintln!("device-pack: {} holds {:.1} MiB", rel.display(), total as f64 / (1 << 20) as f64);
    if total > BUDGET {
        bail!("{} MiB is over the {} MiB budget for what is carried", total >> 20, BUDGET >> 20);
    }
    println!(
        "carry [\"{}\"] and run: {}/check.sh OUT_DIR   (add --quick for the short check)",
        rel.display(),
        rel.display()
    );
    Ok(())
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}

fn tempdir(parent: &Path) -> Result<PathBuf> {
    let p = parent.join(".stage");
    if p.exists() {
        std::fs::remove_dir_all(&p)?;
    }
    std::fs::create_dir_all(&p)?;
    Ok(p)
}

fn du(p: &Path) -> Result<u64> {
    let m = std::fs::metadata(p)?;
    if m.is_dir() {
        let mut n = 0;
        for e in std::fs::read_dir(p)? {
            n += du(&e?.path())?;
        }
        Ok(n)
    } else {
        Ok(m.len())
    }
}

#[cfg(unix)]
fn set_executable(p: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

#[cfg(not(unix))]
fn set_executable(_: &Path) -> Result<()> {
    Ok(())
}
