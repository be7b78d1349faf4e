#!/usr/bin/env python3
"""Builds CLIP checkpoints with random weights in the exact architecture, and their
reference outputs computed by HF transformers (the oracle).

    python3 scripts/make_fixtures.py tiny            # tests/fixtures/tiny (committed, ~4 MB)
    python3 scripts/make_fixtures.py tiny --check    # a fresh build equals the committed one
    python3 scripts/make_fixtures.py full DIR        # full-size ViT-B/32 in DIR (~600 MB, never committed)
    python3 scripts/make_fixtures.py full DIR --openai   # also DIR/openai/ in OpenAI naming

Every LayerNorm weight and bias and every linear bias is randomised (and the class
embedding, the logit scale), so that a wrong wiring cannot pass. Needs: torch,
transformers, ftfy and regex (OpenAI's tokenizer), Pillow, safetensors.

Reference inputs:
* synthetic pixels (model isolated from preprocessing): image b, flat CHW index i,
  value = 2·sin(0.001·i + b) + 0.1·cos(0.05·i), computed in float64, cast to float32;
* real images through transformers' PIL-backed CLIPImageProcessor (end to end);
* texts through OpenAI's tokenizer (scripts/tokenizer_oracle.py), padded to 77 with 0 for
  transformers, which pools at the first EOT (the first position of the highest id).
"""
import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file
from transformers import CLIPConfig, CLIPModel
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
sys.path.insert(0, str(Path(__file__).resolve().parent))
from tokenizer_oracle import OpenAITokenizer  # OpenAI's own tokenizer, verbatim

ROOT = Path(__file__).resolve().parent.parent
ORACLE = ROOT.parent / "shared" / "oracle"
IMAGES = ROOT / "tests" / "fixtures" / "images"

TEXTS = [
    "a photo of a dog",
    "a photo of a cat",
    "A DIAGRAM of CLIP",
    "",
    "Franz Kafka, 1923.",
    "two   dogs\tplaying\nin the snow",
    "caf\u00e9 \u00fcber na\u00efve \u0394\u0399\u0391\u03a3\u03a9\u03a3",
    "\U0001f436\U0001f431 emoji! & &amp; &lt;3",
    "x",
    "the quick brown fox jumps over the lazy dog " * 12,  # > 77 tokens
    "a red apple on a wooden table",
    "An astronaut riding a horse, digital art",
    "<|endoftext|> inside text",
    "1234567890 !?.,;:'\"()[]{}",
    "\u732b\u306e\u5199\u771f",
    "a blurry photo of a street at night with neon lights and rain reflections",
]


def randomise(model: CLIPModel, seed: int):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            is_ln = any(k in name for k in ("layer_norm", "layrnorm", "layernorm"))
            if is_ln and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            elif name.endswith("bias"):
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
            elif name.endswith("class_embedding"):
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
            elif name == "logit_scale":
                p.fill_(math.log(1 / 0.07) + 0.3)


def round_for_all_dtypes(model: CLIPModel):
    """Makes every weight exactly representable in bf16 and f16, so the same reference
    serves the f32, f16 and bf16 files."""
    with torch.no_grad():
        for _, p in model.named_parameters():
            r = p.to(torch.bfloat16).to(torch.float32)
            r[r.abs() < 1e-5] = 0.0
            p.copy_(r)


def synthetic_pixels(n: int, size: int) -> np.ndarray:
    i = np.arange(3 * size * size, dtype=np.float64)
    return np.stack([2 * np.sin(0.001 * i + b) + 0.1 * np.cos(0.05 * i) for b in range(n)]).astype(
        np.float32
    ).reshape(n, 3, size, size)


