#!/usr/bin/env python3
"""Generate the bad-input corpus of tests/bad_inputs.rs (and the fuzzers' seeds).

    python3 scripts/make_bad_corpus.py [tests/fixtures/bad] [--fuzz-seeds /tmp/seeds]

(`--fuzz-seeds DIR` also writes seed inputs for the fuzz targets into DIR/<target>/, which
`cargo fuzz cmin` then minimises into fuzz/corpus/<target>/.)

Deterministic (fixed seeds); needs Pillow and numpy. Writes into the output directory:

  images/      inputs the image pipeline must refuse with a named error (corrupt, truncated,
               empty, unknown formats, not images at all, decompression bombs whose headers
               claim enormous sizes: each a few hundred bytes on disk), and valid but unusual
               images (palette, alpha, 16-bit, CMYK, animated, interlaced) that must be scored,
               with Pillow's 224x224 crop (transformers' PIL CLIPImageProcessor rules) beside
               each as `<name>.hf.png`.
  texts/       text files for --texts-from (invalid UTF-8, NUL bytes, CRLF).
  tokenizers/  tokenizer.json files that are not CLIP's.
  model/       a micro HF CLIP checkpoint (f32, a few KB) with its config.json, and malformed
               safetensors files (bad header JSON, header length past the end, offsets out of
               range, unknown dtype, size/shape mismatch, ...).
  manifest.json  one entry per input: {"file", "kind", "expect"}: kind is "bad_image",
               "valid_image", "bad_safetensors", "bad_tokenizer", "texts"; expect is a substring
               the error message must contain (bad inputs).
"""
import io
import json
import os
import struct
import sys
import zlib

import numpy as np
from PIL import Image

OUT = sys.argv[1] if len(sys.argv) > 1 and not sys.argv[1].startswith("--") else os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "bad")
RNG = np.random.default_rng(20261128)
MANIFEST = []


def write(sub, name, data, kind, expect=None, **extra):
    d = os.path.join(OUT, sub)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)
    e = {"file": f"{sub}/{name}", "kind": kind}
    if expect is not None:
        e["expect"] = expect
    e.update(extra)
    MANIFEST.append(e)


def pil_bytes(img, fmt, **kw):
    b = io.BytesIO()
    img.save(b, fmt, **kw)
    return b.getvalue()


def tiff_le(entries, pad):
    """A little-endian TIFF: the header, `pad` zero bytes (the tags' data), then one directory
    of `entries` = (tag, type, count, value or offset), each value in the field's low bytes."""
    ifd = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHII", t, ty, c, v) for t, ty, c, v in entries) + struct.pack("<I", 0)
    return b"II*\x00" + struct.pack("<I", 8 + pad) + b"\0" * pad + ifd


