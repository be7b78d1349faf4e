//! `clip_wgpu` for Python: the Rust engine ([`clip_wgpu::Clip`]) behind a small class.
//!
//! Inputs are turned into owned Rust values while the GIL is held (paths, bytes, decoded
//! RGB(A) pixels); decoding, preprocessing and both encoders run with the GIL released, so
//! Python threads sharing one `Clip` run concurrently (`Clip` is `Send + Sync`).

use std::path::PathBuf;

use numpy::ndarray::Array2;
use numpy::{IntoPyArray, PyArray2, PyReadonlyArrayDyn, PyUntypedArrayMethods};
use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyList, PyString, PyTuple};
use rayon::prelude::*;

use clip_wgpu::preprocess::{self, Limits, Variant};
use clip_wgpu::{Clip, ClipOptions, Device, PrecisionChoice, PreparedImage};

create_exception!(
    clip_wgpu,
    ClipError,
    PyException,
    "An error of the engine: a model that cannot be found or loaded, a GPU that fails, bad options."
);

fn engine_err(e: clip_wgpu::Error) -> PyErr {
    ClipError::new_err(e.to_string())
}

/// One image input, owned (no Python object is touched once the GIL is released).
enum Item {
    Path(PathBuf),
    Bytes(Vec<u8>),
    Pixels(image::DynamicImage),
}

/// How bad items are handled.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Errors {
    Raise,
    Skip,
}

fn parse_errors(s: &str) -> PyResult<Errors> {
    match s {
        "raise" => Ok(Errors::Raise),
        "skip" => Ok(Errors::Skip),
        _ => Err(PyValueError::new_err(format!("errors={s:?}: expected \"raise\" or \"skip\""))),
    }
}

/// A short description of a Python object for messages: `str` and paths as themselves, other
/// objects by type.
fn describe(obj: &Bound<'_, PyAny>) -> String {
    if let Ok(s) = obj.cast::<PyString>() {
        return format!("{:?}", s.to_string_lossy());
    }
    let ty = obj.get_type().name().map(|n| n.to_string()).unwrap_or_else(|_| "object".into());
    match obj.cast::<PyBytes>() {
        Ok(b) => format!("bytes of length {}", b.as_bytes().len()),
        Err(_) => format!("a {ty}"),
    }
}

/// Turns one Python object into an [`Item`]: `str`/`os.PathLike` → a path, `bytes`/`bytearray`
/// → encoded image bytes, a numpy `uint8` array `(H, W)`, `(H, W, 1|3|4)` → pixels, a
/// `PIL.Image.Image` → its pixels (RGB, or RGBA when it has transparency: the preprocessing
/// variant then treats the alpha exactly as it does for an image file).
fn item_from(obj: &Bound<'_, PyAny>) -> Result<Item, String> {
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(Item::Path(PathBuf::from(s.to_cow().map_err(|e| e.to_string())?.as_ref())));
    }
    if let Ok(b) = obj.cast::<PyBytes>() {
        return Ok(Item::Bytes(b.as_bytes().to_vec()));
    }
    if let Ok(b) = obj.cast::<PyByteArray>() {
        return Ok(Item::Bytes(b.to_vec()));
    }
    if let Ok(a) = obj.extract::<PyReadonlyArrayDyn<'_, u8>>() {
        return pixels_from_array(&a);
    }
    if obj.hasattr("__array_interface__").unwrap_or(false) && !obj.hasattr("convert").unwrap_or(false) {
        // an array of another dtype
        let dtype = obj.getattr("dtype").map(|d| d.to_string()).unwrap_or_else(|_| "?".into());
        return Err(format!("numpy arrays must be uint8 (H, W, 3) RGB pixels, this one is {dtype}"));
    }
    if obj.hasattr("__fspath__").unwrap_or(false) {
        let p: PathBuf = obj.extract().map_err(|e: PyErr| e.to_string())?;
        return Ok(Item::Path(p));
    }
    if obj.hasattr("convert").unwrap_or(false) && obj.hasattr("mode").unwrap_or(false) {
        return pixels_from_pil(obj).map_err(|e| format!("reading the PIL image: {e}"));
    }
    Err(format!(
        "unsupported image item type {}: give a path (str or os.PathLike), bytes, a PIL.Image or a uint8 numpy array",
        obj.get_type().name().map(|n| n.to_string()).unwrap_or_default()
    ))
}

