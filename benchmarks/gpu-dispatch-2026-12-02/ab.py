"""Interleaved A/B of two clip-wgpu binaries on lavapipe: `embed --device gpu` over the same
inputs, 3 rounds of (old, new), wall time of each process (start-up included).

    python3 ab.py --texts-from texts32.txt        # 32 captions, one batch of 32
    python3 ab.py --image A.jpg --image B.jpg …    # images, one batch

Expects ./clip-old and ./clip-new (release builds of the two commits) and the full-size
random checkpoint at ../../tests/fixtures/full.
"""
import os
import statistics
import subprocess
import sys
import time

env = dict(os.environ, VK_ICD_FILENAMES="/usr/share/vulkan/icd.d/lvp_icd.x86_64.json", XDG_RUNTIME_DIR="/tmp")
res = {"old": [], "new": []}
for r in range(3):
    for name in ["old", "new"]:
        t = time.time()
        p = subprocess.run([f"./clip-{name}", "embed", "--model", "../../tests/fixtures/full", "--device", "gpu",
                            "--batch-size", "32", "--cache-entries", "0", *sys.argv[1:], "--format", "jsonl"],
                           env=env, capture_output=True, text=True)
        dt = time.time() - t
        assert p.returncode == 0, p.stderr[-2000:]
        res[name].append(dt)
        print(name, f"{dt:.2f} s", os.getloadavg(), flush=True)
for k, v in res.items():
    print(k, "median", f"{statistics.median(v):.2f} s", [f"{x:.2f}" for x in v])
