"""End to end: warm start.  A run restored from the booted stack's snapshot
judges exactly as one booted cold, and two runs (two state directories, as
two jobs on one machine) restore the same snapshot at the same time."""

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from harness import paths

from .conftest import REPO, xenrig


def _run(scenario, run_dir, *extra, env=None, timeout_s=1800):
    p = xenrig("run", scenario, "--run-dir", run_dir, *extra, env=env)
    out, _ = p.communicate(timeout=timeout_s)
    rep = json.loads((run_dir / "report.json").read_text())
    return p.returncode, out, rep


def _judged(rep):
    return {c["id"]: c["outcome"] for c in rep["checks"]}


@pytest.mark.timeout(3600)
# blkfront-io only: its checks are a superset of smoke's path (a restored
# stack, modules, blkfront connected, and a capture judged by the model);
# smoke's own restored run is test_smoke's.  The smoke case cost CI 2 min.
@pytest.mark.parametrize("scenario", ["configs/scenarios/blkfront-io.yaml"])
def test_a_restored_run_judges_exactly_as_a_cold_one(scenario, tmp_path, no_stack_left):
    path = REPO / scenario
    made = xenrig("snapshot", "make", path)
    out, _ = made.communicate(timeout=1800)
    assert made.returncode == 0, out
    assert "snapshot stack-" in out

    code_w, out_w, warm = _run(path, tmp_path / "restored")
    code_c, out_c, cold = _run(path, tmp_path / "cold", "--cold")
    assert code_w == 0 and warm["outcome"] == "PASS", out_w[-3000:]
    assert code_c == 0 and cold["outcome"] == "PASS", out_c[-3000:]

    assert warm["info"]["snapshot"]["restored"] is True and warm["info"]["snapshot"]["mode"] == "warm"
    assert "restore snapshot" in [s["name"] for s in warm["stages"]]
    assert 0 < warm["info"]["snapshot"]["restore_s"] < warm["duration_s"]
    assert cold["info"]["snapshot"]["restored"] is False and cold["info"]["snapshot"]["mode"] == "cold"
    assert "boot xen + dom0" in [s["name"] for s in cold["stages"]]
    assert "save snapshot" not in [s["name"] for s in cold["stages"]]     # --cold saves nothing

    assert _judged(warm) == _judged(cold)
    assert len(_judged(warm)) >= 5
    if "verdict" in cold["info"]:
        assert warm["info"]["verdict"]["outcome"] == cold["info"]["verdict"]["outcome"] == "PASS"
        assert warm["info"]["trace"]["events"] > 0 and cold["info"]["trace"]["events"] > 0
    # The clocks after the restore ran at the host's rate.
    for rate in warm["info"]["snapshot"]["clocks"].values():
        assert 0.25 <= rate <= 4.0


@pytest.mark.timeout(3600)
def test_two_jobs_with_their_own_state_restore_one_snapshot_at_once(tmp_path, no_stack_left):
    """Two state directories (two jobs' locks and libvirt roots) on one
    machine, the same cache: both restore the same snapshot into their own
    overlays at the same time and both pass.  The second job gets the same
    client key, so it needs the same dom0 image and snapshot."""
    smoke = REPO / "configs" / "smoke.yaml"
    made = xenrig("snapshot", "make", smoke)
    out, _ = made.communicate(timeout=1800)
    assert made.returncode == 0, out
    # A short path: libvirt's QEMU sockets live under the state directory
    # and a unix socket path must stay under 108 bytes.
    other = Path(tempfile.mkdtemp(prefix="xr-b-", dir="/tmp"))
    shutil.copytree(paths.state_dir() / "ssh", other / "ssh")
    env_b = dict(os.environ, XENRIG_STATE=str(other))
    a = xenrig("run", smoke, "--run-dir", tmp_path / "a")
    b = xenrig("run", smoke, "--run-dir", tmp_path / "b", env=env_b)
    out_a, _ = a.communicate(timeout=1800)
    out_b, _ = b.communicate(timeout=1800)
    reps = [json.loads((tmp_path / d / "report.json").read_text()) for d in ("a", "b")]
    assert a.returncode == 0, out_a[-3000:]
    assert b.returncode == 0, out_b[-3000:]
    assert [r["info"]["snapshot"]["restored"] for r in reps] == [True, True]
    assert reps[0]["info"]["snapshot"]["name"] == reps[1]["info"]["snapshot"]["name"]
    assert reps[0]["info"]["host"]["ssh_port"] != reps[1]["info"]["host"]["ssh_port"]
    # Each wrote into an overlay of its own, gone with its VM.
    assert not (tmp_path / "a" / "dom0-overlay.qcow2").exists()
    assert not (tmp_path / "b" / "dom0-overlay.qcow2").exists()
    # The second job's libvirt root is its own: the cleanup of one never
    # touches the other's QEMU.
    assert (other / "libvirt").is_dir()
    shutil.rmtree(other, ignore_errors=True)