def to_openai(sd: dict, cfg: CLIPConfig) -> dict:
    out = {}
    for tower, dst, n in (("vision_model", "visual.", cfg.vision_config.num_hidden_layers),
                          ("text_model", "", cfg.text_config.num_hidden_layers)):
        for i in range(n):
            s = f"{tower}.encoder.layers.{i}."
            d = f"{dst}transformer.resblocks.{i}."
            out[d + "ln_1.weight"] = sd[s + "layer_norm1.weight"]
            out[d + "ln_1.bias"] = sd[s + "layer_norm1.bias"]
            out[d + "attn.in_proj_weight"] = torch.cat([sd[s + f"self_attn.{p}_proj.weight"] for p in "qkv"])
            out[d + "attn.in_proj_bias"] = torch.cat([sd[s + f"self_attn.{p}_proj.bias"] for p in "qkv"])
            out[d + "attn.out_proj.weight"] = sd[s + "self_attn.out_proj.weight"]
            out[d + "attn.out_proj.bias"] = sd[s + "self_attn.out_proj.bias"]
            out[d + "ln_2.weight"] = sd[s + "layer_norm2.weight"]
            out[d + "ln_2.bias"] = sd[s + "layer_norm2.bias"]
            out[d + "mlp.c_fc.weight"] = sd[s + "mlp.fc1.weight"]
            out[d + "mlp.c_fc.bias"] = sd[s + "mlp.fc1.bias"]
            out[d + "mlp.c_proj.weight"] = sd[s + "mlp.fc2.weight"]
            out[d + "mlp.c_proj.bias"] = sd[s + "mlp.fc2.bias"]
    v = "vision_model."
    out["visual.class_embedding"] = sd[v + "embeddings.class_embedding"]
    out["visual.conv1.weight"] = sd[v + "embeddings.patch_embedding.weight"]
    out["visual.positional_embedding"] = sd[v + "embeddings.position_embedding.weight"]
    for a, b in (("ln_pre", "pre_layrnorm"), ("ln_post", "post_layernorm")):
        out[f"visual.{a}.weight"] = sd[f"{v}{b}.weight"]
        out[f"visual.{a}.bias"] = sd[f"{v}{b}.bias"]
    out["visual.proj"] = sd["visual_projection.weight"].T
    t = "text_model."
    out["token_embedding.weight"] = sd[t + "embeddings.token_embedding.weight"]
    out["positional_embedding"] = sd[t + "embeddings.position_embedding.weight"]
    out["ln_final.weight"] = sd[t + "final_layer_norm.weight"]
    out["ln_final.bias"] = sd[t + "final_layer_norm.bias"]
    out["text_projection"] = sd["text_projection.weight"].T
    out["logit_scale"] = sd["logit_scale"]
    return {k: v.contiguous() for k, v in out.items()}


def open_clip_config(cfg: CLIPConfig) -> dict:
    v, t = cfg.vision_config, cfg.text_config
    return {"model_cfg": {
        "embed_dim": cfg.projection_dim,
        "quick_gelu": v.hidden_act == "quick_gelu",
        "vision_cfg": {"image_size": v.image_size, "layers": v.num_hidden_layers, "width": v.hidden_size,
                       "patch_size": v.patch_size, "head_width": v.hidden_size // v.num_attention_heads},
        "text_cfg": {"context_length": t.max_position_embeddings, "vocab_size": t.vocab_size,
                     "width": t.hidden_size, "heads": t.num_attention_heads, "layers": t.num_hidden_layers},
    }}


def save_hf(model: CLIPModel, out: Path, dtype=None):
    out.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    if dtype is not None:
        sd = {k: v.to(dtype) for k, v in sd.items()}
    save_file(sd, str(out / "model.safetensors"), metadata={"format": "pt"})
    model.config.to_json_file(str(out / "config.json"))


def save_openai(model: CLIPModel, out: Path, dtype=None):
    out.mkdir(parents=True, exist_ok=True)
    sd = to_openai({k: v.detach() for k, v in model.state_dict().items()}, model.config)
    if dtype is not None:
        sd = {k: v.to(dtype) for k, v in sd.items()}
    save_file(sd, str(out / "open_clip_model.safetensors"), metadata={"format": "pt"})
    (out / "open_clip_config.json").write_text(json.dumps(open_clip_config(model.config), indent=1))


def reference(model: CLIPModel, n_synthetic: int, image_files: list, texts: list) -> dict:
    cfg = model.config
    size = cfg.vision_config.image_size
    tok = OpenAITokenizer()
    ids = [tok.tokenize(t) for t in texts]
    ctx = cfg.text_config.max_position_embeddings
    tokens = torch.tensor([row + [0] * (ctx - len(row)) for row in ids])
    proc = CLIPImageProcessorPil()
    real = [proc(images=Image.open(f), return_tensors="np")["pixel_values"][0] for f in image_files]
    pixels = np.concatenate([synthetic_pixels(n_synthetic, size), np.stack(real).astype(np.float32)])
    with torch.no_grad():
        img = model.get_image_features(pixel_values=torch.from_numpy(pixels))
        txt = model.get_text_features(input_ids=tokens)
        img = getattr(img, "pooler_output", img)
        txt = getattr(txt, "pooler_output", txt)
        img = img / img.norm(dim=-1, keepdim=True)
        txt = txt / txt.norm(dim=-1, keepdim=True)
        logits = model.logit_scale.exp() * img @ txt.T
    return {
        "n_synthetic": n_synthetic,
        "image_files": [str(Path(f).relative_to(ROOT)) for f in image_files],
        "texts": texts,
        "ids": ids,
        "logit_scale": float(model.logit_scale.detach()),
        "image_embeds": img.tolist(),
        "text_embeds": txt.tolist(),
        "logits_per_image": logits.tolist(),
    }


def real_images() -> list:
    IMAGES.mkdir(parents=True, exist_ok=True)
    files = []
    for name in ("franz-kafka.jpg", "CLIP.png"):
        dst = IMAGES / name
        if not dst.exists():
            shutil.copy(ORACLE / name, dst)
        files.append(dst)
    return files


def tiny(out: Path):
    torch.manual_seed(0)
    cfg = CLIPConfig(
        text_config=dict(hidden_size=8, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                         max_position_embeddings=77, vocab_size=49408),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=224, patch_size=32),
        projection_dim=16,
    )
    model = CLIPModel(cfg).eval()
    randomise(model, 1)
    round_for_all_dtypes(model)
    save_hf(model, out / "hf")
    save_hf(model, out / "hf-bf16", torch.bfloat16)
    save_openai(model, out / "openai-f16", torch.float16)
    ref = reference(model, 3, real_images(), TEXTS)
    (out / "reference.json").write_text(json.dumps(ref))
    print("wrote", out)