fn pixels_from_array(a: &PyReadonlyArrayDyn<'_, u8>) -> Result<Item, String> {
    let shape = a.shape().to_vec();
    let (h, w, c) = match shape[..] {
        [h, w] => (h, w, 1),
        [h, w, c] if matches!(c, 1 | 3 | 4) => (h, w, c),
        _ => return Err(format!("numpy image arrays are (H, W) or (H, W, 1|3|4) uint8, got shape {shape:?}")),
    };
    if h == 0 || w == 0 {
        return Err(format!("empty image array of shape {shape:?}"));
    }
    let (wu, hu) = (u32::try_from(w).map_err(|e| e.to_string())?, u32::try_from(h).map_err(|e| e.to_string())?);
    // C order whatever the strides of the array (a view, a transposed array)
    let data: Vec<u8> = a.as_array().iter().copied().collect();
    let im = match c {
        1 => image::GrayImage::from_raw(wu, hu, data).map(image::DynamicImage::ImageLuma8),
        3 => image::RgbImage::from_raw(wu, hu, data).map(image::DynamicImage::ImageRgb8),
        _ => image::RgbaImage::from_raw(wu, hu, data).map(image::DynamicImage::ImageRgba8),
    };
    im.map(Item::Pixels).ok_or_else(|| format!("array of shape {shape:?} does not hold its pixels"))
}

fn pixels_from_pil(obj: &Bound<'_, PyAny>) -> PyResult<Item> {
    let mode: String = obj.getattr("mode")?.extract()?;
    let has_alpha = mode.ends_with('A')
        || mode == "PA"
        || obj.getattr("info").and_then(|i| i.contains("transparency")).unwrap_or(false);
    let target = if has_alpha { "RGBA" } else { "RGB" };
    let img = if mode == target { obj.clone() } else { obj.call_method1("convert", (target,))? };
    let (w, h): (u32, u32) = img.getattr("size")?.extract()?;
    let data: Vec<u8> = img.call_method0("tobytes")?.cast::<PyBytes>()?.as_bytes().to_vec();
    let n = data.len();
    let im = if has_alpha {
        image::RgbaImage::from_raw(w, h, data).map(image::DynamicImage::ImageRgba8)
    } else {
        image::RgbImage::from_raw(w, h, data).map(image::DynamicImage::ImageRgb8)
    };
    im.map(Item::Pixels).ok_or_else(|| PyValueError::new_err(format!("a {w}x{h} {target} image with {n} bytes")))
}

/// The items of a Python iterable, each an [`Item`] or the message saying why it is not one.
fn collect_items(items: &Bound<'_, PyAny>) -> PyResult<Items> {
    if items.cast::<PyString>().is_ok() || items.cast::<PyBytes>().is_ok() {
        return Err(PyTypeError::new_err(
            "embed_images takes a list of images (paths, bytes, PIL images, arrays); wrap a single one in a list",
        ));
    }
    let mut out = Vec::new();
    for obj in items.try_iter()? {
        let obj = obj?;
        out.push((describe(&obj), item_from(&obj)));
    }
    Ok(out)
}

/// The model path the command line would use: `model` if given (a path, or a model name looked
/// up in the Hugging Face cache), else `$CLIP_WGPU_MODEL`, else the default checkpoint in the
/// Hugging Face cache. Nothing is downloaded.
fn resolve_model(model: Option<PathBuf>) -> Result<PathBuf, String> {
    use clip_wgpu::model::hub::{self, Named};
    let arg = model.or_else(|| std::env::var_os("CLIP_WGPU_MODEL").filter(|v| !v.is_empty()).map(PathBuf::from));
    let repo = match hub::named(arg.as_deref()) {
        Named::Path(p) => return Ok(p),
        Named::Missing(p) => return Err(format!("model {:?}: no such file or directory", p.display().to_string())),
        Named::Repo(repo) => repo,
    };
    let cache = hub::cache_dir();
    if let Some(p) = cache.as_deref().and_then(|h| hub::cached_snapshot(h, &repo)) {
        return Ok(p);
    }
    Err(format!(
        "no model weights found for {repo}: looked at model=... ({}), $CLIP_WGPU_MODEL ({}) and the Hugging Face \
         cache ({}). Get them with `huggingface-cli download {repo} model.safetensors config.json` (or one run of \
         the clip-wgpu command line, which downloads them), or pass a checkpoint directory as Clip(model=PATH).",
        if arg.is_some() { "given" } else { "not given" },
        if std::env::var_os("CLIP_WGPU_MODEL").is_some() { "set" } else { "not set" },
        cache
            .map(|h| hub::repo_dir(&h, &repo).join("snapshots").display().to_string())
            .unwrap_or_else(|| "HOME is not set".into()),
    ))
}

