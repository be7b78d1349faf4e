//! Which tile configuration ([`Tile`]) runs each linear layer: the one place that decides,
//! with a typed [`Reason`]. No device is needed here (the planner and `info` use it); the
//! measuring is [`tune`](super::tune)'s.
//!
//! A choice is per *shape bucket* ([`Bucket`]): precision, the layer's `n_out × n_in`, and
//! its row count rounded up to a power of two. In order:
//!
//! 1. a forced setting ([`Tiles::Force`], [`Tiles::Table`]; `--gpu-tiles`,
//!    `CLIP_WGPU_GPU_TILES`) → [`Reason::Forced`];
//! 2. the tuner's table cached on disk for this adapter ([`AdapterKey`]: name, vendor and
//!    device ids, driver, driver info, backend, and a hash of the kernel set), used only when
//!    the whole key matches: another driver or changed kernels make it stale, and `tune`
//!    measures again → [`Reason::Cached`] (or [`Reason::Tuned`] right after measuring); a
//!    bucket the table lacks takes the nearest row count tuned for the same layer;
//! 3. the shipped default ([`shipped`]) → [`Reason::Default`].
//!
//! The engine never tunes on its own: tuning the buckets of both towers at three batch sizes
//! takes seconds on a GPU and minutes on lavapipe, too long for a start-up; `clip-wgpu tune`
//! fills the cache ahead of time, and without it the shipped default runs.

use std::path::{Path, PathBuf};

use super::matmul::{MatmulKey, Tile};
use super::shader::KernelKey;
use super::types::{AdapterReport, Precision};
use crate::model::{Epilogue, Op, Program, Rows};

/// Version of the cache file's layout.
pub const CACHE_VERSION: u32 = 1;
/// The smallest row bucket (fewer rows fall into it).
pub const MIN_ROWS: usize = 16;

/// Why a bucket runs the tile it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Reason {
    /// `--gpu-tiles` / `CLIP_WGPU_GPU_TILES` (a tile name or a table file).
    Forced,
    /// The tuner's table cached on disk for this adapter, driver and kernel set.
    Cached,
    /// Measured in this process.
    Tuned,
    /// The shipped default for this kind of adapter (nothing cached, nothing forced).
    Default,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Reason::Forced => "forced",
            Reason::Cached => "cached",
            Reason::Tuned => "tuned",
            Reason::Default => "default",
        })
    }
}

/// The tile of one bucket and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice {
    pub tile: Tile,
    pub reason: Reason,
}

/// A matmul shape bucket: rows rounded up to a power of two (at least [`MIN_ROWS`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct Bucket {
    /// `f32` or `f16` (storage precision).
    pub precision: PrecisionName,
    /// Columns of Y (`n_out`) and the inner dimension (`n_in`).
    pub n: usize,
    pub k: usize,
    /// Rows, a power of two.
    pub rows: usize,
}

/// [`Precision`] as the cache file spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PrecisionName {
    F32,
    F16,
}

impl From<Precision> for PrecisionName {
    fn from(p: Precision) -> Self {
        match p {
            Precision::F32 => PrecisionName::F32,
            Precision::F16 => PrecisionName::F16,
        }
    }
}

impl PrecisionName {
    pub fn precision(self) -> Precision {
        match self {
            PrecisionName::F32 => Precision::F32,
            PrecisionName::F16 => Precision::F16,
        }
    }
}

/// The row bucket of `m` rows.
pub fn bucket_rows(m: usize) -> usize {
    m.max(MIN_ROWS).next_power_of_two()
}

impl Bucket {
    pub fn of(precision: Precision, n: usize, k: usize, m: usize) -> Bucket {
        Bucket { precision: precision.into(), n, k, rows: bucket_rows(m) }
    }
}

impl std::fmt::Display for Bucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}x{} rows≤{}", self.precision.precision(), self.n, self.k, self.rows)
    }
}

/// One measured candidate of a bucket.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Timing {
    pub tile: String,
    /// Milliseconds per product (the best timed run), or `None` when it was not run
    /// (`note` says why: over the adapter's limits, or pruned after a warm-up far slower than
    /// the best so far).
    pub ms: Option<f64>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub note: String,
}

