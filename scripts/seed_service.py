#!/usr/bin/env python3
"""The reference service for `clip-wgpu serve`'s benchmarks, built the way the system it
replaces was: FastAPI/uvicorn + transformers' CLIPModel, one model call per request (no
batching across requests), concurrent requests overlapped only by asyncio (each model call in
the default thread pool, results gathered with asyncio.gather), tensors made per request.
It speaks the same JSON as clip-wgpu for the benchmarked endpoints:

    POST /score           {"images": [BASE64 | DATA_URL], "texts": [STR]}
                          -> {"scores": [{"image", "text", "score", "cosine", "logit"}], "errors": []}
    POST /v1/embeddings   {"model", "input": STR | [STR]}  (texts)  -> OpenAI's shape
    GET  /health

    python3 scripts/seed_service.py --model DIR --port 18081
"""

import argparse
import asyncio
import base64
import io
from pathlib import Path

import torch
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from PIL import Image
from transformers import CLIPImageProcessor, CLIPModel

app = FastAPI()
STATE = {}


def decode(s):
    if s.startswith("data:"):
        s = s.split(",", 1)[1]
    return Image.open(io.BytesIO(base64.b64decode(s))).convert("RGB")


def tokenize(texts):
    """Token ids [n, 77]: the checkpoint's tokenizer if it has one, else open_clip's (the
    same BPE; padding after the end token does not change CLIP's pooled output)."""
    if STATE["tokenizer"] is not None:
        return STATE["tokenizer"](texts, return_tensors="pt", padding=True, truncation=True, max_length=77)["input_ids"]
    return STATE["open_clip_tokenize"](texts)


@torch.inference_mode()
def score_pair(image, text):
    """One image and one text through the model: one call per pair, as the seed did."""
    m = STATE["model"]
    pixels = STATE["image_processor"](images=[image], return_tensors="pt")["pixel_values"]
    out = m(input_ids=tokenize([text]), pixel_values=pixels)
    img = out.image_embeds / out.image_embeds.norm(dim=-1, keepdim=True)
    txt = out.text_embeds / out.text_embeds.norm(dim=-1, keepdim=True)
    cos = float((img * txt).sum())
    return cos


@torch.inference_mode()
def embed_texts(texts):
    m = STATE["model"]
    ids = tokenize(texts)
    e = m.get_text_features(input_ids=ids)
    if not torch.is_tensor(e):  # transformers 5 returns an output object
        e = e.pooler_output if getattr(e, "pooler_output", None) is not None else e[0]
    e = e / e.norm(dim=-1, keepdim=True)
    return e.tolist(), int((ids != 0).sum())


@app.get("/health")
async def health():
    return {"status": "ok"}


@app.post("/score")
async def score(req: Request):
    body = await req.json()
    images = [decode(s) for s in body["images"]]
    texts = body["texts"]
    loop = asyncio.get_running_loop()
    pairs = [(i, t) for i in range(len(images)) for t in texts]
    cosines = await asyncio.gather(*[loop.run_in_executor(None, score_pair, images[i], t) for i, t in pairs])
    scale = STATE["scale"]
    scores = [
        {"image": i, "text": t, "score": 100 * max(c, 0.0), "cosine": c, "logit": scale * c}
        for (i, t), c in zip(pairs, cosines)
    ]
    return JSONResponse({"scores": scores, "errors": []})


@app.post("/v1/embeddings")
async def embeddings(req: Request):
    body = await req.json()
    texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
    loop = asyncio.get_running_loop()
    emb, tokens = await loop.run_in_executor(None, embed_texts, texts)
    data = [{"object": "embedding", "index": i, "embedding": e} for i, e in enumerate(emb)]
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    return JSONResponse({"object": "list", "data": data, "model": body.get("model", "clip"), "usage": usage})


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="HF checkpoint directory")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=18081)
    args = ap.parse_args()
    STATE["model"] = CLIPModel.from_pretrained(args.model).eval()
    STATE["image_processor"] = CLIPImageProcessor()
    STATE["tokenizer"] = None
    if (Path(args.model) / "tokenizer.json").exists():
        from transformers import CLIPTokenizerFast

        STATE["tokenizer"] = CLIPTokenizerFast.from_pretrained(args.model)
    else:
        import open_clip

        STATE["open_clip_tokenize"] = open_clip.get_tokenizer("ViT-B-32")
    STATE["scale"] = float(STATE["model"].logit_scale.detach().exp())
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
