//! `--precision auto` on the CPU: the fastest CPU precision whose embeddings stay within
//! min cosine [`MIN_COSINE`] of f32 on this machine, for this checkpoint. Measured once
//! (each precision's weights prepared, a batch of synthetic images and of texts encoded, timed
//! and compared with f32) and cached on disk, keyed by the CPU (vendor, family/model, the
//! features the kernels use), the kernel level, the thread count, the model's shape and a
//! fingerprint of its weights, and this crate's version. A choice measured at another thread
//! count on the same CPU, level and model serves a process that finds none for its own (each
//! of N one-thread workers, a Ray actor say, would otherwise measure for seconds at start-up).
//!
//! Cache file: `$CLIP_WGPU_CPU_TUNE_CACHE` if set, else `$XDG_CACHE_HOME/clip-wgpu/cpu-precision.json`
//! or `~/.cache/clip-wgpu/cpu-precision.json`. An unreadable or unwritable cache only means
//! measuring again.

use std::path::PathBuf;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::{run_prepared, CpuPrecision, Isa, Prepared};
use crate::model::{ClipConfig, Input, Params, Program};

/// The accuracy bar: min cosine to f32 over both towers' embeddings.
pub const MIN_COSINE: f64 = 0.999;

/// Towers narrower than this run f32 under `auto` without measuring.
pub const MIN_WIDTH: usize = 256;

/// One precision's measurement.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Measured {
    pub precision: String,
    /// the kernels the products ran on
    pub kernels: String,
    /// seconds for the image batch and the text batch (best of the timed runs)
    pub image_s: f64,
    pub text_s: f64,
    /// min cosine to f32 over both towers (1 for f32)
    pub min_cosine: f64,
}

/// The choice and why.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AutoChoice {
    pub precision: String,
    pub reason: String,
    pub measured: Vec<Measured>,
    /// where it is cached (empty if it could not be written)
    #[serde(default)]
    pub cache: String,
    /// true when read from the cache, not measured in this process
    #[serde(default, skip_serializing)]
    pub from_cache: bool,
}

impl AutoChoice {
    pub fn cpu_precision(&self) -> CpuPrecision {
        CpuPrecision::parse(&self.precision).unwrap_or_default()
    }
}

/// This CPU in words and the features the kernels care about, for the cache key and `info`.
pub fn cpu_identity() -> String {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::__cpuid;
        let l0 = __cpuid(0);
        let vendor: Vec<u8> = [l0.ebx, l0.edx, l0.ecx].iter().flat_map(|r| r.to_le_bytes()).collect();
        let l1 = __cpuid(1);
        let base_family = (l1.eax >> 8) & 0xf;
        let family = if base_family == 0xf { base_family + ((l1.eax >> 20) & 0xff) } else { base_family };
        let model = ((l1.eax >> 4) & 0xf) | if base_family >= 6 { ((l1.eax >> 16) & 0xf) << 4 } else { 0 };
        let mut brand = Vec::new();
        if __cpuid(0x8000_0000).eax >= 0x8000_0004 {
            for leaf in 0x8000_0002u32..=0x8000_0004 {
                let r = __cpuid(leaf);
                brand.extend([r.eax, r.ebx, r.ecx, r.edx].iter().flat_map(|x| x.to_le_bytes()));
            }
        }
        let brand = String::from_utf8_lossy(&brand).trim_matches(char::from(0)).trim().to_string();
        let mut feats = vec![];
        macro_rules! f {
            ($($n:tt),*) => {$( if std::arch::is_x86_feature_detected!($n) { feats.push($n); } )*};
        }
        f!("avx2", "fma", "avx512f", "avx512bw", "avx512vnni", "avx512bf16", "avxvnni");
        use super::gemm_lowp::{amx_available, Kind};
        if amx_available(Kind::Bf16) {
            feats.push("amx-bf16");
        }
        if amx_available(Kind::Int8) {
            feats.push("amx-int8");
        }
        format!("{} {brand} (family {family} model {model}) [{}]", String::from_utf8_lossy(&vendor), feats.join(" "))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        format!("{} cpu", std::env::consts::ARCH)
    }
}

fn cache_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CLIP_WGPU_CPU_TUNE_CACHE") {
        return Some(PathBuf::from(p));
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("clip-wgpu").join("cpu-precision.json"))
}

