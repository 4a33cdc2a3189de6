"""The hang watchdog (capture.hang.examine) and repro's judgement
(repro.judge) over fakes of the host and of a finished run: the exception
paths the issue names included."""

import struct

import pytest

from harness import repro
from harness.capture import hang
from harness.checks.result import CheckResult
from harness.config.schema import ReproSignature
from harness.errors import InfraError
from harness.host.ssh import Result
from harness.report import RunReport
from harness.runner import RunOutcome


class _Host:
    """dom0 as the watchdog sees it: xenstore, blkback's counters, sysrq."""

    def __init__(self, counters, queues=None):
        self.counters = list(counters)    # wr_req of each successive sample
        self.samples = 0
        self.commands = []
        self.queues = queues              # multi-queue-num-queues, None: absent

    def run(self, command, timeout_s=None, **k):
        self.commands.append(command)
        if "multi-queue-num-queues" in command:
            out = f"{self.queues}\n" if self.queues is not None else ""
        elif command.startswith("xenstore-read") and command.endswith("/backend"):
            out = "/local/domain/0/backend/vbd/3/51712\n"
        elif command.startswith("xenstore-read") and "ring-ref" in command:
            out = "8\n"
        elif command.startswith("xenstore-read"):
            out = "4\n"                  # XenbusStateConnected
        elif "statistics" in command:
            out = f"rd_req:0\nwr_req:{self.counters[min(self.samples, len(self.counters) - 1)]}\n"
            self.samples += 1
        else:
            out = ""
        return Result(command, 0, out, "", 0.0, out.encode())


class _Guest:
    domid = 3
    name = "xenrig-guest"

    def __init__(self, debugfs=""):
        self.debugfs = debugfs            # what the blk-mq sampling prints, or an exception
        self.commands = []

    def console(self):
        return "task:xr-io state:D\n"

    def run(self, command, timeout_s=None, **k):
        self.commands.append(command)
        if isinstance(self.debugfs, Exception):
            raise self.debugfs
        return Result(command, 0, self.debugfs, "", 0.0, self.debugfs.encode())


# blk-mq's debugfs as the sampling command prints it: queue 1 stopped with
# two requests in its dispatch list (__blk_mq_debugfs_rq_show's format).
STOPPED_QUEUE_1 = """== xvda/hctx0
state TAG_ACTIVE
== xvda/hctx1
state STOPPED|TAG_ACTIVE
rq 00000000a1b2c3d4 {.op=WRITE, .cmd_flags=SYNC|IDLE, .rq_flags=IO_STAT, .state=idle, .tag=37, .internal_tag=-1}
rq 00000000a1b2c3e8 {.op=WRITE, .cmd_flags=SYNC|IDLE, .rq_flags=IO_STAT, .state=idle, .tag=38, .internal_tag=-1}
"""


@pytest.fixture
def ring(monkeypatch):
    """The shared ring's indices, as the dom0 agent reads the ring page."""
    indices = {"value": (1, 1, 0, 1)}     # req_prod, req_event, rsp_prod, rsp_event

    def read_grant(xen, ops, timeout_s=None):
        return [{"ok": True, "hex": struct.pack("<4I", *indices["value"]).hex()}]

    monkeypatch.setattr(hang.dom0_agent, "run", read_grant)
    monkeypatch.setattr(hang.time, "sleep", lambda s: None)
    return indices


def test_nothing_moving_with_a_request_outstanding_is_a_hang_and_names_the_missed_notify(ring):
    host = _Host([5, 5])
    report = hang.examine(host, _Guest(), ["xvda"], interval_s=0)
    assert report.stuck
    assert "1 request(s) pushed and not answered" in report.summary and "a notify was due" in report.summary
    assert any(c.startswith("xl sysrq 3 w") for c in host.commands)   # the guest's blocked tasks, as evidence


@pytest.mark.parametrize("queues, names", [(2, ["xvda/0", "xvda/1"]), ("99999", ["xvda"]), ("2;reboot", ["xvda"])],
                         ids=["two-queues", "absurd-count", "not-a-number"])
def test_each_queue_ring_is_sampled_and_the_guests_count_is_bounded(ring, queues, names):
    host = _Host([5, 5], queues=queues)
    report = hang.examine(host, _Guest(), ["xvda"], interval_s=0)
    assert [s.vdev for s in report.samples] == names
    assert report.stuck and all(f"{n}: 1 request(s) pushed" in report.summary for n in names)
    if queues == 2:
        assert any("queue-1/ring-ref" in c for c in host.commands)


def test_a_ring_that_moves_is_not_stuck(ring):
    report = hang.examine(_Host([5, 9]), _Guest(), ["xvda"], interval_s=0)
    assert not report.stuck and "made progress" in report.summary


def test_an_idle_connected_ring_is_not_stuck(ring):
    ring["value"] = (4, 5, 4, 5)
    report = hang.examine(_Host([5, 5]), _Guest(), ["xvda"], interval_s=0)
    assert not report.stuck and "no request outstanding" in report.summary


