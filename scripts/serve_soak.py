#!/usr/bin/env python3
"""Soak test of `clip-wgpu serve`: mixed load for a fixed time, memory and GPU objects flat.

    python3 scripts/serve_soak.py --bin target/release/clip-wgpu --model tests/fixtures/full \\
        --device cpu --minutes 20 --out benchmarks/serve/soak-cpu
    VK_ICD_FILENAMES=/usr/share/vulkan/icd.d/lvp_icd.x86_64.json XDG_RUNTIME_DIR=/tmp \\
        python3 scripts/serve_soak.py --model tests/fixtures/tiny/hf --device gpu --minutes 20 \\
        --out benchmarks/serve/soak-lavapipe

Starts the server on a free port (`--cache-entries 256`, so the embedding cache is full early
and evicts on every new input after that), then `--clients` threads send, for `--minutes`, a mix
of requests: /score (1-3 images x 1-3 texts), /embed (JSON and multipart), /classify,
/v1/embeddings with texts (float) and with data-URL images (base64), and a few bad requests
(malformed JSON, wrong types), which must get a 4xx, and bad images beside good ones in one
request, where the bad one must get its own error and the good one its embedding. Every image is made distinct by
bytes after its end marker, so no request is answered from the cache alone. A fixed request is
sent at the start and at the end: its answers must be equal (<= 1e-6).

Samples the server's resident memory (VmRSS) every 0.5 s and /metrics every 10 s. As in
scripts/soak.py, the levels compared are peaks over windows: "after warm-up" is the peak while
the run goes from `--warmup` (default 10 %) to 15 % of its time, "end" the peak over its last 5 %.
Fails (exit 1) on any 5xx, on a good request not answered 200, on a bad one not answered 4xx,
when the drift (end vs after warm-up) exceeds `--max-drift` (default 2 %), or when the GPU
created buffers or bind groups after warm-up. The highest peak after warm-up is reported beside
it (a transient: the largest image batch meeting the largest text batch and the decoding of the
largest images at one moment), not judged.
Writes OUT/summary.json and OUT/rss.csv.
"""
import argparse
import base64
import io
import json
import os
import random
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid

import numpy as np
from PIL import Image, ImageDraw

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

WORDS = "a photo of the dog cat red blue car house tree man woman child street beach mountain city night sunny".split()