/// One row of a table: a bucket, its tile, and (when tuned) what was measured.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Entry {
    #[serde(flatten)]
    pub bucket: Bucket,
    pub tile: String,
    /// The row count timed (the bucket's rows are this rounded up).
    #[serde(default)]
    pub timed_rows: usize,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub timings: Vec<Timing>,
}

/// Tiles by bucket: a tuned table (cached on disk) or a forced one (a JSON file of
/// `{"entries": [{"precision": "f16", "n": 2304, "k": 768, "rows": 2048, "tile": "wg64x64k16"}, …]}`).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Table {
    pub entries: Vec<Entry>,
}

impl Table {
    /// The tile of `b`: its own row, else the nearest row count (in powers of two) tuned for
    /// the same precision and layer; `None` when the layer has no row.
    pub fn lookup(&self, b: &Bucket) -> Option<Tile> {
        self.entries
            .iter()
            .filter(|e| (e.bucket.precision, e.bucket.n, e.bucket.k) == (b.precision, b.n, b.k))
            .filter_map(|e| Tile::parse(&e.tile).map(|t| (e.bucket.rows, t)))
            .min_by_key(|&(rows, _)| ((rows.trailing_zeros() as i32 - b.rows.trailing_zeros() as i32).abs(), rows))
            .map(|(_, t)| t)
    }
    /// Adds or replaces the row of a bucket.
    pub fn set(&mut self, e: Entry) {
        self.entries.retain(|x| x.bucket != e.bucket);
        self.entries.push(e);
        self.entries.sort_by_key(|x| x.bucket);
    }
    /// Every tile name is a known candidate.
    pub fn check(&self) -> Result<(), String> {
        for e in &self.entries {
            if Tile::parse(&e.tile).is_none() {
                return Err(format!("unknown tile `{}` for {} (known: {})", e.tile, e.bucket, candidate_names()));
            }
        }
        Ok(())
    }
}

/// The candidates' names, comma-separated.
pub fn candidate_names() -> String {
    Tile::CANDIDATES.iter().map(Tile::name).collect::<Vec<_>>().join(", ")
}

/// How the engine picks tiles (`GpuOptions::tiles`).
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Tiles {
    /// The cached table for this adapter, else the shipped default.
    #[default]
    Auto,
    /// This tile for every linear layer on token rows.
    Force(Tile),
    /// This table (buckets it lacks: the nearest tuned row count, else the shipped default).
    Table(Table),
}

impl Tiles {
    /// `auto`, a tile name (`reg32x32`, `wg64x64k16`, …) or a JSON table file.
    pub fn parse(s: &str) -> Result<Tiles, String> {
        let s = s.trim();
        if s.is_empty() || s.eq_ignore_ascii_case("auto") {
            return Ok(Tiles::Auto);
        }
        if let Some(t) = Tile::parse(s) {
            return Ok(Tiles::Force(t));
        }
        let text = std::fs::read_to_string(s)
            .map_err(|e| format!("`{s}` is neither a tile ({}) nor a readable table file: {e}", candidate_names()))?;
        let table: Table = serde_json::from_str(&text).map_err(|e| format!("{s}: not a tile table: {e}"))?;
        table.check().map_err(|e| format!("{s}: {e}"))?;
        Ok(Tiles::Table(table))
    }
    /// From `CLIP_WGPU_GPU_TILES` (unset: [`Tiles::Auto`]).
    pub fn from_env() -> Result<Tiles, String> {
        match std::env::var("CLIP_WGPU_GPU_TILES") {
            Ok(v) => Tiles::parse(&v).map_err(|e| format!("CLIP_WGPU_GPU_TILES: {e}")),
            Err(_) => Ok(Tiles::Auto),
        }
    }
}

/// The adapter kinds the shipped table knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AdapterFamily {
    /// A CPU implementation (lavapipe/llvmpipe, SwiftShader, WARP).
    Software,
    /// Anything else: no measurement shipped yet.
    Unknown,
}

/// The kind of adapter, for the shipped table.
pub fn family(r: &AdapterReport) -> AdapterFamily {
    let name = r.name.to_lowercase();
    let soft = ["llvmpipe", "lavapipe", "swiftshader", "warp", "software"];
    if r.device_type == "Cpu" || soft.iter().any(|s| name.contains(s)) {
        AdapterFamily::Software
    } else {
        AdapterFamily::Unknown
    }
}

