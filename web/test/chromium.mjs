// Headless Chromium for the web tests and measurements: the system's browser
// (CLIP_WGPU_CHROMIUM, default /usr/bin/chromium) driven by puppeteer-core over a pipe, with
// WebGPU on (SwiftShader where there is no GPU), no outside host tried and a throw-away
// profile; and the repository served on 127.0.0.1 (web/serve.mjs) for it to open.
//
//   const { browser, base, close } = await open();   // base: http://127.0.0.1:PORT
//   try { … } finally { await close(); }
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import puppeteer from "puppeteer-core";
import { serve } from "../serve.mjs";

// `launch` adds to or overrides puppeteer's launch options (e.g. `protocolTimeout`).
export async function open(launch = {}) {
  const server = await serve(0);
  const base = `http://127.0.0.1:${server.address().port}`;
  const profile = mkdtempSync(join(tmpdir(), "clip-wgpu-chromium-"));
  const cleanup = () => {
    server.close();
    rmSync(profile, { recursive: true, force: true });
  };
  let browser;
  try {
    browser = await puppeteer.launch({
      executablePath: process.env.CLIP_WGPU_CHROMIUM || "/usr/bin/chromium",
      headless: true,
      pipe: true,
      userDataDir: profile,
      args: [
        "--enable-unsafe-webgpu", "--no-sandbox", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-quic",
      ],
      ...launch,
    });
  } catch (e) {
    cleanup();
    throw e;
  }
  const close = async () => {
    try {
      await browser.close();
    } finally {
      cleanup();
    }
  };
  return { browser, base, close };
}
