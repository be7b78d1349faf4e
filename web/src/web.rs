//! The JS face: `Clip.load`, `Clip.fromBytes`, `dim`, `embedImages`, `embedTexts`, `score`,
//! `classify`. Every failure rejects (or throws) an `Error` carrying the engine's message.

use std::rc::Rc;

use js_sys::{Array, Float32Array, Function, Reflect, Uint8Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::{future_to_promise, JsFuture};

use crate::engine::{cosines, load_checkpoint, DeviceChoice, Engine};
use clip_wgpu::gpu::Precision;

/// A panic's message on the console (wasm aborts on a panic: without this it says only
/// "unreachable").
#[wasm_bindgen(start)]
pub fn start() {
    std::panic::set_hook(Box::new(|info| {
        web_sys::console::error_1(&JsValue::from_str(&format!("clip-wgpu panicked: {info}")))
    }));
}

/// The name of the Cache API store the weights are kept in (a reload reads them from there).
const CACHE_NAME: &str = "clip-wgpu-weights-v1";

fn err(msg: impl std::fmt::Display) -> JsError {
    JsError::new(&msg.to_string())
}

fn js_msg(v: JsValue) -> String {
    if let Some(e) = v.dyn_ref::<js_sys::Error>() {
        return String::from(e.message());
    }
    v.as_string().unwrap_or_else(|| format!("{v:?}"))
}

/// Options of `Clip.load` / `Clip.fromBytes`, read from a plain JS object.
struct Options {
    device: DeviceChoice,
    precision: Option<Precision>,
    /// `progress(file, loadedBytes, totalBytes)` while the files download.
    progress: Option<Function>,
    /// Keep the downloaded files in the Cache API (default true).
    cache: bool,
    /// The weights' file name under the base URL (default `model.safetensors`).
    model: String,
}

impl Options {
    fn read(v: &JsValue) -> Result<Options, JsError> {
        let get = |k: &str| -> JsValue {
            if v.is_object() {
                Reflect::get(v, &JsValue::from_str(k)).unwrap_or(JsValue::UNDEFINED)
            } else {
                JsValue::UNDEFINED
            }
        };
        let device = match get("device").as_string() {
            Some(d) => DeviceChoice::parse(&d).map_err(err)?,
            None => DeviceChoice::Auto,
        };
        let precision = match get("precision").as_string().as_deref() {
            None | Some("auto") => None,
            Some(p) => Some(
                Precision::parse(p)
                    .ok_or_else(|| err(format!("unknown precision {p:?}: expected \"f32\" or \"f16\"")))?,
            ),
        };
        Ok(Options {
            device,
            precision,
            progress: get("progress").dyn_into::<Function>().ok(),
            cache: get("cache").as_bool().unwrap_or(true),
            model: get("model").as_string().unwrap_or_else(|| "model.safetensors".into()),
        })
    }
}

/// A CLIP model in the page.
#[wasm_bindgen]
pub struct Clip {
    engine: Rc<Engine>,
}

#[wasm_bindgen]
impl Clip {
    /// Fetches `config.json`, the weights (`model.safetensors`, or `options.model`) and
    /// `tokenizer.json` (optional: the bundled CLIP tokenizer where it is absent) under
    /// `baseUrl`, keeping them in the Cache API, and opens the engine: `options.device` is
    /// `"webgpu"`, `"cpu"` or `"auto"` (the default); `options.precision` `"f32"`, `"f16"`
    /// or `"auto"`; `options.progress(file, loaded, total)` is called as bytes arrive;
    /// `options.cache: false` bypasses the Cache API.
    pub async fn load(
        #[wasm_bindgen(js_name = baseUrl)] base_url: String,
        #[wasm_bindgen(
            unchecked_param_type = "{device?: \"webgpu\" | \"cpu\" | \"auto\", precision?: \"f32\" | \"f16\" | \"auto\", progress?: (file: string, loaded: number, total: number) => void, cache?: boolean, model?: string}"
        )]
        options: JsValue,
    ) -> Result<Clip, JsError> {
        let opts = Options::read(&options)?;
        let base = if base_url.is_empty() || base_url.ends_with('/') { base_url } else { format!("{base_url}/") };
        let cache = if opts.cache { open_cache().await } else { None };
        let config = fetch_bytes(&format!("{base}config.json"), cache.as_ref(), &opts.progress, true).await?;
        let config = match config {
            Some(c) => Some(c),
            // OpenAI/open_clip naming: its config, if any
            None => fetch_bytes(&format!("{base}open_clip_config.json"), cache.as_ref(), &opts.progress, true).await?,
        };
        let tokenizer = fetch_bytes(&format!("{base}tokenizer.json"), cache.as_ref(), &opts.progress, true).await?;
        let url = format!("{base}{}", opts.model);
        let model = fetch_bytes(&url, cache.as_ref(), &opts.progress, false).await?.unwrap_or_default();
        let (ck, tokenizer) = load_checkpoint(&url, config.as_deref(), &model, tokenizer.as_deref()).map_err(err)?;
        drop(model); // the f32 weights are in `ck`: the file's bytes go before the engine is built
        let engine = Engine::from_checkpoint(ck, tokenizer, opts.device, opts.precision).await.map_err(err)?;
        Ok(Clip { engine: Rc::new(engine) })
    }

    /// Opens the engine on files already in hand: `config` the `config.json` (or `null`),
    /// `model` the `.safetensors` bytes, `tokenizer` a `tokenizer.json` (or `null`: the
    /// bundled CLIP tokenizer). Options as in `load`.
    #[wasm_bindgen(js_name = fromBytes)]
    pub async fn from_bytes(
        config: Option<Uint8Array>,
        model: Uint8Array,
        tokenizer: Option<Uint8Array>,
        #[wasm_bindgen(
            unchecked_param_type = "{device?: \"webgpu\" | \"cpu\" | \"auto\", precision?: \"f32\" | \"f16\" | \"auto\"}"
        )]
        options: JsValue,
    ) -> Result<Clip, JsError> {
        let opts = Options::read(&options)?;
        let (config, tokenizer) = (config.map(|c| c.to_vec()), tokenizer.map(|t| t.to_vec()));
        let model = model.to_vec();
        let (ck, tokenizer) =
            load_checkpoint("model.safetensors", config.as_deref(), &model, tokenizer.as_deref()).map_err(err)?;
        drop(model);
        let engine = Engine::from_checkpoint(ck, tokenizer, opts.device, opts.precision).await.map_err(err)?;
        Ok(Clip { engine: Rc::new(engine) })
    }

    /// Length of an embedding.
    #[wasm_bindgen(getter)]
    pub fn dim(&self) -> usize {
        self.engine.dim()
    }

    /// What runs the encoders: `webgpu ADAPTER (f32)` or `cpu (wasm, f32, 1 thread)`.
    #[wasm_bindgen(getter)]
    pub fn path(&self) -> String {
        self.engine.path().to_string()
    }

    /// The WebGPU adapter's name (empty on the CPU path).
    #[wasm_bindgen(getter)]
    pub fn adapter(&self) -> String {
        self.engine.adapter().to_string()
    }

    /// `exp(logit_scale)`: the zero-shot logits are this times the cosines.
    #[wasm_bindgen(getter, js_name = logitScale)]
    pub fn logit_scale(&self) -> f32 {
        self.engine.logit_scale()
    }

    /// Images (`Uint8Array`/`ArrayBuffer` of an encoded file, `Blob`/`File`, `ImageData`,
    /// `ImageBitmap`) → one `Float32Array` of N×dim, row-major, L2-normalised. A bad item
    /// rejects with `image #I: why`.
    #[wasm_bindgen(
        js_name = embedImages,
        unchecked_return_type = "Promise<Float32Array>"
    )]
    pub fn embed_images(
        &self,
        #[wasm_bindgen(unchecked_param_type = "Array<Uint8Array | ArrayBuffer | Blob | ImageData | ImageBitmap>")]
        items: Array,
    ) -> js_sys::Promise {
        let engine = self.engine.clone();
        future_to_promise(async move {
            let n = items.length() as usize;
            let mut px = Vec::new();
            for (i, item) in items.iter().enumerate() {
                px.extend(item_pixels(&engine, &format!("image #{i}"), item).await?);
            }
            let e = engine.embed_pixels(&px, n).await.map_err(err)?;
            Ok(Float32Array::from(&e[..]).into())
        })
    }

    /// Texts → one `Float32Array` of N×dim, row-major, L2-normalised.
    #[wasm_bindgen(js_name = embedTexts, unchecked_return_type = "Promise<Float32Array>")]
    pub fn embed_texts(&self, texts: Vec<String>) -> js_sys::Promise {
        let engine = self.engine.clone();
        future_to_promise(async move {
            let e = engine.embed_texts(&texts).await.map_err(err)?;
            Ok(Float32Array::from(&e[..]).into())
        })
    }

    /// CLIP scores of every image against every text: `100 · max(cos, 0)`, N×M row-major.
    pub fn score(&self, images: &[f32], texts: &[f32]) -> Result<Float32Array, JsError> {
        let c = cosines(images, texts, self.engine.dim()).map_err(err)?;
        let s: Vec<f32> = c.into_iter().map(clip_wgpu::clip_score).collect();
        Ok(Float32Array::from(&s[..]))
    }

    /// Zero-shot probabilities: for each image, the softmax over the texts of
    /// `logitScale · cos`, N×M row-major.
    pub fn classify(&self, images: &[f32], texts: &[f32]) -> Result<Float32Array, JsError> {
        let c = cosines(images, texts, self.engine.dim()).map_err(err)?;
        let m = texts.len() / self.engine.dim();
        let scale = self.engine.logit_scale();
        let mut out = Vec::with_capacity(c.len());
        for row in c.chunks(m.max(1)) {
            let logits: Vec<f32> = row.iter().map(|c| c * scale).collect();
            out.extend(clip_wgpu::softmax(&logits));
        }
        Ok(Float32Array::from(&out[..]))
    }
}