/// A CLIP model loaded by the Rust engine, on a GPU (Vulkan, Metal, DX12 through wgpu) or the
/// CPU. Thread-safe: one instance may be shared by any number of Python threads; encoding runs
/// without the GIL.
#[pyclass(frozen, module = "clip_wgpu", name = "Clip")]
struct PyClip {
    clip: Clip,
    model: PathBuf,
    variant: Variant,
}

type Embedded = Vec<Result<Vec<f32>, String>>;
/// `(index, message)` of each bad item.
type Failures = Vec<(usize, String)>;
/// Python items, each turned into an [`Item`] or the reason it is not one.
type Items = Vec<(String, Result<Item, String>)>;

impl PyClip {
    /// Embeds image items (GIL released): one result per item, errors as messages naming the
    /// item. Worked through in slices so the pixels held at once stay bounded.
    fn embed_items(&self, py: Python<'_>, items: Items) -> Embedded {
        py.detach(|| {
            let clip = &self.clip;
            let (size, variant) = (clip.image_size(), self.variant);
            let mut out = Vec::with_capacity(items.len());
            let chunk = clip.batch_size().max(1) * 4;
            for (c, slice) in items.chunks(chunk).enumerate() {
                let prepared: Vec<clip_wgpu::Result<PreparedImage>> = slice
                    .par_iter()
                    .enumerate()
                    .map(|(j, (name, it))| {
                        let i = c * chunk + j;
                        match it {
                            Err(msg) => Err(clip_wgpu::Error::Invalid(format!("item {i} ({name}): {msg}"))),
                            Ok(Item::Path(p)) => clip.prepare_file(p),
                            Ok(Item::Bytes(b)) => clip.prepare_bytes(&format!("item {i} ({name})"), b),
                            Ok(Item::Pixels(im)) => Ok(PreparedImage::Pixels {
                                pixels: preprocess::preprocess_image_sized(im, size, variant),
                                key: None,
                            }),
                        }
                    })
                    .collect();
                out.extend(clip.encode_prepared(prepared).into_iter().map(|r| r.map_err(|e| e.to_string())));
            }
            out
        })
    }

    /// The good rows as an `(N, D)` array and the failures as `(index, message)`; with
    /// `errors="raise"` the first failure raises `ValueError`.
    fn split<'py>(
        &self,
        py: Python<'py>,
        results: Embedded,
        errors: Errors,
    ) -> PyResult<(Bound<'py, PyArray2<f32>>, Failures)> {
        let d = self.clip.embed_dim();
        let mut flat = Vec::with_capacity(results.len() * d);
        let mut failed = Vec::new();
        for (i, r) in results.into_iter().enumerate() {
            match r {
                Ok(e) => flat.extend(e),
                Err(msg) if errors == Errors::Raise => return Err(PyValueError::new_err(msg)),
                Err(msg) => failed.push((i, msg)),
            }
        }
        let n = flat.len() / d;
        let arr = Array2::from_shape_vec((n, d), flat).expect("n rows of d values");
        Ok((arr.into_pyarray(py), failed))
    }

    fn texts_from(texts: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<String>> {
        if texts.cast::<PyString>().is_ok() {
            return Err(PyTypeError::new_err(format!("{what} takes a list of str; wrap a single one in a list")));
        }
        let mut v = Vec::new();
        for (i, t) in texts.try_iter()?.enumerate() {
            let t = t?;
            match t.cast::<PyString>() {
                Ok(s) => v.push(s.to_cow()?.into_owned()),
                Err(_) => {
                    return Err(PyTypeError::new_err(format!(
                        "{what}: item {i} is {}, not a str",
                        t.get_type().name().map(|n| n.to_string()).unwrap_or_default()
                    )))
                }
            }
        }
        Ok(v)
    }

    fn encode_texts(&self, py: Python<'_>, texts: Vec<String>) -> PyResult<Vec<f32>> {
        py.detach(|| self.clip.encode_texts(&texts)).map_err(engine_err)
    }

    /// Images embedded (errors per `errors`), as rows, and the failures.
    fn image_rows(
        &self,
        py: Python<'_>,
        images: &Bound<'_, PyAny>,
        errors: Errors,
    ) -> PyResult<(Vec<Vec<f32>>, Failures)> {
        let items = collect_items(images)?;
        let results = self.embed_items(py, items);
        let (mut rows, mut failed) = (Vec::new(), Vec::new());
        for (i, r) in results.into_iter().enumerate() {
            match r {
                Ok(e) => rows.push(e),
                Err(m) if errors == Errors::Raise => return Err(PyValueError::new_err(m)),
                Err(m) => failed.push((i, m)),
            }
        }
        Ok((rows, failed))
    }
}