/// The shipped default of a bucket. Software adapters: register tiles (measured on lavapipe:
/// workgroup-memory tiles lose at every bucket, docs/rejected-optimizations.md). Others:
/// register tiles as well until a measurement says otherwise — they need no workgroup
/// memory and run on every adapter; `clip-wgpu tune` finds better where there is better.
pub fn shipped(r: &AdapterReport, _b: &Bucket) -> Tile {
    match family(r) {
        AdapterFamily::Software | AdapterFamily::Unknown => Tile::REG32,
    }
}

/// What identifies an adapter, its driver and the kernel set: a cached table is used only
/// when all of it matches.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AdapterKey {
    pub name: String,
    pub vendor: u32,
    pub device: u32,
    pub driver: String,
    pub driver_info: String,
    pub backend: String,
    /// BLAKE3 of every candidate's WGSL (see [`kernel_set_hash`]).
    pub kernels: String,
}

impl AdapterKey {
    pub fn of(r: &AdapterReport) -> AdapterKey {
        AdapterKey {
            name: r.name.clone(),
            vendor: r.vendor,
            device: r.device,
            driver: r.driver.clone(),
            driver_info: r.driver_info.clone(),
            backend: r.backend.clone(),
            kernels: kernel_set_hash(),
        }
    }
    /// The same adapter (whatever its driver and kernels).
    pub fn same_adapter(&self, o: &AdapterKey) -> bool {
        (&self.name, self.vendor, self.device, &self.backend) == (&o.name, o.vendor, o.device, &o.backend)
    }
}

/// The variant of a candidate that the tuner runs (and the kernel set's hash covers).
pub fn tuning_key(tile: Tile, precision: Precision) -> KernelKey {
    let t = precision.tokens();
    let epi = Epilogue { bias: true, act: None, accumulate: false };
    KernelKey::Matmul(MatmulKey { x: t, w: precision.weights(), y: t, epi, tile })
}

/// BLAKE3 (hex, 16 digits) of the WGSL of every candidate at both precisions: a change to
/// the kernels, their generator or the candidate list makes cached tables stale.
pub fn kernel_set_hash() -> String {
    let mut h = blake3::Hasher::new();
    for tile in Tile::CANDIDATES {
        for p in [Precision::F32, Precision::F16] {
            h.update(tile.name().as_bytes());
            h.update(tuning_key(tile, p).source().as_bytes());
        }
    }
    h.finalize().to_hex()[..16].to_string()
}

/// One adapter's tuned table in the cache file.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CachedTable {
    pub key: AdapterKey,
    pub table: Table,
}

/// The cache file: one table per adapter.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CacheFile {
    pub version: u32,
    pub adapters: Vec<CachedTable>,
}

/// Where the tuned tables live: `CLIP_WGPU_GPU_TUNE_CACHE` (a file), else
/// `$XDG_CACHE_HOME/clip-wgpu/gpu-tune.json`, else `~/.cache/clip-wgpu/gpu-tune.json`.
pub fn cache_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CLIP_WGPU_GPU_TUNE_CACHE") {
        return Some(PathBuf::from(p));
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("clip-wgpu").join("gpu-tune.json"))
}

/// The cache file at `path` (empty when missing, unreadable or of another version).
pub fn read_cache(path: &Path) -> CacheFile {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice::<CacheFile>(&b).ok())
        .filter(|c| c.version == CACHE_VERSION)
        .unwrap_or(CacheFile { version: CACHE_VERSION, adapters: Vec::new() })
}

/// The table cached for exactly this key (`None` when there is none, or only a stale one).
pub fn cached_table(path: &Path, key: &AdapterKey) -> Option<Table> {
    read_cache(path).adapters.into_iter().find(|c| &c.key == key).map(|c| c.table).filter(|t| t.check().is_ok())
}

