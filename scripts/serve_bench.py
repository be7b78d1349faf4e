#!/usr/bin/env python3
"""Load benchmark of `clip-wgpu serve` against the reference service (scripts/seed_service.py:
FastAPI + transformers, one model call per request), same machine, same checkpoint, same load
from `oha`, both measured in the same run and interleaved (reference, clip-wgpu, reference, …):

* 32 concurrent clients, one 640x480 JPEG and one caption each to /score;
* 32 concurrent clients, one caption each to /v1/embeddings;
* the same with one client (latency);
* overload: 256 clients against `--max-queue 64` (503s with Retry-After; the 200s sampled
  and checked equal to a calm answer; peak RSS from VmHWM);
* with `--infinity PATH/TO/infinity_emb` (from its own virtual environment: `pip install
  "infinity-emb[server,torch,vision]" aiohttp`), the peer that batches CLIP requests
  dynamically, on the same checkpoint (`--engine torch --device cpu`): 32 clients sending one
  data-URL image each (infinity's /embeddings_image, clip-wgpu's /v1/embeddings), then one
  caption each (/embeddings and /v1/embeddings). infinity reads the checkpoint through
  transformers' CLIPProcessor, so the script gives it a copy of the model directory (weights
  linked) with the processor's files and `architectures` in its config.

clip-wgpu runs with its embedding cache off (`--cache-entries 0`): every request is encoded,
as the reference does. Mean batch sizes come from /metrics. Only 127.0.0.1 is loaded; every
run is bounded in time.

    python3 scripts/serve_bench.py --bin target/release/clip-wgpu --model tests/fixtures/full \
        --out benchmarks/serve/RUN --duration 20
"""

