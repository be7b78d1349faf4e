"""examples/ray_embed.py on a local Ray instance: every row equals the command line's for the
same shards, the Parquet has the command line's schema (one file per shard), and
--skip-existing redoes only the shards whose file is missing."""

import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, TINY, cli_parquet, make_shards

pytest.importorskip("ray")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")


def run_example(tmp_path, out, *extra):
    env = dict(os.environ, RAY_ENABLE_UV_RUN_RUNTIME_ENV="0")
    return subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples/ray_embed.py"),
            "--shards", str(tmp_path / "shards"),
            "--output", str(out),
            "--model", str(TINY),
            "--device", "cpu",
            "--concurrency", "2",
            "--num-cpus", "0.5",
            "--stats", str(tmp_path / "stats"),
            "--address", "local",
            *extra,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


def test_ray_example_matches_the_command_line(cli, tmp_path):
    shards = make_shards(tmp_path / "shards", 4, 5, bad={7})
    out = tmp_path / "ray_out"
    r = run_example(tmp_path, out)
    # a sample was left out: exit status 2, as the command line's
    assert r.returncode == 2, r.stdout[-3000:] + r.stderr[-3000:]
    assert "ray_embed: 19 rows" in r.stdout and "from 4 shards" in r.stdout, r.stdout[-2000:]
    assert "1 samples left out, 0 shards unreadable" in r.stdout, r.stdout[-2000:]
    assert "00001.tar:000000007" in r.stderr  # the corrupt sample is named, with its shard
    # one file per shard, named after it; no temporary file left behind
    assert sorted(os.listdir(out)) == [s.name.replace(".tar", ".parquet") for s in shards]
    assert [pq.read_table(out / f"{s.stem}.parquet").num_rows for s in shards] == [5, 4, 5, 5]
    table = pq.read_table(out)
    cli_rows, cli_table = cli_parquet(cli, tmp_path, [str(s) for s in shards])
    # fixed_size_list<float32>[D] on both sides (pyarrow's writer names the child `element`,
    # arrow-rs's `item`)
    ours, theirs = table.schema.field("embedding").type, cli_table.schema.field("embedding").type
    assert isinstance(ours, pa.FixedSizeListType) and ours.list_size == theirs.list_size == 16
    assert ours.value_type == theirs.value_type == pa.float32()
    assert [f.name for f in table.schema] == [f.name for f in cli_table.schema]
    rows = table.to_pylist()
    assert sorted(r["input"] for r in rows) == sorted(cli_rows) and len(rows) == 19
    cli_by_key = {r["input"]: r for r in cli_table.to_pylist()}
    for row in rows:
        want = cli_rows[row["input"]]
        assert np.abs(np.asarray(row["embedding"], np.float32) - want).max() <= 1e-6, row["input"]
        assert row["caption"] == cli_by_key[row["input"]]["caption"]
        assert os.path.basename(row["shard"]) == os.path.basename(cli_by_key[row["input"]]["shard"])
    stats = list((tmp_path / "stats").glob("actor-*.json"))
    assert 1 <= len(stats) <= 2

    # resume: only the shard whose file is gone is embedded again, to the same rows
    os.remove(out / "00002.parquet")
    r = run_example(tmp_path, out, "--skip-existing")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "3 of 4 shards already have their Parquet file" in r.stdout, r.stdout[-2000:]
    assert "ray_embed: 5 rows" in r.stdout and "from 1 shards" in r.stdout, r.stdout[-2000:]
    assert sorted(os.listdir(out)) == [s.name.replace(".tar", ".parquet") for s in shards]
    again = {x["input"]: x["embedding"] for x in pq.read_table(out).to_pylist()}
    assert {x["input"]: x["embedding"] for x in rows} == again