fn with_failures<'py>(
    py: Python<'py>,
    value: Bound<'py, PyAny>,
    failed: Failures,
    errors: Errors,
) -> PyResult<Bound<'py, PyAny>> {
    match errors {
        Errors::Raise => Ok(value),
        Errors::Skip => Ok(PyTuple::new(py, [value, failed.into_pyobject(py)?.into_any()])?.into_any()),
    }
}

#[pymethods]
impl PyClip {
    /// Loads a CLIP checkpoint.
    ///
    /// model: an HF checkpoint directory (config.json + model.safetensors), an OpenAI/open_clip
    ///     .safetensors file, or a model name (ViT-B-32, openai/clip-vit-large-patch14, ...) found in
    ///     the Hugging Face cache; default: $CLIP_WGPU_MODEL, else openai/clip-vit-base-patch32 from
    ///     the cache (as the command line does; nothing is downloaded here).
    /// device: "auto" (a GPU if one works, else the CPU), "cpu" or "gpu".
    /// precision: "auto", "f32", "f16" (GPU), "bf16" or "int8" (CPU).
    /// batch_size: images per encoder batch, or "auto".
    /// preprocess: "hf" (transformers' CLIPImageProcessor) or "openai" (clip.load's).
    /// notices: print one-line notices (fallbacks) on stderr.
    #[new]
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (model=None, device="auto", precision="auto", batch_size=None, preprocess="hf", *, notices=false, cache_entries=16384))]
    fn new(
        py: Python<'_>,
        model: Option<PathBuf>,
        device: &str,
        precision: &str,
        batch_size: Option<&Bound<'_, PyAny>>,
        preprocess: &str,
        notices: bool,
        cache_entries: usize,
    ) -> PyResult<Self> {
        let device: Device = device.parse().map_err(|e: clip_wgpu::Error| PyValueError::new_err(e.to_string()))?;
        let precision: PrecisionChoice =
            precision.parse().map_err(|e: clip_wgpu::Error| PyValueError::new_err(e.to_string()))?;
        let variant: Variant = preprocess.parse().map_err(PyValueError::new_err)?;
        let batch_size = match batch_size {
            None => 0,
            Some(b) if b.cast::<PyString>().is_ok_and(|s| s.to_string_lossy().eq_ignore_ascii_case("auto")) => 0,
            Some(b) => match b.extract::<usize>() {
                Ok(n) if n > 0 => n,
                _ => {
                    return Err(PyValueError::new_err(format!(
                        "batch_size={}: give a positive int or \"auto\"",
                        b.repr().map(|r| r.to_string()).unwrap_or_default()
                    )))
                }
            },
        };
        let path = resolve_model(model).map_err(ClipError::new_err)?;
        let opts = ClipOptions {
            device,
            precision,
            variant,
            batch_size,
            notices,
            cache_entries,
            limits: Limits::default(),
            ..ClipOptions::default()
        };
        let clip = py.detach(|| Clip::load(&path, &opts)).map_err(engine_err)?;
        Ok(PyClip { clip, model: path, variant })
    }

    /// Embeds images: a list of paths (str or os.PathLike), bytes (an encoded JPEG, PNG, WebP,
    /// GIF, BMP or TIFF), PIL images or uint8 numpy arrays (H, W, 3).
    ///
    /// Returns a float32 numpy array (N, D), L2-normalised rows in input order. errors="raise"
    /// (the default) raises ValueError naming the first bad item; errors="skip" returns
    /// (embeddings of the good items, [(index, message), ...]).
    #[pyo3(signature = (items, *, errors="raise"))]
    fn embed_images<'py>(
        &self,
        py: Python<'py>,
        items: &Bound<'py, PyAny>,
        errors: &str,
    ) -> PyResult<Bound<'py, PyAny>> {
        let errors = parse_errors(errors)?;
        let items = collect_items(items)?;
        let results = self.embed_items(py, items);
        let (arr, failed) = self.split(py, results, errors)?;
        with_failures(py, arr.into_any(), failed, errors)
    }

    /// Embeds texts (a list of str; longer ones are truncated to the context length, as
    /// transformers does with truncation=True). Returns a float32 numpy array (N, D), L2-normalised.
    fn embed_texts<'py>(&self, py: Python<'py>, texts: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let texts = Self::texts_from(texts, "embed_texts")?;
        let d = self.clip.embed_dim();
        let flat = self.encode_texts(py, texts)?;
        let n = flat.len() / d;
        Ok(Array2::from_shape_vec((n, d), flat).expect("n rows of d values").into_pyarray(py))
    }

    /// CLIP scores, 100·max(cos, 0): every image × every text as a float32 array (N, M), or with
    /// pairs=True image i with text i, an array (N,). Images as in embed_images; errors likewise
    /// ("skip" returns (scores of the good images, [(index, message), ...])).
    #[pyo3(signature = (images, texts, *, pairs=false, errors="raise"))]
    fn score<'py>(
        &self,
        py: Python<'py>,
        images: &Bound<'py, PyAny>,
        texts: &Bound<'py, PyAny>,
        pairs: bool,
        errors: &str,
    ) -> PyResult<Bound<'py, PyAny>> {
        let errors = parse_errors(errors)?;
        let texts = Self::texts_from(texts, "score")?;
        let items = collect_items(images)?;
        if pairs && items.len() != texts.len() {
            return Err(PyValueError::new_err(format!(
                "score(pairs=True): {} images and {} texts; pairs need as many of each",
                items.len(),
                texts.len()
            )));
        }
        let d = self.clip.embed_dim();
        let txt = self.encode_texts(py, texts)?;
        let results = self.embed_items(py, items);
        let mut failed = Vec::new();
        let mut rows: Vec<Vec<f32>> = Vec::new();
        for (i, r) in results.into_iter().enumerate() {
            let e = match r {
                Ok(e) => e,
                Err(m) if errors == Errors::Raise => return Err(PyValueError::new_err(m)),
                Err(m) => {
                    failed.push((i, m));
                    continue;
                }
            };
            if pairs {
                rows.push(vec![clip_wgpu::clip_score(clip_wgpu::cosine(&e, &txt[i * d..][..d]))]);
            } else {
                rows.push(txt.chunks(d).map(|t| clip_wgpu::clip_score(clip_wgpu::cosine(&e, t))).collect());
            }
        }
        let value = if pairs {
            numpy::PyArray1::from_vec(py, rows.into_iter().map(|r| r[0]).collect()).into_any()
        } else {
            let m = txt.len() / d;
            let n = rows.len();
            Array2::from_shape_vec((n, m), rows.concat()).expect("n×m scores").into_pyarray(py).into_any()
        };
        with_failures(py, value, failed, errors)
    }

    /// Zero-shot classification: each label goes through `template` ("{}" is replaced by the
    /// label), and each image gets the softmax over the labels of exp(logit_scale)·cos. Returns
    /// one list per image of its top_k (label, probability) pairs, most probable first. Images
    /// and errors as in embed_images.
    #[pyo3(signature = (images, labels, *, template="a photo of a {}.", top_k=5, errors="raise"))]
    fn classify<'py>(
        &self,
        py: Python<'py>,
        images: &Bound<'py, PyAny>,
        labels: &Bound<'py, PyAny>,
        template: &str,
        top_k: usize,
        errors: &str,
    ) -> PyResult<Bound<'py, PyAny>> {
        let errors = parse_errors(errors)?;
        let labels = Self::texts_from(labels, "classify")?;
        if labels.is_empty() {
            return Err(PyValueError::new_err("classify needs at least one label"));
        }
        if !template.contains("{}") {
            return Err(PyValueError::new_err(format!("template {template:?} has no {{}} for the label")));
        }
        let prompts: Vec<String> = labels.iter().map(|l| template.replace("{}", l)).collect();
        let d = self.clip.embed_dim();
        let txt = self.encode_texts(py, prompts)?;
        let scale = self.clip.logit_scale();
        let (rows, failed) = self.image_rows(py, images, errors)?;
        let out = PyList::empty(py);
        for e in rows {
            let logits: Vec<f32> = txt.chunks(d).map(|t| scale * clip_wgpu::cosine(&e, t)).collect();
            let probs = clip_wgpu::softmax(&logits);
            let mut order: Vec<usize> = (0..labels.len()).collect();
            order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
            let top: Vec<(String, f32)> =
                order.into_iter().take(top_k.max(1)).map(|j| (labels[j].clone(), probs[j])).collect();
            out.append(top)?;
        }
        with_failures(py, out.into_any(), failed, errors)
    }

    /// The model and the engine: model path, engine ("cpu (f32, 2 threads)" or
    /// "gpu NAME (backend, precision)"), device, precision, embed_dim, image_size,
    /// context_length, batch_size, preprocess, logit_scale, version, build ("release", or
    /// "debug" for a package built unoptimised, as a test build is: several times slower).
    fn info<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let c = &self.clip;
        let d = PyDict::new(py);
        d.set_item("model", self.model.display().to_string())?;
        d.set_item("engine", c.engine_description())?;
        d.set_item("device", c.device().name())?;
        d.set_item("precision", c.engine_kind().precision_name())?;
        d.set_item("embed_dim", c.embed_dim())?;
        d.set_item("image_size", c.image_size())?;
        d.set_item("context_length", c.config().text.context_length)?;
        d.set_item("batch_size", c.batch_size())?;
        d.set_item("preprocess", if self.variant == Variant::Hf { "hf" } else { "openai" })?;
        d.set_item("logit_scale", c.logit_scale())?;
        d.set_item("version", env!("CARGO_PKG_VERSION"))?;
        d.set_item("build", if cfg!(debug_assertions) { "debug" } else { "release" })?;
        Ok(d)
    }

    /// Length of an embedding.
    #[getter]
    fn embed_dim(&self) -> usize {
        self.clip.embed_dim()
    }

    fn __repr__(&self) -> String {
        format!(
            "clip_wgpu.Clip(model={:?}, engine={:?})",
            self.model.display().to_string(),
            self.clip.engine_description()
        )
    }
}