/// Stores `table` for `key`, replacing any table of the same adapter (a stale one included);
/// written atomically (a temporary file in the same directory, then a rename).
pub fn write_cache(path: &Path, key: &AdapterKey, table: &Table) -> std::io::Result<()> {
    let mut file = read_cache(path);
    file.adapters.retain(|c| !c.key.same_adapter(key));
    file.adapters.push(CachedTable { key: key.clone(), table: table.clone() });
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let bytes = serde_json::to_vec_pretty(&file).map_err(std::io::Error::other)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut tmp, &bytes)?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// The tile of every bucket for one adapter and precision: what the planner asks.
#[derive(Debug, Clone)]
pub struct TilePolicy {
    pub report: AdapterReport,
    pub precision: Precision,
    /// One tile forced for every bucket.
    pub forced: Option<Tile>,
    /// The forced, cached or just-tuned table, and the reason its rows carry.
    pub table: Option<(Table, Reason)>,
    /// Where a cached table was looked for (`info`).
    pub cache: Option<PathBuf>,
}

impl TilePolicy {
    /// The policy `setting` gives on this adapter: forced, else the cached table if its key
    /// matches (read from [`cache_path`]), else the shipped default.
    pub fn resolve(report: &AdapterReport, precision: Precision, setting: &Tiles) -> TilePolicy {
        let cache = cache_path();
        let table = match setting {
            Tiles::Force(_) => None,
            Tiles::Table(t) => Some((t.clone(), Reason::Forced)),
            Tiles::Auto => {
                cache.as_deref().and_then(|p| cached_table(p, &AdapterKey::of(report))).map(|t| (t, Reason::Cached))
            }
        };
        let forced = match setting {
            Tiles::Force(t) => Some(*t),
            _ => None,
        };
        TilePolicy { report: report.clone(), precision, forced, table, cache }
    }

    /// A policy with this table (the tuner's, just measured).
    pub fn with_table(report: &AdapterReport, precision: Precision, table: Table, reason: Reason) -> TilePolicy {
        TilePolicy {
            report: report.clone(),
            precision,
            forced: None,
            table: Some((table, reason)),
            cache: cache_path(),
        }
    }

    /// The tile of an `m × n × k` product on token rows, and why.
    pub fn choose(&self, n: usize, k: usize, m: usize) -> Choice {
        let b = Bucket::of(self.precision, n, k, m);
        if let Some(tile) = self.forced {
            return Choice { tile, reason: Reason::Forced };
        }
        if let Some((t, reason)) = &self.table {
            if let Some(tile) = t.lookup(&b) {
                return Choice { tile, reason: *reason };
            }
        }
        Choice { tile: shipped(&self.report, &b), reason: Reason::Default }
    }

    /// The tile of one op on a chunk of `rows` token rows: linear layers on token rows by
    /// bucket; the pooled rows' projection (a handful of rows) always the default register
    /// tile.
    pub fn tile_of(&self, program: &Program, op: &Op, rows: usize) -> Tile {
        match *op {
            Op::Linear { x, lin, .. } if program.rows(x) == Rows::Tokens => self.choose(lin.n_out, lin.n_in, rows).tile,
            _ => Tile::REG32,
        }
    }
}

/// The distinct `(n_out, n_in)` of the linear layers on token rows of `program`.
pub fn linear_shapes(program: &Program) -> Vec<(usize, usize)> {
    let mut v: Vec<(usize, usize)> = program
        .ops
        .iter()
        .filter_map(|op| match *op {
            Op::Linear { x, lin, .. } if program.rows(x) == Rows::Tokens => Some((lin.n_out, lin.n_in)),
            _ => None,
        })
        .collect();
    v.sort();
    v.dedup();
    v
}