/// The cache key of this machine, level, thread count and model.
fn key(params: &Params, cfg: &ClipConfig, programs: &[&Program], isa: Isa) -> String {
    let mut h = blake3::Hasher::new();
    // a fingerprint of the weights: a strided sample of every linear layer (fast, and enough
    // to tell checkpoints apart)
    for p in programs {
        for op in &p.ops {
            if let crate::model::Op::Linear { lin, .. } = op {
                let d = params.data(lin.weight);
                for v in d.iter().step_by(4099) {
                    h.update(&v.to_le_bytes());
                }
            }
        }
    }
    let shape = serde_json::to_string(cfg).unwrap_or_default();
    format!(
        "{} | {isa} | {} threads | {shape} | {} | clip-wgpu {}",
        cpu_identity(),
        rayon::current_num_threads(),
        &h.finalize().to_hex()[..16],
        env!("CARGO_PKG_VERSION")
    )
}

/// A cache key without its thread count. The precisions' ranking is a property of the CPU's
/// kernels more than of the thread count (on the Xeon 6/207 without AMX: int8, f32, bf16 at
/// both 1 and 2 threads), and measuring again costs seconds per process.
fn without_threads(key: &str) -> String {
    key.split(" | ").filter(|s| !s.ends_with(" threads")).collect::<Vec<_>>().join(" | ")
}

fn read_cache(path: &PathBuf) -> std::collections::BTreeMap<String, AutoChoice> {
    std::fs::read(path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
}

/// The fastest precision meeting [`MIN_COSINE`] here: from the cache, else measured (a few
/// seconds: every precision's weights are prepared and run once) and cached.
/// `params` must still hold the linear layers' weights.
pub fn choose(params: &Params, cfg: &ClipConfig, vision: &Program, text: &Program) -> AutoChoice {
    let width = cfg.vision.tower.width.min(cfg.text.tower.width);
    if width < MIN_WIDTH {
        return AutoChoice {
            precision: "f32".into(),
            reason: format!(
                "f32 without measuring: a model this narrow (width {width} < {MIN_WIDTH}) gains nothing from \
                 reduced precision and quantisation costs it accuracy"
            ),
            measured: Vec::new(),
            cache: String::new(),
            from_cache: false,
        };
    }
    let isa = Isa::from_env();
    let key = key(params, cfg, &[vision, text], isa);
    let path = cache_path();
    if let Some(p) = &path {
        let mut all = read_cache(p);
        if let Some(c) = all.remove(&key) {
            return AutoChoice { from_cache: true, cache: p.display().to_string(), ..c };
        }
        let bare = without_threads(&key);
        if let Some((k, c)) = all.into_iter().find(|(k, _)| without_threads(k) == bare) {
            let threads = k.split(" | ").find(|s| s.ends_with(" threads")).unwrap_or("another thread count");
            let reason = format!("{} (measured at {threads})", c.reason);
            return AutoChoice { from_cache: true, cache: p.display().to_string(), reason, ..c };
        }
    }
    let mut choice = measure(params, cfg, vision, text, isa);
    if let Some(p) = &path {
        let mut all = read_cache(p);
        all.insert(key, choice.clone());
        let written = p.parent().map(std::fs::create_dir_all).transpose().is_ok()
            && serde_json::to_vec_pretty(&all).ok().is_some_and(|b| {
                // atomic: a temporary file in the same directory, then a rename
                let dir = p.parent().unwrap_or(std::path::Path::new("."));
                tempfile::NamedTempFile::new_in(dir)
                    .and_then(|mut f| std::io::Write::write_all(&mut f, &b).map(|_| f))
                    .is_ok_and(|f| f.persist(p).is_ok())
            });
        if written {
            choice.cache = p.display().to_string();
        }
    }
    choice
}

/// Deterministic inputs: images of smooth patterns plus noise, in the normalised range, and
/// texts of 5 to 40 tokens.
fn inputs(cfg: &ClipConfig, images: usize, texts: usize) -> (Vec<f32>, Vec<Vec<u32>>) {
    let s = cfg.vision.image_size;
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut rnd = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32
    };
    let mut px = vec![0f32; images * 3 * s * s];
    for (i, v) in px.iter_mut().enumerate() {
        let (x, y, c, n) = (i % s, (i / s) % s, (i / (s * s)) % 3, i / (3 * s * s));
        let t = ((x as f32 * (0.02 + 0.01 * n as f32)).sin() + (y as f32 * 0.03 + c as f32).cos()) * 0.8;
        *v = t + (rnd() - 0.5) * 0.6;
    }
    let vocab = cfg.text.vocab_size as u32;
    let (sot, eot) = (vocab.saturating_sub(2), vocab.saturating_sub(1));
    let ids = (0..texts)
        .map(|t| {
            let len = (5 + 7 * t % 36).min(cfg.text.context_length.saturating_sub(2));
            let mut v = vec![sot];
            v.extend((0..len).map(|_| 256 + (rnd() * (vocab.saturating_sub(512)) as f32) as u32));
            v.push(eot);
            v
        })
        .collect();
    (px, ids)
}

