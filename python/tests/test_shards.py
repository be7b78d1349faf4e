"""WebDataset shards in, Parquet and clip-retrieval's layout out: the command line's output
read back by pyarrow and embedding-reader, and the Python reader, against each other."""

import json

import numpy as np
import pytest

import clip_wgpu
from conftest import IMAGE_FILES, IMAGES, TINY, cli_parquet, make_shards, write_shard

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")


def test_read_webdataset_groups_members_by_key(tmp_path):
    png = (IMAGES / "CLIP.png").read_bytes()
    shard = write_shard(
        tmp_path / "s.tar",
        [
            ("a/000", {"png": png, "txt": b"a diagram\n"}),
            ("a/001", {"json": json.dumps({"caption": "from json", "url": "u"}).encode(), "jpg": b"xx"}),
            ("a/002", {"txt": b"no image"}),
        ],
    )
    got = clip_wgpu.read_webdataset(shard)
    assert got == [("a/000", png, "a diagram"), ("a/001", b"xx", "from json"), ("a/002", None, "no image")]
    with pytest.raises(clip_wgpu.ClipError, match="missing.tar"):
        clip_wgpu.read_webdataset(tmp_path / "missing.tar")
    (tmp_path / "broken.tar").write_bytes(shard.read_bytes()[:700])
    with pytest.raises(clip_wgpu.ClipError, match="broken.tar: reading the shard"):
        clip_wgpu.read_webdataset(tmp_path / "broken.tar")


def test_cli_parquet_from_shards_has_the_documented_schema(clip, cli, tmp_path):
    shards = make_shards(tmp_path / "shards", 3, 4, bad={5})
    rows, table = cli_parquet(cli, tmp_path, [str(s) for s in shards])
    d = clip.embed_dim
    assert table.schema.field("input").type == pa.string()
    assert table.schema.field("kind").type == pa.string()
    assert table.schema.field("shard").type == pa.string()
    assert table.schema.field("caption").type == pa.string()
    assert table.schema.field("embedding").type == pa.list_(pa.field("item", pa.float32(), nullable=False), d)
    assert table.num_rows == 11  # 12 samples, one corrupt
    recs = table.to_pylist()
    assert [r["input"] for r in recs] == [f"{k:09d}" for k in range(12) if k != 5]
    assert recs[0]["caption"] == "sample 0: franz-kafka" and recs[1]["caption"] == "sample 1: CLIP"
    assert recs[0]["shard"].endswith("00000.tar") and recs[-1]["shard"].endswith("00002.tar")
    # each row is the embedding of the sample's image file, through Python
    samples = [s for p in shards for s in clip_wgpu.read_webdataset(p)]
    good = [s for k, s in enumerate(samples) if k != 5]
    ours = clip.embed_images([img for _, img, _ in good])
    files = clip.embed_images([str(IMAGE_FILES[k % len(IMAGE_FILES)]) for k in range(12) if k != 5])
    cli_emb = np.stack([rows[k] for k, _, _ in good])
    assert np.abs(ours - cli_emb).max() <= 1e-6
    assert np.abs(files - cli_emb).max() <= 1e-6


def test_cli_reports_bad_samples_and_scores_shard_captions(cli, clip, tmp_path):
    shards = make_shards(tmp_path / "shards", 1, 4, bad={2})
    r = cli("embed", "--model", TINY, "--device", "cpu", "--quiet", "--format", "jsonl", "--image", shards[0], check=False)
    assert r.returncode == 2
    lines = [json.loads(l) for l in r.stdout.splitlines()]
    assert [l["input"] for l in lines] == [f"{k:09d}" for k in range(4)]
    assert "error" in lines[2] and "00000.tar:000000002" in lines[2]["error"]
    assert lines[1]["caption"] == "sample 1: CLIP"
    # --pairs SHARD: each image against its own caption
    r = cli("score", "--model", TINY, "--device", "cpu", "--quiet", "--format", "jsonl", "--pairs", shards[0], check=False)
    recs = [json.loads(l) for l in r.stdout.splitlines()]
    scored = [x for x in recs if "score" in x]
    assert [x["text"] for x in scored] == [f"sample {k}: {IMAGE_FILES[k].stem.replace('_', ' ')}" for k in (0, 1, 3)]
    imgs = clip.embed_images([str(IMAGE_FILES[k]) for k in (0, 1, 3)])
    txts = clip.embed_texts([x["text"] for x in scored])
    want = 100 * np.maximum((imgs * txts).sum(1), 0)
    assert np.abs(np.array([x["score"] for x in scored]) - want).max() <= 1e-3