import argparse
import base64
import io
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def jpeg_640x480():
    """A deterministic photo-like 640x480 JPEG (gradients, shapes and noise), quality 90."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFilter

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:480, 0:640]
    rgb = np.stack([(x * 0.3 + y * 0.1) % 256, (y * 0.4 + 60) % 256, (x * 0.2 + 128) % 256], -1)
    rgb = (rgb + rng.normal(0, 12, rgb.shape)).clip(0, 255).astype("uint8")
    im = Image.fromarray(rgb)
    d = ImageDraw.Draw(im)
    for _ in range(25):
        x0, y0 = rng.integers(0, 600), rng.integers(0, 440)
        d.ellipse([x0, y0, x0 + rng.integers(20, 160), y0 + rng.integers(20, 160)], fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    im = im.filter(ImageFilter.GaussianBlur(1.2))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def http(url, body=None, timeout=60):
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"} if body else {})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.status, r.read()


def wait_ready(url, proc, seconds=600):
    t0 = time.time()
    while time.time() - t0 < seconds:
        if proc.poll() is not None:
            sys.exit(f"{url}: the server exited ({proc.returncode})")
        try:
            if http(url + "/health", timeout=5)[0] == 200:
                return
        except Exception:
            pass
        time.sleep(0.5)
    sys.exit(f"{url}: not ready within {seconds} s")


def metrics(url):
    _, body = http(url + "/metrics")
    out = {}
    for line in body.decode().splitlines():
        m = re.match(r'^(clip_wgpu_batch_size_(?:sum|count))\{tower="(\w+)"\} (\S+)$', line)
        if m:
            out[(m.group(1), m.group(2))] = float(m.group(3))
    return out


def mean_batch(before, after, tower):
    """Mean batch size of `tower` between two /metrics readings, or None without a batch."""
    n = after.get(("clip_wgpu_batch_size_count", tower), 0) - before.get(("clip_wgpu_batch_size_count", tower), 0)
    s = after.get(("clip_wgpu_batch_size_sum", tower), 0) - before.get(("clip_wgpu_batch_size_sum", tower), 0)
    return s / n if n > 0 else None


def stop(procs):
    """SIGTERM to every process, then wait for each (killed past 60 s)."""
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()


def oha(url, body_file, clients, duration, extra=()):
    cmd = ["oha", "-z", f"{duration}s", "-c", str(clients), "-m", "POST", "-H", "Content-Type: application/json",
           "-D", str(body_file), "--no-tui", "--output-format", "json", "-t", "120s", "-w", *extra, url]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 300)
    if out.returncode != 0:
        sys.exit(f"oha failed: {out.stderr}")
    j = json.loads(out.stdout)
    s = j["summary"]
    lat = j.get("latencyPercentiles", {})
    ok = j.get("statusCodeDistribution", {}).get("200", 0)
    return {
        # answered 200 per second of the whole run (requests in flight at the deadline are
        # waited for, `-w`, not counted as aborted)
        "ok_per_s": ok / s["total"] if s.get("total") else None,
        "requests_per_s": s.get("requestsPerSec"),
        "success_rate": s.get("successRate"),
        "p50_ms": 1000 * lat["p50"] if lat.get("p50") is not None else None,
        "p99_ms": 1000 * lat["p99"] if lat.get("p99") is not None else None,
        "status": j.get("statusCodeDistribution", {}),
        "errors": j.get("errorDistribution", {}),
        "command": " ".join(cmd),
    }


def loadavg():
    return open("/proc/loadavg").read().split()[:3]


def rss_peak_mib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return None


def start_clip(args, port, extra=()):
    cmd = [args.bin, "serve", "--model", args.model, "--device", args.device, "--port", str(port),
           "--cache-entries", "0", *args.clip_args.split(), *extra]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(args.out / f"clip-{port}.log", "w"))
    return p, " ".join(cmd)


def infinity_model(model, out, python):
    """A directory infinity can load: the checkpoint's files linked, the config naming the
    architecture, and CLIPProcessor's files (OpenAI CLIP's tokenizer and image processor)."""
    out.mkdir(parents=True, exist_ok=True)
    for f in Path(model).iterdir():
        if f.name != "config.json" and not (out / f.name).exists():
            (out / f.name).symlink_to(f.resolve())
    cfg = json.loads((Path(model) / "config.json").read_text())
    cfg["architectures"] = ["CLIPModel"]
    (out / "config.json").write_text(json.dumps(cfg, indent=1))
    if not (out / "preprocessor_config.json").exists():
        code = ("import sys\nfrom transformers import CLIPTokenizerFast, CLIPImageProcessor, CLIPProcessor\n"
                "tok = CLIPTokenizerFast(tokenizer_file=sys.argv[1], bos_token='<|startoftext|>', "
                "eos_token='<|endoftext|>', unk_token='<|endoftext|>', pad_token='<|endoftext|>', model_max_length=77)\n"
                "CLIPProcessor(image_processor=CLIPImageProcessor(), tokenizer=tok).save_pretrained(sys.argv[2])\n")
        subprocess.run([python, "-c", code, str(ROOT / "weights/tokenizer.json"), str(out)], check=True)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default=str(ROOT / "target/release/clip-wgpu"))
    ap.add_argument("--model", default=str(ROOT / "tests/fixtures/full"))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--duration", type=int, default=20)
    ap.add_argument("--skip-overload", action="store_true")
    ap.add_argument("--clip-args", default="", help="more options for `clip-wgpu serve` (e.g. \"--precision f32\")")
    ap.add_argument("--skip-reference", action="store_true", help="no seed-design service runs")
    ap.add_argument("--infinity", help="infinity_emb executable: measure it too (see above)")
    ap.add_argument("--sweep-max-wait", help="comma-separated --max-wait-ms values: clip-wgpu alone under "
                    "/score and /v1/embeddings at 32 clients and /score at 1 client, for each")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    jpg = jpeg_640x480()
    (args.out / "image_640x480.jpg").write_bytes(jpg)
    score_body = args.out / "score.json"
    score_body.write_text(json.dumps({"images": [base64.b64encode(jpg).decode()], "texts": ["a photo of a cat"]}))
    emb_body = args.out / "embeddings.json"
    emb_body.write_text(json.dumps({"model": "clip", "input": "a photo of a cat"}))

    results = {"runs": []}
    if not args.skip_reference:
        clip_port, ref_port = 18080, 18081
        clip, clip_cmd = start_clip(args, clip_port)
        ref_cmd = [sys.executable, str(ROOT / "scripts/seed_service.py"), "--model", args.model, "--port", str(ref_port)]
        ref = subprocess.Popen(ref_cmd, stdout=subprocess.DEVNULL, stderr=open(args.out / "reference.log", "w"))
        results.update(clip_cmd=clip_cmd, ref_cmd=" ".join(ref_cmd))
        try:
            clip_url, ref_url = f"http://127.0.0.1:{clip_port}", f"http://127.0.0.1:{ref_port}"
            wait_ready(clip_url, clip)
            wait_ready(ref_url, ref)
            # warm both: a few of each request
            for url in (clip_url, ref_url):
                for _ in range(3):
                    http(url + "/score", score_body.read_bytes(), timeout=120)
                    http(url + "/v1/embeddings", emb_body.read_bytes(), timeout=120)
            scenarios = [("score", score_body, 32), ("embeddings", emb_body, 32), ("score", score_body, 1),
                         ("embeddings", emb_body, 1)]
            for name, body, c in scenarios:
                path = "/score" if name == "score" else "/v1/embeddings"
                for which, url in (("reference", ref_url), ("clip-wgpu", clip_url)):
                    before = metrics(clip_url) if which == "clip-wgpu" else None
                    la = loadavg()
                    r = oha(url + path, body, c, args.duration)
                    r.update(service=which, endpoint=path, clients=c, loadavg_before=la, loadavg_after=loadavg())
                    if before is not None:
                        after = metrics(clip_url)
                        for tower in ("image", "text"):
                            if (m := mean_batch(before, after, tower)) is not None:
                                r[f"mean_batch_{tower}"] = m
                    print(json.dumps({k: v for k, v in r.items() if k != "command"}), flush=True)
                    results["runs"].append(r)
            results["rss_peak_mib_clip"] = rss_peak_mib(clip.pid)
        finally:
            stop((clip, ref))
        results["clip_exit_code_after_sigterm"] = clip.returncode

    if args.infinity:
        inf_port, clip_port = 18083, 18084
        python = str(Path(args.infinity).parent / "python")
        inf_dir = infinity_model(args.model, args.out / "infinity-model", python)
        inf_cmd = [args.infinity, "v2", "--model-id", str(inf_dir), "--engine", "torch", "--device", "cpu",
                   "--port", str(inf_port)]
        inf = subprocess.Popen(inf_cmd, stdout=subprocess.DEVNULL, stderr=open(args.out / "infinity.log", "w"))
        clip, clip_cmd = start_clip(args, clip_port)
        results["infinity_cmd"] = " ".join(inf_cmd)
        results["infinity_clip_cmd"] = clip_cmd
        name = str(inf_dir).lstrip("/")
        url_img = "data:image/jpeg;base64," + base64.b64encode(jpg).decode()
        bodies = {
            ("infinity", "image"): ("/embeddings_image", {"model": name, "input": [url_img]}),
            ("infinity", "text"): ("/embeddings", {"model": name, "input": ["a photo of a cat"]}),
            ("clip-wgpu", "image"): ("/v1/embeddings", {"model": "clip", "input": url_img}),
            ("clip-wgpu", "text"): ("/v1/embeddings", {"model": "clip", "input": "a photo of a cat"}),
        }
        try:
            inf_url, clip_url = f"http://127.0.0.1:{inf_port}", f"http://127.0.0.1:{clip_port}"
            wait_ready(inf_url, inf)
            wait_ready(clip_url, clip)
            files = {}
            for (svc, kind), (path, body) in bodies.items():
                f = args.out / f"{svc}-{kind}.json"
                f.write_text(json.dumps(body))
                files[(svc, kind)] = f
                url = inf_url if svc == "infinity" else clip_url
                for _ in range(3):
                    http(url + path, f.read_bytes(), timeout=300)
            # the same embedding from both (the same model): a check that the comparison is fair
            e = {svc: json.loads(http((inf_url if svc == "infinity" else clip_url) + bodies[(svc, "image")][0],
                                      files[(svc, "image")].read_bytes(), timeout=300)[1])["data"][0]["embedding"]
                 for svc in ("infinity", "clip-wgpu")}
            if isinstance(e["clip-wgpu"], str):
                import numpy as np
                e["clip-wgpu"] = np.frombuffer(base64.b64decode(e["clip-wgpu"]), "<f4").tolist()
            results["infinity_vs_clip_max_abs_diff"] = max(abs(a - b) for a, b in zip(e["infinity"], e["clip-wgpu"]))
            for kind in ("image", "text"):
                for svc in ("infinity", "clip-wgpu"):
                    url = inf_url if svc == "infinity" else clip_url
                    path = bodies[(svc, kind)][0]
                    before = metrics(clip_url) if svc == "clip-wgpu" else None
                    la = loadavg()
                    r = oha(url + path, files[(svc, kind)], 32, args.duration)
                    r.update(service=svc, endpoint=path, items=kind, clients=32, loadavg_before=la, loadavg_after=loadavg())
                    if before is not None:
                        after = metrics(clip_url)
                        t = "image" if kind == "image" else "text"
                        if (m := mean_batch(before, after, t)) is not None:
                            r[f"mean_batch_{t}"] = m
                    print(json.dumps({k: v for k, v in r.items() if k != "command"}), flush=True)
                    results.setdefault("infinity_runs", []).append(r)
        finally:
            stop((inf, clip))

    if args.sweep_max_wait:
        port = 18085
        url = f"http://127.0.0.1:{port}"
        for ms in [int(x) for x in args.sweep_max_wait.split(",")]:
            p, cmd = start_clip(args, port, ("--max-wait-ms", str(ms)))
            try:
                wait_ready(url, p)
                for _ in range(3):
                    http(url + "/score", score_body.read_bytes(), timeout=120)
                for path, body, c in (("/score", score_body, 32), ("/v1/embeddings", emb_body, 32), ("/score", score_body, 1)):
                    r = oha(url + path, body, c, args.duration)
                    r.update(service=f"clip-wgpu --max-wait-ms {ms}", max_wait_ms=ms, endpoint=path, clients=c,
                             loadavg=loadavg())
                    print(json.dumps({k: v for k, v in r.items() if k != "command"}), flush=True)
                    results.setdefault("max_wait_sweep", []).append(r)
            finally:
                p.terminate()
                p.wait(timeout=60)

    if not args.skip_overload:
        port = 18082
        over, over_cmd = start_clip(args, port, ("--max-queue", "64"))
        try:
            url = f"http://127.0.0.1:{port}"
            wait_ready(url, over)
            _, calm = http(url + "/score", score_body.read_bytes(), timeout=120)
            calm = json.loads(calm)["scores"]
            # a checker alongside the load: every 200 it gets must equal the calm answer
            seen = {"ok": 0, "503": 0, "retry_after": 0, "wrong": 0, "other": 0}
            stop = time.time() + args.duration

            def check():
                while time.time() < stop:
                    try:
                        st, b = http(url + "/score", score_body.read_bytes(), timeout=120)
                        s = json.loads(b)["scores"]
                        same = len(s) == len(calm) and all(abs(x["cosine"] - y["cosine"]) <= 1e-6 for x, y in zip(s, calm))
                        seen["ok" if same else "wrong"] += 1
                    except urllib.error.HTTPError as e:
                        if e.code == 503:
                            seen["503"] += 1
                            seen["retry_after"] += e.headers.get("Retry-After") is not None
                        else:
                            seen["other"] += 1
                        time.sleep(0.05)
                    except Exception:
                        seen["other"] += 1

            t = threading.Thread(target=check)
            t.start()
            la = loadavg()
            r = oha(url + "/score", score_body, 256, args.duration)
            t.join()
            r.update(service="clip-wgpu --max-queue 64", endpoint="/score", clients=256, loadavg_before=la,
                     checker=seen, rss_peak_mib=rss_peak_mib(over.pid), server_cmd=over_cmd)
            print(json.dumps({k: v for k, v in r.items() if k != "command"}), flush=True)
            results["overload"] = r
        finally:
            over.terminate()
            over.wait(timeout=60)
    results["machine"] = {"nproc": os.cpu_count(), "cpu": cpu_model()}
    (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {args.out / 'results.json'}")


def cpu_model():
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "?"


if __name__ == "__main__":
    main()
