#!/usr/bin/env bash
# clip-wgpu's device check: everything a GPU session measures, in one command that builds
# nothing. `cargo xtask device-pack DIR` copies this script to DIR/check.sh beside the packed
# binaries (DIR/bin.tar.xz) and the Vulkan loader (DIR/lib/); on the GPU machine:
#
#     DIR/check.sh OUT [--quick]
#
# writes OUT/summary.json (keys: adapter, gemm, validate, towers, tune, startup_s, steps, quick)
# and the raw logs: info.txt, selfcheck.txt, gemm.txt, validate.txt, tune.txt, towers.txt,
# startup.txt, check.log, plus gpu-tune.json (the matmul tile table `clip-wgpu tune` measured
# and cached there: 10 files, what the device tool brings back). `--quick` (CI, on lavapipe or any
# adapter found) runs every step on small shapes and the tiny test model, so the full run cannot
# fail for a reason that shows on lavapipe. Steps are bounded by `timeout`; a failed step is
# recorded in summary.json's `steps` and the others still run. Exit status: 0 when every step
# passed, 1 otherwise.
set -uo pipefail

usage() { echo "usage: $0 OUT [--quick]" >&2; exit 2; }
[ $# -ge 1 ] || usage
OUT=$1
QUICK=0
[ "${2:-}" = "--quick" ] && QUICK=1
[ $# -le 2 ] || usage
[ $# -eq 1 ] || [ $QUICK = 1 ] || usage

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)  # device-pack rewrites this line for DIR's depth
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
T0=$(date +%s.%N)
LOG=$OUT/check.log
: > "$LOG"
STEPS=$OUT/.steps.tsv
: > "$STEPS"
elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.3f", b - a }'; }
say() { echo "[check $(date +%T)] $*" | tee -a "$LOG" >&2; }

# --- the binaries ------------------------------------------------------------------------
BIN=$(mktemp -d /tmp/clip-wgpu-check.XXXXXX)
if [ -f "$HERE/bin.tar.xz" ]; then
    tar -xJf "$HERE/bin.tar.xz" -C "$BIN" || { say "cannot unpack $HERE/bin.tar.xz"; exit 1; }
else
    cp "$HERE"/bin/* "$BIN"/ || { say "no binaries in $HERE (run cargo xtask device-pack)"; exit 1; }
fi
CLIP=$BIN/clip-wgpu
XTASK=$BIN/xtask
COOP=$BIN/gpu_coop

# --- Vulkan --------------------------------------------------------------------------------
# The NVIDIA machine has the driver but no loader, and its default ICD file names the GLX
# library, which fails headless: point the carried loader at the EGL one.
if [ -z "${VK_ICD_FILENAMES:-}" ] && { [ -e /proc/driver/nvidia/version ] || command -v nvidia-smi >/dev/null; }; then
    printf '{"file_format_version":"1.0.1","ICD":{"library_path":"libEGL_nvidia.so.0","api_version":"1.4.312"}}' > /tmp/clip-wgpu-nv.json
    export VK_ICD_FILENAMES=/tmp/clip-wgpu-nv.json
fi
if ! ldconfig -p 2>/dev/null | grep -q 'libvulkan.so.1 '; then
    export LD_LIBRARY_PATH=$HERE/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
fi
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp}
export CLIP_WGPU_REQUIRE_GPU=1
# the binaries were built in another copy of the tree: where this one is
export CLIP_WGPU_ROOT=$ROOT
cd "$ROOT"

# step NAME LIMIT_S CMD... : runs CMD under timeout, output appended to check.log, status kept
step() {
    local name=$1 limit=$2
    shift 2
    local t=$(date +%s.%N)
    say "step $name (limit ${limit}s): $*"
    timeout --kill-after=10 "$limit" "$@" >> "$LOG.$name" 2>&1
    local rc=$?
    local dt=$(elapsed "$t")
    printf '%s\t%s\t%s\n' "$name" "$rc" "$dt" >> "$STEPS"
    say "step $name: exit $rc in ${dt}s"
    return $rc
}
# the raw log of a step goes to OUT/FILE (several steps may share a file)
keep() { cat "$LOG.$1" >> "$OUT/$2"; rm -f "$LOG.$1"; }

if [ $QUICK = 1 ]; then
    BATCHES="1 7"
    VALIDATE_BATCHES="1 7"
    GEMM_BATCHES="1 4"
    GEMM_RUNS=2
    TOWER_RUNS=1
else
    BATCHES="1 32 256 1024"
    VALIDATE_BATCHES="1 7 256"
    GEMM_BATCHES="1 32 256 1024"
    GEMM_RUNS=10
    TOWER_RUNS=5
fi

# --- 1. the adapter ------------------------------------------------------------------------
: > "$OUT/info.txt"
step info 60 "$CLIP" info
keep info info.txt
echo "== info --json" >> "$OUT/info.txt"
step info-json 60 "$CLIP" info --json
keep info-json info.txt

# --- 2. the cooperative-matrix self-check and selection (own process: a lost device ends it)
: > "$OUT/selfcheck.txt"
step selfcheck 180 "$COOP" self_check --test-threads 1 --nocapture
keep selfcheck selfcheck.txt

# --- 3. GEMM TFLOP/s: every linear shape of both towers (rows = tokens × batch) -----------
# image (ViT-B/32, 50 tokens): qkv 768→2304, out 768→768, fc1 768→3072, fc2 3072→768;
# text (77 tokens padded): qkv 512→1536, out 512→512, fc1 512→2048, fc2 2048→512.
: > "$OUT/gemm.txt"
for b in $GEMM_BATCHES; do
    for shape in "$((50 * b))x768x2304" "$((50 * b))x768x768" "$((50 * b))x768x3072" "$((50 * b))x3072x768" \
        "$((77 * b))x512x1536" "$((77 * b))x512x512" "$((77 * b))x512x2048" "$((77 * b))x2048x512"; do
        if [ $QUICK = 1 ] && [ "$shape" != "$((50 * b))x768x768" ]; then continue; fi
        CLIP_WGPU_GEMM=$shape CLIP_WGPU_GEMM_RUNS=$GEMM_RUNS step "gemm-$shape" 120 \
            "$COOP" gemm_timing --ignored --nocapture --exact
        keep "gemm-$shape" gemm.txt
    done
done

# --- 4. a checkpoint: full-size random ViT-B/32 made here (weights cannot travel), or the tiny
#        test model in quick mode
if [ $QUICK = 1 ]; then
    MODEL=$ROOT/tests/fixtures/tiny/hf
else
    MODEL=/tmp/clip-wgpu-check-model
    if [ ! -f "$MODEL/config.json" ]; then
        step model 180 python3 -c "
from transformers import CLIPConfig, CLIPModel
import torch
torch.manual_seed(0)
CLIPModel(CLIPConfig()).save_pretrained('$MODEL')"
        keep model check.log
    fi
fi

# --- 5. every path against the CPU engine (plain and cooperative-matrix matmul) ------------
: > "$OUT/validate.txt"
for mm in plain auto; do
    echo "== CLIP_WGPU_GPU_MATMUL=$mm" >> "$OUT/validate.txt"
    CLIP_WGPU_GPU_MATMUL=$mm step "validate-$mm" 240 "$CLIP" validate --model "$MODEL" --batch-sizes $VALIDATE_BATCHES
    keep "validate-$mm" validate.txt
done

# --- 5b. the matmul tile autotuner: every tile candidate on every linear layer shape of both
#         towers, the table printed (tune.txt) and cached (gpu-tune.json, its own file: the
#         later steps run with the engine's default tiles)
: > "$OUT/tune.txt"
if [ $QUICK = 1 ]; then
    step tune 240 "$CLIP" tune --model "$MODEL" --batch-sizes 1,7 --quick --force --cache "$OUT/gpu-tune.json"
else
    step tune 300 "$CLIP" tune --model "$MODEL" --batch-sizes 1,32,256 --force --cache "$OUT/gpu-tune.json"
fi
keep tune tune.txt

# --- 6. both towers in f16, coop against plain; PyTorch fp16 (eager SDPA and torch.compile)
#        in the same run as clip-wgpu on the image tower at batch 1 and 256 (torch.compile
#        takes up to minutes per configuration, so not at every batch)
: > "$OUT/towers.txt"
TOWERS_DIR=$(mktemp -d /tmp/clip-wgpu-towers.XXXXXX)
for mm in auto plain; do
    CLIP_WGPU_GPU_MATMUL=$mm step "towers-$mm" 300 "$XTASK" bench --gpu-only --precision f16 --model "$MODEL" \
        --towers image,text --batch-sizes $BATCHES --num-runs $TOWER_RUNS --warmup 1 --compare none \
        --no-plots --output-dir "$TOWERS_DIR/$mm"
    keep "towers-$mm" towers.txt
    [ -f "$TOWERS_DIR/$mm/results.md" ] && cat "$TOWERS_DIR/$mm/results.md" >> "$OUT/towers.txt"
done
if [ $QUICK = 0 ]; then
    CLIP_WGPU_GPU_MATMUL=auto step towers-torch 360 "$XTASK" bench --gpu-only --precision f16 --model "$MODEL" \
        --towers image --batch-sizes 1 256 --num-runs $TOWER_RUNS --warmup 2 --compare torch-cuda,torch-compile \
        --no-plots --output-dir "$TOWERS_DIR/torch"
    keep towers-torch towers.txt
    [ -f "$TOWERS_DIR/torch/results.md" ] && cat "$TOWERS_DIR/torch/results.md" >> "$OUT/towers.txt"
fi

# --- 7. process start → first score printed, twice (the second with warm caches) ----------
: > "$OUT/startup.txt"
IMG=$ROOT/tests/fixtures/images/franz-kafka.jpg
for run in cold warm; do
    t=$(date +%s.%N)
    step "startup-$run" 120 "$CLIP" score --device gpu --model "$MODEL" --image "$IMG" --text "a photo of a man" --format json --quiet
    echo "$run $(elapsed "$t")" >> "$OUT/startup.txt"
    keep "startup-$run" startup.txt
done

# --- summary -------------------------------------------------------------------------------
SUMMARY=$HERE/device_summary.py
[ -f "$SUMMARY" ] || SUMMARY=$ROOT/scripts/device_summary.py
python3 "$SUMMARY" "$OUT" "$TOWERS_DIR" --quick "$QUICK" --elapsed "$(elapsed "$T0")" \
    2>&1 | tee -a "$LOG"
rc=${PIPESTATUS[0]}
rm -rf "$BIN" "$TOWERS_DIR" "$STEPS"
exit $rc