/// The samples of a WebDataset shard (a path, or the shard's bytes; `name` labels errors):
/// `(key, image bytes or None, caption or None)` each, the caption being the `.txt` member,
/// else the `.json` member's "caption" or "text". Members are grouped by key as the
/// `webdataset` package groups them.
#[pyfunction]
#[pyo3(signature = (shard, name=None))]
fn read_webdataset<'py>(
    py: Python<'py>,
    shard: &Bound<'py, PyAny>,
    name: Option<String>,
) -> PyResult<Bound<'py, PyList>> {
    let limit = Limits::default().max_file_bytes;
    let samples: Result<Vec<clip_wgpu::shards::Sample>, String> = if let Ok(b) = shard.cast::<PyBytes>() {
        let bytes = b.as_bytes().to_vec();
        let name = PathBuf::from(name.unwrap_or_else(|| "<bytes>".into()));
        py.detach(|| {
            let mut v = Vec::new();
            clip_wgpu::shards::read_shard(&name, &bytes[..], limit, &mut |s| {
                v.push(s);
                true
            })
            .map(|_| v)
            .map_err(|e| e.to_string())
        })
    } else {
        let path: PathBuf = shard.extract()?;
        py.detach(|| {
            clip_wgpu::shards::Shard::open_with(&path, limit)
                .and_then(|s| s.collect::<clip_wgpu::Result<Vec<_>>>())
                .map_err(|e| e.to_string())
        })
    };
    let out = PyList::empty(py);
    for s in samples.map_err(ClipError::new_err)? {
        let image = match (&s.error, s.image) {
            (None, Some((_, b))) => Some(PyBytes::new(py, &b)),
            _ => None,
        };
        out.append((s.key, image, s.caption))?;
    }
    Ok(out)
}

/// CLIP embeddings, scores and zero-shot labels from the clip-wgpu Rust engine.
#[pymodule(name = "clip_wgpu")]
fn clip_wgpu_module(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyClip>()?;
    m.add("ClipError", m.py().get_type::<ClipError>())?;
    m.add_function(wrap_pyfunction!(read_webdataset, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