def pictures(n, seed=0):
    """Distinct photo-like pictures, JPEG and PNG, of several sizes."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        w, h = [(640, 480), (320, 240), (800, 600), (257, 311), (1024, 768)][i % 5]
        y, x = np.mgrid[0:h, 0:w]
        rgb = np.stack([(x * rng.uniform(0.1, 0.5) + y * 0.1) % 256, (y * rng.uniform(0.2, 0.6)) % 256,
                        (x * 0.2 + rng.integers(0, 255)) % 256], -1)
        rgb = (rgb + rng.normal(0, 10, rgb.shape)).clip(0, 255).astype("uint8")
        im = Image.fromarray(rgb)
        d = ImageDraw.Draw(im)
        for _ in range(8):
            x0, y0 = int(rng.integers(0, w - 20)), int(rng.integers(0, h - 20))
            d.rectangle([x0, y0, x0 + int(rng.integers(10, 120)), y0 + int(rng.integers(10, 120))],
                        fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
        buf = io.BytesIO()
        if i % 3 == 2:
            im.save(buf, "PNG")
            out.append(("image/png", buf.getvalue()))
        else:
            im.save(buf, "JPEG", quality=int(rng.integers(70, 95)))
            out.append(("image/jpeg", buf.getvalue()))
    return out


class Load:
    def __init__(self, base, pics, seed):
        self.base = base
        self.pics = pics
        self.rng = random.Random(seed)

    def image(self):
        mime, b = self.rng.choice(self.pics)
        # distinct bytes: decoders ignore what follows the end marker
        return mime, b + uuid.uuid4().bytes

    def text(self):
        return " ".join(self.rng.choice(WORDS) for _ in range(self.rng.randint(2, 12)))

    def request(self):
        """(kind, path, body, content_type, expect_ok)"""
        r = self.rng.random()
        b64 = lambda m_b: base64.b64encode(m_b[1]).decode()
        if r < 0.30:
            body = {"images": [b64(self.image()) for _ in range(self.rng.randint(1, 3))],
                    "texts": [self.text() for _ in range(self.rng.randint(1, 3))]}
            return "score", "/score", json.dumps(body).encode(), "application/json", True
        if r < 0.50:
            body = {"model": "clip", "input": [self.text() for _ in range(self.rng.randint(1, 8))]}
            return "embeddings_text", "/v1/embeddings", json.dumps(body).encode(), "application/json", True
        if r < 0.62:
            m, b = self.image()
            body = {"model": "clip", "input": f"data:{m};base64,{base64.b64encode(b).decode()}", "encoding_format": "base64"}
            return "embeddings_image", "/v1/embeddings", json.dumps(body).encode(), "application/json", True
        if r < 0.74:
            body = {"images": [b64(self.image())], "texts": [self.text()]}
            return "embed", "/embed", json.dumps(body).encode(), "application/json", True
        if r < 0.82:
            boundary = uuid.uuid4().hex
            parts = []
            for i in range(self.rng.randint(1, 2)):
                m, b = self.image()
                parts.append(f"--{boundary}\r\nContent-Disposition: form-data; name=\"images\"; filename=\"p{i}\"\r\n"
                             f"Content-Type: {m}\r\n\r\n".encode() + b + b"\r\n")
            parts.append(f"--{boundary}\r\nContent-Disposition: form-data; name=\"texts\"\r\n\r\n{self.text()}\r\n".encode())
            parts.append(f"--{boundary}--\r\n".encode())
            return "embed_multipart", "/embed", b"".join(parts), f"multipart/form-data; boundary={boundary}", True
        if r < 0.95:
            body = {"images": [b64(self.image())], "labels": [self.rng.choice(WORDS) for _ in range(5)], "top_k": 3}
            return "classify", "/classify", json.dumps(body).encode(), "application/json", True
        if r < 0.975:
            # a bad image beside a good one: the bad one gets its own error, the good one its result
            body = {"images": [self.rng.choice(["!!!not base64!!!", base64.b64encode(b"plain text, not an image").decode()]),
                               b64(self.image())]}
            return "bad_item", "/embed", json.dumps(body).encode(), "application/json", "item"
        bad = self.rng.choice([b'{"texts": ["unterminated', json.dumps({"input": 42}).encode(), b"[]"])
        path = "/v1/embeddings" if bad.startswith(b'{"input"') else "/embed"
        return "bad", path, bad, "application/json", False


def post(url, body, ctype, timeout=300):
    req = urllib.request.Request(url, data=body, headers={"Content-Type": ctype})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def metrics(base):
    with urllib.request.urlopen(base + "/metrics", timeout=60) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            k, _, v = line.rpartition(" ")
            try:
                out[k] = float(v)
            except ValueError:
                pass
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=os.path.join(ROOT, "target/release/clip-wgpu"))
    ap.add_argument("--model", default=os.path.join(ROOT, "tests/fixtures/full"))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--minutes", type=float, default=20)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--warmup", type=float, default=0.10)
    ap.add_argument("--cache-entries", type=int, default=256)
    ap.add_argument("--max-drift", type=float, default=2.0)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)

    cmd = [args.bin, "serve", "--model", args.model, "--device", args.device, "--port", "0",
           "--cache-entries", str(args.cache_entries), "--max-queue", "512"]
    srv = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = None
    t_start = time.time()
    for line in srv.stderr:
        m = re.search(r"listening on (http://\S+)", line)
        if m:
            base = m.group(1)
            break
        if time.time() - t_start > 300:
            break
    if base is None:
        srv.kill()
        sys.exit("the server did not start")
    threading.Thread(target=lambda: [None for _ in srv.stderr], daemon=True).start()
    print(f"serving at {base} (pid {srv.pid}): {' '.join(cmd)}", flush=True)

    pics = pictures(60)
    fixed = json.dumps({"images": [base64.b64encode(pics[0][1]).decode()], "texts": ["a photo of a dog"]}).encode()
    s0, first = post(base + "/embed", fixed, "application/json")
    assert s0 == 200, first

    duration = args.minutes * 60
    t0 = time.time()
    stop = threading.Event()
    lock = threading.Lock()
    counts = {}
    failures = []
    samples = []  # (t, rss_kib)
    mets = []  # (t, metrics)

    def client(i):
        load = Load(base, pics, seed=i)
        while not stop.is_set():
            kind, path, body, ctype, ok = load.request()
            try:
                status, resp = post(base + path, body, ctype)
            except Exception as e:  # connection reset, timeout: a failure of the server
                status, resp = 0, str(e).encode()
            with lock:
                counts.setdefault(kind, {}).setdefault(str(status), 0)
                counts[kind][str(status)] += 1
                if ok == "item":
                    try:
                        imgs = json.loads(resp)["images"]
                        item_ok = "error" in imgs[0] and len(imgs[1]["embedding"]) > 0
                    except Exception:
                        item_ok = False
                    bad = status != 200 or not item_ok
                else:
                    bad = status >= 500 or status == 0 or (ok and status != 200) or (not ok and not 400 <= status < 500)
                if bad and len(failures) < 20:
                    failures.append({"kind": kind, "status": status, "body": resp[:300].decode("utf-8", "replace")})

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(args.clients)]
    for t in threads:
        t.start()
    next_metrics = 0.0
    next_print = 0.0
    while (el := time.time() - t0) < duration:
        samples.append((el, rss_kib(srv.pid)))
        if el >= next_metrics:
            mets.append((el, metrics(base)))
            next_metrics += 10
        if el >= next_print:
            with lock:
                n = sum(sum(v.values()) for v in counts.values())
            print(f"{el:7.0f} s  requests {n}  RSS {samples[-1][1] / 1024:.1f} MiB", flush=True)
            next_print += 60
        time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join(timeout=300)
    mets.append((time.time() - t0, metrics(base)))
    s1, last = post(base + "/embed", fixed, "application/json")
    a, b = json.loads(first), json.loads(last)
    diff = max(abs(x - y) for k in ("images", "texts") for r1, r2 in zip(a[k], b[k])
               for x, y in zip(r1["embedding"], r2["embedding"]))
    srv.terminate()
    code = srv.wait(timeout=120)

    def peak(lo, hi):
        v = [r for t, r in samples if lo <= t <= hi]
        return max(v) / 1024 if v else float("nan")

    warm = peak(args.warmup * duration, (args.warmup + 0.05) * duration)
    end = peak(0.95 * duration, duration)
    top = peak(args.warmup * duration, duration)
    drift_end = 100 * (end - warm) / warm
    drift_max = 100 * (top - warm) / warm

    def at(frac):
        t = frac * duration
        return min(mets, key=lambda m: abs(m[0] - t))[1]

    mw, me = at(args.warmup + 0.05), mets[-1][1]
    gpu = {k: (mw.get(f"clip_wgpu_gpu_{k}_total"), me.get(f"clip_wgpu_gpu_{k}_total"))
           for k in ("buffers", "bind_groups", "pipelines")}
    gpu_ok = all(w == e for w, e in gpu.values())
    total = sum(sum(v.values()) for v in counts.values())
    fives = sum(n for v in counts.values() for s, n in v.items() if s == "0" or s.startswith("5"))
    ok = (not failures and fives == 0 and drift_end <= args.max_drift and gpu_ok
          and diff <= 1e-6 and code == 0)
    summary = {
        "command": " ".join(sys.argv), "server": " ".join(cmd), "minutes": args.minutes, "clients": args.clients,
        "requests": total, "by_kind": counts, "five_xx": fives, "failures": failures,
        "rss_mib": {"start": samples[0][1] / 1024, "after_warmup": warm, "end": end, "max_after_warmup": top},
        "drift_percent": {"end": drift_end, "max": drift_max},
        "gpu_objects_warmup_vs_end": gpu,
        "cache_entries_end": me.get("clip_wgpu_cache_entries"),
        "mean_batch": {t: me.get(f'clip_wgpu_batch_size_sum{{tower="{t}"}}', 0) / max(1, me.get(f'clip_wgpu_batch_size_count{{tower="{t}"}}', 0))
                       for t in ("image", "text")},
        "fixed_request_max_abs_diff": diff, "exit_code": code,
        "loadavg_end": os.getloadavg(), "passed": ok,
    }
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    with open(os.path.join(args.out, "rss.csv"), "w") as f:
        f.write("seconds,rss_kib\n" + "".join(f"{t:.1f},{r}\n" for t, r in samples))
    print(json.dumps({k: summary[k] for k in ("requests", "five_xx", "rss_mib", "drift_percent",
                                              "gpu_objects_warmup_vs_end", "mean_batch", "passed")}, indent=1))
    if failures:
        print("failures:", json.dumps(failures, indent=1))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
