#!/usr/bin/env python3
"""Baselines for `cargo xtask bench`: PyTorch (transformers CLIPModel) and ONNX Runtime on
the same checkpoint, shapes and thread count as clip-wgpu. Installs nothing: needs torch,
transformers, onnxruntime, onnx (pip install torch transformers onnxruntime onnx).

Prints one JSON object per line: {"engine", "tower", "batch", "tokens", "times_s": [...]}.
"""
import argparse
import json
import os
import time
from pathlib import Path


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, help="HF CLIP directory")
    ap.add_argument("--engine", choices=["torch", "ort"], required=True)
    ap.add_argument("--tower", choices=["image", "text"], required=True)
    ap.add_argument("--batch", type=int, nargs="+", default=[32])
    ap.add_argument("--tokens", type=int, default=77, help="text length (padded to it)")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()

    import numpy as np
    import torch
    from transformers import CLIPModel

    torch.set_num_threads(a.threads)
    model = CLIPModel.from_pretrained(a.model).eval()

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

    def make_input(b):
        if a.tower == "image":
            return torch.randn(b, 3, 224, 224)
        ids = torch.zeros(b, 77, dtype=torch.long)
        ids[:, 0] = 49406
        ids[:, 1 : a.tokens - 1] = 320
        ids[:, a.tokens - 1] = 49407
        return ids

    wrapper = (Image if a.tower == "image" else Text)(model).eval()
    if a.engine == "torch":
        def run(x):
            with torch.inference_mode():
                wrapper(x)
    else:
        import onnxruntime as ort

        path = Path(a.model) / f"bench-{a.tower}.onnx"
        if not path.exists():
            name = "pixel_values" if a.tower == "image" else "input_ids"
            torch.onnx.export(wrapper, (make_input(2),), str(path), input_names=[name], output_names=["embeds"],
                              dynamic_axes={name: {0: "batch"}, "embeds": {0: "batch"}}, opset_version=17,
                              dynamo=False)
        so = ort.SessionOptions()
        so.intra_op_num_threads = a.threads
        so.inter_op_num_threads = 1
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        in_name = sess.get_inputs()[0].name

        def run(x):
            sess.run(None, {in_name: x.numpy()})

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
                          "tokens": a.tokens if a.tower == "text" else 50, "times_s": times}), flush=True)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    main()