/// One item of `embedImages` → the model's input pixels.
async fn item_pixels(engine: &Engine, name: &str, item: JsValue) -> Result<Vec<f32>, JsValue> {
    let e = |m: String| -> JsValue { err(m).into() };
    if let Some(a) = item.dyn_ref::<Uint8Array>() {
        return engine.preprocess_bytes(name, &a.to_vec()).map_err(e);
    }
    if let Some(a) = item.dyn_ref::<js_sys::ArrayBuffer>() {
        return engine.preprocess_bytes(name, &Uint8Array::new(a).to_vec()).map_err(e);
    }
    if let Some(b) = item.dyn_ref::<web_sys::Blob>() {
        let buf = JsFuture::from(b.array_buffer())
            .await
            .map_err(|x| e(format!("{name}: reading the Blob: {}", js_msg(x))))?;
        return engine.preprocess_bytes(name, &Uint8Array::new(&buf).to_vec()).map_err(e);
    }
    if let Some(d) = item.dyn_ref::<web_sys::ImageData>() {
        return engine.preprocess_rgba(name, d.width(), d.height(), d.data().0).map_err(e);
    }
    if let Some(b) = item.dyn_ref::<web_sys::ImageBitmap>() {
        let (w, h) = (b.width(), b.height());
        if w == 0 || h == 0 {
            return Err(e(format!("{name}: image has a zero dimension ({w}x{h})")));
        }
        let canvas = web_sys::OffscreenCanvas::new(w, h).map_err(|x| e(format!("{name}: {}", js_msg(x))))?;
        let ctx = canvas
            .get_context("2d")
            .map_err(|x| e(format!("{name}: {}", js_msg(x))))?
            .and_then(|c| c.dyn_into::<web_sys::OffscreenCanvasRenderingContext2d>().ok())
            .ok_or_else(|| e(format!("{name}: no 2d context to read the ImageBitmap")))?;
        ctx.draw_image_with_image_bitmap(b, 0.0, 0.0).map_err(|x| e(format!("{name}: {}", js_msg(x))))?;
        let d = ctx.get_image_data(0.0, 0.0, w as f64, h as f64).map_err(|x| e(format!("{name}: {}", js_msg(x))))?;
        return engine.preprocess_rgba(name, w, h, d.data().0).map_err(e);
    }
    Err(e(format!(
        "{name}: expected a Uint8Array or ArrayBuffer (encoded image), Blob, File, ImageData or ImageBitmap, got {}",
        item.js_typeof().as_string().unwrap_or_default()
    )))
}

