#!/usr/bin/env python3
"""Builds CLIP checkpoints with random weights in the exact architecture, and their
reference outputs computed by HF transformers (the oracle).

    python3 scripts/make_fixtures.py tiny            # tests/fixtures/tiny (committed, ~4 MB)
    python3 scripts/make_fixtures.py tiny --check    # a fresh build equals the committed one
    python3 scripts/make_fixtures.py full DIR        # full-size ViT-B/32 in DIR (~600 MB, never committed)
    python3 scripts/make_fixtures.py full DIR --openai   # also DIR/openai/ in OpenAI naming
    python3 scripts/make_fixtures.py full DIR --preset ViT-L-14   # another full-size member
                                                     # (ViT-B-16, ViT-L-14 ~1.7 GB, ViT-L-14-336)
    python3 scripts/make_fixtures.py family          # tests/fixtures/family (committed, ~6 MB):
                                                     # tiny B/16 and L/14-336 grids, and the
                                                     # Pillow/torchvision crops at 336 px
    python3 scripts/make_fixtures.py family --check  # a fresh build equals the committed one
    python3 scripts/make_fixtures.py text768 DIR     # a 768-wide text tower, real vocabulary
                                                     # (~210 MB, never committed; CI makes it)

Every LayerNorm weight and bias and every linear bias is randomised (and the class
embedding, the logit scale), so that a wrong wiring cannot pass. Needs: torch,
transformers, ftfy and regex (OpenAI's tokenizer), Pillow, safetensors.

Reference inputs:
* synthetic pixels (model isolated from preprocessing): image b, flat CHW index i,
  value = 2·sin(0.001·i + b) + 0.1·cos(0.05·i), computed in float64, cast to float32;
* real images through transformers' PIL-backed CLIPImageProcessor at the model's image size
  (end to end); for the family fixtures also through OpenAI's `_transform(S)` (torchvision);
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


def hf_processor(size: int):
    """transformers' PIL-backed processor at `size` (shortest edge, then the size×size crop)."""
    return CLIPImageProcessorPil(size={"shortest_edge": size}, crop_size={"height": size, "width": size})


def openai_transform(size: int):
    """OpenAI CLIP's `_transform(size)`, verbatim (torchvision on PIL images)."""
    from torchvision.transforms import CenterCrop, Compose, InterpolationMode, Normalize, Resize, ToTensor

    return Compose([Resize(size, interpolation=InterpolationMode.BICUBIC), CenterCrop(size),
                    lambda im: im.convert("RGB"), ToTensor(),
                    Normalize((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))])


def embed_images(model: CLIPModel, pixels: np.ndarray) -> torch.Tensor:
    with torch.no_grad():
        img = model.get_image_features(pixel_values=torch.from_numpy(pixels))
        img = getattr(img, "pooler_output", img)
        return img / img.norm(dim=-1, keepdim=True)


def reference(model: CLIPModel, n_synthetic: int, image_files: list, texts: list, openai: bool = False) -> dict:
    cfg = model.config
    size = cfg.vision_config.image_size
    tok = OpenAITokenizer()
    ids = [tok.tokenize(t) for t in texts]
    ctx = cfg.text_config.max_position_embeddings
    tokens = torch.tensor([row + [0] * (ctx - len(row)) for row in ids])
    proc = hf_processor(size)
    real = [proc(images=Image.open(f), return_tensors="np")["pixel_values"][0] for f in image_files]
    pixels = np.concatenate([synthetic_pixels(n_synthetic, size), np.stack(real).astype(np.float32)])
    img = embed_images(model, pixels)
    with torch.no_grad():
        txt = model.get_text_features(input_ids=tokens)
        txt = getattr(txt, "pooler_output", txt)
        txt = txt / txt.norm(dim=-1, keepdim=True)
        logits = model.logit_scale.exp() * img @ txt.T
    extra = {}
    if openai:
        oa = openai_transform(size)
        px = np.stack([oa(Image.open(f)).numpy() for f in image_files]).astype(np.float32)
        extra["openai_image_embeds"] = embed_images(model, px).tolist()
    return {
        "n_synthetic": n_synthetic,
        "image_files": [str(Path(f).relative_to(ROOT)) for f in image_files],
        "texts": texts,
        "ids": ids,
        "logit_scale": float(model.logit_scale.detach()),
        "image_embeds": img.tolist(),
        "text_embeds": txt.tolist(),
        "logits_per_image": logits.tolist(),
        **extra,
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


# transformers configurations of the full-size family members (ViT-B/32 is CLIPConfig()).
PRESETS = {
    "ViT-B-32": {},
    "ViT-B-16": dict(vision_config=dict(patch_size=16)),
    "ViT-L-14": dict(
        text_config=dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12),
        vision_config=dict(hidden_size=1024, intermediate_size=4096, num_attention_heads=16, num_hidden_layers=24,
                           patch_size=14, image_size=224),
        projection_dim=768),
    "ViT-L-14-336": dict(
        text_config=dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12),
        vision_config=dict(hidden_size=1024, intermediate_size=4096, num_attention_heads=16, num_hidden_layers=24,
                           patch_size=14, image_size=336),
        projection_dim=768),
}


