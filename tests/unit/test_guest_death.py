"""A guest that died (Xen's triple-fault or crash dump) is placed inside a
module under test (FAIL), a harness module, or outside every module
(ERROR, the one the runner may retry); forged and foreign lines never count.
The log is the one a clean-clone CI run kept when its restored guest
triple-faulted in the Xen upcall's x2APIC EOI."""

from pathlib import Path

from harness.capture import hang
from harness.checks import guest_death
from harness.checks.result import ERROR, FAIL

LOG = (Path(__file__).parent / "data" / "xen-triple-fault.log").read_text()
RIP = 0xFFFFFFFF9EA7505B


def test_the_dump_gives_the_line_and_the_instruction_pointer():
    [death] = guest_death.deaths(LOG, 1)
    assert death.line == "(XEN) d1v0 Triple fault - invoking HVM shutdown action 1"
    assert (death.cs, death.rip) == (0x10, RIP)
    assert guest_death.deaths(LOG, 2) == []       # another domain's death is not this guest's


def test_a_death_in_the_core_kernel_is_an_error_worth_a_retry():
    r = guest_death.check(LOG, 1, {"xen_blkfront": (0xFFFFFFFFC0400000, 0x10000)}, ["xen_blkfront"], "xen_blkfront")
    assert r.outcome == ERROR and r.extra["kind"] == guest_death.OUTSIDE
    assert "core kernel" in r.message and "0xffffffff9ea7505b" in r.message


def test_a_death_inside_a_subject_is_its_fail():
    r = guest_death.check(LOG, 1, {"xen_blkfront": (RIP - 0x40, 0x1000)}, ["xen_blkfront"], "xen_blkfront")
    assert r.outcome == FAIL and r.extra["where"] == "xen_blkfront+0x40"


def test_a_death_inside_the_tracer_is_no_verdict_and_no_retry():
    r = guest_death.check(LOG, 1, {"xenrig_trace": (RIP - 0x10, 0x100)}, ["xen_blkfront"], "xen_blkfront")
    assert r.outcome == ERROR and r.extra["kind"] == "in-harness-module"


def test_a_death_in_module_space_no_module_was_placed_at_is_not_retried():
    log = LOG.replace("ffffffff9ea7505b", "ffffffffc0a1b2c3")
    r = guest_death.check(log, 1, {}, ["xen_blkfront"], "xen_blkfront")
    assert r.outcome == ERROR and r.extra["kind"] == "unplaced"


def test_a_death_in_user_mode_is_outside_every_module():
    log = LOG.replace("0010:[<ffffffff9ea7505b>]", "0033:[<000000000047b7a0>]")
    r = guest_death.check(log, 1, {}, ["xen_blkfront"], "xen_blkfront")
    assert r.extra["kind"] == guest_death.OUTSIDE and "user mode" in r.message


def test_lines_the_guest_prints_through_xen_never_count():
    forged = "\n".join("(d1) " + line for line in LOG.splitlines())
    assert guest_death.check(forged, 1, {}, [], "m") is None
    assert guest_death.check("(XEN) all is well\n", 1, {}, [], "m") is None


def test_a_domain_crash_is_a_death_too():
    log = ("(XEN) domain_crash called from svm.c:1234\n(XEN) Domain 3 (vcpu#1) crashed on cpu#0:\n"
           "(XEN) ----[ Xen-4.17.7  x86_64  debug=n  Not tainted ]----\n(XEN) CPU:    0\n"
           "(XEN) RIP:    0010:[<ffffffffc0400123>]\n")
    r = guest_death.check(log, 3, {"xen_blkfront": (0xFFFFFFFFC0400000, 0x1000)}, ["xen_blkfront"], "xen_blkfront")
    assert r.outcome == FAIL and r.extra["where"] == "xen_blkfront+0x123"


def test_proc_modules_is_parsed_and_hidden_addresses_left_out():
    text = ("xen_blkfront 65536 2 - Live 0xffffffffc0400000\n"
            "xenrig_trace 32768 0 - Live 0x0000000000000000\nbad line\n")
    assert guest_death.parse_proc_modules(text) == {"xen_blkfront": (0xFFFFFFFFC0400000, 65536)}


def test_a_device_whose_frontend_is_gone_is_no_hang(monkeypatch):
    """The domain that died took its xenstore directory with it: the watch
    must not call that a blkfront hang (it did, once, in CI)."""
    gone = [hang.RingSample("xvda", frontend_state="absent")]
    monkeypatch.setattr(hang, "sample", lambda *a: gone)
    monkeypatch.setattr(hang, "queues", lambda *a: None)    # the dead guest answers nothing
    monkeypatch.setattr(hang.time, "sleep", lambda s: None)
    report = hang.examine(None, None, ["xvda"], interval_s=0)
    assert not report.stuck and "not stuck" in report.summary
    waiting = [hang.RingSample("xvda", frontend_state="Initialising", backend_state="InitWait")]
    monkeypatch.setattr(hang, "sample", lambda *a: waiting)
    monkeypatch.setattr(hang, "blocked_tasks", lambda *a: "")
    assert hang.examine(None, None, ["xvda"], interval_s=0).stuck


def test_a_guest_restored_as_another_domain_is_found_dead_under_its_new_id():
    """CI's restored guest (d1 saved, d2 restored) triple-faulted as d2: a
    check that knew only d1 saw no death, and the run was not retried."""
    log = (Path(__file__).parent / "data" / "xen-triple-fault-after-restore.log").read_text()
    assert guest_death.deaths(log, 1) == []
    [death] = guest_death.deaths(log, [1, 2])
    assert death.line == "(XEN) d2v0 Triple fault - invoking HVM shutdown action 1"
    r = guest_death.check(log, [1, 2], {}, ["xen_blkfront"], "xen_blkfront")
    assert r.outcome == ERROR and r.extra["kind"] == guest_death.OUTSIDE
    assert guest_death.deaths(log, [1, 12]) == []     # d12 is not d2's prefix match