/// The Cache API store, where the page has one (secure contexts: https, localhost).
async fn open_cache() -> Option<web_sys::Cache> {
    let global = js_sys::global();
    let caches = Reflect::get(&global, &JsValue::from_str("caches")).ok()?;
    let caches = caches.dyn_into::<web_sys::CacheStorage>().ok()?;
    let c = JsFuture::from(caches.open(CACHE_NAME)).await.ok()?;
    c.dyn_into::<web_sys::Cache>().ok()
}

/// The bytes at `url`: from the cache if it holds them, else fetched (and put in the cache),
/// read chunk by chunk with `progress(url, loaded, total)`. `optional`: a 404 is `None`.
async fn fetch_bytes(
    url: &str,
    cache: Option<&web_sys::Cache>,
    progress: &Option<Function>,
    optional: bool,
) -> Result<Option<Vec<u8>>, JsError> {
    let failed = |x: JsValue| err(format!("{url}: {}", js_msg(x)));
    let mut resp = None;
    if let Some(c) = cache {
        if let Ok(hit) = JsFuture::from(c.match_with_str(url)).await {
            resp = hit.dyn_into::<web_sys::Response>().ok();
        }
    }
    let from_cache = resp.is_some();
    let resp = match resp {
        Some(r) => r,
        None => {
            let global = js_sys::global();
            let fetch = Reflect::get(&global, &JsValue::from_str("fetch"))
                .map_err(failed)?
                .dyn_into::<Function>()
                .map_err(|_| err("this page has no fetch()"))?;
            let p = fetch.call1(&global, &JsValue::from_str(url)).map_err(failed)?;
            JsFuture::from(js_sys::Promise::from(p))
                .await
                .map_err(failed)?
                .dyn_into::<web_sys::Response>()
                .map_err(failed)?
        }
    };
    if !resp.ok() {
        if optional && resp.status() == 404 {
            return Ok(None);
        }
        return Err(err(format!("{url}: HTTP {} {}", resp.status(), resp.status_text())));
    }
    // the cache reads its own copy of the stream while this one is read
    let put = match (cache, from_cache) {
        (Some(c), false) => resp.clone().ok().map(|copy| JsFuture::from(c.put_with_str(url, &copy))),
        _ => None,
    };
    let total = resp.headers().get("content-length").ok().flatten().and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    let mut out = Vec::with_capacity(total as usize);
    let report = |loaded: usize| {
        if let Some(f) = progress {
            let args =
                Array::of3(&JsValue::from_str(url), &JsValue::from_f64(loaded as f64), &JsValue::from_f64(total));
            let _ = f.apply(&JsValue::NULL, &args);
        }
    };
    match resp.body() {
        Some(body) => {
            let reader =
                body.get_reader().dyn_into::<web_sys::ReadableStreamDefaultReader>().map_err(|o| failed(o.into()))?;
            loop {
                let chunk = JsFuture::from(reader.read()).await.map_err(failed)?;
                if Reflect::get(&chunk, &JsValue::from_str("done")).map_err(failed)?.as_bool().unwrap_or(true) {
                    break;
                }
                let value = Reflect::get(&chunk, &JsValue::from_str("value")).map_err(failed)?;
                let bytes = value.dyn_into::<Uint8Array>().map_err(failed)?;
                let at = out.len();
                out.resize(at + bytes.length() as usize, 0);
                bytes.copy_to(&mut out[at..]);
                report(out.len());
            }
        }
        None => report(0),
    }
    if let Some(p) = put {
        // a full quota only means the next load downloads again
        let _ = p.await;
    }
    Ok(Some(out))
}