def full(dest: Path, openai: bool, preset: str = "ViT-B-32"):
    if preset not in PRESETS:
        sys.exit(f"unknown preset {preset!r} (one of {', '.join(PRESETS)})")
    torch.manual_seed(0)
    model = CLIPModel(CLIPConfig(**PRESETS[preset])).eval()
    randomise(model, 2)
    save_hf(model, dest)
    if openai:
        save_openai(model, dest / "openai")
    ref = reference(model, 8, real_images(), TEXTS)
    (dest / "reference.json").write_text(json.dumps(ref))
    print("wrote", dest, f"({preset})")


# The family fixtures: exact architectures (patch grid, image size, vocabulary) with tiny
# widths and depths, so that the committed files stay under 2 MB each.
TINY_TEXT = dict(hidden_size=8, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                 max_position_embeddings=77, vocab_size=49408)
FAMILY = {
    # ViT-B/16's grid: 14x14 patches of 16 on 224 px, 197 tokens
    "b16": (dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                 image_size=224, patch_size=16), TINY_TEXT, 16, 3),
    # ViT-L/14-336's grid: 24x24 patches of 14 on 336 px, 577 tokens
    "l14-336": (dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                     image_size=336, patch_size=14), TINY_TEXT, 16, 4),
}
# ViT-L/14's text tower (768 wide, 12 heads, MLP 3072; 2 of its 12 layers) on a tiny B/32
# vision tower: its f32 token table is 49408 x 768 x 4 = 152 MB.
TEXT768 = (dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                image_size=224, patch_size=32),
           dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=2, num_attention_heads=12,
                max_position_embeddings=77, vocab_size=49408), 768, 5)
# Real images for the family references (every decoder and colour mode), from tests/fixtures/images.
FAMILY_IMAGES = ["franz-kafka.jpg", "CLIP.png", "rgba_333x250.png", "p_310x205.png", "rgb_1000x37.png",
                 "rgb_427x640.png", "l_300x200.png", "cmyk_q90_320x240.jpg"]
# Inputs whose Pillow/torchvision crops at 336 px are stored (tests/preprocess.rs checks them).
CROP_IMAGES = ["rgb_640x427.png", "rgb_427x640.png", "rgba_333x250.png", "p_310x205.png", "la_300x200.png",
               "i16_300x200.png", "cmyk_q90_320x240.jpg", "rgb_1x1.png", "rgb_1000x37.png",
               "bw_1bit_301x203.png", "franz-kafka.jpg", "CLIP.png", "l_trns_300x200.png", "trns_260x190.gif",
               "rgb16_130x90.png"]
CROP_SIZE = 336


def small_model(vision: dict, text: dict, projection: int, seed: int) -> CLIPModel:
    torch.manual_seed(0)
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=projection)).eval()
    randomise(model, seed)
    round_for_all_dtypes(model)
    return model


def family_member(out: Path, spec: tuple, openai: bool):
    model = small_model(*spec)
    save_hf(model, out / "hf")
    if openai:
        save_openai(model, out / "openai-f16", torch.float16)
    ref = reference(model, 2, [IMAGES / f for f in FAMILY_IMAGES], TEXTS, openai=True)
    (out / "reference.json").write_text(json.dumps(ref))


def to_u8(t: np.ndarray) -> np.ndarray:
    """CHW normalised float32 -> HWC u8, asserting each value is exactly normalize(u8)."""
    mean = (0.48145466, 0.4578275, 0.40821073)
    std = (0.26862954, 0.26130258, 0.27577711)
    x = (np.arange(256, dtype=np.float64) * (1 / 255)).astype(np.float32)
    out = np.zeros(t.shape[1:] + (3,), np.uint8)
    for c in range(3):
        lut = (x - np.float32(mean[c])) / np.float32(std[c])
        idx = np.clip(np.searchsorted(lut, t[c]), 0, 255)
        assert np.array_equal(lut[idx], t[c]), "tensor value not of the form normalize(u8)"
        out[..., c] = idx
    return out


