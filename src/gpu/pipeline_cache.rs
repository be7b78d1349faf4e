//! The driver's compiled pipelines kept across runs: wgpu's pipeline cache
//! (`Features::PIPELINE_CACHE`, Vulkan only), persisted as one file per adapter and driver, so
//! that a second start skips the driver's compilation where the driver fills the cache.
//!
//! * Where: `$CLIP_WGPU_PIPELINE_CACHE` (a directory; `off`, `0` or empty disables the cache),
//!   else `$XDG_CACHE_HOME/clip-wgpu`, else `~/.cache/clip-wgpu`.
//! * Which file: `pipelines-<wgpu's key: backend, vendor, device>-<hash of the adapter's name,
//!   driver and driver version>.bin`: another adapter or driver has its own file.
//! * What: 8 bytes of magic, the BLAKE3 hash of the rest, then the bytes of
//!   [`wgpu::PipelineCache::get_data`]. A file that fails that check (truncated, corrupted,
//!   another program's) is ignored and replaced. Data that passes it is what a previous run's
//!   `get_data` returned; wgpu checks its own header (its version, the backend, the adapter,
//!   the driver's cache identifier) and starts an empty cache where it does not match (with
//!   `fallback` for outdated or corrupted data; a mismatched adapter is a validation error,
//!   after which an empty cache is made here); the driver checks its own header likewise.
//! * When: loaded when the device's pipelines are created, written (atomically: a temporary
//!   file, then a rename) after they are, only when its contents changed.

use std::path::{Path, PathBuf};

use super::context::Context;

/// The file's magic (its format's version is the last byte).
const MAGIC: &[u8; 8] = b"CLIPWPC1";
const HASH: usize = 32;

/// The directory the cache lives in by default (see the module's doc), or `None` where it is
/// disabled or there is no home.
pub fn default_dir() -> Option<PathBuf> {
    if cfg!(target_arch = "wasm32") {
        return None;
    }
    let var = |k| std::env::var_os(k).map(PathBuf::from);
    dir_from(var("CLIP_WGPU_PIPELINE_CACHE"), var("XDG_CACHE_HOME"), var("HOME"))
}

/// [`default_dir`] from the values of `CLIP_WGPU_PIPELINE_CACHE`, `XDG_CACHE_HOME`, `HOME`.
pub fn dir_from(setting: Option<PathBuf>, xdg: Option<PathBuf>, home: Option<PathBuf>) -> Option<PathBuf> {
    if let Some(v) = setting {
        return match v.to_string_lossy().trim() {
            "" | "off" | "0" | "false" | "no" => None,
            _ => Some(v),
        };
    }
    let base = xdg.filter(|v| !v.as_os_str().is_empty()).or_else(|| home.map(|h| h.join(".cache")))?;
    Some(base.join("clip-wgpu"))
}

/// What became of the cache file at start-up.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Loaded {
    /// No file yet (a cold start).
    Missing,
    /// Its data was handed to wgpu (which may still start empty where the driver changed).
    Used { bytes: usize },
    /// The file failed the checksum (truncated, corrupted) and was ignored.
    Ignored { why: String },
    /// wgpu refused the data (made for another adapter: with `fallback` it replaces only
    /// outdated or corrupted data by an empty cache, and reports a mismatched adapter as a
    /// validation error): an empty cache is used instead.
    Refused { why: String },
}

/// The pipeline cache of a device, and where it is persisted.
pub struct PipelineCache {
    pub cache: wgpu::PipelineCache,
    pub path: PathBuf,
    pub loaded: Loaded,
    /// Hash of the data loaded (nothing is written while the data stays the same).
    loaded_hash: Option<[u8; HASH]>,
}

/// What a run did with its pipeline cache (`info`, the tests, start-up measurements).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CacheReport {
    pub path: PathBuf,
    pub loaded: Loaded,
    /// Bytes written after the pipelines were made (`None`: nothing new to write, or the write
    /// failed: see `write_error`).
    pub saved_bytes: Option<usize>,
    pub write_error: Option<String>,
}

