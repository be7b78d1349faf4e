#!/usr/bin/env python3
"""Start -> first score: runs `clip-wgpu score` on one image and one text and measures, per run,
the time from the process's start to its first line of output (the score), then to its exit.

Cold and warm starts of the GPU engine's pipeline cache: `--cache cold` gives every run an
empty cache directory (CLIP_WGPU_PIPELINE_CACHE), `warm` one directory filled by a first,
unreported run, `off` none at all. Mesa's own on-disk shader cache (which llvmpipe/lavapipe
also keep) is cold in every run unless --mesa-cache warm (then one directory, filled by the
first, unreported run). Prints one JSON line per run and a summary (median, min, max), with the process's CPU time
(user + system): on a shared, loaded machine the wall times vary with the load, the CPU time
much less.

    python3 scripts/startup_time.py --bin target/release/clip-wgpu --model tests/fixtures/full \
        --device gpu --cache cold --runs 5
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time


def run_once(cmd, env):
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    first = p.stdout.readline()
    t_first = time.monotonic() - t0
    rest, err = p.communicate()
    t_exit = time.monotonic() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({p.returncode}):\n{err}")
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    return t_first, t_exit, cpu, first.strip()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default="target/release/clip-wgpu")
    ap.add_argument("--model", default="tests/fixtures/full")
    ap.add_argument("--image", default="tests/fixtures/images/CLIP.png")
    ap.add_argument("--text", default="a photo of a dog")
    ap.add_argument("--device", default="gpu", choices=["gpu", "cpu"])
    ap.add_argument("--precision", default=None, help="--precision for clip-wgpu (default: its own)")
    ap.add_argument("--cache", default="cold", choices=["cold", "warm", "off"])
    ap.add_argument("--mesa-cache", default="cold", choices=["cold", "warm"])
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()

    cmd = [a.bin, "score", "--model", a.model, "--image", a.image, "--text", a.text, "--device", a.device]
    if a.precision:
        cmd += ["--precision", a.precision]
    root = tempfile.mkdtemp(prefix="clip-wgpu-startup-")
    base = dict(os.environ)
    warm_dir = os.path.join(root, "warm")
    mesa_warm = os.path.join(root, "mesa-warm")

    def env_for(i):
        e = dict(base)
        if a.cache == "off":
            e["CLIP_WGPU_PIPELINE_CACHE"] = "off"
        elif a.cache == "warm":
            e["CLIP_WGPU_PIPELINE_CACHE"] = warm_dir
        else:
            e["CLIP_WGPU_PIPELINE_CACHE"] = os.path.join(root, f"cold-{i}")
        e["MESA_SHADER_CACHE_DIR"] = mesa_warm if a.mesa_cache == "warm" else os.path.join(root, f"mesa-{i}")
        return e

    if a.cache == "warm" or a.mesa_cache == "warm":
        run_once(cmd, env_for(-1))  # fills the warm directories
    firsts, exits, cpus = [], [], []
    for i in range(a.runs):
        t_first, t_exit, cpu, line = run_once(cmd, env_for(i))
        firsts.append(t_first)
        exits.append(t_exit)
        cpus.append(cpu)
        print(
            json.dumps(
                {"run": i, "first_output_s": round(t_first, 3), "exit_s": round(t_exit, 3), "cpu_s": round(cpu, 3), "line": line}
            ),
            flush=True,
        )
    load = os.getloadavg()
    print(
        json.dumps(
            {
                "device": a.device,
                "pipeline_cache": a.cache,
                "mesa_cache": a.mesa_cache,
                "runs": a.runs,
                "first_output_s": {
                    "median": round(statistics.median(firsts), 3),
                    "min": round(min(firsts), 3),
                    "max": round(max(firsts), 3),
                },
                "exit_s_median": round(statistics.median(exits), 3),
                "cpu_s": {"median": round(statistics.median(cpus), 3), "min": round(min(cpus), 3), "max": round(max(cpus), 3)},
                "loadavg": [round(x, 2) for x in load],
            }
        )
    )


if __name__ == "__main__":
    main()