def gradient(w, h, mode="RGB"):
    """A smooth, deterministic picture (compresses well; resampling exercises every tap)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = (127 + 127 * np.sin(x / 17.0 + y / 29.0)).astype(np.uint8)
    g = (127 + 127 * np.cos(x / 23.0 - y / 13.0)).astype(np.uint8)
    b = ((x * 255 / max(w - 1, 1) + y * 128 / max(h - 1, 1)) % 256).astype(np.uint8)
    img = Image.fromarray(np.stack([r, g, b], -1), "RGB")
    return img if mode == "RGB" else img.convert(mode)


# ---- PNG helpers -------------------------------------------------------------------------
def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png(w, h, depth=8, ctype=2, idat=b"", extra=b""):
    ihdr = struct.pack(">IIBBBBB", w, h, depth, ctype, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + extra + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


# ---- bad images --------------------------------------------------------------------------
def bad_images():
    base = gradient(48, 36)
    good_png = pil_bytes(base, "PNG")
    good_jpg = pil_bytes(base, "JPEG", quality=90)
    good_gif = pil_bytes(base.convert("P"), "GIF")
    good_webp = pil_bytes(base, "WEBP", quality=80)
    good_bmp = pil_bytes(base, "BMP")
    good_tiff = pil_bytes(base, "TIFF")

    write("images", "empty.jpg", b"", "bad_image", "empty file")
    write("images", "empty.png", b"", "bad_image", "empty file")
    for name, b in [
        ("truncated_half.png", good_png),
        ("truncated_half.jpg", good_jpg),
        ("truncated_half.gif", good_gif),
        ("truncated_half.webp", good_webp),
        ("truncated_half.bmp", good_bmp),
        ("truncated_half.tiff", good_tiff),
    ]:
        write("images", name, b[: len(b) // 2], "bad_image", "truncated")
    write("images", "truncated_header.png", good_png[:20], "bad_image", "truncated or corrupt")
    write("images", "truncated_header.jpg", good_jpg[:40], "bad_image", "truncated")
    # a PNG whose IDAT checksum is wrong (Pillow: "broken PNG file")
    p = bytearray(good_png)
    i = p.index(b"IDAT")
    n = struct.unpack(">I", p[i - 4 : i])[0]
    p[i + 4 + n] ^= 0xFF
    write("images", "bad_crc.png", bytes(p), "bad_image", "corrupt")
    # IHDR then IEND: no image data
    ihdr = struct.pack(">IIBBBBB", 10, 10, 8, 2, 0, 0, 0)
    write("images", "no_idat.png", b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""), "bad_image", "corrupt")
    # an IDAT that is not zlib
    write("images", "bad_zlib.png", png(10, 10, idat=b"this is not zlib data at all"), "bad_image", "corrupt")
    # an invalid colour type / depth combination
    write("images", "bad_colour_type.png", png(10, 10, depth=8, ctype=7, idat=zlib.compress(b"\0" * 40)), "bad_image", "corrupt")
    # JPEG: start-of-image then noise
    noise = RNG.integers(0, 256, 3000, dtype=np.uint8).tobytes()
    write("images", "soi_then_noise.jpg", b"\xff\xd8\xff\xe0" + noise, "bad_image", "corrupt")
    # JPEG with its entropy-coded data replaced by noise (header valid)
    sos = good_jpg.index(b"\xff\xda")
    write("images", "noise_scan.jpg", good_jpg[: sos + 14] + noise.replace(b"\xff", b"\x00") + b"\xff\xd9", "bad_image", None, note="decodes to garbage pixels, as Pillow does: must not panic")
    # GIF header with no frame
    write("images", "gif_no_frame.gif", b"GIF89a" + struct.pack("<HHBBB", 10, 10, 0, 0, 0) + b"\x3b", "bad_image", "corrupt")
    # BMP with a pixel-data offset past the end of the file
    bb = bytearray(good_bmp)
    bb[10:14] = struct.pack("<I", 10_000_000)
    write("images", "bmp_bad_offset.bmp", bytes(bb), "bad_image", "corrupt")
    # TIFF with its first IFD offset past the end of the file
    write("images", "tiff_bad_ifd.tiff", b"II*\x00" + struct.pack("<I", 0x7FFFFFF0) + b"\0" * 32, "bad_image", "corrupt")
    # zero-sized images
    write("images", "zero_height.bmp", good_bmp[:22] + struct.pack("<i", 0) + good_bmp[26:], "bad_image", "corrupt")
    write("images", "zero_size.gif", b"GIF89a" + struct.pack("<HHBBB", 0, 0, 0, 0, 0) + b",\0\0\0\0\0\0\0\0\0\x02\x02\x44\x01\0;", "bad_image", "corrupt")

    # formats we do not read, and files that are not images at all
    write("images", "icon.ico", pil_bytes(gradient(32, 32), "ICO"), "bad_image", "not supported")
    write("images", "image.qoi", b"qoif" + struct.pack(">IIBB", 10, 10, 3, 0) + b"\0" * 20, "bad_image", "not supported")
    write("images", "image.avif", b"\0\0\0\x1cftypavif\0\0\0\0avifmif1miaf" + b"\0" * 64, "bad_image", "not supported")
    write("images", "image.heic", b"\0\0\0\x18ftypheic\0\0\0\0mif1heic" + b"\0" * 64, "bad_image", "unrecognised file signature")
    write("images", "image.psd", b"8BPS\0\x01" + b"\0" * 64, "bad_image", "unrecognised file signature")
    write("images", "drawing.svg", b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>\n', "bad_image", "unrecognised file signature")
    write("images", "document.pdf", b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\ntrailer\n<<>>\n%%EOF\n", "bad_image", "unrecognised file signature")
    write("images", "notes.jpg", b"these are some notes, not a JPEG\n", "bad_image", "unrecognised file signature")
    write("images", "page.png", b"<!DOCTYPE html><html><body>404 Not Found</body></html>\n", "bad_image", "unrecognised file signature")
    write("images", "archive.png", b"PK\x03\x04" + b"\0" * 60, "bad_image", "unrecognised file signature")
    write("images", "program.jpg", b"\x7fELF\x02\x01\x01" + b"\0" * 57, "bad_image", "unrecognised file signature")
    write("images", "random.webp", RNG.integers(0, 256, 4096, dtype=np.uint8).tobytes(), "bad_image", "unrecognised file signature")
    write("images", "riff_not_webp.webp", b"RIFF\x24\0\0\0WAVEfmt " + b"\0" * 32, "bad_image", "unrecognised file signature")

    # decompression bombs: headers that claim enormous sizes (tiny on disk)
    one_row = zlib.compress(b"\0" * (1 + 100000 * 3))
    write("images", "bomb_png_100000x100000.png", png(100000, 100000, idat=one_row), "bad_image", "100000x100000", bomb=[100000, 100000])
    write("images", "bomb_png_rgba16_65535x65535.png", png(65535, 65535, depth=16, ctype=6, idat=zlib.compress(b"\0" * 1000)), "bad_image", "65535x65535", bomb=[65535, 65535])
    # PNG width of 2^31 - 1 (the largest the format allows)
    write("images", "bomb_png_2147483647x1.png", png(2**31 - 1, 1, depth=8, ctype=0, idat=zlib.compress(b"\0")), "bad_image", None, bomb=[2**31 - 1, 1])
    j = bytearray(good_jpg)
    sof = j.index(b"\xff\xc0")
    j[sof + 5 : sof + 9] = struct.pack(">HH", 65500, 65500)
    write("images", "bomb_jpeg_65500x65500.jpg", bytes(j), "bad_image", "65500x65500", bomb=[65500, 65500])
    gif = b"GIF89a" + struct.pack("<HHBBB", 65535, 65535, 0, 0, 0) + b"," + struct.pack("<HHHHB", 0, 0, 65535, 65535, 0) + b"\x02\x02\x44\x01\x00;"
    write("images", "bomb_gif_65535x65535.gif", gif, "bad_image", "65535x65535", bomb=[65535, 65535])
    # a small logical screen with a frame that claims 65535x65535 (and almost no data)
    gif = b"GIF89a" + struct.pack("<HHBBB", 10, 10, 0, 0, 0) + b"," + struct.pack("<HHHHB", 0, 0, 65535, 65535, 0) + b"\x02\x02\x44\x01\x00;"
    write("images", "bomb_gif_frame_65535x65535.gif", gif, "bad_image", "65535x65535", bomb=[65535, 65535])
    bmp = bytearray(good_bmp[:54])
    bmp[18:26] = struct.pack("<ii", 100000, 100000)
    write("images", "bomb_bmp_100000x100000.bmp", bytes(bmp) + b"\0" * 64, "bad_image", "100000x100000", bomb=[100000, 100000])
    # VP8L (lossless WebP) header: 14-bit width-1 and height-1 → 16384x16384
    bits = (16383) | (16383 << 14) | (0 << 28) | (0 << 29)
    vp8l = b"\x2f" + struct.pack("<I", bits) + b"\0" * 16
    webp = b"RIFF" + struct.pack("<I", 4 + 8 + len(vp8l)) + b"WEBP" + b"VP8L" + struct.pack("<I", len(vp8l)) + vp8l
    write("images", "bomb_webp_16384x16384.webp", webp, "bad_image", "16384x16384", bomb=[16384, 16384])
    # TIFF: one IFD, 100000x100000, 8-bit RGB, one strip
    entries = [(256, 4, 1, 100000), (257, 4, 1, 100000), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1), (273, 4, 1, 8), (277, 3, 1, 1), (278, 4, 1, 100000), (279, 4, 1, 16)]
    write("images", "bomb_tiff_100000x100000.tiff", tiff_le(entries, 16), "bad_image", "100000x100000", bomb=[100000, 100000])
    # TIFF tag arrays far larger than the file: 4 million strip offsets and byte counts in a
    # 138-byte file (the tiff crate sizes its arrays from the counts, up to 256 MiB each,
    # before reading them)
    entries = [(256, 4, 1, 64), (257, 4, 1, 64), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1), (273, 4, 4_000_000, 8), (277, 3, 1, 1), (278, 4, 1, 1), (279, 4, 4_000_000, 8)]
    write("images", "tiff_huge_tag_counts.tiff", tiff_le(entries, 16), "bad_image", "beyond the end")
    # TIFF tag arrays inside the file but all over the same bytes: 12 arrays of 10,000 values
    # in a 10 KB file
    entries = [(256, 4, 1, 64), (257, 4, 1, 64), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1), (277, 3, 1, 1), (278, 4, 1, 1)]
    entries += [(273, 1, 10_000, 8), (279, 1, 10_000, 8)] + [(40000 + i, 1, 10_000, 8) for i in range(10)]
    write("images", "tiff_overlapping_tags.tiff", tiff_le(entries, 10_000), "bad_image", "more than the")
    # a real zlib bomb within the default limit: 12000x12000 1-bit PNG (144 Mpx, ~18 KB on disk)
    row = b"\0" + b"\0" * 1500
    z = zlib.compressobj(9)
    data = b"".join(z.compress(row) for _ in range(12000)) + z.flush()
    write("images", "zbomb_png_12000x12000_1bit.png", png(12000, 12000, depth=1, ctype=0, idat=data), "bomb_within_default", "12000x12000", bomb=[12000, 12000])


# ---- valid but unusual images (scored; Pillow's crop recorded) ------------------------------
def hf_crop(img):
    """transformers' PIL CLIPImageProcessor up to the normaliser: convert_to_rgb (alpha or a
    transparency key → alpha_composite onto white), resize shortest side to 224 (BICUBIC,
    long side int(224*long/short)), center crop with floored offsets."""
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(bg, rgba).convert("RGB")
    elif img.mode != "RGB":
        img = img.convert("RGB")
    w, h = img.size
    if w <= h:
        tw, th = 224, int(224 * h / w)
    else:
        tw, th = int(224 * w / h), 224
    img = img.resize((tw, th), Image.BICUBIC)
    left, top = (tw - 224) // 2, (th - 224) // 2
    return img.crop((left, top, left + 224, top + 224))


def valid(name, data, note):
    write("images", name, data, "valid_image", None, note=note, reference=f"images/{name}.hf.png")
    img = Image.open(io.BytesIO(data))
    crop = hf_crop(img)
    with open(os.path.join(OUT, "images", name + ".hf.png"), "wb") as f:
        f.write(pil_bytes(crop, "PNG", optimize=True))


def valid_images():
    g = gradient(100, 73)
    rgba = g.convert("RGBA")
    a = np.array(rgba)
    yy, xx = np.mgrid[0:73, 0:100]
    a[..., 3] = ((xx * 255) // 99).astype(np.uint8)
    rgba = Image.fromarray(a, "RGBA")
    valid("rgba_gradient_alpha.png", pil_bytes(rgba, "PNG"), "RGBA with a horizontal alpha ramp")
    # 16-bit RGBA PNG (Pillow keeps the high byte: RGBA mode)
    a16 = (a.astype(np.uint16) * 257)
    raw = b"".join(b"\0" + a16[y].astype(">u2").tobytes() for y in range(73))
    valid("rgba16_100x73.png", png(100, 73, depth=16, ctype=6, idat=zlib.compress(raw, 9)), "16-bit RGBA")
    # interlaced (Adam7) RGB
    valid("interlaced_100x73.png", pil_bytes(g, "PNG", interlace=1) if False else _interlaced(g), "Adam7-interlaced RGB")
    # palette with a transparent index (PNG) and a 2-frame animated palette GIF with transparency
    p = g.quantize(64)
    valid("palette_trns_100x73.png", pil_bytes(p, "PNG", transparency=3), "palette PNG with a transparent index")
    frames = [g.quantize(32), g.transpose(Image.FLIP_LEFT_RIGHT).quantize(32)]
    valid(
        "anim_trns_100x73.gif",
        pil_bytes(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0, transparency=0),
        "animated GIF with transparency: the first frame is scored",
    )
    # L 1-bit PNG, LA PNG
    valid("bw_1bit_73x100.png", pil_bytes(gradient(73, 100, "L").point(lambda v: 255 if v > 127 else 0).convert("1"), "PNG"), "1-bit PNG")
    valid("la_100x73.png", pil_bytes(Image.merge("LA", [g.convert("L"), rgba.getchannel("A")]), "PNG"), "LA PNG")
    # CMYK JPEG (Adobe) and grayscale/1x1 JPEGs
    valid("cmyk_100x73.jpg", pil_bytes(g.convert("CMYK"), "JPEG", quality=92), "CMYK JPEG (Adobe APP14)")
    valid("one_pixel.jpg", pil_bytes(Image.new("RGB", (1, 1), (200, 30, 90)), "JPEG", quality=95), "1x1 JPEG")
    # TIFF in L and 16-bit grayscale, BMP 32-bit, palette BMP
    valid("l_100x73.tiff", pil_bytes(g.convert("L"), "TIFF"), "8-bit grayscale TIFF")
    i16 = Image.fromarray(np.array(g.convert("L")).astype(np.uint16) * 2)
    valid("i16_100x73.png", pil_bytes(i16, "PNG"), "16-bit grayscale PNG (I;16, values up to 510: clipped at 255)")
    valid("p_100x73.bmp", pil_bytes(g.quantize(16), "BMP"), "4-bit palette BMP (Pillow: mode P)")
    # extreme aspect ratios
    valid("wide_2000x3.png", pil_bytes(gradient(2000, 3), "PNG"), "2000x3: resized to 149333x224, cropped")
    valid("tall_2x900.png", pil_bytes(gradient(2, 900), "PNG"), "2x900")


def _interlaced(img):
    """Adam7 PNG written by hand (Pillow cannot write interlaced PNGs)."""
    a = np.array(img)
    h, w, _ = a.shape
    passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
    raw = b""
    for x0, y0, dx, dy in passes:
        sub = a[y0::dy, x0::dx]
        if sub.size == 0:
            continue
        raw += b"".join(b"\0" + row.tobytes() for row in sub)
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 1)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


# ---- texts, tokenizers -------------------------------------------------------------------
def texts():
    write("texts", "invalid_utf8.txt", b"a photo of a dog\n\xff\xfe not UTF-8 \xc3\x28\n", "texts", "UTF-8")
    write("texts", "crlf_and_blank.txt", b"a photo of a dog\r\n\r\n   \r\na photo of a cat\r\n", "texts", None, lines=["a photo of a dog", "a photo of a cat"])


def tokenizers():
    write("tokenizers", "not_json.json", b"<html>not json</html>", "bad_tokenizer", "invalid JSON")
    write("tokenizers", "not_utf8.json", b'{"model": "\xff\xfe"}', "bad_tokenizer", "invalid JSON")
    write("tokenizers", "empty_object.json", b"{}", "bad_tokenizer", 'no \\"model\\"')
    wp = {"model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##", "max_input_chars_per_word": 100, "vocab": {"[UNK]": 0, "a": 1}}}
    write("tokenizers", "wordpiece.json", json.dumps(wp).encode(), "bad_tokenizer", "model is not BPE")
    bpe = {"model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None, "end_of_word_suffix": None, "fuse_unk": False, "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]}}
    write("tokenizers", "gpt2_like_bpe.json", json.dumps(bpe).encode(), "bad_tokenizer", "end_of_word_suffix")
    # found by fuzzing (tokenizers panicked slicing merges by the prefix length)
    crash = b'{"model": {"type": "BPE", "dropout": null, "unk_tokEn": null, "continuing_subword_prefix": "$</w>", "fuse_unk": false, "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]}}'
    write("tokenizers", "fuzz_crash_prefix.json", crash, "bad_tokenizer", "continuing_subword_prefix")
    bpe["model"]["end_of_word_suffix"] = "</w>"
    write("tokenizers", "small_bpe.json", json.dumps(bpe).encode(), "bad_tokenizer", "<|startoftext|> missing")


# ---- safetensors ---------------------------------------------------------------------------
def safetensors(tensors, metadata=None):
    """tensors: [(name, dtype, shape, bytes)] → file bytes (8-byte aligned header)."""
    header, off, blobs = {}, 0, []
    for name, dt, shape, data in tensors:
        header[name] = {"dtype": dt, "shape": list(shape), "data_offsets": [off, off + len(data)]}
        off += len(data)
        blobs.append(data)
    if metadata:
        header["__metadata__"] = metadata
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)


MICRO = {
    "projection_dim": 4,
    "text_config": {"hidden_size": 4, "intermediate_size": 8, "num_attention_heads": 1, "num_hidden_layers": 1, "max_position_embeddings": 4, "vocab_size": 12},
    "vision_config": {"hidden_size": 4, "intermediate_size": 8, "num_attention_heads": 1, "num_hidden_layers": 1, "image_size": 4, "patch_size": 2},
}


def micro_tensors():
    """The HF CLIP tensors of MICRO (f32, random)."""
    t = []

    def add(name, shape):
        t.append((name, "F32", shape, RNG.standard_normal(int(np.prod(shape)) if shape else 1).astype("<f4").tobytes()))

    for tower, w, m in [("vision_model", 4, 8), ("text_model", 4, 8)]:
        p = f"{tower}.encoder.layers.0."
        for ln in ["layer_norm1", "layer_norm2"]:
            add(p + ln + ".weight", [w])
            add(p + ln + ".bias", [w])
        for proj in ["q_proj", "k_proj", "v_proj", "out_proj"]:
            add(p + f"self_attn.{proj}.weight", [w, w])
            add(p + f"self_attn.{proj}.bias", [w])
        add(p + "mlp.fc1.weight", [m, w])
        add(p + "mlp.fc1.bias", [m])
        add(p + "mlp.fc2.weight", [w, m])
        add(p + "mlp.fc2.bias", [w])
    add("vision_model.embeddings.class_embedding", [4])
    add("vision_model.embeddings.patch_embedding.weight", [4, 3, 2, 2])
    add("vision_model.embeddings.position_embedding.weight", [5, 4])
    for ln in ["vision_model.pre_layrnorm", "vision_model.post_layernorm", "text_model.final_layer_norm"]:
        add(ln + ".weight", [4])
        add(ln + ".bias", [4])
    add("text_model.embeddings.token_embedding.weight", [12, 4])
    add("text_model.embeddings.position_embedding.weight", [4, 4])
    add("visual_projection.weight", [4, 4])
    add("text_projection.weight", [4, 4])
    add("logit_scale", [])
    return t


def micro_openai_tensors():
    """The same micro model in OpenAI/open_clip naming (fused qkv, [in, out] projections)."""
    t = []

    def add(name, shape):
        t.append((name, "F16", shape, RNG.standard_normal(int(np.prod(shape)) if shape else 1).astype("<f2").tobytes()))

    for p in ["visual.transformer.resblocks.0.", "transformer.resblocks.0."]:
        for ln in ["ln_1", "ln_2"]:
            add(p + ln + ".weight", [4])
            add(p + ln + ".bias", [4])
        add(p + "attn.in_proj_weight", [12, 4])
        add(p + "attn.in_proj_bias", [12])
        add(p + "attn.out_proj.weight", [4, 4])
        add(p + "attn.out_proj.bias", [4])
        add(p + "mlp.c_fc.weight", [8, 4])
        add(p + "mlp.c_fc.bias", [8])
        add(p + "mlp.c_proj.weight", [4, 8])
        add(p + "mlp.c_proj.bias", [4])
    add("visual.class_embedding", [4])
    add("visual.conv1.weight", [4, 3, 2, 2])
    add("visual.positional_embedding", [5, 4])
    for ln in ["visual.ln_pre", "visual.ln_post", "ln_final"]:
        add(ln + ".weight", [4])
        add(ln + ".bias", [4])
    add("visual.proj", [4, 4])
    add("token_embedding.weight", [12, 4])
    add("positional_embedding", [4, 4])
    add("text_projection", [4, 4])
    add("logit_scale", [])
    return t


def fuzz_seeds(root):
    """Seed inputs for the fuzz targets (fuzz/corpus/<target>/), before `cargo fuzz cmin`."""
    def put(target, name, data):
        d = os.path.join(root, target)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)

    # checkpoint: u16 LE config length, config JSON, safetensors
    st = safetensors(micro_tensors())
    cfg = json.dumps(MICRO, separators=(",", ":")).encode()
    put("checkpoint", "micro_hf_config", struct.pack("<H", len(cfg)) + cfg + st)
    put("checkpoint", "micro_hf_inferred", b"\0\0" + st)
    oc = json.dumps({"model_cfg": {"quick_gelu": True, "vision_cfg": {"heads": 1}, "text_cfg": {"head_width": 4}}}).encode()
    so = safetensors(micro_openai_tensors())
    put("checkpoint", "micro_openai", b"\0\0" + so)
    put("checkpoint", "micro_openai_config", struct.pack("<H", len(oc)) + oc + so)
    for e in MANIFEST:
        if e["kind"] == "bad_safetensors":
            put("checkpoint", os.path.basename(e["file"]), b"\0\0" + open(os.path.join(OUT, e["file"]), "rb").read())
    # image: small images in every format and mode, and the bad corpus' images
    g = gradient(24, 18)
    a = np.array(g.convert("RGBA"))
    a[..., 3] = np.arange(24, dtype=np.uint8)[None, :] * 10
    rgba = Image.fromarray(a, "RGBA")
    for name, data in [
        ("rgb.png", pil_bytes(g, "PNG")),
        ("rgba.png", pil_bytes(rgba, "PNG")),
        ("l.png", pil_bytes(g.convert("L"), "PNG")),
        ("la.png", pil_bytes(rgba.convert("LA"), "PNG")),
        ("p_trns.png", pil_bytes(g.quantize(8), "PNG", transparency=1)),
        ("bw.png", pil_bytes(g.convert("1"), "PNG")),
        ("i16.png", pil_bytes(Image.fromarray(np.array(g.convert("L")).astype(np.uint16) * 200), "PNG")),
        ("rgb_trns.png", pil_bytes(g, "PNG", transparency=(10, 20, 30))),
        ("interlaced.png", _interlaced(g)),
        ("q75.jpg", pil_bytes(g, "JPEG", quality=75)),
        ("gray.jpg", pil_bytes(g.convert("L"), "JPEG")),
        ("progressive.jpg", pil_bytes(g, "JPEG", progressive=True)),
        ("cmyk.jpg", pil_bytes(g.convert("CMYK"), "JPEG")),
        ("anim.gif", pil_bytes(g.quantize(16), "GIF", save_all=True, append_images=[g.rotate(90).quantize(16)], transparency=0)),
        ("lossy.webp", pil_bytes(g, "WEBP", quality=50)),
        ("lossless.webp", pil_bytes(rgba, "WEBP", lossless=True)),
        ("rgb.bmp", pil_bytes(g, "BMP")),
        ("p.bmp", pil_bytes(g.quantize(16), "BMP")),
        ("rgb.tiff", pil_bytes(g, "TIFF")),
        ("lzw.tiff", pil_bytes(g, "TIFF", compression="tiff_lzw")),
        ("cmyk.tiff", pil_bytes(g.convert("CMYK"), "TIFF")),
    ]:
        put("image", name, data)
    for e in MANIFEST:
        if e["kind"] in ("bad_image", "valid_image"):
            b = open(os.path.join(OUT, e["file"]), "rb").read()
            if len(b) <= 8192:
                put("image", os.path.basename(e["file"]), b)
    # tokenizer: texts of the tokenizer corpus, and small tokenizer.json files
    corpus = os.path.join(os.path.dirname(OUT), "tokenizer_corpus.jsonl")
    with open(corpus, encoding="utf-8") as f:
        for i, line in enumerate(f):
            if i % 6 == 0:
                put("tokenizer", f"text{i:04d}", json.loads(line)["text"].encode())
    for e in MANIFEST:
        if e["kind"] in ("bad_tokenizer", "texts"):
            put("tokenizer", os.path.basename(e["file"]), open(os.path.join(OUT, e["file"]), "rb").read())


def models():
    t = micro_tensors()
    good = safetensors(t)
    cfg = json.dumps(MICRO, indent=1).encode()
    write("model", "micro_hf.safetensors", good, "micro_checkpoint")
    write("model", "micro_config.json", cfg, "micro_config")
    h = struct.unpack("<Q", good[:8])[0]
    bad = [
        ("header_len_past_end.safetensors", struct.pack("<Q", len(good) * 4) + good[8:], "not a valid safetensors file"),
        ("header_len_huge.safetensors", struct.pack("<Q", 2**63) + good[8:], "not a valid safetensors file"),
        ("header_not_json.safetensors", struct.pack("<Q", 16) + b"this is not json" + b"\0" * 16, "not a valid safetensors file"),
        ("header_not_utf8.safetensors", struct.pack("<Q", 8) + b"{\"\xff\xfe\":1}" + b"\0" * 8, "not a valid safetensors file"),
        ("header_is_array.safetensors", struct.pack("<Q", 8) + b"[1,2,3] " + b"\0" * 8, "not a valid safetensors file"),
        ("too_short.safetensors", b"\x10\0\0", "not a valid safetensors file"),
    ]
    # offsets past the end of the data
    hdr = json.loads(good[8 : 8 + h])
    k = "text_model.encoder.layers.0.mlp.fc1.weight"
    hdr[k]["data_offsets"][1] += 1_000_000
    hb = json.dumps(hdr).encode()
    bad.append(("offsets_out_of_range.safetensors", struct.pack("<Q", len(hb)) + hb + good[8 + h :], "not a valid safetensors file"))
    # unknown dtype string, and a shape whose size disagrees with the byte range
    hdr = json.loads(good[8 : 8 + h])
    hdr[k]["dtype"] = "F99"
    hb = json.dumps(hdr).encode()
    bad.append(("unknown_dtype.safetensors", struct.pack("<Q", len(hb)) + hb + good[8 + h :], "not a valid safetensors file"))
    hdr = json.loads(good[8 : 8 + h])
    hdr[k]["shape"] = [9, 4]
    hb = json.dumps(hdr).encode()
    bad.append(("shape_size_mismatch.safetensors", struct.pack("<Q", len(hb)) + hb + good[8 + h :], "not a valid safetensors file"))
    for name, data, expect in bad:
        write("model", name, data, "bad_safetensors", expect)


def main():
    os.makedirs(OUT, exist_ok=True)
    bad_images()
    valid_images()
    texts()
    tokenizers()
    models()
    with open(os.path.join(OUT, "manifest.json"), "w") as f:
        json.dump({"generator": "scripts/make_bad_corpus.py", "inputs": MANIFEST}, f, indent=1)
        f.write("\n")
    if "--fuzz-seeds" in sys.argv:
        fuzz_seeds(sys.argv[sys.argv.index("--fuzz-seeds") + 1])
    total = sum(os.path.getsize(os.path.join(dp, fn)) for dp, _, fns in os.walk(OUT) for fn in fns)
    print(f"{len(MANIFEST)} inputs, {total} bytes in {OUT}")


if __name__ == "__main__":
    main()
