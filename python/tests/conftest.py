"""Shared fixtures: the tiny checkpoint, the image files, the command line's binary, shards."""

import io
import json
import os
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "tests/fixtures/tiny/hf"
IMAGES = ROOT / "tests/fixtures/images"
# real images of every kind the engine decodes (JPEG, PNG with and without alpha, WebP, GIF, BMP)
IMAGE_FILES = [
    IMAGES / n
    for n in [
        "franz-kafka.jpg",
        "CLIP.png",
        "q90_422_500x333.jpg",
        "rgba_333x250.png",
        "p_310x205.png",
        "rgb_lossy_300x200.webp",
        "trns_260x190.gif",
        "rgb_160x120.bmp",
        "rgb_640x480.png",
        "l_300x200.png",
    ]
]


def cli_binary():
    """The command line built by `cargo build`/`cargo test` ($CLIP_WGPU_BIN wins)."""
    env = os.environ.get("CLIP_WGPU_BIN")
    if env:
        return Path(env)
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    for profile in ["debug", "release"]:
        p = target / profile / "clip-wgpu"
        if p.exists():
            return p
    if os.environ.get("CLIP_WGPU_REQUIRE_CLI") == "1":
        raise RuntimeError(f"no clip-wgpu binary under {target}: run `cargo build` first")
    pytest.skip("no clip-wgpu binary: run `cargo build` (or set CLIP_WGPU_BIN)")


@pytest.fixture(scope="session")
def cli():
    b = cli_binary()

    def run(*args, check=True):
        r = subprocess.run([str(b), *map(str, args)], capture_output=True, text=True)
        if check and r.returncode != 0:
            raise AssertionError(f"clip-wgpu {' '.join(map(str, args))} exited {r.returncode}: {r.stderr}")
        return r

    return run


@pytest.fixture(scope="session")
def clip():
    import clip_wgpu

    return clip_wgpu.Clip(model=str(TINY), device="cpu")


@pytest.fixture(scope="session")
def reference():
    return json.loads((ROOT / "tests/fixtures/tiny/reference.json").read_text())


def write_shard(path, samples):
    """A WebDataset shard: samples are (key, {ext: bytes})."""
    with tarfile.open(path, "w") as t:
        for key, members in samples:
            for ext, data in members.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
    return path


def make_shards(directory, n_shards, per_shard, files=IMAGE_FILES, bad=()):
    """Shards of the image files in turn, each sample with a .txt or a .json caption; `bad`:
    global sample numbers given corrupt bytes instead."""
    directory.mkdir(parents=True, exist_ok=True)
    paths, k = [], 0
    for s in range(n_shards):
        samples = []
        for _ in range(per_shard):
            f = files[k % len(files)]
            data = b"\x89PNG\r\n\x1a\n not a png" if k in bad else f.read_bytes()
            ext = f.suffix[1:]
            caption = f"sample {k}: {f.stem.replace('_', ' ')}"
            meta = {"txt": caption.encode()} if k % 2 == 0 else {"json": json.dumps({"caption": caption}).encode()}
            samples.append((f"{k:09d}", {ext: data, **meta}))
            k += 1
        paths.append(write_shard(directory / f"{s:05d}.tar", samples))
    return paths


def cli_parquet(cli, tmp_path, inputs, name="cli.parquet"):
    """Embeds `inputs` with the command line into Parquet; returns {input: embedding} and the table."""
    import pyarrow.parquet as pq

    out = tmp_path / name
    args = ["embed", "--model", TINY, "--device", "cpu", "--quiet", "--format", "parquet", "--output", out]
    for i in inputs:
        args += ["--image", i]
    cli(*args, check=False)
    table = pq.read_table(out)
    rows = table.to_pylist()
    return {r["input"]: np.asarray(r["embedding"], dtype=np.float32) for r in rows}, table