def crops(out: Path, size: int):
    """The u8 crops each reference normalised at `size` px: `<file>.hf.png`, and
    `<file>.openai.png` where OpenAI's differs; `crops.json` lists them."""
    out.mkdir(parents=True, exist_ok=True)
    hf, oa = hf_processor(size), openai_transform(size)
    entries = []
    for name in CROP_IMAGES:
        path = IMAGES / name
        c_hf = to_u8(np.asarray(hf(images=Image.open(path), return_tensors="np")["pixel_values"][0], np.float32))
        c_oa = to_u8(oa(Image.open(path)).numpy().astype(np.float32))
        assert c_hf.shape == (size, size, 3)
        Image.fromarray(c_hf).save(out / f"{name}.hf.png", optimize=True)
        same = bool(np.array_equal(c_hf, c_oa))
        if not same:
            Image.fromarray(c_oa).save(out / f"{name}.openai.png", optimize=True)
        entries.append({"file": name, "openai_same_as_hf": same})
    (out / "crops.json").write_text(json.dumps({"size": size, "images": entries}, indent=1))


def family(out: Path):
    for name, spec in FAMILY.items():
        family_member(out / name, spec, openai=True)
    crops(out / f"crops{CROP_SIZE}", CROP_SIZE)
    print("wrote", out)


def text768(out: Path):
    family_member(out, TEXT768, openai=False)
    print("wrote", out)


def check_family():
    """Regenerates the family fixtures in a temporary directory and compares them with the
    committed ones: tensors bit for bit, crops pixel for pixel, references within 2e-6."""
    import tempfile
    from safetensors.torch import load_file

    committed = ROOT / "tests" / "fixtures" / "family"
    with tempfile.TemporaryDirectory() as tmp:
        family(Path(tmp))
        for name in FAMILY:
            for sub, f in (("hf", "model.safetensors"), ("openai-f16", "open_clip_model.safetensors")):
                a = load_file(str(committed / name / sub / f))
                b = load_file(str(Path(tmp) / name / sub / f))
                assert a.keys() == b.keys(), f"{name}/{sub}: tensor names differ"
                for k in a:
                    assert torch.equal(a[k], b[k]), f"{name}/{sub}: tensor {k} differs"
            ra = json.loads((committed / name / "reference.json").read_text())
            rb = json.loads((Path(tmp) / name / "reference.json").read_text())
            assert ra["ids"] == rb["ids"] and ra["image_files"] == rb["image_files"], f"{name}: inputs differ"
            for k in ("image_embeds", "text_embeds", "logits_per_image", "openai_image_embeds"):
                a, b = np.array(ra[k]), np.array(rb[k])
                d, scale = np.abs(a - b).max(), max(1.0, np.abs(a).max())
                assert d <= 2e-6 * scale, f"{name}: reference {k} differs by {d} (scale {scale})"
        c = f"crops{CROP_SIZE}"
        assert (committed / c / "crops.json").read_text() == (Path(tmp) / c / "crops.json").read_text()
        for f in sorted(p.name for p in (Path(tmp) / c).glob("*.png")):
            a = np.asarray(Image.open(committed / c / f))
            b = np.asarray(Image.open(Path(tmp) / c / f))
            assert np.array_equal(a, b), f"{c}/{f} differs"
    print("family fixtures: committed files match a fresh build")


if __name__ == "__main__":
    args = sys.argv[1:]
    preset = "ViT-B-32"
    if "--preset" in args:
        i = args.index("--preset")
        if i + 1 >= len(args):
            sys.exit("--preset needs a name (" + ", ".join(PRESETS) + ")")
        preset = args[i + 1]
        del args[i:i + 2]
    if len(args) >= 2 and args[0] == "tiny" and args[1] == "--check":
        check_tiny()
    elif len(args) >= 1 and args[0] == "tiny":
        tiny(ROOT / "tests" / "fixtures" / "tiny")
    elif len(args) >= 2 and args[0] == "family" and args[1] == "--check":
        check_family()
    elif len(args) >= 1 and args[0] == "family":
        family(ROOT / "tests" / "fixtures" / "family")
    elif len(args) >= 2 and args[0] == "text768":
        text768(Path(args[1]))
    elif len(args) >= 2 and args[0] == "full":
        full(Path(args[1]), "--openai" in args, preset)
    else:
        sys.exit(__doc__)
