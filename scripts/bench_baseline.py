#!/usr/bin/env python3
"""Baselines for `cargo xtask bench`: PyTorch (transformers CLIPModel) and ONNX Runtime on
the same checkpoint (any CLIP family member: the input size and widths come from its
config.json), shapes, token ids and thread count as clip-wgpu, and on a CUDA machine PyTorch
fp16 eager and torch.compile. Installs nothing:

    pip install -r scripts/requirements-bench.txt    # torch transformers onnxruntime onnx

Modes:
  --versions   one JSON line: python, torch, transformers, onnxruntime, onnx, numpy versions
               (null where missing).
  --worker     a persistent measurement process for one configuration (engine, tower, batch),
               driven by `cargo xtask bench` on stdin, so that its runs interleave with
               clip-wgpu's and its peak RSS is its own:
                 start    -> {"ready": true, "load_s", "engine", "adapter", "items"}
                 "warmup" -> {"ok": true}
                 "run"    -> {"time_s": T}             (one timed forward pass)
                 "stats"  -> {"peak_rss_bytes", "modes": {"": {"cpu_s", "wall_s"}}}
                 EOF      -> exit
  otherwise    one-shot: --runs timed runs, one JSON line {"engine", "tower", "batch",
               "tokens", "times_s"} per batch size.

Texts are always padded to 77 tokens (with the end-of-text id, as the HF tokenizer of
openai/clip-vit-base-patch32 pads), as the baselines' tokenizers do; --ids gives the batch's
token ids (a JSON list of lists), else every text is --tokens long.
"""
import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

SOT, EOT, CTX = 49406, 49407, 77