def check_tiny():
    """Regenerates the tiny fixture in a temporary directory and compares it with the
    committed one: same tensors bit for bit, same reference outputs (within 2e-6 relative)."""
    import tempfile
    from safetensors.torch import load_file

    committed = ROOT / "tests" / "fixtures" / "tiny"
    with tempfile.TemporaryDirectory() as tmp:
        tiny(Path(tmp))
        for sub, name in (("hf", "model.safetensors"), ("hf-bf16", "model.safetensors"),
                          ("openai-f16", "open_clip_model.safetensors")):
            a, b = load_file(str(committed / sub / name)), load_file(str(Path(tmp) / sub / name))
            assert a.keys() == b.keys(), f"{sub}: tensor names differ"
            for k in a:
                assert torch.equal(a[k], b[k]), f"{sub}: tensor {k} differs"
        ra = json.loads((committed / "reference.json").read_text())
        rb = json.loads((Path(tmp) / "reference.json").read_text())
        assert ra["ids"] == rb["ids"] and ra["texts"] == rb["texts"], "reference ids differ"
        # torch's CPU kernels round differently from one ISA to the next (AVX2, AVX-512):
        # a few f32 ulps relative to the magnitude (logits reach ~14) are a different
        # machine, not a different fixture.
        for k in ("image_embeds", "text_embeds", "logits_per_image"):
            a, b = np.array(ra[k]), np.array(rb[k])
            d, scale = np.abs(a - b).max(), max(1.0, np.abs(a).max())
            assert d <= 2e-6 * scale, f"reference {k} differs by {d} (scale {scale})"
    print("tiny fixture: committed files match a fresh build")


def full(dest: Path, openai: bool):
    torch.manual_seed(0)
    model = CLIPModel(CLIPConfig()).eval()
    randomise(model, 2)
    save_hf(model, dest)
    if openai:
        save_openai(model, dest / "openai")
    ref = reference(model, 8, real_images(), TEXTS)
    (dest / "reference.json").write_text(json.dumps(ref))
    print("wrote", dest)


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "tiny" and sys.argv[2] == "--check":
        check_tiny()
    elif len(sys.argv) >= 2 and sys.argv[1] == "tiny":
        tiny(ROOT / "tests" / "fixtures" / "tiny")
    elif len(sys.argv) >= 3 and sys.argv[1] == "full":
        full(Path(sys.argv[2]), "--openai" in sys.argv)
    else:
        sys.exit(__doc__)
