// Times the full-size model in headless Chromium: load (fetch, parse, upload or lay out the
// weights) and the first image and text embeddings, on the WebGPU kernels and the wasm CPU
// engine. The model directory must be served under /tests/fixtures/ (default
// /tests/fixtures/full/: scripts/make_fixtures.py full tests/fixtures/full).
//
//   node web/test/measure.mjs [MODEL_URL_PATH] [webgpu,cpu]
import { open } from "./chromium.mjs";

const [model = "/tests/fixtures/full/", devices = "webgpu,cpu"] = process.argv.slice(2);
const { browser, base, close } = await open({ protocolTimeout: 1_200_000 });
try {
  const page = await browser.newPage();
  page.on("console", (m) => console.log(`[page] ${m.text()}`));
  await page.goto(`${base}/web/test/index.html?skip=1`);
  for (const device of devices.split(",")) {
    const r = await page.evaluate(async (model, device) => {
      const { default: init, Clip } = await import("/target/web/pkg/clip_wgpu.js");
      await init();
      const img = new Uint8Array(await (await fetch("/tests/fixtures/images/franz-kafka.jpg")).arrayBuffer());
      const t0 = performance.now();
      const clip = await Clip.load(model, { device, cache: false });
      const t1 = performance.now();
      await clip.embedImages([img]);
      const t2 = performance.now();
      await clip.embedImages([img]);
      const t3 = performance.now();
      await clip.embedTexts(["a photo of a dog"]);
      const t4 = performance.now();
      const out = { device, path: clip.path, load_ms: t1 - t0, first_image_ms: t2 - t1, second_image_ms: t3 - t2, first_text_ms: t4 - t3 };
      clip.free();
      return out;
    }, model, device);
    console.log(JSON.stringify(r));
  }
} finally {
  await close();
}
