#!/usr/bin/env python3
"""A directory of realistic JPEGs for the pipeline's throughput and memory checks.

    python3 scripts/make_jpeg_dir.py DIR [--count 2000] [--min-mp 0.3] [--max-mp 12] [--seed 1]

Sizes are log-uniform between --min-mp and --max-mp megapixels, in the aspect ratios cameras
and phones use (4:3, 3:2, 16:9, 1:1, portrait too); qualities 75-95, some progressive, some
4:4:4. Every file has its own content (no two share bytes, so no embedding cache helps): a
smooth colour field with shapes, upscaled from a small random picture, plus sensor-like noise,
which gives photo-like file sizes (roughly 0.1-0.5 bytes per pixel). Needs Pillow and numpy.
Prints the count, the total size and the pixel-count quartiles.
"""
import argparse
import math
import os
from multiprocessing import Pool

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

ASPECTS = [(4, 3), (3, 2), (16, 9), (1, 1), (3, 4), (2, 3), (9, 16)]


def one(args):
    i, out, min_mp, max_mp, seed = args
    rng = np.random.default_rng(seed * 1_000_003 + i)
    mp = math.exp(rng.uniform(math.log(min_mp), math.log(max_mp)))
    aw, ah = ASPECTS[rng.integers(len(ASPECTS))]
    h = max(16, int(round(math.sqrt(mp * 1e6 * ah / aw))))
    w = max(16, int(round(mp * 1e6 / h)))
    # a small random picture: colour field and shapes
    sw, sh = max(8, w // 16), max(8, h // 16)
    y, x = np.mgrid[0:sh, 0:sw].astype(np.float32)
    base = np.empty((sh, sw, 3), np.float32)
    for c in range(3):
        f1, f2, ph = rng.uniform(0.01, 0.2), rng.uniform(0.01, 0.2), rng.uniform(0, 6.3)
        base[..., c] = 128 + 100 * np.sin(x * f1 + ph) * np.cos(y * f2 - ph)
    small = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    d = ImageDraw.Draw(small)
    for _ in range(int(rng.integers(3, 12))):
        x0, y0 = int(rng.integers(0, sw)), int(rng.integers(0, sh))
        x1, y1 = x0 + int(rng.integers(2, sw // 2 + 3)), y0 + int(rng.integers(2, sh // 2 + 3))
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        (d.ellipse if rng.random() < 0.5 else d.rectangle)([x0, y0, x1, y1], fill=fill)
    big = small.resize((w, h), Image.BICUBIC).filter(ImageFilter.GaussianBlur(1.5))
    arr = np.asarray(big, dtype=np.int16)
    noise = rng.normal(0, rng.uniform(2, 8), (h, w, 1)).astype(np.int16)
    arr = np.clip(arr + noise, 0, 255).astype(np.uint8)
    q = int(rng.integers(75, 96))
    path = os.path.join(out, f"img_{i:06d}.jpg")
    Image.fromarray(arr).save(
        path, quality=q, progressive=bool(rng.random() < 0.2), subsampling=0 if rng.random() < 0.2 else 2
    )
    return w * h, os.path.getsize(path)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir")
    ap.add_argument("--count", type=int, default=2000)
    ap.add_argument("--min-mp", type=float, default=0.3)
    ap.add_argument("--max-mp", type=float, default=12.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    a = ap.parse_args()
    os.makedirs(a.dir, exist_ok=True)
    jobs = [(i, a.dir, a.min_mp, a.max_mp, a.seed) for i in range(a.count)]
    with Pool(a.jobs) as p:
        res = p.map(one, jobs, chunksize=8)
    px = np.array([r[0] for r in res], dtype=np.float64) / 1e6
    total = sum(r[1] for r in res)
    q = np.percentile(px, [0, 25, 50, 75, 100])
    print(
        f"{a.count} JPEGs in {a.dir}: {total / 2**20:.0f} MiB; megapixels min/q1/median/q3/max "
        + "/".join(f"{v:.2f}" for v in q)
    )


if __name__ == "__main__":
    main()
