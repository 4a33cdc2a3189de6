"""End to end: the nightly matrix on the real stack, in two shards merged
into one grid, gives the same grid as one unsharded run."""

import json
import subprocess

import pytest

from .conftest import REPO

MATRIX = REPO / "tests" / "e2e" / "scenarios" / "nightly-small.yaml"


def nightly(*args, timeout_s=3600):
    return subprocess.run([str(REPO / "ci" / "nightly"), *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout_s)


def grid(out_dir):
    data = json.loads((out_dir / "nightly.json").read_text())
    return {c["id"]: c["status"] for c in data["cells"]}


@pytest.mark.timeout(5400)
def test_two_shards_merge_into_the_unsharded_grid(tmp_path, no_stack_left):
    sharded, whole = tmp_path / "sharded", tmp_path / "whole"
    for shard in ("1/2", "2/2"):
        res = nightly("run", "--matrix", MATRIX, "--shard", shard, "--out", sharded)
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    res = nightly("merge", sharded, "--out", sharded)
    assert res.returncode == 0, res.stdout + res.stderr
    res = nightly("run", "--matrix", MATRIX, "--out", whole)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert grid(sharded) == grid(whole) == {"smoke/phy/default": "PASS", "smoke/qdisk/default": "PASS"}
    index = (sharded / "index.html").read_text()
    assert "smoke/qdisk/default" in index or "qdisk" in index
