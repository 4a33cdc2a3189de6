"""The pytest plugin's fixtures, used the way a user writes a conformance
test: a real stack, a real guest, the model judging the capture; and a
scenario file collected as pytest items."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

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


# Last in this module: it leaves the guest's xenstore directory in a state
# no driver would (the stack is torn down after the module).
@pytest.mark.timeout(900)
def test_a_hostile_guest_runs_nothing_in_dom0(xen_host, hvm_guest, tmp_path):
    """The guest writes shell metacharacters into every node of its own
    xenstore directory that the harness reads in dom0; the harness's readers
    (the hang watchdog, the capture's ring discovery and connect facts, the
    smoke check of the backend) then run, and dom0 has run none of it."""
    import shlex

    from harness import config
    from harness.capture import hang
    from harness.capture.live import CaptureSession
    from harness.checks import smoke

    tool = tmp_path / "xswrite"
    subprocess.run(["gcc", "-O2", "-static", "-Wall", "-Wextra", "-Werror", "-o", str(tool),
                    str(REPO / "tests/e2e/tools/xswrite.c")], check=True, timeout=300)
    hvm_guest.put([(tool, "/tmp/xswrite")])
    assert hvm_guest.run("chmod 755 /tmp/xswrite", timeout_s=30).exit_status == 0
    marker = "/tmp/xr-pwned"

    def payload(n: int) -> str:
        return (f"$(touch {marker}-a{n})`touch {marker}-b{n}`;touch {marker}-c{n}; "
                f"'\"|| touch {marker}-d{n} &\ntouch {marker}-e{n}")

    written = {}
    front = f"/local/domain/{hvm_guest.domid}/device/vbd"
    # xvda (51712): every node the harness reads; xvdb (51728): its backend
    # path left valid (so the connect facts are read through it), the rest hostile.
    nodes = [f"{front}/51712/{n}" for n in ("backend", "ring-ref", "state", "feature-persistent", "event-channel")]
    nodes += [f"{front}/51728/{n}" for n in ("ring-ref", "state", "feature-persistent")]
    def write(node: str, value: str) -> None:
        res = hvm_guest.run(f"/tmp/xswrite {shlex.quote(node)} {shlex.quote(value)}", timeout_s=60)
        assert res.exit_status == 0, f"the guest could not write {node}: {res.stdout} {res.stderr}"

    def read(node: str) -> str:
        return xen_host.run(f"xenstore-read {shlex.quote(node)}", timeout_s=30).stdout.rstrip("\n")

    original = {node: read(node) for node in nodes}
    for n, node in enumerate(nodes):
        write(node, payload(n))
        written[node] = payload(n)
    for node, value in written.items():   # the values really are there (xenstore-read escapes a newline)
        assert read(node) == value.replace("\n", "\\n")

    scenario = config.load_scenario(REPO / "configs/scenarios/smoke.yaml")
    report = hang.examine(xen_host, hvm_guest, ["xvda", "xvdb"])
    session = CaptureSession(xen_host, hvm_guest, scenario, tmp_path)
    session._learn_rings()
    for ring in list(session._ring_paths):
        session._ring_nodes(ring)
    for disk in scenario.guest.disks:
        smoke.blkfront_bound(disk)(xen_host, hvm_guest, scenario)

    # Put back what blkfront wrote: the plugin judges the module's capture at
    # its end, and it names each ring from these nodes.
    for node, value in original.items():
        write(node, value)
    left = xen_host.run(f"ls {marker}* 2>/dev/null | wc -l", timeout_s=30).stdout.strip()
    assert left == "0", f"dom0 ran what the guest wrote: {xen_host.run(f'ls {marker}*', timeout_s=30).stdout}"
    assert not list(Path("/tmp").glob("xr-pwned*")), "the host ran what the guest wrote"
    # The hostile backend path was refused, not followed.
    assert "xvda/0" not in session._ring_paths and report.samples[0].backend_state in (None, "absent", "?")
