#!/usr/bin/env python3
"""Generate preprocessing test images and their reference outputs.

    python3 scripts/make_test_images.py tests/fixtures/images [--oracle DIR]

Writes, into the output directory:
  * input images made with Pillow (many sizes, modes and formats) plus a few corrupt files;
  * for every decodable input and each variant, the 224x224 RGB u8 image the reference fed to
    its normaliser, as `<name>.<variant>.png` (lossless); `manifest.json` records when the
    openai crop equals the hf one (then only the hf file is stored);
  * `<name>.<variant>.f32.npy` (CHW float32) for a couple of inputs, to check the normalisation
    end to end.

References (the arbiters):
  * hf:     transformers' PIL-backed processor (`CLIPImageProcessorPil` in transformers 5,
            `CLIPImageProcessor(use_fast=False)` in 4.x), called on `Image.open(path)`.
  * openai: OpenAI CLIP's `_transform(224)`, verbatim: torchvision `Compose([Resize(224,
            BICUBIC), CenterCrop(224), _convert_image_to_rgb, ToTensor(), Normalize(...)])`.
The u8 crop is recovered from each reference tensor by inverting the per-channel normalisation
(a bijection on 0..255); the script asserts that every tensor value is exactly one of the 256
normalised values, so `tensor == normalize(crop)` bit for bit.
"""
import argparse
import io
import json
import os
import shutil
import struct
import sys
import zlib

import numpy as np
from PIL import Image

MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)


def hf_processor():
    try:
        from transformers import CLIPImageProcessorPil  # transformers >= 5

        return CLIPImageProcessorPil()
    except ImportError:
        from transformers import CLIPImageProcessor  # transformers 4.x

        return CLIPImageProcessor(use_fast=False) if "use_fast" in CLIPImageProcessor.__init__.__code__.co_varnames else CLIPImageProcessor()


def openai_transform():
    from torchvision.transforms import CenterCrop, Compose, InterpolationMode, Normalize, Resize, ToTensor

    def _convert_image_to_rgb(image):
        return image.convert("RGB")

    return Compose(
        [
            Resize(224, interpolation=InterpolationMode.BICUBIC),
            CenterCrop(224),
            _convert_image_to_rgb,
            ToTensor(),
            Normalize(MEAN, STD),
        ]
    )


def lut():
    x = (np.arange(256, dtype=np.float64) * (1 / 255)).astype(np.float32)
    return np.stack([(x - np.float32(m)) / np.float32(s) for m, s in zip(MEAN, STD)])  # [3,256] f32


LUT = lut()


def tensor_to_u8(t):
    """CHW float32 tensor -> HWC u8, asserting each value is exactly a normalised u8."""
    t = np.asarray(t, dtype=np.float32)
    assert t.shape == (3, 224, 224), t.shape
    out = np.zeros((224, 224, 3), np.uint8)
    for c in range(3):
        idx = np.searchsorted(LUT[c], t[c])
        idx = np.clip(idx, 0, 255)
        assert np.array_equal(LUT[c][idx], t[c]), "tensor value not of the form normalize(u8)"
        out[..., c] = idx
    return out


