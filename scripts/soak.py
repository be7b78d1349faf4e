#!/usr/bin/env python3
"""Soak test: memory stays flat over a long `clip-wgpu score` run.

    python3 scripts/soak.py [--n 20000] [--model tests/fixtures/full] [--device cpu]
                            [--bin target/release/clip-wgpu] [--max-drift 2.0]
    # lavapipe (software Vulkan), smaller:
    VK_ICD_FILENAMES=/usr/share/vulkan/icd.d/lvp_icd.x86_64.json XDG_RUNTIME_DIR=/tmp \\
        python3 scripts/soak.py --device gpu --n 300

Writes N realistic JPEGs (a pool of distinct pictures, Pillow-encoded at several sizes and
qualities, each file made distinct by a JPEG comment naming it, so the CLI's content-keyed
embedding cache cannot skip any; needs Pillow and numpy), runs the release binary
over the directory (`score --format jsonl`, one text, `CLIP_WGPU_STATS=1`), reads its output as
it streams to know how many images are done, and samples the process's resident memory (VmRSS
in /proc/PID/status) every 0.5 s.

RSS is a sawtooth (each batch's pixel and activation buffers are allocated and freed), so a
single sample lands on a tooth or between two at random. The levels compared are therefore
peaks over windows of the run: "after warm-up" is the maximum RSS while the images from the
warm-up mark (`--warmup`, default 10 %) to 5 % beyond it are scored, "end" the maximum while the
last 5 % are. Drift = (end - warm) / warm, and the same with the maximum after warm-up. Fails
(exit 1) when either exceeds --max-drift (default 2 %), when the run fails, when not every image
is scored, or when the GPU created a buffer or bind group after warm-up.

The embedding cache is bounded memory that fills as distinct images arrive (default 16,384
entries, about 2.2 KiB each at 512 dimensions: ~36 MiB). A 20,000-image run with the default
would see it fill for 16,384 images and read that as drift; the soak sets `--cache-entries`
(default 1,024) so the cache is full before warm-up ends and evicts on every image after it,
which keeps the eviction path under test too. The cache's entry count is reported from the
stats lines.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def picture(rng, w, h):
    """A photo-like picture: smooth colour field, shapes, texture noise, slight blur."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.zeros((h, w, 3), np.float32)
    for c in range(3):
        f1, f2, ph = rng.uniform(0.002, 0.02, 2).tolist() + [rng.uniform(0, 6.28)]
        base[..., c] = 128 + 90 * np.sin(x * f1 + ph) * np.cos(y * f2 - ph)
    img = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8), "RGB")
    d = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(5, 25))):
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        x1, y1 = x0 + int(rng.integers(10, w // 2)), y0 + int(rng.integers(10, h // 2))
        col = tuple(int(v) for v in rng.integers(0, 256, 3))
        (d.ellipse if rng.random() < 0.5 else d.rectangle)([x0, y0, x1, y1], fill=col)
    a = np.asarray(img).astype(np.int16) + rng.normal(0, 12, (h, w, 3)).astype(np.int16)
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "RGB").filter(ImageFilter.GaussianBlur(0.8))


def make_images(dir_, n, pool, seed=7):
    os.makedirs(dir_, exist_ok=True)
    stamp = os.path.join(dir_, ".done")
    if os.path.exists(stamp) and open(stamp).read().strip() == f"{n} {pool} {seed} com":
        return
    shutil.rmtree(dir_)
    os.makedirs(os.path.join(dir_, "pool"))
    rng = np.random.default_rng(seed)
    sizes = [(640, 480), (500, 375), (800, 600), (480, 640), (1024, 683), (333, 500), (1280, 720)]
    srcs = []
    for i in range(pool):
        w, h = sizes[i % len(sizes)]
        p = os.path.join(dir_, "pool", f"p{i:03d}.jpg")
        picture(rng, w, h).save(p, "JPEG", quality=int(rng.integers(70, 96)), subsampling=int(i % 3))
        srcs.append(p)
    # N files in subdirectories of 1,000, each with distinct bytes: the pool picture plus a JPEG
    # comment (COM) segment naming the file, so no content-keyed cache can skip one
    data = [open(p, "rb").read() for p in srcs]
    for i in range(n):
        sub = os.path.join(dir_, "img", f"{i // 1000:03d}")
        os.makedirs(sub, exist_ok=True)
        b = data[i % pool]
        com = f"soak image {i}".encode()
        with open(os.path.join(sub, f"{i:06d}.jpg"), "wb") as f:
            f.write(b[:2] + b"\xff\xfe" + (len(com) + 2).to_bytes(2, "big") + com + b[2:])
    with open(stamp, "w") as f:
        f.write(f"{n} {pool} {seed} com\n")


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--pool", type=int, default=64, help="distinct pictures behind the N files")
    ap.add_argument("--model", default=os.path.join(ROOT, "tests/fixtures/full"))
    ap.add_argument("--device", default="cpu", choices=["cpu", "gpu", "auto"])
    ap.add_argument("--bin", default=os.path.join(ROOT, "target/release/clip-wgpu"))
    ap.add_argument("--workdir", default="/tmp/clip-wgpu-soak")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--interval", type=float, default=0.5, help="seconds between RSS samples")
    ap.add_argument("--warmup", type=float, default=0.10, help="fraction of the images that is warm-up")
    ap.add_argument("--max-drift", type=float, default=2.0, help="allowed RSS growth after warm-up, in %%")
    ap.add_argument("--deadline", type=float, default=0, help="stop the run after this many seconds (0: never); "
                    "the figures then cover the images done, and the run is reported as cut short")
    ap.add_argument("--cache-entries", type=int, default=1024,
                    help="the embedding cache's bound for the run (see above)")
    ap.add_argument("--window", type=float, default=0.05, help="fraction of the images in each peak window")
    ap.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more arguments for clip-wgpu")
    a = ap.parse_args()

    if not os.path.exists(a.bin):
        sys.exit(f"{a.bin} not found: build it with `cargo build --release`")
    t0 = time.time()
    make_images(a.workdir, a.n, a.pool)
    print(f"images: {a.n} JPEGs ({a.pool} distinct) in {a.workdir}/img ({time.time() - t0:.0f} s)", flush=True)

    cmd = [a.bin, "score", "--model", a.model, "--device", a.device, "--batch-size", str(a.batch_size),
           "--image", os.path.join(a.workdir, "img"), "--text", "a photo of a dog", "--format", "jsonl", "--quiet",
           "--cache-entries", str(a.cache_entries)] + a.extra
    print("run:", " ".join(cmd), flush=True)
    env = dict(os.environ, CLIP_WGPU_STATS="1")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1, env=env)
    done = [0]
    errors = []
    stderr_lines = []
    stats = []  # dicts from the `clip-wgpu stats:` lines, one per batch

    def read_out():
        for line in proc.stdout:
            try:
                r = json.loads(line)
            except ValueError:
                continue
            if "score" in r:
                done[0] += 1
            elif "error" in r:
                done[0] += 1
                errors.append(r)

    def read_err():
        for line in proc.stderr:
            if line.startswith("clip-wgpu stats:"):
                kv = dict(f.split("=", 1) for f in line.split(":", 1)[1].split())
                stats.append({k: (int(v) if v.isdigit() else v) for k, v in kv.items()})
            else:
                stderr_lines.append(line.rstrip())

    threads = [threading.Thread(target=read_out, daemon=True), threading.Thread(target=read_err, daemon=True)]
    for t in threads:
        t.start()
    samples = []  # (seconds, images done, RSS KiB)
    start = time.time()
    last_print = start
    cut = False
    while proc.poll() is None:
        if a.deadline and time.time() - start > a.deadline and not cut:
            cut = True
            print(f"deadline of {a.deadline:.0f} s reached: stopping the run", flush=True)
            proc.terminate()
        r = rss_kib(proc.pid)
        if r is not None:
            samples.append((time.time() - start, done[0], r))
        if time.time() - last_print > 30:
            last_print = time.time()
            s = samples[-1] if samples else (0, 0, 0)
            print(f"  {s[0]:7.0f} s  {s[1]:6d} images  RSS {s[2] / 1024:8.1f} MiB", flush=True)
        time.sleep(a.interval)
    for t in threads:
        t.join(timeout=10)
    wall = time.time() - start
    rc = proc.returncode
    if (rc != 0 and not cut) or not samples:
        print("\n".join(stderr_lines[-20:]))
        sys.exit(f"clip-wgpu exited with {rc}")

    n_total = done[0] if cut else a.n
    warm_at = max(1, int(a.warmup * n_total))
    win = max(1, int(a.window * n_total))
    first = samples[0]
    # only samples taken while images were still coming (the very last ones can catch the
    # process freeing everything on exit)
    working = [s for s in samples if s[1] < done[0]] or samples
    warm_win = [s for s in working if warm_at <= s[1] < warm_at + win] or [working[-1]]
    end_win = [s for s in working if s[1] >= done[0] - win and s[0] >= warm_win[0][0]] or [working[-1]]
    warm = max(warm_win, key=lambda s: s[2])
    end = max(end_win, key=lambda s: s[2])
    after = [s for s in working if s[0] >= warm_win[0][0]]
    peak = max(after, key=lambda s: s[2])
    drift = 100.0 * (end[2] - warm[2]) / warm[2]
    drift_max = 100.0 * (peak[2] - warm[2]) / warm[2]
    mib = lambda k: k / 1024.0
    print(f"device: {a.device}; {done[0]} images in {wall:.0f} s ({done[0] / wall:.1f} images/s); "
          f"{len(errors)} errors; {len(samples)} RSS samples")
    print(f"RSS start:             {mib(first[2]):9.1f} MiB  (t={first[0]:.1f} s, {first[1]} images)")
    print(f"RSS after warm-up:     {mib(warm[2]):9.1f} MiB  (peak of images {warm_at}..{warm_at + win}; "
          f"{len(warm_win)} samples, min {mib(min(s[2] for s in warm_win)):.1f})")
    print(f"RSS end:               {mib(end[2]):9.1f} MiB  (peak of the last {win} images; "
          f"{len(end_win)} samples, min {mib(min(s[2] for s in end_win)):.1f})")
    print(f"RSS max after warm-up: {mib(peak[2]):9.1f} MiB  (t={peak[0]:.1f} s, {peak[1]} images)")
    print(f"drift after warm-up: {drift:+.2f} % (end), {drift_max:+.2f} % (max); limit {a.max_drift} %")
    gpu_ok = True
    if stats:
        w = next((x for x in stats if x["done"] >= warm_at), stats[-1])
        e = stats[-1]
        print(f"cache entries: {w['cache_entries']} after warm-up, {e['cache_entries']} at the end "
              f"(bound {a.cache_entries}); hits {e['cache_hits']}, misses {e['cache_misses']}")
        if "gpu_buffers" in e:
            print(f"GPU buffers created: {w['gpu_buffers']} after warm-up, {e['gpu_buffers']} at the end; "
                  f"bind groups {w['gpu_bind_groups']} -> {e['gpu_bind_groups']}; "
                  f"pipelines {w['gpu_pipelines']} -> {e['gpu_pipelines']}; submits {e['gpu_submits']}")
            gpu_ok = e["gpu_buffers"] == w["gpu_buffers"] and e["gpu_bind_groups"] == w["gpu_bind_groups"]
            if not gpu_ok:
                print("FAIL: the GPU created buffers or bind groups after warm-up")
    else:
        print("no stats lines from clip-wgpu (an older binary?): cache and GPU buffer counts not checked")
    ok = ((done[0] == a.n or cut) and not errors and drift < a.max_drift and drift_max < a.max_drift
          and gpu_ok)
    if cut:
        print(f"CUT SHORT at the deadline: {done[0]} of {a.n} images scored (warm-up: the first {warm_at})")
    elif done[0] != a.n:
        print(f"FAIL: {done[0]} of {a.n} images scored")
    if errors:
        print(f"FAIL: {len(errors)} errors, first: {errors[0]}")
    print(("PASS" if ok else "FAIL") + (" (partial run)" if cut else ""))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