def _outcome(tmp_path, outcome, checks, info=None, error=None):
    rep = RunReport("repro", outcome, tmp_path, 0.0, 1.0, [], checks, info=info or {})
    return RunOutcome(outcome, rep, error)


def test_repro_reproduced_by_the_models_rule_even_when_the_run_errored_after(tmp_path):
    div = {"rule": "blkif.seg-grant", "seq": 11, "message": "gref 10 is not granted", "event": {"kind": "blkif.req"}}
    checks = [CheckResult("trace.model", "FAIL", "first divergence", extra={"rule": "blkif.seg-grant"}),
              CheckResult("harness", "ERROR", "dom0: the SSH connection failed")]
    out = _outcome(tmp_path, "FAIL", checks, info={"verdict": {"divergence": div}},
                   error=InfraError("dom0: the SSH connection failed"))
    v = repro.judge(out, ReproSignature(rule="blkif.seg-grant"))
    assert v.verdict == repro.REPRODUCED and any("seq 11" in e for e in v.evidence)


def test_repro_that_could_not_judge_is_an_infrastructure_error(tmp_path):
    out = _outcome(tmp_path, "ERROR", [CheckResult("harness", "ERROR", "boot failed")], error=InfraError("boot failed"))
    v = repro.judge(out, ReproSignature(rule="blkif.seg-grant"))
    assert v.verdict == repro.INFRA and "boot failed" in v.evidence[0]


def test_repro_never_believes_a_match_on_a_stack_that_corrupted_data(tmp_path):
    checks = [CheckResult("trace.model", "FAIL", "x", extra={"rule": "blkif.seg-grant"}),
              CheckResult("stack.dom0-canary", "ERROR", "damaged", extra={"kind": "corruption"})]
    v = repro.judge(_outcome(tmp_path, "ERROR", checks), ReproSignature(rule="blkif.seg-grant"))
    assert v.verdict == repro.INFRA and "(would have matched" in v.evidence[-1]


def test_repro_reads_xens_console_when_dom0_died_before_xl_dmesg(tmp_path):
    (tmp_path / "serial-l0.log").write_text("(XEN) Assertion 'pg->count_info & PGC_allocated' failed at grant_table.c:1520\n")
    out = _outcome(tmp_path, "ERROR", [CheckResult("harness", "ERROR", "dom0 lost")], error=InfraError("dom0 lost"))
    v = repro.judge(out, ReproSignature(xen_log=r"Assertion .* failed at grant_table"))
    assert v.verdict == repro.REPRODUCED and v.evidence[0].startswith("Xen console")


def test_repro_not_reproduced_says_what_did_happen(tmp_path):
    v = repro.judge(_outcome(tmp_path, "PASS", [CheckResult("trace.model", "PASS", "all fine")]),
                    ReproSignature(hang=True))
    assert v.verdict == repro.NOT_REPRODUCED and "signature did not appear" in v.evidence[0]


def test_a_queue_left_stopped_with_requests_waiting_and_its_ring_empty_is_a_lost_restart(ring):
    ring["value"] = (96, 97, 96, 97)      # every pushed request answered
    guest = _Guest(STOPPED_QUEUE_1)
    report = hang.examine(_Host([5, 5], queues=2), guest, ["xvda"], interval_s=0)
    assert report.stuck and report.rule == "blkif.queue-not-restarted"
    assert "xvda/1: blk-mq hardware queue 1 stayed stopped with 2 request(s) waiting (WRITE tag 37 first)" \
        in report.summary
    assert "req_prod = rsp_prod = 96" in report.summary and "xvda/0" not in report.summary
    assert "xvda/1: blk-mq hardware queue 1 STOPPED" in report.evidence()
    assert all("for d in xvda/hctx*;" in c for c in guest.commands)


def test_a_stopped_queue_whose_ring_still_moves_is_no_lost_restart(ring):
    ring["value"] = (96, 97, 96, 97)
    report = hang.examine(_Host([5, 9], queues=2), _Guest(STOPPED_QUEUE_1), ["xvda"], interval_s=0)
    assert not report.stuck and report.rule == "blkif.hang"


def test_a_stopped_queue_with_requests_still_on_its_ring_is_the_ring_hang(ring):
    report = hang.examine(_Host([5, 5], queues=2), _Guest(STOPPED_QUEUE_1), ["xvda"], interval_s=0)
    assert report.stuck and report.rule == "blkif.hang" and "pushed and not answered" in report.summary


@pytest.mark.parametrize("debugfs", [
    InfraError("the guest agent did not answer"),
    "== xvda/hctx1; reboot\nstate STOPPED\nrq 1 {.op=WRITE, .tag=3,\n",     # not the shape of a queue name
    "== xvda/hctx1\nstate STOPPED\nrq garbage\n",                          # no request in a shape we know
], ids=["no-answer", "hostile-name", "hostile-request"])
def test_the_guests_queue_view_is_taken_only_in_its_known_shape(ring, debugfs):
    ring["value"] = (96, 97, 96, 97)
    report = hang.examine(_Host([5, 5], queues=2), _Guest(debugfs), ["xvda"], interval_s=0)
    assert not report.stuck and "no request outstanding" in report.summary