fn min_cosine(a: &[f32], b: &[f32], e: usize) -> f64 {
    a.chunks(e)
        .zip(b.chunks(e))
        .map(|(x, y)| {
            let d: f64 = x.iter().zip(y).map(|(p, q)| *p as f64 * *q as f64).sum();
            let nx: f64 = x.iter().map(|p| (*p as f64).powi(2)).sum::<f64>().sqrt();
            let ny: f64 = y.iter().map(|q| (*q as f64).powi(2)).sum::<f64>().sqrt();
            if nx > 0.0 && ny > 0.0 {
                d / (nx * ny)
            } else {
                0.0
            }
        })
        .fold(1.0, f64::min)
}

/// Measures every supported precision at `isa` (see [`choose`]).
pub fn measure(params: &Params, cfg: &ClipConfig, vision: &Program, text: &Program, isa: Isa) -> AutoChoice {
    let (n_img, n_txt) = (16, 16);
    let (px, ids) = inputs(cfg, n_img, n_txt);
    let e = cfg.embed_dim;
    let mut measured: Vec<Measured> = Vec::new();
    let mut reference: Option<(Vec<f32>, Vec<f32>)> = None;
    for p in CpuPrecision::ALL.into_iter().filter(|p| p.supported()) {
        let prep = Prepared::with_isa(params, &[vision, text], p, isa);
        let img_in = Input::Pixels { data: &px, n: n_img };
        let txt_in = Input::Tokens(&ids);
        let mut best = (f64::INFINITY, f64::INFINITY);
        let mut out = (Vec::new(), Vec::new());
        // one warm-up, two timed runs
        for i in 0..3 {
            let t = Instant::now();
            let img = run_prepared(vision, cfg, params, &prep, &img_in);
            let ti = t.elapsed().as_secs_f64();
            let t = Instant::now();
            let txt = run_prepared(text, cfg, params, &prep, &txt_in);
            let tt = t.elapsed().as_secs_f64();
            if i > 0 {
                best = (best.0.min(ti), best.1.min(tt));
            }
            out = (img, txt);
        }
        let cos = match &reference {
            None => 1.0,
            Some((i0, t0)) => min_cosine(&out.0, i0, e).min(min_cosine(&out.1, t0, e)),
        };
        if reference.is_none() {
            reference = Some(out);
        }
        measured.push(Measured {
            precision: p.name().into(),
            kernels: prep.kernels().into(),
            image_s: best.0,
            text_s: best.1,
            min_cosine: cos,
        });
    }
    let f32_s = measured[0].image_s + measured[0].text_s;
    let best = measured
        .iter()
        .filter(|m| m.min_cosine >= MIN_COSINE)
        .min_by(|a, b| (a.image_s + a.text_s).total_cmp(&(b.image_s + b.text_s)))
        .unwrap_or(&measured[0]);
    let others: Vec<String> = measured
        .iter()
        .filter(|m| m.precision != best.precision)
        .map(|m| {
            format!(
                "{} {:.2}× f32{}",
                m.precision,
                f32_s / (m.image_s + m.text_s),
                if m.min_cosine >= MIN_COSINE {
                    format!(" (min cosine {:.5})", m.min_cosine)
                } else {
                    format!(" but min cosine {:.5} < {MIN_COSINE}", m.min_cosine)
                }
            )
        })
        .collect();
    let reason = format!(
        "fastest precision with min cosine ≥ {MIN_COSINE} to f32 on this CPU ({} images + {} texts of this \
         checkpoint): {} on {} at {:.2}× f32{}; {}",
        n_img,
        n_txt,
        best.precision,
        best.kernels,
        f32_s / (best.image_s + best.text_s),
        if best.precision == "f32" { String::new() } else { format!(", min cosine {:.5}", best.min_cosine) },
        others.join(", ")
    );
    AutoChoice { precision: best.precision.clone(), reason, measured, cache: String::new(), from_cache: false }
}
