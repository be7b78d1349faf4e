#!/usr/bin/env python3
"""`clip-wgpu serve` against real clients: the official `openai` Python package
(`client.embeddings.create`, float and base64: the client asks for base64 by default and
decodes it itself) and `curl` with multipart/form-data. Every embedding must equal (<= 1e-6)
what `clip-wgpu embed` gives for the same inputs on the same device.

    python3 scripts/serve_clients_test.py --bin target/debug/clip-wgpu \
        --model tests/fixtures/tiny/hf --device cpu

Starts its own server on a free port of 127.0.0.1 and stops it (SIGTERM, expecting exit 0).
Exits non-zero on the first mismatch.
"""

import argparse
import base64
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import openai

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ["CLIP.png", "franz-kafka.jpg", "gray_q85_400x300.jpg"]
TEXTS = ["a photo of a dog", "a photo of a cat", "A DIAGRAM of CLIP"]
TOL = 1e-6


def img(name):
    return ROOT / "tests/fixtures/images" / name


def data_url(name):
    mime = "image/png" if name.endswith(".png") else "image/jpeg"
    return f"data:{mime};base64," + base64.b64encode(img(name).read_bytes()).decode()


def max_diff(a, b):
    assert len(a) == len(b), (len(a), len(b))
    return max(abs(x - y) for x, y in zip(a, b))


def cli_embed(args):
    cmd = [args.bin, "embed", "--model", args.model, "--device", args.device, "--format", "json", "--quiet"]
    for i in IMAGES:
        cmd += ["--image", str(img(i))]
    for t in TEXTS:
        cmd += ["--text", t]
    out = subprocess.run(cmd, capture_output=True, check=True, timeout=300)
    v = json.loads(out.stdout)
    return [x["embedding"] for x in v["images"]], [x["embedding"] for x in v["texts"]]


def start(args):
    p = subprocess.Popen(
        [args.bin, "serve", "--model", args.model, "--device", args.device, "--port", "0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    found = {}

    def read():
        for line in p.stderr:
            if line.startswith("listening on http://") and "addr" not in found:
                found["addr"] = line.strip().split("listening on ")[1]
            found.setdefault("lines", []).append(line)

    threading.Thread(target=read, daemon=True).start()
    t0 = time.time()
    while "addr" not in found:
        if p.poll() is not None or time.time() - t0 > 120:
            p.kill()
            sys.exit(f"the server did not start: {''.join(found.get('lines', []))}")
        time.sleep(0.05)
    return p, found["addr"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    ref_img, ref_txt = cli_embed(args)
    proc, base = start(args)
    try:
        client = openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0, timeout=120)
        checked = 0
        # float, base64 (decoded by the client), and the client's default (base64 on the wire)
        for fmt in ["float", "base64", None]:
            kw = {} if fmt is None else {"encoding_format": fmt}
            r = client.embeddings.create(model="clip", input=TEXTS + [data_url(i) for i in IMAGES], **kw)
            assert len(r.data) == len(TEXTS) + len(IMAGES)
            want = ref_txt + ref_img
            for d, w in zip(r.data, want):
                e = d.embedding
                if isinstance(e, str):  # the client leaves base64 as is when asked for it explicitly
                    raw = base64.b64decode(e)
                    import struct

                    e = list(struct.unpack(f"<{len(raw) // 4}f", raw))
                diff = max_diff(e, w)
                assert diff <= TOL, f"openai client ({fmt}) item {d.index}: differs from the CLI by {diff}"
                checked += 1
            assert r.usage.prompt_tokens > 0
        r = client.embeddings.create(model="clip", input=TEXTS[0], encoding_format="float")
        assert max_diff(r.data[0].embedding, ref_txt[0]) <= TOL
        # an error comes back as OpenAI's shape, which the client raises
        try:
            client.embeddings.create(model="clip", input=[])
            sys.exit("an empty input was accepted")
        except openai.BadRequestError as e:
            assert "input" in str(e), e

        # curl: multipart image files and text fields to /embed and /score
        cmd = ["curl", "-sS", "--max-time", "120", "-w", "\n%{http_code}"]
        for i in IMAGES:
            cmd += ["-F", f"image=@{img(i)}"]
        for t in TEXTS:
            cmd += ["-F", f"text={t}"]
        for endpoint in ["/embed", "/score"]:
            out = subprocess.run(cmd + [base + endpoint], capture_output=True, text=True, check=True, timeout=180)
            body, code = out.stdout.rsplit("\n", 1)
            assert code == "200", (endpoint, code, body)
            v = json.loads(body)
            if endpoint == "/embed":
                for k, w in enumerate(ref_img):
                    assert v["images"][k]["input"] == k
                    diff = max_diff(v["images"][k]["embedding"], w)
                    assert diff <= TOL, f"curl multipart image {k}: differs from the CLI by {diff}"
                    checked += 1
                for k, w in enumerate(ref_txt):
                    diff = max_diff(v["texts"][k]["embedding"], w)
                    assert diff <= TOL, f"curl multipart text {k}: differs from the CLI by {diff}"
                    checked += 1
            else:
                assert len(v["scores"]) == len(IMAGES) * len(TEXTS) and v["errors"] == []
                for s in v["scores"]:
                    c = sum(x * y for x, y in zip(ref_img[s["image"]], ref_txt[TEXTS.index(s["text"])]))
                    assert abs(s["cosine"] - c) <= 1e-5, (s, c)
                    checked += 1
        print(f"serve_clients_test ({args.device}): {checked} embeddings/scores equal to the CLI's (<= {TOL})")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            sys.exit("the server did not stop within 60 s of SIGTERM")
    assert rc == 0, f"the server exited {rc} after SIGTERM"


if __name__ == "__main__":
    main()
