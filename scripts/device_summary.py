#!/usr/bin/env python3
"""Reads the logs that scripts/device_check.sh wrote into OUT and writes OUT/summary.json.

Keys (read by scripts: keep them): `adapter` (the adapter that ran, from `info --json`),
`gemm` (one row per kernel and shape: m, k, n, kernel, median_ms, tflops), `validate` (one row
per adapter, matmul path, precision, tower and batch: max_abs_err, min_cosine; plus the worst
cosine), `towers` (the benchmark rows of both towers: engine, matmul path, precision, tower,
batch, items_per_s, median_ms), `tune` (the matmul tile table `clip-wgpu tune` measured: per
bucket precision, n, k, rows, timed_rows, the chosen tile and every candidate's ms), `startup_s` ({cold, warm}: process start to first score
printed), `steps` (name, exit status, seconds), `quick`, `elapsed_s`, `passed`.
Standard library only: it runs on the GPU machine's python3.
"""
import argparse
import glob
import json
import os
import re
import sys


def read(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


def adapter(out):
    text = read(os.path.join(out, "info.txt"))
    _, _, js = text.partition("== info --json\n")
    try:
        info = json.loads(js[js.index("{"):]) if "{" in js else {}
    except ValueError:
        return {"error": "info --json did not print JSON"}
    adapters = info.get("adapters", [])
    if not adapters:
        return {"error": "no GPU adapter found"}
    # the adapter `--device gpu` takes: the one `auto` picks, else the first
    chosen = next((a for a in adapters if a.get("index") == info.get("auto")), adapters[0])
    keys = ["name", "backend", "device_type", "driver", "driver_info", "shader_f16", "subgroup",
            "cooperative_matrix", "matmul_path", "max_storage_buffer_binding_size",
            "max_compute_workgroup_storage_size"]
    return {k: chosen.get(k) for k in keys if k in chosen}


GEMM = re.compile(r"^(?P<adapter>.*?) (?P<kernel>\S+): (?P<m>\d+)x(?P<k>\d+)x(?P<n>\d+): median (?P<ms>[\d.]+) ms "
                  r"over (?P<runs>\d+) runs, (?P<tflops>[\d.]+) TFLOP/s")


def gemm(out):
    rows = []
    for line in read(os.path.join(out, "gemm.txt")).splitlines():
        m = GEMM.match(line.strip())
        if m:
            mm, k, n, ms = int(m["m"]), int(m["k"]), int(m["n"]), float(m["ms"])
            # from the median time: the log rounds TFLOP/s to one decimal
            tflops = 2.0 * mm * k * n / (ms * 1e-3) / 1e12 if ms > 0 else None
            rows.append({"kernel": m["kernel"], "m": mm, "k": k, "n": n, "median_ms": ms, "runs": int(m["runs"]),
                         "tflops": tflops})
    return rows


VALIDATE = re.compile(r"^(?P<name>.{40}) (?P<prec>\S+)\s+(?P<tower>vision|text)\s+(?P<batch>\d+)\s+"
                      r"(?P<err>[-\d.e+]+)\s+(?P<cos>[-\d.]+)\s*$")


def validate(out):
    rows, errors, path = [], [], None
    for line in read(os.path.join(out, "validate.txt")).splitlines():
        if line.startswith("== CLIP_WGPU_GPU_MATMUL="):
            path = line.split("=", 1)[1]
            continue
        m = VALIDATE.match(line)
        if m:
            rows.append({"adapter": m["name"].strip(), "matmul": path, "precision": m["prec"], "tower": m["tower"],
                         "batch": int(m["batch"]), "max_abs_err": float(m["err"]), "min_cosine": float(m["cos"])})
        elif "error:" in line:
            errors.append(line.strip())
    worst = min((r["min_cosine"] for r in rows), default=None)
    return {"rows": rows, "errors": errors, "min_cosine": worst}


def towers(towers_dir):
    rows = []
    for path in sorted(glob.glob(os.path.join(towers_dir, "*", "results.json"))):
        matmul = os.path.basename(os.path.dirname(path))
        try:
            data = json.load(open(path))
        except ValueError:
            continue
        for r in data if isinstance(data, list) else data.get("rows", []):
            rows.append({"engine": r.get("engine"), "device": r.get("device"), "matmul": matmul,
                         "precision": r.get("precision"), "tower": r.get("tower"), "batch": r.get("batch"),
                         "items_per_s": r.get("items_per_s"), "median_ms": 1e3 * (r.get("median_s") or 0),
                         "peak_rss_bytes": r.get("peak_rss_bytes"), "gpu_pool_bytes": r.get("gpu_pool_bytes")})
    return rows


def startup(out):
    res = {}
    for line in read(os.path.join(out, "startup.txt")).splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] in ("cold", "warm"):
            try:
                res[parts[0]] = float(parts[1])
            except ValueError:
                pass
    return res


def tune(out):
    """The tile table `clip-wgpu tune` cached (gpu-tune.json): per bucket the chosen tile and
    every candidate's milliseconds."""
    try:
        with open(os.path.join(out, "gpu-tune.json")) as f:
            cache = json.load(f)
    except (OSError, ValueError):
        return []
    rows = []
    for a in cache.get("adapters", []):
        for e in a.get("table", {}).get("entries", []):
            rows.append({"adapter": a.get("key", {}).get("name"), "precision": e.get("precision"),
                         "n": e.get("n"), "k": e.get("k"), "rows": e.get("rows"), "timed_rows": e.get("timed_rows"),
                         "tile": e.get("tile"),
                         "ms": {t.get("tile"): t.get("ms") for t in e.get("timings", [])}})
    return rows


def steps(out):
    rows = []
    for line in read(os.path.join(out, ".steps.tsv")).splitlines():
        name, rc, secs = line.split("\t")
        rows.append({"name": name, "exit": int(rc), "seconds": float(secs)})
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("towers_dir")
    ap.add_argument("--quick", default="0")
    ap.add_argument("--elapsed", type=float, default=None)
    a = ap.parse_args()
    st = steps(a.out)
    s = {
        "adapter": adapter(a.out),
        "gemm": gemm(a.out),
        "validate": validate(a.out),
        "towers": towers(a.towers_dir),
        "tune": tune(a.out),
        "startup_s": startup(a.out),
        "steps": st,
        "quick": a.quick == "1",
        "elapsed_s": a.elapsed,
    }
    failed = [x["name"] for x in st if x["exit"] != 0]
    problems = []
    if failed:
        problems.append("steps failed: " + ", ".join(failed))
    if "error" in s["adapter"]:
        problems.append(s["adapter"]["error"])
    if not s["gemm"]:
        problems.append("no GEMM figure")
    if not s["validate"]["rows"]:
        problems.append("no validate row")
    elif s["validate"]["min_cosine"] < 0.9999:
        problems.append(f"validate: min cosine {s['validate']['min_cosine']} < 0.9999")
    if not any(r["engine"] == "clip-wgpu" for r in s["towers"]):
        problems.append("no tower figure")
    if len(s["startup_s"]) < 2:
        problems.append("no start-up figure")
    s["passed"] = not problems
    s["problems"] = problems
    with open(os.path.join(a.out, "summary.json"), "w") as f:
        json.dump(s, f, indent=1)
    print(f"summary: {os.path.join(a.out, 'summary.json')}: "
          f"{'passed' if s['passed'] else 'FAILED: ' + '; '.join(problems)}")
    return 0 if s["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