def test_cli_score_parquet_has_typed_columns_scores_and_embeddings(cli, clip, tmp_path):
    shards = make_shards(tmp_path / "shards", 1, 4, bad={2})
    out = tmp_path / "scores.parquet"
    r = cli("score", "--model", TINY, "--device", "cpu", "--quiet", "--format", "parquet", "--output", out,
            "--pairs", shards[0], check=False)
    # the bad sample has no row, is named on stderr, and the run says so in its exit status
    assert r.returncode == 2 and "000000002" in r.stderr
    table = pq.read_table(out)
    assert [(f.name, str(f.type)) for f in table.schema][:5] == [
        ("image", "string"), ("text", "string"), ("score", "float"), ("cosine", "float"), ("logit", "float"),
    ]
    emb = table.schema.field("embedding").type
    assert emb.list_size == clip.info()["embed_dim"] and str(emb.value_type) == "float"
    rows = table.to_pylist()
    assert [x["image"] for x in rows] == [f"{k:09d}" for k in (0, 1, 3)]
    imgs = clip.embed_images([str(IMAGE_FILES[k]) for k in (0, 1, 3)])
    txts = clip.embed_texts([x["text"] for x in rows])
    cos = (imgs * txts).sum(1)
    assert np.abs(np.array([x["cosine"] for x in rows]) - cos).max() <= 1e-5
    assert np.abs(np.array([x["score"] for x in rows]) - 100 * np.maximum(cos, 0)).max() <= 1e-3
    assert np.abs(np.array([x["embedding"] for x in rows], dtype=np.float32) - imgs).max() <= 1e-6
    # without --output: a clear error, not Parquet bytes on a terminal
    r = cli("score", "--model", TINY, "--device", "cpu", "--quiet", "--format", "parquet", "--pairs", shards[0],
            check=False)
    assert r.returncode != 0 and "--output" in r.stderr


def test_cli_classify_parquet_is_typed(cli, tmp_path):
    out = tmp_path / "labels.parquet"
    cli("classify", "--model", TINY, "--device", "cpu", "--quiet", "--format", "parquet", "--output", out,
        "--image", IMAGE_FILES[0], "--image", IMAGE_FILES[1], "--label", "cat", "--label", "dog", "--top-k", "2")
    t = pq.read_table(out)
    assert [(f.name, str(f.type)) for f in t.schema] == [
        ("image", "string"), ("rank", "uint32"), ("label", "string"), ("prob", "float"), ("logit", "float"),
        ("cosine", "float"),
    ]
    rows = t.to_pylist()
    assert [x["rank"] for x in rows] == [1, 2, 1, 2]
    for i in (0, 2):
        assert abs(rows[i]["prob"] + rows[i + 1]["prob"] - 1) < 1e-5 and rows[i]["prob"] >= rows[i + 1]["prob"]


def test_clip_retrieval_layout_is_read_by_embedding_reader(cli, clip, tmp_path):
    er = pytest.importorskip("embedding_reader")
    shards = make_shards(tmp_path / "shards", 2, 5)
    out = tmp_path / "cr"
    args = ["embed", "--model", TINY, "--device", "cpu", "--quiet", "--format", "clip-retrieval", "--output", out]
    for s in shards:
        args += ["--image", s]
    cli(*args)
    assert (out / "img_emb/img_emb_0.npy").exists() and (out / "metadata/metadata_0.parquet").exists()
    reader = er.EmbeddingReader(
        embeddings_folder=str(out / "img_emb"),
        metadata_folder=str(out / "metadata"),
        meta_columns=["image_path", "key", "caption"],
        file_format="parquet_npy",
    )
    assert reader.count == 10 and reader.dimension == clip.embed_dim
    embs, metas = [], []
    for emb, meta in reader(batch_size=4, start=0, end=reader.count, show_progress=False):
        embs.append(emb)
        metas.append(meta)
    emb = np.concatenate(embs)
    import pandas as pd

    meta = pd.concat(metas)
    assert list(meta["key"]) == [f"{k:09d}" for k in range(10)]
    assert meta["image_path"].iloc[0].endswith("00000.tar:000000000")
    want = clip.embed_images([str(IMAGE_FILES[k % len(IMAGE_FILES)]) for k in range(10)])
    assert np.abs(emb - want).max() <= 1e-6
    # the captions' embeddings, row for row
    text = np.load(out / "text_emb/text_emb_0.npy")
    assert np.abs(text - clip.embed_texts(list(meta["caption"]))).max() <= 1e-6