def pattern(w, h, seed, noise_frac=0.05):
    """Gradients, hard edges (to exercise the bicubic overshoot and clipping) and a noise patch.
    Compresses well in PNG while covering all value ranges."""
    rs = np.random.RandomState(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.zeros((h, w, 3), np.float64)
    img[..., 0] = 255 * x / max(w - 1, 1)
    img[..., 1] = 255 * y / max(h - 1, 1)
    img[..., 2] = (128 + 127 * np.sin(x / 7.0 + y / 11.0)) // 8 * 8
    # hard-edged shapes
    cx, cy, r = w * 0.4, h * 0.55, min(w, h) * 0.3
    img[(x - cx) ** 2 + (y - cy) ** 2 < r * r] = (250, 20, 240)
    img[((x // max(1, w // 16)) + (y // max(1, h // 16))) % 2 == 0, 1] = 0
    img[(x > w * 0.7) & (y < h * 0.3)] = (255, 255, 255)
    img[(x > w * 0.75) & (x < w * 0.8)] = (0, 0, 0)
    # noise patch
    nw, nh = max(1, min(48, int(w * noise_frac ** 0.5))), max(1, min(48, int(h * noise_frac ** 0.5)))
    img[:nh, :nw] = rs.randint(0, 256, (nh, nw, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def alpha_pattern(w, h):
    y, x = np.mgrid[0:h, 0:w]
    a = (255 * x / max(w - 1, 1)).astype(np.uint8)
    a[(y // 9) % 3 == 0] = 0
    a[(y // 9) % 3 == 1] = np.where(x[(y // 9) % 3 == 1] % 5 == 0, 255, a[(y // 9) % 3 == 1])
    return a


def png_bomb_header(w, h):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def make_inputs(d, oracle):
    """Returns a list of (filename, kind) with kind in {'lossless', 'jpeg', 'lossy', 'corrupt'}."""
    items = []

    def save(name, im, kind="lossless", **kw):
        im.save(os.path.join(d, name), **kw)
        items.append((name, kind))

    # RGB PNG, sizes and aspect ratios
    for i, (w, h) in enumerate(
        [(1, 1), (2, 3), (223, 224), (224, 224), (225, 300), (224, 300), (300, 224), (1000, 37),
         (37, 1000), (640, 480), (640, 427), (427, 640), (1100, 733), (3000, 40), (100, 2500), (9, 500)]
    ):
        save(f"rgb_{w}x{h}.png", Image.fromarray(pattern(w, h, i)))
    base = pattern(300, 200, 100)
    save("l_300x200.png", Image.fromarray(base).convert("L"))
    la = Image.fromarray(base).convert("L")
    la.putalpha(Image.fromarray(alpha_pattern(300, 200)))
    save("la_300x200.png", la)
    rgba = Image.fromarray(pattern(333, 250, 101))
    rgba.putalpha(Image.fromarray(alpha_pattern(333, 250)))
    save("rgba_333x250.png", rgba)
    rgba2 = Image.fromarray(pattern(500, 227, 102))
    rgba2.putalpha(Image.fromarray(alpha_pattern(500, 227)[::-1].copy()))
    save("rgba_500x227.png", rgba2)
    opaque = Image.fromarray(pattern(260, 300, 103))
    opaque.putalpha(255)
    save("rgba_opaque_260x300.png", opaque)
    p = Image.fromarray(pattern(310, 205, 104)).quantize(200)
    save("p_310x205.png", p)
    pt = Image.fromarray(pattern(310, 205, 105)).quantize(100)
    save("p_trns_310x205.png", pt, transparency=5)
    p4 = Image.fromarray(pattern(250, 300, 106)).quantize(16)
    save("p4bit_250x300.png", p4, bits=4)
    save("bw_1bit_301x203.png", Image.fromarray(pattern(301, 203, 107)).convert("1", dither=Image.Dither.NONE))
    lk = Image.fromarray(base).convert("L")
    save("l_trns_300x200.png", lk, transparency=int(np.asarray(lk)[100, 150]))
    rk = Image.fromarray(pattern(300, 200, 108))
    save("rgb_trns_300x200.png", rk, transparency=(250, 20, 240))
    # 16-bit grayscale (opens as I;16): values over 255 clip in convert("RGB")
    y, x = np.mgrid[0:200, 0:300]
    i16 = ((x * 3 + y) % 400).astype(np.uint16)
    i16[50:80, 50:200] = 60000
    save("i16_300x200.png", Image.fromarray(i16))
    # 16-bit RGB PNG (Pillow keeps the high byte)
    rgb16 = pattern(130, 90, 109).astype(np.uint16) * 256 + np.random.RandomState(9).randint(0, 256, (90, 130, 3)).astype(np.uint16)
    raw = rgb16.astype(">u2")
    rows = b"".join(b"\x00" + raw[r].tobytes() for r in range(raw.shape[0]))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    with open(os.path.join(d, "rgb16_130x90.png"), "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 130, 90, 16, 2, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b""))
    items.append(("rgb16_130x90.png", "lossless"))
    # GIF (first frame; P), with and without transparency
    f0 = Image.fromarray(pattern(230, 180, 110)).quantize(64)
    f1 = Image.fromarray(pattern(230, 180, 111)).quantize(64)
    f0.save(os.path.join(d, "anim_230x180.gif"), save_all=True, append_images=[f1], duration=100, loop=0)
    items.append(("anim_230x180.gif", "lossless"))
    save("trns_260x190.gif", Image.fromarray(pattern(260, 190, 112)).quantize(32), transparency=3)
    # BMP, TIFF
    save("rgb_160x120.bmp", Image.fromarray(pattern(160, 120, 113)))
    save("p_160x120.bmp", Image.fromarray(pattern(160, 120, 114)).quantize(50))
    save("rgb_200x150.tiff", Image.fromarray(pattern(200, 150, 115)), compression="tiff_lzw")
    save("l_150x200.tiff", Image.fromarray(pattern(150, 200, 116)).convert("L"), compression="tiff_lzw")
    # WebP lossless and lossy
    save("rgb_lossless_300x200.webp", Image.fromarray(pattern(300, 200, 117)), lossless=True)
    wa = Image.fromarray(pattern(300, 200, 118))
    wa.putalpha(Image.fromarray(alpha_pattern(300, 200)))
    save("rgba_lossless_300x200.webp", wa, lossless=True)
    save("rgb_lossy_300x200.webp", Image.fromarray(pattern(300, 200, 119)), "lossy", quality=80)
    # JPEG
    save("q50_420_400x300.jpg", Image.fromarray(pattern(400, 300, 120)), "jpeg", quality=50, subsampling=2)
    save("q95_444_400x300.jpg", Image.fromarray(pattern(400, 300, 125)), "jpeg", quality=95, subsampling=0)
    save("q90_422_500x333.jpg", Image.fromarray(pattern(500, 333, 121)), "jpeg", quality=90, subsampling=1)
    save("gray_q85_400x300.jpg", Image.fromarray(pattern(400, 300, 122)).convert("L"), "jpeg", quality=85)
    save("cmyk_q90_320x240.jpg", Image.fromarray(pattern(320, 240, 123)).convert("CMYK"), "jpeg", quality=90)
    save("progressive_360x270.jpg", Image.fromarray(pattern(360, 270, 124)), "jpeg", quality=85, progressive=True)
    # oracle files
    if oracle:
        for name, kind in (("CLIP.png", "lossless"), ("franz-kafka.jpg", "jpeg")):
            # the committed copies stand in tests/fixtures/images already
            src = os.path.join(oracle, name)
            if os.path.exists(src) and os.path.abspath(src) != os.path.abspath(os.path.join(d, name)):
                shutil.copy(src, os.path.join(d, name))
            if os.path.exists(os.path.join(d, name)):
                items.append((name, kind))
    # corrupt inputs
    png_bytes = open(os.path.join(d, "l_300x200.png"), "rb").read()
    jpg_bytes = open(os.path.join(d, "gray_q85_400x300.jpg"), "rb").read()
    corrupt = {
        "corrupt_empty.png": b"",
        "corrupt_random.bin": np.random.RandomState(7).randint(0, 256, 4096).astype(np.uint8).tobytes(),
        "corrupt_text.txt": b"this is not an image\n" * 20,
        "corrupt_truncated.png": png_bytes[: len(png_bytes) // 2],
        "corrupt_truncated.jpg": jpg_bytes[: len(jpg_bytes) // 2],
        "corrupt_header_only.jpg": jpg_bytes[:600],
        "corrupt_bomb_100000x100000.png": png_bomb_header(100000, 100000),
        "corrupt_zero_width.png": png_bomb_header(0, 10),
    }
    for name, b in corrupt.items():
        with open(os.path.join(d, name), "wb") as f:
            f.write(b)
        items.append((name, "corrupt"))
    return items


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out_dir")
    here = os.path.dirname(os.path.abspath(__file__))
    # a folder with OpenAI's reference files (CLIP.png, franz-kafka.jpg,
    # expected_preprocessed_image.npy); by default the committed copies
    ap.add_argument("--oracle", default=os.path.join(here, "..", "tests", "fixtures", "oracle"))
    ap.add_argument("--tensors", default="", help="inputs whose f32 tensors are stored (.npy, 600 KB each)")
    args = ap.parse_args()
    d = args.out_dir
    os.makedirs(d, exist_ok=True)
    oracle = args.oracle if os.path.isdir(args.oracle) else None
    items = make_inputs(d, oracle)
    hf, oa = hf_processor(), openai_transform()
    keep_tensor = set(args.tensors.split(","))
    manifest = []
    for name, kind in items:
        entry = {"file": name, "kind": kind}
        path = os.path.join(d, name)
        if kind == "corrupt":
            try:
                with Image.open(path) as im:
                    im.load()
                entry["pil"] = "opened"
            except Exception as e:  # noqa: BLE001
                entry["pil"] = f"error: {type(e).__name__}"
            manifest.append(entry)
            continue
        im = Image.open(path)
        entry["pil_mode"] = im.mode
        entry["size"] = list(im.size)
        t_hf = np.asarray(hf(images=Image.open(path), return_tensors="np")["pixel_values"][0], np.float32)
        t_oa = oa(Image.open(path)).numpy().astype(np.float32)
        c_hf, c_oa = tensor_to_u8(t_hf), tensor_to_u8(t_oa)
        Image.fromarray(c_hf).save(os.path.join(d, name + ".hf.png"))
        entry["openai_same_as_hf"] = bool(np.array_equal(c_hf, c_oa))
        if not entry["openai_same_as_hf"]:
            Image.fromarray(c_oa).save(os.path.join(d, name + ".openai.png"))
            entry["hf_vs_openai_max_diff"] = int(np.abs(c_hf.astype(int) - c_oa.astype(int)).max())
        if name in keep_tensor:
            np.save(os.path.join(d, name + ".openai.f32.npy"), t_oa)
        manifest.append(entry)
        print(name, im.mode, im.size, "same" if entry["openai_same_as_hf"] else f"differ {entry['hf_vs_openai_max_diff']}")
    if oracle:
        exp = np.load(os.path.join(oracle, "expected_preprocessed_image.npy")).astype(np.float32)
        exp = exp.reshape(3, 224, 224)
        kafka = tensor_to_u8(exp)
        hf_crop = np.asarray(Image.open(os.path.join(d, "franz-kafka.jpg.hf.png")))
        # The oracle tensor is normalize(crop) exactly; store the crop only if it is not the
        # hf reference crop already stored (it is, as of Pillow 13 / transformers 5).
        if not np.array_equal(kafka, hf_crop):
            Image.fromarray(kafka).save(os.path.join(d, "franz-kafka.expected.png"))
        print("franz-kafka oracle crop == PIL crop:", np.array_equal(kafka, hf_crop))
    with open(os.path.join(d, "manifest.json"), "w") as f:
        json.dump({"normalize_table": [[float(v) for v in row] for row in LUT],
                   "pillow": Image.__version__ if hasattr(Image, "__version__") else __import__("PIL").__version__,
                   "images": manifest}, f, indent=1)
    total = sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))
    print(f"{len(manifest)} inputs, {total / 1e6:.2f} MB in {d}", file=sys.stderr)


if __name__ == "__main__":
    main()
