// Drives headless Chromium (the system's: CLIP_WGPU_CHROMIUM, default /usr/bin/chromium) with
// puppeteer-core over a pipe: serves the repository on 127.0.0.1 (web/serve.mjs), opens the
// test page, waits for it to finish, writes its results as JSON, then runs a classification in
// the demo and saves a screenshot.
//
//   node web/test/run.mjs OUT.json SCREENSHOT.png
import { writeFileSync } from "node:fs";
import { open } from "./chromium.mjs";

const [out = "target/web/browser-results.json", shot = "target/web/demo.png"] = process.argv.slice(2);
const { browser, base, close } = await open();
let code = 0;
try {
  const page = await browser.newPage();
  page.on("console", (m) => console.log(`[page] ${m.text()}`));
  page.on("pageerror", (e) => console.log(`[page error] ${e.message}`));
  await page.goto(`${base}/web/test/`);
  await page.waitForFunction("window.__clipDone === true || window.__clipPanic", { timeout: 540_000, polling: 500 });
  const result = await page.evaluate(() => window.__clipResult);
  result.user_agent = await browser.userAgent();
  writeFileSync(out, JSON.stringify(result));
  console.log(`browser results: ${out}`);
  if (!result.ok) code = 1;

  const demo = await browser.newPage();
  demo.on("console", (m) => console.log(`[demo] ${m.text()}`));
  await demo.setViewport({ width: 1100, height: 900 });
  const images = ["franz-kafka.jpg", "CLIP.png"].map((f) => `/tests/fixtures/images/${f}`).join(",");
  await demo.goto(`${base}/web/demo/?model=/tests/fixtures/tiny/hf/&images=${images}&run=1`);
  await demo.waitForFunction("window.__demoDone === true", { timeout: 300_000, polling: 500 });
  const status = await demo.evaluate(() => document.getElementById("status").textContent);
  console.log(`demo: ${status}`);
  await demo.screenshot({ path: shot, fullPage: true });
  console.log(`demo screenshot: ${shot}`);
} catch (e) {
  console.error(e);
  code = 1;
} finally {
  await close();
}
process.exit(code);
