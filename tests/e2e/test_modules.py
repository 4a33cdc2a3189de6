"""End to end: guest modules built from source, patched, loaded and proven."""

import json

import pytest

from .conftest import REPO, xenrig


def run(scenario, run_dir, timeout_s=1800):
    p = xenrig("run", REPO / "configs" / "examples" / scenario, "--run-dir", run_dir)
    out, _ = p.communicate(timeout=timeout_s)
    return p.returncode, out, json.loads((run_dir / "report.json").read_text())


@pytest.mark.timeout(1800)
def test_patched_blkfront_is_built_loaded_and_reported(tmp_path, no_stack_left):
    rc, out, report = run("blkfront-patched.yaml", tmp_path)
    assert rc == 0, out
    mods = {m["role"]: m for m in report["info"]["modules"]}
    blk = mods["blkfront"]
    assert blk["source"]["kind"] == "debian" and blk["source"]["package"] == "linux-source-6.1"
    assert blk["source"]["file"] == "drivers/block/xen-blkfront.c"
    assert [p["name"].rsplit("/", 1)[-1] for p in blk["patches"]] == ["blkfront-indirect-16.patch"]
    assert blk["loaded_build_id"] == blk["build_id"] and len(blk["build_id"]) == 40
    # The patch changed a default; the scenario set another parameter.
    assert blk["running_params"]["max_indirect_segments"] == "16"
    assert blk["running_params"]["max_queues"] == "1"
    assert mods["exerciser"]["loaded_build_id"] == mods["exerciser"]["build_id"]
    assert "blkfront-indirect-16.patch" in (tmp_path / "report.html").read_text()


@pytest.mark.timeout(1800)
def test_exerciser_sequence_matches_the_guest_config(tmp_path, no_stack_left):
    rc, out, report = run("exerciser-sequence.yaml", tmp_path)
    assert rc == 0, out
    steps = [c for c in report["checks"] if c["id"].startswith("step")]
    assert len(steps) == 12 and all(c["outcome"] == "PASS" for c in steps), out
    exhaust = json.loads(next(c for c in steps if "ENOSPC" in c["id"])["evidence"])
    # max_grant_frames: 4 in the scenario -> 4 frames of 512 entries, then -ENOSPC
    assert exhaust["ret"] == -28 and exhaust["nr_frames"] == 4 and exhaust["max_grant_frames"] == 4
    assert exhaust["grow_events"] == 3
