"""A run that breaks still judges what it captured, and a crash after the
subject loaded is a FAIL of the subject (harness.aftermath, checks.crash)."""

from pathlib import Path

import pytest

from harness import aftermath
from harness.capture.session import TraceAssembly
from harness.checks import crash
from harness.checks.result import ERROR, FAIL, PASS
from harness.nightly import classify

XEN_AND_DOM0_BOOT = "(XEN) Xen version 4.17\n[    3.1] WARNING: CPU: 1 PID: 9 at mm/boot.c:1 x\n"


def test_a_crash_before_the_subject_loaded_is_not_its_fault(tmp_path):
    serial = tmp_path / "serial-l0.log"
    serial.write_text(XEN_AND_DOM0_BOOT)
    offset = serial.stat().st_size
    with open(serial, "a") as fh:
        fh.write("(d1) SeaBIOS: BUG: something the guest's firmware printed\n[   40.0] xen-blkback: ring ready\n")
    r = crash.stack_check(serial, offset, "xen_blkfront")
    assert r.outcome == PASS, r.message


def test_a_dom0_oops_after_the_subject_loaded_fails_it(tmp_path):
    serial = tmp_path / "serial-l0.log"
    serial.write_text(XEN_AND_DOM0_BOOT)
    offset = serial.stat().st_size
    with open(serial, "a") as fh:
        fh.write("[   80.0] BUG: unable to handle page fault for address: ffffc90000400000\n"
                 "[   80.0] Oops: 0000 [#1] PREEMPT SMP NOPTI\n")
    r = crash.stack_check(serial, offset, "xen_blkfront")
    assert r.outcome == FAIL
    assert "product-suspect" in r.message and "unable to handle page fault" in r.message
    assert r.extra["kind"] == "product-suspect" and len(r.extra["lines"]) == 2


def test_xen_panic_after_the_subject_loaded_fails_it(tmp_path):
    serial = tmp_path / "serial-l0.log"
    serial.write_text("(XEN) Panic on CPU 0:\n(XEN) FATAL TRAP: vector = 13\n")
    assert crash.stack_check(serial, 0, "xen_gnttab_exerciser").outcome == FAIL


def test_guest_kernel_log_is_read_from_the_subject_on():
    dmesg = "[ 1.0] WARNING: CPU: 0 PID: 1 at boot.c:3 early\n[ 9.0] xen_blkfront: loaded\n"
    assert crash.guest_check(dmesg, 1, "xen_blkfront").outcome == PASS
    dmesg += "[ 9.5] kernel BUG at drivers/block/xen-blkfront.c:1290!\n"
    r = crash.guest_check(dmesg, 1, "xen_blkfront")
    assert r.outcome == FAIL and "kernel BUG at drivers/block/xen-blkfront.c:1290" in r.message


class _Session:
    armed = True
    failure = None
    def drain(self, timeout_s=120):
        self.drains += 1

    def __init__(self, run_dir: Path, events: list[dict], stats=None):
        self.drains = 0
        self.run_dir = run_dir
        self.stats = stats or {}
        self.assembly = TraceAssembly(policy="linux-6.1", backend="blkback", guest=1, backend_dom=0,
                                      max_grant_frames=64,
                                      domains=[{"domid": 1, "type": "hvm", "max_grant_frames": 64}])
        self.assembly.add(events)


GOLDEN = Path(__file__).resolve().parents[1] / "golden"


def _events(name: str) -> list[dict]:
    """A golden trace's events, as the capture holds them (without seq)."""
    import json

    lines = (GOLDEN / name).read_text().splitlines()[1:]
    return [{k: v for k, v in json.loads(line).items() if k != "seq"} for line in lines if line.strip()]


def test_a_divergence_in_the_partial_trace_is_a_fail_that_stands(tmp_path):
    from harness.checks.result import overall

    # A reference granted again while its first grant is active: the model
    # diverges there, in what was captured before dom0 died.
    session = _Session(tmp_path, _events("gnt.regrant-active.fail.jsonl"))
    info: dict = {}
    results = aftermath.judge_partial(session, None, info, "the run errored: dom0 stopped answering")
    (model,) = results
    assert model.outcome == FAIL and "before the run broke" in model.message, model.message
    assert info["trace"]["complete"] is False and (tmp_path / "trace.jsonl").exists()
    harness_error = [*results, type(model)("harness", ERROR, "dom0: the SSH connection failed")]
    assert overall(harness_error) == FAIL


def test_no_divergence_in_a_partial_trace_is_no_verdict(tmp_path):
    session = _Session(tmp_path, _events("gnt.regrant-active.pass.jsonl"))
    (model,) = aftermath.judge_partial(session, None, {}, "the run errored: dom0 stopped answering")
    assert model.outcome == ERROR and "incomplete" in model.message


