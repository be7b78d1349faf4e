//! The embedding cache: an in-process LRU keyed by content, optionally backed by a directory.
//!
//! Keys are BLAKE3 hashes of what determines an embedding: the model (a fingerprint of its
//! configuration, activation, including an override, and sampled weight values), then for an
//! image its file bytes and the preprocessing variant, for a text its token ids, and the
//! engine that computes it ([`EngineKind`]: CPU or GPU, its precision, and on the GPU whether
//! the cooperative-matrix matmul runs). The same photo under two names, or the same caption
//! twice, is encoded once; an int8 run never serves an f32 one, nor a GPU f16 run a CPU one.
//!
//! What is not in the key: the GPU adapter and driver, and the CPU's instruction-set level
//! (AVX-512, AVX2, NEON, portable). Within one engine kind and precision these change only
//! the rounding of the last bits (the tests hold each engine to the reference at the same
//! tolerance on every adapter and level), so a cache directory moved to another machine still
//! serves it. CPU f32 and GPU f32 differ by as little, but they are different code paths and
//! are kept apart, so a cached result is always one the running engine would give.
//!
//! The key scheme has a version: entries written before it changed are never looked up again
//! (misses; they stay on disk until removed). On disk each entry is one file,
//! `DIR/ab/abcdef….f32` (the embedding's little-endian f32 values), written to a temporary
//! name and renamed, so concurrent runs and interrupted ones never leave a torn entry; an
//! entry of the wrong length is ignored (and replaced).

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use lru::LruCache;

use crate::cpu::CpuPrecision;
use crate::gpu::Precision;
use crate::model::Checkpoint;
use crate::preprocess::Variant;

/// A cache key (BLAKE3 of the model fingerprint and the content). The entry's key also
/// names the engine: see [`EmbeddingCache::get`].
pub type Key = [u8; 32];

/// What computes an embedding, as far as it changes the values (see the module's notes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineKind {
    /// The CPU engine at this precision.
    Cpu(CpuPrecision),
    /// The GPU engine at this storage precision; `coop`: the linear layers run on
    /// cooperative matrices.
    Gpu { precision: Precision, coop: bool },
}

impl EngineKind {
    /// The precision's name: `f32`, `f16`, `bf16` or `int8`.
    pub fn precision_name(self) -> &'static str {
        match self {
            EngineKind::Cpu(p) => p.name(),
            EngineKind::Gpu { precision, .. } => precision.name(),
        }
    }
}

impl std::fmt::Display for EngineKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EngineKind::Cpu(p) => write!(f, "cpu {p}"),
            EngineKind::Gpu { precision, coop: false } => write!(f, "gpu {precision}"),
            EngineKind::Gpu { precision, coop: true } => write!(f, "gpu {precision} coop"),
        }
    }
}

/// Hit and miss counts since the cache was made, and the entries held in memory now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub entries: usize,
}