/// The file name for this adapter and driver, or `None` where wgpu keeps no pipeline cache
/// for its backend.
pub fn file_name(info: &wgpu::AdapterInfo) -> Option<String> {
    let key = wgpu::util::pipeline_cache_key(info)?;
    let who = format!("{}\n{}\n{}\n{:?}", info.name, info.driver, info.driver_info, info.device_type);
    let h = blake3::hash(who.as_bytes()).to_hex();
    let key: String = key.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '-' }).collect();
    Some(format!("pipelines-{key}-{}.bin", &h[..16]))
}

/// The payload of a cache file, if it passes the checksum.
fn payload(file: &[u8]) -> Result<&[u8], String> {
    if file.len() < MAGIC.len() + HASH {
        return Err(format!("{} bytes: truncated", file.len()));
    }
    let (magic, rest) = file.split_at(MAGIC.len());
    if magic != MAGIC {
        return Err("not a clip-wgpu pipeline cache (or another version of it)".into());
    }
    let (hash, data) = rest.split_at(HASH);
    if blake3::hash(data).as_bytes() != hash {
        return Err("checksum mismatch: truncated or corrupted".into());
    }
    Ok(data)
}

/// The bytes of a cache file holding `data`.
pub fn encode(data: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(MAGIC.len() + HASH + data.len());
    v.extend_from_slice(MAGIC);
    v.extend_from_slice(blake3::hash(data).as_bytes());
    v.extend_from_slice(data);
    v
}

/// The data of a cache file, or why it is refused (truncated, corrupted, not one).
pub fn decode(file: &[u8]) -> Result<&[u8], String> {
    payload(file)
}

impl PipelineCache {
    /// The device's cache, seeded from `dir`'s file for this adapter and driver: `None` where
    /// the device was opened without `PIPELINE_CACHE` or the backend keeps none.
    pub async fn open(ctx: &Context, dir: &Path) -> Option<PipelineCache> {
        if !ctx.device.features().contains(wgpu::Features::PIPELINE_CACHE) {
            return None;
        }
        let path = dir.join(file_name(&ctx.adapter.get_info())?);
        let file = std::fs::read(&path);
        let (data, mut loaded) = match &file {
            Err(_) => (None, Loaded::Missing),
            Ok(bytes) => match payload(bytes) {
                Ok(d) => (Some(d), Loaded::Used { bytes: d.len() }),
                Err(why) => (None, Loaded::Ignored { why }),
            },
        };
        let create = |data: Option<&[u8]>| {
            // SAFETY: `data`, when given, passed the checksum: it is byte for byte what
            // `PipelineCache::get_data` returned to a previous run (see `save`), which is what
            // wgpu requires. wgpu checks that it was made by this wgpu, backend, adapter and
            // driver: it starts an empty cache (`fallback`) or reports an error (then `open`
            // starts an empty one) where it was not.
            unsafe {
                ctx.device.create_pipeline_cache(&wgpu::PipelineCacheDescriptor {
                    label: Some("clip-wgpu pipelines"),
                    data,
                    fallback: true,
                })
            }
        };
        let scope = ctx.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let mut cache = create(data);
        let mut loaded_hash = data.map(|d| *blake3::hash(d).as_bytes());
        if let Some(e) = scope.pop().await {
            loaded = Loaded::Refused { why: e.to_string() };
            loaded_hash = None;
            cache = create(None);
        }
        Some(PipelineCache { cache, path, loaded, loaded_hash })
    }

    /// Writes the cache's data where it changed since it was loaded; what happened.
    pub fn save(&self) -> CacheReport {
        let mut report =
            CacheReport { path: self.path.clone(), loaded: self.loaded.clone(), saved_bytes: None, write_error: None };
        let Some(data) = self.cache.get_data() else {
            return report;
        };
        if data.is_empty() || Some(*blake3::hash(&data).as_bytes()) == self.loaded_hash {
            return report;
        }
        match write_atomic(&self.path, &encode(&data)) {
            Ok(()) => report.saved_bytes = Some(data.len()),
            Err(e) => report.write_error = Some(format!("{}: {e}", self.path.display())),
        }
        report
    }
}

/// `bytes` to `path` through a temporary file in the same directory and a rename: a reader
/// sees the old file or the new one, never half of one.
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}