def test_a_trace_with_a_hole_is_never_judged(tmp_path):
    session = _Session(tmp_path, _events("gnt.regrant-active.fail.jsonl"), stats={"dropped": "3"})
    (model,) = aftermath.judge_partial(session, None, {}, "the run errored")
    assert model.outcome == ERROR and "dropped 3" in model.message


def test_an_error_after_the_subject_loaded_is_product_suspect_for_the_nightly(tmp_path):
    import json

    report = {"schema": "xenrig-run/1", "outcome": "ERROR", "complete": True, "checks": [],
              "stages": [{"name": "steps", "outcome": "failed"}],
              "error": {"kind": "transport", "message": "dom0: the SSH connection failed while running 'x'",
                        "after_subject": "xen_blkfront"}}
    (tmp_path / "report.json").write_text(json.dumps(report))
    c = classify.classify(tmp_path)
    assert c.category == classify.PRODUCT and c.reason.startswith("product-suspect"), c.reason
    report["error"].pop("after_subject")
    (tmp_path / "report.json").write_text(json.dumps(report))
    assert classify.classify(tmp_path).category == classify.INFRASTRUCTURE


@pytest.mark.parametrize("line", [
    "[ 50.1] watchdog: BUG: soft lockup - CPU#0 stuck for 22s! [xr-io:80]",   # a starved vCPU under TCG
    "[ 50.1] BUG: workqueue lockup - pool cpus=0 node=0 flags=0x0 nice=0 stuck for 31s!",
    "[ 50.1] traps: xr-io[80] general protection fault ip:401000 sp:7ffd error:0 in xr-io",  # a user process
    "[ 50.1] INFO: task xr-io:80 blocked for more than 120 seconds.",
])
def test_timing_symptoms_and_user_faults_are_no_crash_of_the_subject(line, tmp_path):
    assert crash.guest_check(line + "\n", 0, "xen_blkfront").outcome == PASS
    serial = tmp_path / "serial-l0.log"
    serial.write_text(line + "\n(d1) Panic on CPU 0: a guest's words on Xen's debug port\n")
    assert crash.stack_check(serial, 0, "xen_blkfront").outcome == PASS
    assert classify.KERNEL_TROUBLE.search(line)    # still evidence for the nightly's classifier


def test_the_kernels_own_general_protection_fault_is_a_crash():
    line = "[ 9.5] general protection fault, probably for non-canonical address 0xdead000000000100: 0000 [#1] SMP"
    assert crash.guest_check(line, 0, "xen_blkfront").outcome == FAIL


def test_a_path_the_model_does_not_cover_is_no_fail_in_a_partial_trace(tmp_path):
    session = _Session(tmp_path, _events("model.unsupported.error.jsonl"))
    (model,) = aftermath.judge_partial(session, None, {}, "the run errored")
    assert model.outcome == ERROR and "v2" in model.message


def test_a_drop_seen_at_the_last_drain_keeps_a_broken_run_unjudged(tmp_path):
    session = _Session(tmp_path, _events("gnt.regrant-active.fail.jsonl"))
    session.dropped_seen = "2"
    (model,) = aftermath.judge_partial(session, None, {}, "the run errored")
    assert model.outcome == ERROR and "dropped 2" in model.message


def test_a_full_disk_after_the_subject_loaded_is_no_product_suspect(tmp_path):
    import json

    report = {"schema": "xenrig-run/1", "outcome": "ERROR", "complete": True, "checks": [], "stages": [],
              "error": {"kind": "disk-full", "message": "no space left", "after_subject": "xen_blkfront"}}
    (tmp_path / "report.json").write_text(json.dumps(report))
    assert classify.classify(tmp_path).category == classify.INFRASTRUCTURE


def test_a_guest_that_died_after_a_restore_is_found_under_its_new_domain(tmp_path):
    """The runner notes the domain a save-restore gave the guest; the death
    check then reads Xen's log for it too (CI missed a d2 triple fault)."""
    from types import SimpleNamespace

    from harness import runner
    from harness.checks import guest_death
    (tmp_path / "xl-dmesg.txt").write_text(
        (Path(__file__).parent / "data" / "xen-triple-fault-after-restore.log").read_text())
    info = {"guest": {"name": "g", "domid": 1}, "modules": [{"name": "xen_blkfront", "role": "blkfront"}]}
    mark = {"module": "xen_blkfront"}
    assert aftermath._guest_death(None, tmp_path, info, mark) is None     # d1 alone: the death is missed
    runner._note_domids(info, SimpleNamespace(domid=2))
    r = aftermath._guest_death(None, tmp_path, info, mark)
    assert r.outcome == ERROR and r.extra["kind"] == guest_death.OUTSIDE and "d2v0" in r.message