def versions():
    import platform

    out = {"python": platform.python_version()}
    for mod in ["torch", "transformers", "onnxruntime", "onnx", "numpy"]:
        try:
            out[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - missing or broken: reported as null
            out[mod] = None
    return out


def reply(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def cpu_seconds():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def build(a):
    """Returns (run(x), make_input(b), engine description)."""
    import torch
    from transformers import CLIPModel

    torch.set_num_threads(a.threads)
    cuda = a.engine in ("torch-cuda", "torch-compile")
    if cuda and not torch.cuda.is_available():
        raise RuntimeError(f"{a.engine} needs a CUDA device; torch sees none")
    dev = torch.device("cuda" if cuda else "cpu")
    dtype = torch.float16 if cuda else torch.float32
    # SDPA: PyTorch's fastest eager attention on CUDA
    kw = {"attn_implementation": "sdpa"} if cuda else {}
    model = CLIPModel.from_pretrained(a.model, **kw).eval().to(dev, dtype)

    class Image(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, pixel_values):
            e = self.m.get_image_features(pixel_values=pixel_values)
            e = getattr(e, "pooler_output", e)
            return e / e.norm(dim=-1, keepdim=True)

    class Text(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids):
            e = self.m.get_text_features(input_ids=input_ids)
            e = getattr(e, "pooler_output", e)
            return e / e.norm(dim=-1, keepdim=True)

    ids_given = json.loads(a.ids) if a.ids else None
    # the model's own input size (224 for ViT-B/32, B/16 and L/14, 336 for L/14-336)
    size = model.config.vision_config.image_size

    def make_input(b):
        if a.tower == "image":
            g = torch.Generator().manual_seed(0)
            return torch.randn(b, 3, size, size, generator=g).to(dev, dtype)
        ids = torch.full((b, CTX), EOT, dtype=torch.long)
        for i in range(b):
            seq = ids_given[i % len(ids_given)] if ids_given else [SOT] + [320] * (a.tokens - 2) + [EOT]
            ids[i, : len(seq)] = torch.tensor(seq[:CTX])
        return ids.to(dev)

    wrapper = (Image if a.tower == "image" else Text)(model).eval()
    if a.engine == "torch":
        def run(x):
            with torch.inference_mode():
                wrapper(x)

        return run, make_input, f"torch {torch.__version__} (CPU, {a.threads} threads)"
    if cuda:
        fwd = wrapper
        if a.engine == "torch-compile":
            # CUDA graphs: the fastest PyTorch configuration for small batches
            fwd = torch.compile(wrapper, mode="reduce-overhead")

        def run_cuda(x):
            with torch.inference_mode():
                fwd(x)
            torch.cuda.synchronize()

        how = "torch.compile reduce-overhead" if a.engine == "torch-compile" else "eager, SDPA"
        return run_cuda, make_input, f"torch {torch.__version__} ({torch.cuda.get_device_name()}, fp16, {how})"

    import onnxruntime as ort

    # the input size is the model's, fixed in the graph (one model per directory); the batch is dynamic
    path = Path(a.model) / f"bench-{a.tower}.onnx"
    if not path.exists():
        name = "pixel_values" if a.tower == "image" else "input_ids"
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        torch.onnx.export(wrapper, (make_input(2),), str(tmp), input_names=[name], output_names=["embeds"],
                          dynamic_axes={name: {0: "batch"}, "embeds": {0: "batch"}}, opset_version=17,
                          dynamo=False)
        os.replace(tmp, path)
    if a.engine == "ort-int8":
        # ONNX Runtime's own dynamic quantisation of the same graph: QInt8 weights (per tensor,
        # its default), activations quantised per call; MatMul/Gemm become MatMulInteger
        # (MLAS u8×s8 kernels: AVX2, AVX-VNNI, AVX512-VNNI or AMX as the CPU allows)
        from onnxruntime.quantization import QuantType, quantize_dynamic

        qpath = path.with_name(f"bench-{a.tower}-int8.onnx")
        if not qpath.exists():
            tmp = qpath.with_suffix(f".{os.getpid()}.tmp")
            quantize_dynamic(str(path), str(tmp), weight_type=QuantType.QInt8)
            os.replace(tmp, qpath)
        path = qpath
    so = ort.SessionOptions()
    so.intra_op_num_threads = a.threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    in_name = sess.get_inputs()[0].name

    def run_ort(x):
        sess.run(None, {in_name: x})

    def make_np(b):
        return make_input(b).numpy()

    what = "quantize_dynamic QInt8, " if a.engine == "ort-int8" else ""
    return run_ort, make_np, f"onnxruntime {ort.__version__} (CPU, {what}{a.threads} threads)"


def vision_tokens(model_dir):
    """Tokens per image (grid² + 1) from the checkpoint's config.json (transformers' defaults)."""
    cfg = json.loads((Path(model_dir) / "config.json").read_text()).get("vision_config", {})
    return (cfg.get("image_size", 224) // cfg.get("patch_size", 32)) ** 2 + 1


def worker(a):
    t0 = time.perf_counter()
    try:
        run, make_input, desc = build(a)
        x = make_input(a.batch[0])
    except Exception as e:  # noqa: BLE001 - reported to the driver
        reply({"error": f"{type(e).__name__}: {e}"})
        return 1
    adapter = "cpu"
    if a.engine in ("torch-cuda", "torch-compile"):
        import torch

        adapter = torch.cuda.get_device_name()
    reply({"ready": True, "load_s": time.perf_counter() - t0, "engine": desc, "adapter": adapter,
           "items": a.batch[0]})
    cpu = wall = 0.0
    for line in sys.stdin:
        cmd = line.split()
        if not cmd:
            continue
        if cmd[0] == "warmup":
            run(x)
            reply({"ok": True})
        elif cmd[0] == "run":
            c = cpu_seconds()
            t = time.perf_counter()
            run(x)
            dt = time.perf_counter() - t
            cpu += cpu_seconds() - c
            wall += dt
            reply({"time_s": dt})
        elif cmd[0] == "stats":
            # ru_maxrss is in KiB on Linux
            reply({"peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                   "modes": {"": {"cpu_s": cpu, "wall_s": wall}}})
        elif cmd[0] == "quit":
            break
        else:
            reply({"error": f"unknown command {cmd[0]!r}"})
    return 0


def one_shot(a):
    run, make_input, _ = build(a)
    for b in a.batch:
        x = make_input(b)
        for _ in range(a.warmup):
            run(x)
        times = []
        for _ in range(a.runs):
            t = time.perf_counter()
            run(x)
            times.append(time.perf_counter() - t)
        print(json.dumps({"engine": a.engine, "tower": a.tower, "batch": b,
                          "tokens": CTX if a.tower == "text" else vision_tokens(a.model), "times_s": times}),
              flush=True)
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--versions", action="store_true")
    ap.add_argument("--worker", action="store_true")
    ap.add_argument("--model", help="HF CLIP directory")
    ap.add_argument("--engine", choices=["torch", "ort", "ort-int8", "torch-cuda", "torch-compile"],
                    help="torch, ort: CPU f32; ort-int8: ONNX Runtime's quantize_dynamic (QInt8 weights) of "
                         "the same graph; torch-cuda: CUDA fp16 eager (SDPA); torch-compile: the same "
                         "through torch.compile(mode='reduce-overhead')")
    ap.add_argument("--tower", choices=["image", "text"])
    ap.add_argument("--batch", type=int, nargs="+", default=[32])
    ap.add_argument("--tokens", type=int, default=77, help="text length before padding to 77")
    ap.add_argument("--ids", help="JSON list of token id lists (the text batch)")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    if a.versions:
        print(json.dumps(versions()), flush=True)
        return 0
    if not (a.model and a.engine and a.tower):
        ap.error("--model, --engine and --tower are required")
    return worker(a) if a.worker else one_shot(a)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    sys.exit(main())
