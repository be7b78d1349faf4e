// The browser test page: embeds the tiny fixture's images (several formats, and as Uint8Array,
// Blob, ImageData and ImageBitmap) and texts on the WebGPU path and the wasm CPU path, and
// provokes the errors; the results land in window.__clipResult (window.__clipDone = true at
// the end). tests/browser.rs compares them with the native CPU engine.
import init, { Clip } from "/target/web/pkg/clip_wgpu.js";

const MODEL = "/tests/fixtures/tiny/hf/";
const IMAGES = "/tests/fixtures/images/";
export const FILES = [
  "franz-kafka.jpg", "progressive_360x270.jpg", "CLIP.png", "rgba_333x250.png", "l_300x200.png",
  "anim_230x180.gif", "rgb_160x120.bmp", "rgb_200x150.tiff", "rgb_lossy_300x200.webp",
];
const log = (m) => { document.getElementById("log").textContent += "\n" + m; console.log(m); };

// Synthetic RGBA pixels (opaque), the same formula as tests/browser.rs.
function synthetic(w, h) {
  const d = new Uint8ClampedArray(w * h * 4);
  for (let y = 0; y < h; y++)
    for (let x = 0; x < w; x++)
      for (let c = 0; c < 3; c++) d[(y * w + x) * 4 + c] = (x * 7 + y * 13 + c * 50) % 256;
  for (let i = 3; i < d.length; i += 4) d[i] = 255;
  return new ImageData(d, w, h);
}

async function bytes(url) {
  const r = await fetch(url);
  if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
  return new Uint8Array(await r.arrayBuffer());
}

async function errorOf(promise) {
  try { await promise; return null; } catch (e) { return String(e && e.message || e); }
}

async function run(device, texts) {
  const out = { device };
  const t0 = performance.now();
  const clip = await Clip.load(MODEL, { device, cache: false });
  out.load_ms = performance.now() - t0;
  out.path = clip.path; out.adapter = clip.adapter; out.dim = clip.dim;
  log(`${device}: ${clip.path}, dim ${clip.dim}, loaded in ${out.load_ms.toFixed(0)} ms`);
  const files = await Promise.all(FILES.map((f) => bytes(IMAGES + f)));
  let t = performance.now();
  out.files = Array.from(await clip.embedImages(files));
  out.files_ms = performance.now() - t;
  out.blob = Array.from(await clip.embedImages([new Blob([files[2]], { type: "image/png" })]));
  const img = synthetic(97, 61);
  out.imagedata = Array.from(await clip.embedImages([img]));
  out.imagebitmap = Array.from(await clip.embedImages([await createImageBitmap(img)]));
  t = performance.now();
  out.texts = Array.from(await clip.embedTexts(texts));
  out.texts_ms = performance.now() - t;
  out.probs = Array.from(clip.classify(new Float32Array(out.files.slice(0, clip.dim)), new Float32Array(out.texts)));
  out.scores = Array.from(clip.score(new Float32Array(out.files.slice(0, clip.dim)), new Float32Array(out.texts.slice(0, 2 * clip.dim))));
  // errors: each rejects with the engine's message, and the page goes on
  out.err_corrupt = await errorOf(clip.embedImages([files[0], await bytes(IMAGES + "corrupt_truncated.jpg")]));
  out.err_random = await errorOf(clip.embedImages([await bytes(IMAGES + "corrupt_random.bin")]));
  out.err_item = await errorOf(clip.embedImages([42]));
  out.after_errors = Array.from(await clip.embedImages([files[2]]));
  out.err_checkpoint = await errorOf(Clip.fromBytes(await bytes(MODEL + "config.json"), new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8, 9]), null, { device }));
  out.err_missing = await errorOf(Clip.load("/tests/fixtures/no-such-model/", { device, cache: false }));
  clip.free();
  return out;
}

const result = { ok: false };
if (new URLSearchParams(location.search).has("skip")) {
  // (measure.mjs drives the page itself)
} else try {
  await init();
  const ref = await (await fetch("/tests/fixtures/tiny/reference.json")).json();
  result.texts = ref.texts;
  result.files = FILES;
  const guarded = (device) => run(device, ref.texts).catch((e) => ({ error: String(e && e.stack || e) }));
  result.webgpu = navigator.gpu ? await guarded("webgpu") : { error: "navigator.gpu is missing" };
  result.cpu = await guarded("cpu");
  // the Cache API keeps the weights: a second load reads no byte from the network
  const seen = [];
  await Clip.load(MODEL, { device: "cpu", progress: (f) => seen.push(f) });
  const t0 = performance.now();
  const again = await Clip.load(MODEL, { device: "cpu" });
  result.cached_load_ms = performance.now() - t0;
  result.cache_keys = (await (await caches.open("clip-wgpu-weights-v1")).keys()).map((r) => new URL(r.url).pathname);
  result.progress_files = [...new Set(seen.map((u) => new URL(u, location.href).pathname))];
  again.free();
  result.ok = true;
} catch (e) {
  result.error = String(e && e.stack || e);
  log("FAILED: " + result.error);
}
window.__clipResult = result;
window.__clipDone = true;
log("done");