/// The row buckets a tower with chunks of up to `max_rows` token rows can meet.
pub fn row_buckets(max_rows: usize) -> Vec<usize> {
    let top = bucket_rows(max_rows);
    std::iter::successors(Some(MIN_ROWS), |&r| (r < top).then_some(r * 2)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(name: &str, device_type: &str) -> AdapterReport {
        AdapterReport {
            index: 0,
            name: name.into(),
            vendor: 0x10de,
            device: 0x2335,
            backend: "vulkan".into(),
            device_type: device_type.into(),
            driver: "d".into(),
            driver_info: "1".into(),
            shader_f16: true,
            subgroup: true,
            timestamp_query: false,
            cooperative_matrix: vec![],
            coop_16x16x16_f16_f32: false,
            matmul_path: String::new(),
            subgroup_min_size: 32,
            subgroup_max_size: 32,
            max_storage_buffer_binding_size: 1 << 30,
            max_buffer_size: 1 << 31,
            max_compute_workgroup_storage_size: 49152,
            max_compute_invocations_per_workgroup: 1024,
            min_storage_buffer_offset_alignment: 256,
            default_precision: Precision::F16,
        }
    }

    #[test]
    fn buckets_lookup_and_reasons() {
        assert_eq!(bucket_rows(1), 16);
        assert_eq!(bucket_rows(50), 64);
        assert_eq!(bucket_rows(64), 64);
        assert_eq!(bucket_rows(12800), 16384);
        assert_eq!(row_buckets(100), vec![16, 32, 64, 128]);
        let r = report("NVIDIA H200", "DiscreteGpu");
        assert_eq!(family(&r), AdapterFamily::Unknown);
        assert_eq!(family(&report("llvmpipe (LLVM 15.0.6, 256 bits)", "Cpu")), AdapterFamily::Software);
        let mut t = Table::default();
        let e = |rows, tile: Tile| Entry {
            bucket: Bucket { precision: PrecisionName::F16, n: 2304, k: 768, rows },
            tile: tile.name(),
            timed_rows: rows,
            timings: vec![],
        };
        t.set(e(64, Tile::REG32));
        t.set(e(16384, Tile::WG64_K16));
        t.set(e(64, Tile::REG64)); // replaces
        assert_eq!(t.entries.len(), 2);
        let p = TilePolicy::with_table(&r, Precision::F16, t.clone(), Reason::Cached);
        assert_eq!(p.choose(2304, 768, 50), Choice { tile: Tile::REG64, reason: Reason::Cached });
        assert_eq!(p.choose(2304, 768, 12800).tile, Tile::WG64_K16);
        // nearest tuned bucket: 4096 is nearer 16384 than 64
        assert_eq!(p.choose(2304, 768, 3000).tile, Tile::WG64_K16);
        assert_eq!(p.choose(2304, 768, 200).tile, Tile::REG64);
        // another layer, another precision: the shipped default
        assert_eq!(p.choose(768, 768, 50), Choice { tile: Tile::REG32, reason: Reason::Default });
        let p32 = TilePolicy::with_table(&r, Precision::F32, t, Reason::Cached);
        assert_eq!(p32.choose(2304, 768, 50).reason, Reason::Default);
        let forced = TilePolicy::resolve(&r, Precision::F16, &Tiles::Force(Tile::WG128X64_K16));
        assert_eq!(forced.choose(5, 7, 9), Choice { tile: Tile::WG128X64_K16, reason: Reason::Forced });
        assert!(matches!(Tiles::parse("wg64x64k32"), Ok(Tiles::Force(t)) if t == Tile::WG64_K32));
        assert_eq!(Tiles::parse("auto"), Ok(Tiles::Auto));
        assert!(Tiles::parse("/nonexistent/x.json").unwrap_err().contains("neither a tile"));
    }

    #[test]
    fn stale_keys_are_not_used_and_are_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("gpu-tune.json");
        let key = AdapterKey::of(&report("NVIDIA H200", "DiscreteGpu"));
        let mut t = Table::default();
        t.set(Entry {
            bucket: Bucket { precision: PrecisionName::F32, n: 8, k: 8, rows: 16 },
            tile: "wg64x64k16".into(),
            timed_rows: 10,
            timings: vec![],
        });
        assert_eq!(cached_table(&path, &key), None);
        let stale = AdapterKey { kernels: "0000".into(), ..key.clone() };
        write_cache(&path, &stale, &t).unwrap();
        assert_eq!(cached_table(&path, &key), None, "another kernel set");
        assert_eq!(cached_table(&path, &stale), Some(t.clone()));
        let other_driver = AdapterKey { driver_info: "2".into(), ..key.clone() };
        assert_eq!(cached_table(&path, &other_driver), None);
        write_cache(&path, &key, &t).unwrap();
        let file = read_cache(&path);
        assert_eq!(file.adapters.len(), 1, "the stale table of the same adapter is replaced");
        assert_eq!(file.adapters[0].key, key);
        // another adapter's table is kept beside it
        let other = AdapterKey { name: "other".into(), ..key.clone() };
        write_cache(&path, &other, &Table::default()).unwrap();
        assert_eq!(read_cache(&path).adapters.len(), 2);
        // a torn file is an empty cache
        std::fs::write(&path, b"{\"version\": 1, \"adap").unwrap();
        assert_eq!(cached_table(&path, &key), None);
    }
}
