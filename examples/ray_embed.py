"""Embed a directory of WebDataset shards with clip-wgpu on Ray Data, and write Parquet.

The dataset is the list of shard paths (``ray.data.from_items``); a pool of actors
(``--concurrency N``: ``ActorPoolStrategy(size=N)``), each holding one ``clip_wgpu.Clip`` for its
lifetime, reads its shards itself (through ``pyarrow.fs``: local paths, ``s3://``, ``gs://``),
splits them into samples (grouped by key, as ``webdataset`` does), embeds their images and
writes one Parquet file per shard, OUTPUT/<the shard's path under --shards>.parquet, with the
schema of ``clip-wgpu embed --format parquet``: ``input`` (the sample's key), ``kind``,
``shard``, ``caption``, ``embedding`` (fixed_size_list<float32>[D]). A file appears whole or
not at all (written under a hidden name, then renamed), so ``--skip-existing`` resumes an
interrupted run, and a retried call rewrites its shards' files instead of adding rows twice.
``pyarrow.parquet.read_table(OUTPUT)`` reads them all as one table. Samples whose image cannot
be used, and shards that cannot be read, are left out and named on stderr; the exit status is
then 2, as the command line's.

On a laptop (a local Ray instance is started):

    python examples/ray_embed.py --shards shards/ --output embeddings/ --concurrency 2

On a Ray cluster, unchanged: run it on the head node, or point it at the cluster with
``RAY_ADDRESS=ray://HEAD:10001``; the shards and the output must then be on storage every
node reads (a shared file system, or s3://... / gs://... paths, which the actors read and
write through pyarrow). ``--num-gpus 1`` gives each actor a GPU (clip-wgpu then runs on it
through Vulkan/Metal/DX12); the model must be at the same path on every node (or in each
node's Hugging Face cache).
"""

import argparse
import os
import sys
import time


class Embedder:
    """One actor: one Clip, loaded once, used for every batch of shards the actor gets."""

    def __init__(self, model, device, precision, threads, stats=None):
        if threads:
            # the engine's thread pool is sized on first use: before any encoding
            os.environ["RAYON_NUM_THREADS"] = str(threads)
        import clip_wgpu

        self.clip = clip_wgpu.Clip(model=model, device=device, precision=precision)
        self.stats, self.rows = stats, 0

    def __call__(self, batch):
        import numpy as np
        import pyarrow as pa

        import clip_wgpu

        # every sample of the call's shards in one embed_images call (the engine batches them)
        spans, keys, captions, images = [], [], [], []
        for path in batch["path"]:
            path = str(path)
            start = len(keys)
            try:
                data = read_file(path)
            except OSError as e:  # reported like a bad sample; the other shards still count
                print(f"ray_embed: {path}: cannot read: {e}", file=sys.stderr)
                spans.append((path, None, 0))
                continue
            for key, image, caption in clip_wgpu.read_webdataset(data, name=path):
                keys.append(key)
                captions.append(caption)
                images.append(image if image is not None else b"")
            spans.append((path, start, len(keys)))
        emb, failed = self.clip.embed_images(images, errors="skip")
        emb = np.ascontiguousarray(emb, dtype=np.float32)
        bad = {i for i, _ in failed}
        for i, msg in failed:
            shard = next(p for p, a, b in spans if a is not None and a <= i < b)
            print(f"ray_embed: {shard}:{keys[i]}: {msg}", file=sys.stderr)
        # row r of `emb` is the r-th good sample
        row_of, r = {}, 0
        for i in range(len(keys)):
            if i not in bad:
                row_of[i] = r
                r += 1
        d = self.clip.embed_dim
        summary = []
        for (path, a, b), out in zip(spans, batch["output"]):
            out = str(out)
            if a is None:  # unreadable: no output file, so that --skip-existing tries it again
                summary.append({"shard": path, "output": "", "rows": 0, "bad": 0, "readable": False})
                continue
            good = [i for i in range(a, b) if i not in bad]
            values = pa.array(emb[[row_of[i] for i in good]].reshape(-1), type=pa.float32())
            table = pa.table(
                {
                    "input": pa.array([keys[i] for i in good], pa.string()),
                    "kind": pa.array(["image"] * len(good), pa.string()),
                    "shard": pa.array([path] * len(good), pa.string()),
                    "caption": pa.array([captions[i] for i in good], pa.string()),
                    "embedding": pa.FixedSizeListArray.from_arrays(values, d),
                }
            )
            write_parquet(table, out)
            summary.append({"shard": path, "output": out, "rows": len(good), "bad": b - a - len(good), "readable": True})
            self.rows += len(good)
        if self.stats:
            write_stats(self.stats, self.rows)
        return pa.Table.from_pylist(summary)


