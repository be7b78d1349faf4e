"""clip_wgpu against transformers (the oracle) and against the Rust engine's command line."""

import io
import json
import os
import pathlib
import threading

import numpy as np
import pytest
from PIL import Image

import clip_wgpu
from conftest import IMAGE_FILES, IMAGES, TINY


def max_diff(a, b):
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())


@pytest.fixture(scope="module")
def hf_model():
    torch = pytest.importorskip("torch")
    from transformers import CLIPModel
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    model = CLIPModel.from_pretrained(TINY).eval()
    size = model.config.vision_config.image_size
    proc = CLIPImageProcessorPil(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    return torch, model, proc


def test_images_equal_transformers(clip, hf_model):
    torch, model, proc = hf_model
    px = np.concatenate([proc(images=Image.open(f), return_tensors="np")["pixel_values"] for f in IMAGE_FILES])
    with torch.no_grad():
        out = model.get_image_features(pixel_values=torch.from_numpy(px))
        ref = getattr(out, "pooler_output", out)
        ref = torch.nn.functional.normalize(ref, dim=-1).numpy()
    ours = clip.embed_images([str(f) for f in IMAGE_FILES])
    assert ours.dtype == np.float32 and ours.shape == (len(IMAGE_FILES), clip.embed_dim)
    assert np.allclose(np.linalg.norm(ours, axis=1), 1, atol=1e-5)
    assert max_diff(ours, ref) <= 1e-5, max_diff(ours, ref)


def test_texts_equal_transformers(clip, reference):
    ours = clip.embed_texts(reference["texts"])
    assert ours.shape == (len(reference["texts"]), clip.embed_dim) and ours.dtype == np.float32
    assert max_diff(ours, reference["text_embeds"]) <= 1e-5


def test_reference_images_and_logit_scale(clip, reference):
    n = reference["n_synthetic"]
    ours = clip.embed_images([str(clip_wgpu_root() / f) for f in reference["image_files"]])
    assert max_diff(ours, reference["image_embeds"][n:]) <= 1e-5
    assert abs(clip.info()["logit_scale"] - np.exp(reference["logit_scale"])) < 1e-4


def clip_wgpu_root():
    return TINY.parents[3]


def test_embeddings_equal_the_command_lines(clip, cli):
    files = [str(f) for f in IMAGE_FILES]
    texts = ["a photo of a dog", "café über naïve", ""]
    args = ["embed", "--model", TINY, "--device", "cpu", "--quiet", "--format", "json"]
    for f in files:
        args += ["--image", f]
    for t in texts:
        args += ["--text", t]
    out = json.loads(cli(*args).stdout)
    cli_img = np.array([i["embedding"] for i in out["images"]], np.float32)
    cli_txt = np.array([t["embedding"] for t in out["texts"]], np.float32)
    d_img = max_diff(clip.embed_images(files), cli_img)
    d_txt = max_diff(clip.embed_texts(texts), cli_txt)
    assert d_img <= 1e-6 and d_txt <= 1e-6, (d_img, d_txt)


def test_every_input_type_gives_the_files_embedding(clip):
    png = IMAGES / "rgb_640x480.png"  # RGB, 8 bits: its pixels are the same through every route
    rgba = IMAGES / "rgba_333x250.png"
    ref, ref_rgba = clip.embed_images([str(png), str(rgba)])
    im = Image.open(png)
    arr = np.asarray(im.convert("RGB"))
    items = [
        str(png),
        pathlib.Path(png),
        png.read_bytes(),
        bytearray(png.read_bytes()),
        im,
        arr,
        np.ascontiguousarray(arr[:, ::-1])[:, ::-1],  # a view with negative strides
        np.asfortranarray(arr),
    ]
    got = clip.embed_images(items)
    for i, row in enumerate(got):
        assert max_diff(row, ref) <= 1e-6, (i, type(items[i]), max_diff(row, ref))
    # alpha: PIL RGBA images and (H, W, 4) arrays go through the same compositing as the file
    im4 = Image.open(rgba)
    got = clip.embed_images([im4, np.asarray(im4.convert("RGBA"))])
    assert max_diff(got, np.stack([ref_rgba, ref_rgba])) <= 1e-6
    # grayscale: a PIL "L" image, an (H, W) array and an (H, W, 1) array agree with the file
    gray = IMAGES / "l_300x200.png"
    (ref_l,) = clip.embed_images([str(gray)])
    g = np.asarray(Image.open(gray))
    got = clip.embed_images([Image.open(gray), g, g[:, :, None]])
    assert max_diff(got, np.stack([ref_l] * 3)) <= 1e-6
    assert clip.embed_images([]).shape == (0, clip.embed_dim)


def test_bad_items_raise_naming_the_item(clip):
    good = str(IMAGES / "CLIP.png")
    with pytest.raises(ValueError, match=r"corrupt_truncated\.jpg"):
        clip.embed_images([good, str(IMAGES / "corrupt_truncated.jpg")])
    with pytest.raises(ValueError, match=r"no/such/file\.png"):
        clip.embed_images([good, "no/such/file.png"])
    with pytest.raises(ValueError, match=r"item 1 \(bytes of length 5\)"):
        clip.embed_images([good, b"hello"])
    with pytest.raises(ValueError, match=r"item 2 \(a int\).*unsupported image item type int"):
        clip.embed_images([good, good, 42])
    with pytest.raises(ValueError, match=r"item 0 .*must be uint8.*float"):
        clip.embed_images([np.zeros((4, 4, 3), np.float32)])
    with pytest.raises(ValueError, match=r"shape \[4, 4, 2\]"):
        clip.embed_images([np.zeros((4, 4, 2), np.uint8)])
    with pytest.raises(TypeError, match="wrap a single one in a list"):
        clip.embed_images(good)
    with pytest.raises(TypeError, match="item 1 is int"):
        clip.embed_texts(["a", 1])
    with pytest.raises(ValueError, match='errors="maybe"'):
        clip.embed_images([good], errors="maybe")


def test_bad_items_skipped_with_their_index_and_message(clip):
    files = [IMAGES / "CLIP.png", IMAGES / "corrupt_empty.png", IMAGES / "franz-kafka.jpg", "missing.jpg", b"junk"]
    emb, failed = clip.embed_images([str(f) if not isinstance(f, bytes) else f for f in files], errors="skip")
    ref = clip.embed_images([str(files[0]), str(files[2])])
    assert emb.shape == (2, clip.embed_dim) and max_diff(emb, ref) == 0
    assert [i for i, _ in failed] == [1, 3, 4]
    assert "corrupt_empty.png" in failed[0][1] and "empty" in failed[0][1]
    assert "missing.jpg" in failed[1][1]
    assert failed[2][1].startswith("item 4 (bytes of length 4)")
    emb, failed = clip.embed_images([str(files[0])], errors="skip")
    assert emb.shape == (1, clip.embed_dim) and failed == []


def test_score_and_classify_follow_the_embeddings(clip):
    files = [str(f) for f in IMAGE_FILES[:4]]
    texts = ["a photo of a dog", "a diagram", "a cat"]
    img, txt = clip.embed_images(files), clip.embed_texts(texts)
    cos = img @ txt.T
    s = clip.score(files, texts)
    assert s.shape == (4, 3) and max_diff(s, 100 * np.maximum(cos, 0)) <= 1e-4
    p = clip.score(files[:3], texts, pairs=True)
    assert p.shape == (3,) and max_diff(p, 100 * np.maximum(np.diag(cos), 0)) <= 1e-4
    with pytest.raises(ValueError, match="4 images and 3 texts"):
        clip.score(files, texts, pairs=True)
    s2, failed = clip.score([files[0], "nope.png"], texts, errors="skip")
    assert s2.shape == (1, 3) and failed[0][0] == 1

    labels = ["dog", "diagram", "cat", "writer"]
    prompts = clip.embed_texts([f"a photo of a {l}." for l in labels])
    logits = clip.info()["logit_scale"] * (img @ prompts.T)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    top = clip.classify(files, labels, top_k=2)
    assert len(top) == 4
    for i, t in enumerate(top):
        order = np.argsort(-probs[i])[:2]
        assert [l for l, _ in t] == [labels[j] for j in order]
        assert max_diff([p for _, p in t], probs[i][order]) <= 1e-5
    t2 = clip.classify(files[:1], labels, template="{} drawing", top_k=10)
    assert len(t2[0]) == 4 and abs(sum(p for _, p in t2[0]) - 1) < 1e-5
    with pytest.raises(ValueError, match="no \\{\\}"):
        clip.classify(files, labels, template="a photo")


def test_info_and_options(clip):
    info = clip.info()
    assert info["device"] == "cpu" and info["precision"] == "f32" and info["embed_dim"] == 16
    assert info["image_size"] == 224 and info["context_length"] == 77 and info["preprocess"] == "hf"
    assert info["engine"].startswith("cpu") and info["model"] == str(TINY)
    assert info["build"] in ("release", "debug") and info["version"]
    assert "clip_wgpu.Clip" in repr(clip)
    with pytest.raises(ValueError, match="tpu"):
        clip_wgpu.Clip(model=str(TINY), device="tpu")
    with pytest.raises(ValueError, match="f64"):
        clip_wgpu.Clip(model=str(TINY), precision="f64")
    with pytest.raises(ValueError, match="batch_size=0"):
        clip_wgpu.Clip(model=str(TINY), batch_size=0)
    with pytest.raises(clip_wgpu.ClipError, match="f16 is a GPU precision"):
        clip_wgpu.Clip(model=str(TINY), device="cpu", precision="f16")
    small = clip_wgpu.Clip(model=str(TINY), device="cpu", batch_size=3, preprocess="openai")
    assert small.info()["batch_size"] == 3 and small.info()["preprocess"] == "openai"


def test_model_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv("CLIP_WGPU_MODEL", str(TINY))
    assert clip_wgpu.Clip(device="cpu").info()["model"] == str(TINY)
    monkeypatch.delenv("CLIP_WGPU_MODEL")
    # a model name is looked up in the Hugging Face cache
    snap = tmp_path / "hub/models--openai--clip-vit-base-patch32/snapshots/abc"
    snap.mkdir(parents=True)
    for f in ["config.json", "model.safetensors"]:
        (snap / f).symlink_to(TINY / f)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    assert clip_wgpu.Clip(device="cpu").info()["model"] == str(snap)
    assert clip_wgpu.Clip(model="ViT-B-32", device="cpu").info()["model"] == str(snap)
    with pytest.raises(clip_wgpu.ClipError, match="no model weights found for openai/clip-vit-large-patch14"):
        clip_wgpu.Clip(model="ViT-L-14", device="cpu")
    with pytest.raises(clip_wgpu.ClipError, match="nothing/here"):
        clip_wgpu.Clip(model="./nothing/here", device="cpu")


def test_one_clip_shared_between_threads(clip):
    files = [str(f) for f in IMAGE_FILES]
    ref = clip.embed_images(files)
    ref_t = clip.embed_texts(["a dog", "a cat"])
    results, errors = {}, []

    def work(k):
        try:
            for _ in range(3):
                order = [(k + j) % len(files) for j in range(len(files))]
                e = clip.embed_images([files[j] for j in order])
                assert max_diff(e, ref[order]) == 0
                assert max_diff(clip.embed_texts(["a dog", "a cat"]), ref_t) == 0
            results[k] = True
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(results) == 4


def test_the_gil_is_released_while_encoding():
    # a Python thread keeps counting while another is inside embed_images: impossible if the
    # call held the GIL throughout (the count would not move until it returned)
    c = clip_wgpu.Clip(model=str(TINY), device="cpu", cache_entries=0)
    files = [str(f) for f in IMAGE_FILES] * 8
    counts, done = [0], threading.Event()
    inside = []

    def count():
        while not done.is_set():
            counts[0] += 1

    def encode():
        before = counts[0]
        c.embed_images(files)
        inside.append(counts[0] - before)

    t = threading.Thread(target=count)
    t.start()
    try:
        for _ in range(3):
            encode()
    finally:
        done.set()
        t.join()
    assert max(inside) > 0, inside
