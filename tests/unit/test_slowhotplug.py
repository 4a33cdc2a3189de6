"""The slow disk's hotplug script (harness/remote/slowhotplug.py) writes
blkback's physical-device for xenrig's own slow disks only, and says why
it refuses anything else in hotplug-status and hotplug-error."""

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "harness" / "remote" / "slowhotplug.py"


def _run(tmp_path, action, params, base="backend/vbd/3/51728"):
    store = tmp_path / "store"
    store.mkdir(exist_ok=True)
    (store / "params").write_text(params)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    # xenstore-read NODE / xenstore-write NODE VALUE [NODE VALUE...] on a folder
    (bin_dir / "xenstore-read").write_text(f"#!/bin/sh\ncat {store}/$(basename \"$1\")\n")
    (bin_dir / "xenstore-write").write_text(
        f"#!/bin/sh\nwhile [ $# -gt 1 ]; do printf %s \"$2\" > {store}/$(basename \"$1\"); shift 2; done\n")
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "XENBUS_PATH": base}
    res = subprocess.run([sys.executable, str(SCRIPT), action], env=env, capture_output=True, text=True, timeout=30)
    return res, {f.name: f.read_text() for f in store.iterdir()}


def test_a_device_that_is_no_slow_disk_is_refused_and_says_why(tmp_path):
    res, store = _run(tmp_path, "add", "/dev/sda")
    assert res.returncode == 1
    assert store["hotplug-status"] == "error" and "not a slow disk" in store["hotplug-error"]
    assert "physical-device" not in store


def test_a_slow_disk_name_that_is_not_a_block_device_is_refused(tmp_path):
    res, store = _run(tmp_path, "add", "/dev/xrslow-3-xvdb")      # no such device on the test host
    assert res.returncode == 1 and store["hotplug-status"] == "error" and "physical-device" not in store


def test_remove_does_nothing_and_a_foreign_xenbus_path_is_refused(tmp_path):
    res, store = _run(tmp_path, "remove", "/dev/xrslow-3-xvdb")
    assert res.returncode == 0 and set(store) == {"params"}
    res, store = _run(tmp_path, "add", "/dev/xrslow-3-xvdb", base="backend/vbd/3/51728; rm -rf /")
    assert res.returncode == 1 and "not a vbd backend" in res.stderr and set(store) == {"params"}