def filesystem(uri):
    """The pyarrow file system of a local path or a URI (s3://, gs://, file://), and the path in it."""
    import pyarrow.fs as pafs

    if "://" in uri:
        return pafs.FileSystem.from_uri(uri)
    return pafs.LocalFileSystem(), os.path.abspath(uri)


def read_file(uri):
    """The bytes of a local path or a URI."""
    fs, path = filesystem(uri)
    with fs.open_input_stream(path) as f:
        return f.read()


def write_parquet(table, uri):
    """Writes TABLE to a local path or a URI whole or not at all: into a hidden temporary name
    beside it (readers of the directory skip names starting with a dot), then renamed."""
    import pyarrow.parquet as pq

    fs, path = filesystem(uri)
    parent, name = path.rsplit("/", 1)
    fs.create_dir(parent, recursive=True)
    tmp = f"{parent}/.{name}.{os.getpid()}.tmp"
    pq.write_table(table, tmp, filesystem=fs)
    fs.move(tmp, path)


def output_of(shard, root, output):
    """The Parquet file a shard's rows go to: its path under the shards' directory, with
    ``.parquet`` for ``.tar``, under OUTPUT (so shards of the same name in different
    subdirectories do not collide)."""
    rel = shard[len(root):].lstrip("/") if shard.startswith(root) else shard.rsplit("/", 1)[-1]
    return output.rstrip("/") + "/" + (rel[: -len(".tar")] if rel.endswith(".tar") else rel) + ".parquet"


def list_shards(uri):
    """The directory and the ``.tar`` files under it (local or a URI), sorted, as paths or URIs."""
    import pyarrow.fs as pafs

    fs, root = filesystem(uri)
    info = fs.get_file_info(root)
    if info.type == pafs.FileType.File:
        return scheme_of(uri) + root.rsplit("/", 1)[0], [scheme_of(uri) + root]
    if info.type != pafs.FileType.Directory:
        raise SystemExit(f"ray_embed: {uri}: no such file or directory")
    return scheme_of(uri) + root, files_under(fs, root, scheme_of(uri), ".tar")


def scheme_of(uri):
    """``s3://`` for ``s3://bucket/x``; empty for a local path."""
    return uri.split("://", 1)[0] + "://" if "://" in uri else ""


def files_under(fs, root, scheme, suffix):
    """The files ending in SUFFIX anywhere under the directory ROOT of FS, sorted, with SCHEME."""
    import pyarrow.fs as pafs

    found = fs.get_file_info(pafs.FileSelector(root, recursive=True))
    return sorted(scheme + f.path for f in found if f.type == pafs.FileType.File and f.path.endswith(suffix))


