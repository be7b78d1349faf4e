"""Throughput of examples/ray_embed.py (Ray Data, N actors) against `clip-wgpu embed` over the
same WebDataset shards, in one run: images/s of each, their ratio, the largest difference
between their embeddings (row by row, by key) and each actor's peak resident memory.

    python3 scripts/ray_vs_cli.py --model tests/fixtures/full --bin target/release/clip-wgpu \
        --images 2000 --shards 20 --concurrency 2

Needs the clip_wgpu package (pip install ./python), ray[data], pyarrow and Pillow. The images
are synthetic JPEGs (random colour fields upscaled bicubically to 320-640 × 240-480 px, quality 90), made once
into --work. One untimed command-line run over the first shard warms up first (page cache,
`--precision auto`'s cached choice). Times: the command line's wall time (model load
included); Ray's from the pipeline's start to the last Parquet file (listing the shards and the
actors' model loads included; `ray.init` not).
"""

import argparse
import io
import json
import os
import resource
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def make_shards(directory, n_images, n_shards, seed=0):
    from PIL import Image

    directory.mkdir(parents=True, exist_ok=True)
    if len(list(directory.glob("*.tar"))) == n_shards:
        return sorted(directory.glob("*.tar"))
    rng = np.random.default_rng(seed)
    per = n_images // n_shards
    k = 0
    for s in range(n_shards):
        with tarfile.open(directory / f"{s:05d}.tar", "w") as t:
            for _ in range(per):
                w, h = int(rng.integers(320, 640)), int(rng.integers(240, 480))
                small = rng.integers(0, 256, (int(rng.integers(6, 24)), int(rng.integers(6, 24)), 3), dtype=np.uint8)
                buf = io.BytesIO()
                Image.fromarray(small).resize((w, h), Image.BICUBIC).save(buf, "JPEG", quality=90)
                for ext, data in [("jpg", buf.getvalue()), ("txt", f"synthetic image {k}".encode())]:
                    info = tarfile.TarInfo(f"{k:09d}.{ext}")
                    info.size = len(data)
                    t.addfile(info, io.BytesIO(data))
                k += 1
    return sorted(directory.glob("*.tar"))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--bin", default=str(ROOT / "target/release/clip-wgpu"))
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--shards", type=int, default=20)
    p.add_argument("--concurrency", type=int, default=2)
    p.add_argument("--threads", type=int, default=None,
                   help="engine threads per actor (default: the example's, one per CPU Ray reserves; 0: one per core)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--work", default="/tmp/ray_vs_cli")
    p.add_argument("--ray", choices=["running", "fresh"], default="running",
                   help="running: a Ray instance started once (`ray start --head`), as a cluster is, and the "
                        "example run once untimed over one shard first, as the command line is (Ray Data's "
                        "per-cluster actors exist then); fresh: the example starts its own local instance, "
                        "timed from after ray.init")
    a = p.parse_args()
    import pyarrow.parquet as pq

    import clip_wgpu

    build = clip_wgpu.Clip(model=a.model, device=a.device).info().get("build")
    if build != "release":
        # CI installs the package unoptimised (a test build): timing it against a release
        # binary measures the build, not Ray
        sys.exit(f"ray_vs_cli: the installed clip_wgpu is a {build} build; pip install ./python builds a release one")
    work = Path(a.work)
    shards = make_shards(work / "shards", a.images, a.shards)
    print(f"load average before: {os.getloadavg()}", flush=True)

    cli_out = work / "cli.parquet"
    args = [a.bin, "embed", "--model", a.model, "--device", a.device, "--quiet", "--format", "parquet"]
    # untimed warm-up over one shard: the model file in the page cache, and `--precision auto`'s
    # measurement cached (on a machine that never ran it, the first run measures for seconds),
    # so that neither side below pays a one-off cost the other does not
    subprocess.run(args + ["--output", str(work / "warmup.parquet"), "--image", str(shards[0])], check=True)
    args += ["--output", str(cli_out)] + [x for s in shards for x in ("--image", str(s))]
    t = time.perf_counter()
    subprocess.run(args, check=True)
    cli_s = time.perf_counter() - t
    cli_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    cli = pq.read_table(cli_out).to_pylist()
    print(f"cli: {len(cli)} images in {cli_s:.2f} s = {len(cli) / cli_s:.1f} images/s, peak RSS {cli_rss:.0f} MB")
    print(f"load average after the cli: {os.getloadavg()}", flush=True)

    ray_out, stats = work / "ray_out", work / "ray_stats"
    for d in (ray_out, stats, work / "ray_warmup"):
        subprocess.run(["rm", "-rf", str(d)], check=True)
    example = [sys.executable, str(ROOT / "examples/ray_embed.py"), "--model", a.model, "--device", a.device]
    example += ["--concurrency", str(a.concurrency)] + ([] if a.threads is None else ["--threads", str(a.threads)])
    example += ["--num-cpus", str(max(0.1, (os.cpu_count() or 2) / a.concurrency - 0.1))]
    env = dict(os.environ, RAY_ENABLE_UV_RUN_RUNTIME_ENV="0")
    if a.ray == "running":
        subprocess.run(["ray", "stop", "--force"], capture_output=True)
        subprocess.run(["ray", "start", "--head", "--disable-usage-stats"], check=True, capture_output=True, env=env)
        example += ["--address", "auto"]
        w = subprocess.run(example + ["--shards", str(shards[0]), "--output", str(work / "ray_warmup")],
                           capture_output=True, text=True, env=env)
        if w.returncode != 0:
            sys.exit(w.stdout[-3000:] + w.stderr[-3000:])
    else:
        example += ["--address", "local"]
    try:
        r = subprocess.run(example + ["--shards", str(work / "shards"), "--output", str(ray_out), "--stats", str(stats)],
                           capture_output=True, text=True, env=env)
    finally:
        if a.ray == "running":
            subprocess.run(["ray", "stop"], capture_output=True)
    if r.returncode != 0:
        sys.exit(r.stdout[-3000:] + r.stderr[-3000:])
    line = [x for x in r.stdout.splitlines() if x.startswith("ray_embed:")][-1]
    ray_s = float(line.split(" in ")[1].split(" s")[0])
    ray = pq.read_table(ray_out).to_pylist()
    print(f"ray: {len(ray)} images in {ray_s:.2f} s = {len(ray) / ray_s:.1f} images/s ({a.concurrency} actors, "
          f"{'a running Ray instance, after an untimed run over one shard' if a.ray == 'running' else 'a fresh local instance'})")
    print(f"load average after ray: {os.getloadavg()}")
    for f in sorted(stats.glob("actor-*.json")):
        s = json.loads(f.read_text())
        print(f"  actor pid {s['pid']}: {s['rows']} rows, peak RSS {s['peak_rss_mb']:.0f} MB")
    by_key = {x["input"]: np.asarray(x["embedding"], np.float32) for x in cli}
    diff = max(float(np.abs(np.asarray(x["embedding"], np.float32) - by_key[x["input"]]).max()) for x in ray)
    same = sorted(by_key) == sorted(x["input"] for x in ray)
    print(f"same rows: {same}; max abs difference ray vs cli: {diff:.3g}")
    print(f"ray / cli throughput: {(len(ray) / ray_s) / (len(cli) / cli_s):.3f}")


if __name__ == "__main__":
    main()
