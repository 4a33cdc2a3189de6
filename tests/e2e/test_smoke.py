"""End to end: the real stack (Xen 4.17 in QEMU, dom0, an HVM guest with
platform-PCI, blkfront on blkback and qdisk) booted by `xenrig run` exactly
as a user runs it."""

import json
import signal
import time

import pytest

from .conftest import REPO, qemu_processes, wait_for_stack, xenrig

SMOKE_CHECKS = {
    "xen.hvm-enabled", "guest.platform-pci", "guest.platform-pci-driver", "guest.grant-table-v1",
    "guest.blkfront-bound[xvda]", "guest.io-roundtrip[xvda]", "guest.blkfront-bound[xvdb]", "guest.io-roundtrip[xvdb]",
    "stack.guest-canary", "stack.dom0-canary",
    # since the first module under test loaded: no crash of Xen, dom0 or the guest
    "stack.crash", "guest.kernel-log",
}


def run_smoke(run_dir, timeout_s=1800):
    p = xenrig("run", REPO / "configs" / "smoke.yaml", "--run-dir", run_dir)
    out, _ = p.communicate(timeout=timeout_s)
    return p.returncode, out


@pytest.mark.timeout(2400)
def test_killed_run_then_smoke_passes(tmp_path, no_stack_left):
    """A run killed with SIGKILL leaves QEMU behind (nothing in-process can
    stop that); the next run cleans it up, passes every smoke check, and
    leaves nothing running."""
    killed_dir = tmp_path / "killed"
    p = xenrig("run", REPO / "configs" / "smoke.yaml", "--run-dir", killed_dir)
    try:
        assert wait_for_stack(killed_dir, 900), "the stack never came up"
    finally:
        p.send_signal(signal.SIGKILL)
        p.communicate(timeout=60)
    assert qemu_processes(), "expected the killed run's QEMU to outlive it"

    rc, out = run_smoke(tmp_path / "run")
    assert rc == 0, out
    assert "destroyed leftovers of an earlier run" in out
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["outcome"] == "PASS"
    by_id = {c["id"]: c for c in report["checks"]}
    assert set(by_id) == SMOKE_CHECKS
    assert all(c["outcome"] == "PASS" for c in by_id.values()), out
    assert "SVM" in by_id["xen.hvm-enabled"]["message"] or "VMX" in by_id["xen.hvm-enabled"]["message"]
    assert "qdisk" in by_id["guest.blkfront-bound[xvdb]"]["message"]
    stages = {s["name"] for s in report["stages"]}
    assert {"images", "checks", "tear down L0 VM"} <= stages
    # Booted (and saved), or restored from the snapshot an earlier run saved.
    assert {"boot xen + dom0", "start HVM guest"} <= stages or {"restore snapshot", "wake restored stack"} <= stages
    for artifact in ("junit.xml", "serial-l0.log", "xl-dmesg.txt", "xenrig-guest-console.log", "summary.txt"):
        assert (tmp_path / "run" / artifact).exists(), artifact
    assert "HVM: SVM enabled" in (tmp_path / "run" / "xl-dmesg.txt").read_text() or \
        "HVM: VMX enabled" in (tmp_path / "run" / "xl-dmesg.txt").read_text()
    assert out.strip().splitlines()[-1].startswith("xenrig: PASS smoke: 12 passed, 0 failed, 0 errors")
    # The stack did not damage memory or break the SSH stream (docs/dom0-corruption.md).
    assert report["info"]["transport"]["reconnects"] == 0, report["info"]["transport"]
    assert by_id["stack.dom0-canary"]["extra"]["canary"]["checks"] >= 3
    assert "qemu-system-x86" in report["info"]["host_tools"]
    assert not qemu_processes()


@pytest.mark.timeout(1200)
def test_ctrl_c_stops_everything(tmp_path, no_stack_left):
    run_dir = tmp_path / "int"
    p = xenrig("run", REPO / "configs" / "smoke.yaml", "--run-dir", run_dir)
    try:
        assert wait_for_stack(run_dir, 900), "the stack never came up"
        time.sleep(3)  # inside 'connect to dom0' / 'start HVM guest' or just after a restore
    finally:
        p.send_signal(signal.SIGINT)
        out, _ = p.communicate(timeout=180)
    assert p.returncode == 130, out
    assert "interrupted" in out
    assert not qemu_processes()
    report = json.loads((run_dir / "report.json").read_text())
    assert report["outcome"] == "ERROR" and "interrupted" in report["error"]["message"]