def write_stats(directory, rows):
    """This actor's peak resident memory (VmHWM) and rows so far, as DIRECTORY/actor-PID.json."""
    import json

    peak_kb = 0
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    peak_kb = int(line.split()[1])
    except OSError:  # not Linux
        import resource

        peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, f"actor-{os.getpid()}.json"), "w") as f:
        json.dump({"pid": os.getpid(), "peak_rss_mb": peak_kb / 1024, "rows": rows}, f)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shards", required=True, help="a directory of .tar shards (or a path/URI Ray Data reads)")
    p.add_argument("--output", required=True, help="the directory the Parquet files are written to")
    p.add_argument("--model", default=None, help="checkpoint path or name (default: $CLIP_WGPU_MODEL, the HF cache)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "gpu"])
    p.add_argument("--precision", default="auto")
    p.add_argument("--concurrency", type=int, default=2, help="actors, each with one Clip")
    p.add_argument("--num-gpus", type=float, default=0, help="GPUs per actor (0: none)")
    p.add_argument("--num-cpus", type=float, default=1, help="CPUs Ray reserves per actor")
    p.add_argument("--threads", type=int, default=None,
                   help="engine threads per actor (default: --num-cpus, the CPUs Ray reserves for it, so N actors "
                        "on a node do not oversubscribe its cores; 0: one per core)")
    p.add_argument("--shards-per-batch", type=int, default=2,
                   help="shards an actor embeds per call (fewer calls: less of Ray's per-task work)")
    p.add_argument("--skip-existing", action="store_true",
                   help="leave out shards whose Parquet file is already in --output (to resume an interrupted run; "
                        "a file is only there once it is complete)")
    p.add_argument("--stats", default=None, help="a directory where each actor writes its peak memory")
    p.add_argument("--address", default=None, help="a Ray cluster (default: $RAY_ADDRESS, else a local instance)")
    a = p.parse_args(argv)
    if a.threads is None:
        a.threads = max(1, int(a.num_cpus))

    import ray

    ray.init(address=a.address, ignore_reinit_error=True, log_to_driver=True)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    start = time.perf_counter()
    root, shards = list_shards(a.shards)
    if not shards:
        raise SystemExit(f"ray_embed: no .tar shards under {a.shards}")
    out_root = a.output if "://" in a.output else os.path.abspath(a.output)
    items = [{"path": s, "output": output_of(s, root, out_root)} for s in shards]
    if a.skip_existing:
        done = existing(out_root)
        items = [x for x in items if x["output"] not in done]
        print(f"ray_embed: {len(shards) - len(items)} of {len(shards)} shards already have their Parquet file")
    summary = []
    if items:
        # the paths only: each actor reads its shards and writes one Parquet file per shard, so
        # no read or write task (a worker process, a copy through the object store) runs beside
        # the actors; what comes back to the driver is one summary row per shard
        ds = ray.data.from_items(items)
        ds = ds.map_batches(
            Embedder,
            fn_constructor_args=(a.model, a.device, a.precision, a.threads, a.stats),
            batch_size=a.shards_per_batch,
            batch_format="numpy",
            # a fixed pool of N actors (`concurrency=N` in Ray releases before 2.51)
            compute=ray.data.ActorPoolStrategy(size=a.concurrency),
            num_cpus=a.num_cpus,
            num_gpus=a.num_gpus,
        )
        summary = ds.take_all()
    elapsed = time.perf_counter() - start
    rows = sum(x["rows"] for x in summary)
    bad = sum(x["bad"] for x in summary)
    unreadable = [x["shard"] for x in summary if not x["readable"]]
    print(
        f"ray_embed: {rows} rows in {elapsed:.2f} s ({rows / elapsed:.1f} images/s) from {len(summary)} shards "
        f"-> {a.output} ({bad} samples left out, {len(unreadable)} shards unreadable)"
    )
    # as the command line: 2 when some input was left out (each one named on stderr)
    return 2 if bad or unreadable else 0


def existing(uri):
    """The Parquet files already under an output directory (local or a URI)."""
    import pyarrow.fs as pafs

    fs, root = filesystem(uri)
    if fs.get_file_info(root).type != pafs.FileType.Directory:
        return set()
    return set(files_under(fs, root, scheme_of(uri), ".parquet"))


if __name__ == "__main__":
    sys.exit(main())
