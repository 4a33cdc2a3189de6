"""The pytest plugin's fixtures, used the way a user writes a conformance
test: a real stack, a real guest, the model judging the capture; and a
scenario file collected as pytest items."""

import json
import os
import re
import subprocess
import sys

import pytest

from harness import paths
from .conftest import REPO


# First in this module: the fixtures below keep a stack up until the module
# ends, and this machine has room for one stack at a time.
@pytest.mark.timeout(1800)
def test_a_scenario_file_runs_as_pytest_items(tmp_path, no_stack_left):
    # A libvirt root of its own: this process may already hold the plugin's.
    env = {**os.environ, "XENRIG_PYTEST_EMBED_ROOT": str(paths.state_dir() / "libvirt-pytest-sub")}
    res = subprocess.run([sys.executable, "-m", "pytest", "configs/scenarios/smoke.yaml", "-v", "-p", "no:cacheprovider",
                          "--xenrig-runs", str(tmp_path)], cwd=REPO, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, timeout=1700)
    out = res.stdout
    assert res.returncode == 0, out[-6000:]
    passed = set(re.findall(r"configs/scenarios/smoke\.yaml::(.+?) PASSED", out))
    assert {"xen.hvm-enabled", "guest.platform-pci", "guest.blkfront-bound[xvda]", "guest.io-roundtrip[xvdb]",
            "trace.model", "hang", "stack.guest-canary", "stack.dom0-canary", "run verdict"} <= passed, out[-6000:]
    assert re.search(r"collected (\d+) items", out) and not re.search(r"\d+ (failed|error)", out), out[-6000:]
    (run_dir,) = tmp_path.glob("*-pytest-smoke")    # one run for the whole file
    assert json.loads((run_dir / "report.json").read_text())["outcome"] == "PASS"


@pytest.mark.timeout(900)
def test_readonly_grant_refuses_a_writable_map(trace, hvm_guest):
    granted = trace.guest("handoff plugin_ro 0 ro")
    assert granted["ret"] >= 0, granted
    ref = granted["ref"]
    assert trace.expected("map", rdom=hvm_guest.domid, ref=ref, flags=1).value == -1
    res = trace.dom0({"op": "map", "ref": ref, "flags": 1})
    assert res["status"] == -1   # GNTST_general_error, as Xen 4.17's _set_status_v1 says
    ok = trace.dom0({"op": "map", "ref": ref, "flags": 5})
    assert ok["status"] == 0
    assert trace.dom0({"op": "unmap", "handle": ok["handle"]})["status"] == 0
    dump = trace.dump()
    assert dump["rdom"] == hvm_guest.domid and dump["nr_frames"] >= 1


@pytest.mark.timeout(900)
def test_table_size_from_the_guest_and_from_dom0_agree(trace, xen_host, hvm_guest):
    mine = trace.guest("query_size")
    theirs = trace.dom0({"op": "query_size"})
    assert mine["status"] == theirs["status"] == 0
    assert (mine["nr_frames"], mine["max_nr_frames"]) == (theirs["nr_frames"], theirs["max_nr_frames"])
    assert xen_host.domid(hvm_guest.name) == hvm_guest.domid
