// Serves the repository on 127.0.0.1 with the cross-origin isolation headers (COOP/COEP) that
// wasm threads and precise timers need: the demo at /web/demo/, the test page at /web/test/,
// the package built by `cargo xtask web` at /target/web/pkg/, the fixtures at /tests/fixtures/.
//
//   node web/serve.mjs [PORT]      (default 8000; then open http://127.0.0.1:PORT/)
import { createServer } from "node:http";
import { createReadStream, statSync } from "node:fs";
import { extname, join, normalize, resolve, dirname } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const TYPES = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".wasm": "application/wasm",
  ".json": "application/json",
  ".css": "text/css",
  ".png": "image/png",
  ".jpg": "image/jpeg",
  ".gif": "image/gif",
  ".webp": "image/webp",
  ".bmp": "image/bmp",
  ".tiff": "image/tiff",
  ".ts": "text/plain; charset=utf-8",
};
// Only what a page needs: never the repository's .git or build intermediates.
const ALLOWED = ["/web/", "/target/web/", "/tests/fixtures/"];

export function serve(port = 8000, host = "127.0.0.1") {
  const server = createServer((req, res) => {
    const headers = {
      "Cross-Origin-Opener-Policy": "same-origin",
      "Cross-Origin-Embedder-Policy": "require-corp",
      "Cross-Origin-Resource-Policy": "same-origin",
      "Cache-Control": "no-cache",
    };
    let path = decodeURIComponent(new URL(req.url, "http://x").pathname);
    if (path === "/") {
      res.writeHead(302, { ...headers, Location: "/web/demo/" });
      return res.end();
    }
    path = normalize(path);
    if (!ALLOWED.some((p) => path.startsWith(p)) || path.includes("..")) {
      res.writeHead(404, headers);
      return res.end("not served");
    }
    let file = join(ROOT, path);
    try {
      if (statSync(file).isDirectory()) file = join(file, "index.html");
      const st = statSync(file);
      res.writeHead(200, {
        ...headers,
        "Content-Type": TYPES[extname(file)] || "application/octet-stream",
        "Content-Length": st.size,
      });
      if (req.method === "HEAD") return res.end();
      createReadStream(file).pipe(res);
    } catch {
      res.writeHead(404, headers);
      res.end("not found");
    }
  });
  return new Promise((ok) => server.listen(port, host, () => ok(server)));
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const server = await serve(Number(process.argv[2] || 8000));
  const { port } = server.address();
  console.log(`clip-wgpu demo: http://127.0.0.1:${port}/web/demo/ (test page: /web/test/); Ctrl-C stops`);
}