/// Embeddings by content, bounded in entries; thread-safe.
pub struct EmbeddingCache {
    mem: Option<Mutex<LruCache<Key, Arc<[f32]>>>>,
    disk: Option<PathBuf>,
    model: Key,
    dim: usize,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl EmbeddingCache {
    /// `entries` embeddings in memory (0: none), and a directory for the persistent copy.
    /// The directory is created if needed.
    pub fn new(ck: &Checkpoint, entries: usize, disk: Option<&Path>) -> std::io::Result<EmbeddingCache> {
        if let Some(d) = disk {
            std::fs::create_dir_all(d)?;
            // fail now, not on the first write, if the directory is not writable
            let probe = tempfile::NamedTempFile::new_in(d)?;
            drop(probe);
        }
        Ok(EmbeddingCache {
            mem: NonZeroUsize::new(entries).map(|n| Mutex::new(LruCache::new(n))),
            disk: disk.map(Path::to_path_buf),
            model: fingerprint(ck),
            dim: ck.config.embed_dim,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        })
    }

    /// Whether anything is cached at all.
    pub fn enabled(&self) -> bool {
        self.mem.is_some() || self.disk.is_some()
    }

    /// The key of an image file's bytes under a preprocessing variant.
    pub fn image_key(&self, bytes: &[u8], variant: Variant) -> Key {
        let mut h = blake3::Hasher::new();
        h.update(&self.model).update(b"image\0").update(format!("{variant:?}").as_bytes()).update(b"\0");
        h.update(bytes);
        *h.finalize().as_bytes()
    }

    /// The key of a token id sequence.
    pub fn text_key(&self, ids: &[u32]) -> Key {
        let mut h = blake3::Hasher::new();
        h.update(&self.model).update(b"text\0");
        for id in ids {
            h.update(&id.to_le_bytes());
        }
        *h.finalize().as_bytes()
    }

    /// The entry for `key` computed by `engine`: the content key with the engine's name.
    fn entry(key: &Key, engine: EngineKind) -> Key {
        let mut h = blake3::Hasher::new();
        h.update(key).update(b"engine\0").update(engine.to_string().as_bytes());
        *h.finalize().as_bytes()
    }

    /// The embedding `engine` computed for `key`, from memory or else from disk (then kept in
    /// memory).
    pub fn get(&self, key: &Key, engine: EngineKind) -> Option<Vec<f32>> {
        let key = &Self::entry(key, engine);
        if let Some(mem) = &self.mem {
            let mut m = mem.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(e) = m.get(key) {
                self.hits.fetch_add(1, Ordering::Relaxed);
                return Some(e.to_vec());
            }
        }
        if let Some(e) = self.disk.as_ref().and_then(|d| self.read(d, key)) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            self.remember(key, &e);
            return Some(e);
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        None
    }

    /// Stores an embedding `engine` computed. A failed disk write is not an error: the entry
    /// stays in memory.
    pub fn put(&self, key: &Key, engine: EngineKind, emb: &[f32]) {
        if emb.len() != self.dim {
            return;
        }
        let key = &Self::entry(key, engine);
        self.remember(key, emb);
        if let Some(d) = &self.disk {
            let _ = self.write(d, key, emb);
        }
    }

    pub fn stats(&self) -> CacheStats {
        let entries = self.mem.as_ref().map_or(0, |m| m.lock().unwrap_or_else(|p| p.into_inner()).len());
        CacheStats { hits: self.hits.load(Ordering::Relaxed), misses: self.misses.load(Ordering::Relaxed), entries }
    }

    fn remember(&self, key: &Key, emb: &[f32]) {
        if let Some(mem) = &self.mem {
            mem.lock().unwrap_or_else(|p| p.into_inner()).put(*key, emb.into());
        }
    }

    fn path(dir: &Path, key: &Key) -> PathBuf {
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        dir.join(&hex[..2]).join(format!("{hex}.f32"))
    }

    fn read(&self, dir: &Path, key: &Key) -> Option<Vec<f32>> {
        let bytes = std::fs::read(Self::path(dir, key)).ok()?;
        if bytes.len() != self.dim * 4 {
            return None;
        }
        let e: Vec<f32> = bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        e.iter().all(|v| v.is_finite()).then_some(e)
    }

    fn write(&self, dir: &Path, key: &Key, emb: &[f32]) -> std::io::Result<()> {
        let path = Self::path(dir, key);
        let parent = path.parent().expect("entry paths have a parent");
        std::fs::create_dir_all(parent)?;
        let mut tmp = tempfile::NamedTempFile::new_in(parent)?;
        let bytes: Vec<u8> = emb.iter().flat_map(|v| v.to_le_bytes()).collect();
        std::io::Write::write_all(&mut tmp, &bytes)?;
        tmp.persist(&path).map_err(|e| e.error)?;
        Ok(())
    }
}

/// What tells two models apart: configuration, activation, tensor names and shapes, and up
/// to 64 values sampled evenly from every tensor (cheap, and different for any two trained
/// or randomly initialised weight sets).
pub fn fingerprint(ck: &Checkpoint) -> Key {
    // v2: the entries' keys name the engine (v1 entries are misses)
    fingerprint_version(ck, 2)
}

fn fingerprint_version(ck: &Checkpoint, version: u32) -> Key {
    let mut h = blake3::Hasher::new();
    h.update(format!("clip-wgpu cache v{version}\0").as_bytes());
    h.update(format!("{:?}", ck.config).as_bytes());
    for p in &ck.weights.params.list {
        h.update(p.name.as_bytes());
        for d in &p.shape {
            h.update(&(*d as u64).to_le_bytes());
        }
        let step = (p.data.len() / 64).max(1);
        for v in p.data.iter().step_by(step) {
            h.update(&v.to_le_bytes());
        }
    }
    h.update(&ck.weights.logit_scale.to_le_bytes());
    *h.finalize().as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CPU_F32: EngineKind = EngineKind::Cpu(CpuPrecision::F32);

    fn tiny() -> Checkpoint {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tiny/hf");
        crate::model::load(Path::new(dir), &Default::default()).expect("tiny fixture")
    }

    #[test]
    fn memory_lru_keeps_the_newest_entries() {
        let ck = tiny();
        let d = ck.config.embed_dim;
        let c = EmbeddingCache::new(&ck, 2, None).unwrap();
        let keys: Vec<Key> = (0..3u32).map(|i| c.text_key(&[49406, i, 49407])).collect();
        assert_ne!(keys[0], keys[1]);
        for (i, k) in keys.iter().enumerate() {
            c.put(k, CPU_F32, &vec![i as f32; d]);
        }
        assert!(c.get(&keys[0], CPU_F32).is_none(), "the oldest entry is evicted");
        assert_eq!(c.get(&keys[2], CPU_F32).unwrap(), vec![2.0; d]);
        assert_eq!(c.stats(), CacheStats { hits: 1, misses: 1, entries: 2 });
        // a wrong-length embedding is not stored
        c.put(&keys[0], CPU_F32, &[1.0]);
        assert!(c.get(&keys[0], CPU_F32).is_none());
    }

    #[test]
    fn disk_entries_survive_and_bad_ones_are_ignored() {
        let ck = tiny();
        let d = ck.config.embed_dim;
        let dir = tempfile::tempdir().unwrap();
        let e: Vec<f32> = (0..d).map(|i| i as f32 * 0.5 - 1.0).collect();
        let key = {
            let c = EmbeddingCache::new(&ck, 0, Some(dir.path())).unwrap();
            let k = c.image_key(b"not really a jpeg", Variant::Hf);
            assert_ne!(k, c.image_key(b"not really a jpeg", Variant::OpenAi), "the variant is part of the key");
            c.put(&k, CPU_F32, &e);
            k
        };
        // a new cache (a new run) finds it
        let c = EmbeddingCache::new(&ck, 4, Some(dir.path())).unwrap();
        assert_eq!(c.get(&key, CPU_F32).unwrap(), e);
        // a torn entry is a miss, not an error
        let path = EmbeddingCache::path(dir.path(), &EmbeddingCache::entry(&key, CPU_F32));
        assert!(path.is_file());
        std::fs::write(&path, [0u8; 7]).unwrap();
        let c = EmbeddingCache::new(&ck, 4, Some(dir.path())).unwrap();
        assert!(c.get(&key, CPU_F32).is_none());
        c.put(&key, CPU_F32, &e);
        assert_eq!(std::fs::metadata(&path).unwrap().len() as usize, d * 4);
    }

    #[test]
    fn each_engine_and_precision_has_its_own_entries() {
        let ck = tiny();
        let d = ck.config.embed_dim;
        let dir = tempfile::tempdir().unwrap();
        let engines = [
            CPU_F32,
            EngineKind::Cpu(CpuPrecision::Bf16),
            EngineKind::Cpu(CpuPrecision::Int8),
            EngineKind::Gpu { precision: Precision::F32, coop: false },
            EngineKind::Gpu { precision: Precision::F16, coop: false },
            EngineKind::Gpu { precision: Precision::F16, coop: true },
        ];
        let c = EmbeddingCache::new(&ck, 0, Some(dir.path())).unwrap();
        let k = c.text_key(&[49406, 320, 49407]);
        // only the int8 engine has computed it: no other engine is served that embedding
        c.put(&k, EngineKind::Cpu(CpuPrecision::Int8), &vec![0.25; d]);
        for e in engines {
            let got = c.get(&k, e);
            if e == EngineKind::Cpu(CpuPrecision::Int8) {
                assert_eq!(got, Some(vec![0.25; d]));
            } else {
                assert_eq!(got, None, "{e} is served an int8 entry");
            }
        }
        assert_eq!(c.stats(), CacheStats { hits: 1, misses: 5, entries: 0 });
        // each engine's entry is a file of its own, and each is served back to its engine
        for (i, e) in engines.iter().enumerate() {
            c.put(&k, *e, &vec![i as f32; d]);
        }
        let c = EmbeddingCache::new(&ck, 0, Some(dir.path())).unwrap();
        for (i, e) in engines.iter().enumerate() {
            assert_eq!(c.get(&k, *e), Some(vec![i as f32; d]), "{e}");
        }
        let files =
            std::fs::read_dir(dir.path()).unwrap().flatten().map(|s| std::fs::read_dir(s.path()).unwrap().count());
        assert_eq!(files.sum::<usize>(), engines.len());
    }

    #[test]
    fn entries_of_the_previous_key_scheme_are_misses() {
        let ck = tiny();
        let d = ck.config.embed_dim;
        let dir = tempfile::tempdir().unwrap();
        let bytes = b"an image";
        // where the previous scheme (v1: no engine in the key) stored this image's embedding
        let mut h = blake3::Hasher::new();
        h.update(&fingerprint_version(&ck, 1)).update(b"image\0").update(b"Hf\0").update(bytes);
        let old = EmbeddingCache::path(dir.path(), h.finalize().as_bytes());
        std::fs::create_dir_all(old.parent().unwrap()).unwrap();
        std::fs::write(&old, vec![0u8; d * 4]).unwrap();
        let c = EmbeddingCache::new(&ck, 0, Some(dir.path())).unwrap();
        let k = c.image_key(bytes, Variant::Hf);
        for e in [CPU_F32, EngineKind::Gpu { precision: Precision::F32, coop: false }] {
            assert!(c.get(&k, e).is_none(), "{e} served a v1 entry");
        }
        assert_ne!(EmbeddingCache::path(dir.path(), &EmbeddingCache::entry(&k, CPU_F32)), old);
    }

    #[test]
    fn fingerprint_tells_models_apart() {
        let a = tiny();
        let mut b = tiny();
        assert_eq!(fingerprint(&a), fingerprint(&b));
        b.weights.params.list[0].data[0] += 1.0;
        assert_ne!(fingerprint(&a), fingerprint(&b));
        // an activation override changes the embeddings, and the key
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tiny/hf");
        for act in [crate::model::Activation::Gelu, crate::model::Activation::QuickGelu] {
            let opts = crate::model::LoadOptions { activation: Some(act) };
            let c = crate::model::load(Path::new(dir), &opts).unwrap();
            assert_eq!(fingerprint(&c) == fingerprint(&a), act == a.config.vision.tower.activation, "{act:?}");
        }
    }
}
