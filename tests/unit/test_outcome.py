"""The outcome vocabulary and its exit codes, and run_scenario's exception
paths: no PASS after a crash of the harness, the report marked complete only
when it is."""

import contextlib
import json

import pytest

from harness import outcome, runner
from harness.checks.result import ERROR, FAIL, PASS, CheckResult
from harness.config import HostConfig, Scenario
from harness.errors import ConfigError, InfraError, TransportError


@pytest.mark.parametrize("outcomes,corrupted,want", [
    ([], False, "ERROR"),
    (["PASS", "PASS"], False, "PASS"),
    (["SKIP"], False, "SKIP"),
    (["PASS", "SKIP"], False, "PASS"),
    (["PASS", "ERROR"], False, "ERROR"),
    (["FAIL", "ERROR"], False, "FAIL"),
    (["ERROR", "FAIL"], False, "FAIL"),
    (["FAIL", "PASS"], True, "ERROR"),
])
def test_precedence(outcomes, corrupted, want):
    assert outcome.overall(outcomes, corrupted) == want


def test_exit_codes():
    assert outcome.exit_code("PASS") == 0 and outcome.exit_code("SKIP") == 0
    assert outcome.exit_code("FAIL") == 1
    assert outcome.exit_code("FAIL", "patch") == 1                 # a proven FAIL is not undone
    assert outcome.exit_code("ERROR", "infrastructure") == 2
    assert outcome.exit_code("ERROR", "transport") == 2
    assert outcome.exit_code("ERROR", "internal") == 3
    for kind in ("config", "usage", "patch", "build"):
        assert outcome.exit_code("ERROR", kind) == 4
    assert outcome.headline("FAIL", "dom0: the SSH connection broke") == \
        "FAIL; then the run errored: dom0: the SSH connection broke"


def _fake_prepare(raise_what):
    def prepare(*a, **k):
        raise raise_what
    return prepare


@pytest.mark.parametrize("exc,code,kind", [
    (KeyError("oops"), 3, "internal"),
    (InfraError("the mirror is down"), 2, "infrastructure"),
    (ConfigError("patch x does not apply"), 4, "config"),
])
def test_run_scenario_turns_every_exception_into_an_honest_report(tmp_path, monkeypatch, exc, code, kind):
    monkeypatch.setattr(runner, "prepare", _fake_prepare(exc))
    monkeypatch.setattr(runner.host_tools, "versions", lambda: {})
    result = runner.run_scenario(Scenario(name="t"), HostConfig(), run_dir=tmp_path)
    assert result.outcome == "ERROR" and result.exit_code == code
    rep = json.loads((tmp_path / "report.json").read_text())
    assert rep["complete"] is True and rep["outcome"] == "ERROR" and rep["exit_code"] == code
    assert rep["error"]["kind"] == kind
    if kind == "internal":
        assert "KeyError" in (tmp_path / "internal-error.txt").read_text()
        assert "internal-error.txt" in rep["error"]["message"]


class _Xen:
    machine = None      # a real Xen host: no L0 VM, no serial line

    class ssh:  # noqa: N801 - stands in for SshSession's counters
        reconnects, transport_events = 1, ["Mismatched MAC"]
        dead = staticmethod(lambda: None)    # the death watch saw nothing


@contextlib.contextmanager
def _host_that_breaks_in_teardown(*a, **k):
    yield _Xen(), None
    raise InfraError("dom0: the SSH connection broke while running 'xl destroy g'")


@contextlib.contextmanager
def _guest(*a, **k):
    yield None, None


def _fake_stack(monkeypatch, host, guest, dom0_canary: str, smoke: list) -> None:
    """run_scenario over a fake stack: `host` and `guest` stand in for
    booted.stack_and_guest and guest_with_modules."""
    monkeypatch.setattr(runner, "prepare", lambda *a, **k: (None, []))
    monkeypatch.setattr(runner.host_tools, "versions", lambda: {})
    monkeypatch.setattr(runner.booted, "stack_and_guest", host)
    monkeypatch.setattr(runner, "guest_with_modules", guest)
    monkeypatch.setattr(runner, "collect_xen_logs", lambda xen, d: None)
    monkeypatch.setattr(runner.canary, "start_dom0", lambda xen: None)
    monkeypatch.setattr(runner.canary, "start_guest", lambda g: "x")
    monkeypatch.setattr(runner.canary, "check_guest", lambda g, w: CheckResult("stack.guest-canary", PASS, ""))
    monkeypatch.setattr(runner.canary, "stop_dom0", lambda xen: CheckResult("stack.dom0-canary", dom0_canary, ""))
    monkeypatch.setattr(runner.smoke, "run", lambda *a, **k: smoke)


def test_a_fail_proven_before_the_stack_broke_stands(tmp_path, monkeypatch):
    """A check proved the subject wrong, then dom0's SSH broke in teardown."""
    _fake_stack(monkeypatch, _host_that_breaks_in_teardown, _guest, dom0_canary=PASS,
                smoke=[CheckResult("guest.io-roundtrip[xvda]", FAIL, "differs")])
    result = runner.run_scenario(Scenario(name="t"), HostConfig(), run_dir=tmp_path)
    assert result.outcome == "FAIL" and result.exit_code == 1
    rep = json.loads((tmp_path / "report.json").read_text())
    assert rep["headline"].startswith("FAIL; then the run errored:") and "xl destroy" in rep["headline"]
    assert rep["info"]["transport"]["reconnects"] == 1


def test_sigterm_exits_143_and_a_second_signal_does_not_cut_teardown(monkeypatch, capsys):
    import os
    import signal

    from harness import cli

    torn_down = []

    def handler(args):
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            raise AssertionError("not reached")
        finally:
            os.kill(os.getpid(), signal.SIGINT)      # impatient user, during teardown
            torn_down.append(True)

    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    monkeypatch.setattr(parser, "parse_args", lambda argv: type("A", (), {"handler": staticmethod(handler)})())
    try:
        assert cli.main([]) == 143
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    assert torn_down == [True]
    assert "deferred" in capsys.readouterr().err


def test_a_divergence_captured_before_dom0_died_is_judged_and_stands(tmp_path, monkeypatch):
    """dom0's transport dies mid-run after blkfront loaded: the trace captured
    up to then is still replayed, and its divergence is the verdict."""
    from test_aftermath import _events, _Session   # tests/unit is on sys.path (no __init__.py)

    session_of = {}

    @contextlib.contextmanager
    def guest_that_loses_dom0(xen, scenario, built, timeline, run_dir, info, live=None, **k):
        info["subject"] = {"module": "xen_blkfront", "serial_offset": None, "guest_dmesg_line": None,
                           "guest_console_offset": None}
        live["session"] = session_of["s"] = _Session(run_dir, _events("gnt.regrant-active.fail.jsonl"))
        live["guest_name"] = "xenrig-guest"
        yield None, None
        raise TransportError("dom0: the SSH connection failed while running 'cat /sys/kernel/debug/x'")

    @contextlib.contextmanager
    def host(*a, **k):
        yield _Xen(), None

    _fake_stack(monkeypatch, host, guest_that_loses_dom0, dom0_canary=ERROR, smoke=[])
    result = runner.run_scenario(Scenario(name="t"), HostConfig(), run_dir=tmp_path)
    assert result.outcome == "FAIL" and result.exit_code == 1
    rep = json.loads((tmp_path / "report.json").read_text())
    model = next(c for c in rep["checks"] if c["id"] == "trace.model")
    assert model["outcome"] == "FAIL" and "before the run broke" in model["message"]
    assert rep["headline"].startswith("FAIL; then the run errored:")
    assert rep["error"]["after_subject"] == "xen_blkfront"
    assert rep["info"]["trace"]["complete"] is False
    # Not known dead: the capture was drained once more before the teardown.
    assert rep["info"]["trace"]["events"] == len(_events("gnt.regrant-active.fail.jsonl"))
    assert session_of["s"].drains == 1


@contextlib.contextmanager
def _healthy_host(*a, **k):
    yield _Xen(), None


def _raise(exc):
    def fail(*a, **k):
        raise exc
    return fail


@pytest.mark.parametrize("where", ["check", "report writer"])
def test_a_harness_bug_anywhere_is_an_internal_error_never_a_pass(tmp_path, monkeypatch, where):
    """A check that raises, or the report writer: exit 3, the traceback in
    the run folder, and no PASS left standing from the checks before."""
    smoke = [CheckResult("xen.hvm-enabled", PASS, "")]
    _fake_stack(monkeypatch, _healthy_host, _guest, dom0_canary=PASS, smoke=smoke)
    if where == "check":
        monkeypatch.setattr(runner.smoke, "run", _raise(ZeroDivisionError("in a check")))
    else:
        monkeypatch.setattr(runner.report, "write", _raise(ValueError("in the writer")))
    result = runner.run_scenario(Scenario(name="t"), HostConfig(), run_dir=tmp_path)
    assert result.outcome == "ERROR" and result.exit_code == 3
    assert "Error: in " in (tmp_path / "internal-error.txt").read_text()
    rep = json.loads((tmp_path / "report.json").read_text())
    assert rep["outcome"] == "ERROR"
    if where == "report writer":
        assert rep["complete"] is False and rep["error"]["kind"] == "internal"


def test_a_model_that_raises_is_an_internal_error(tmp_path, monkeypatch):
    from test_aftermath import _events, _Session

    @contextlib.contextmanager
    def guest_with_capture(xen, scenario, built, timeline, run_dir, info, live=None, **k):
        session = live["session"] = _Session(run_dir, _events("gnt.regrant-active.pass.jsonl"))
        yield None, session

    _fake_stack(monkeypatch, _healthy_host, guest_with_capture, dom0_canary=PASS, smoke=[])
    monkeypatch.setattr(runner, "judge_capture", _raise(RecursionError("the model blew its stack")))
    result = runner.run_scenario(Scenario(name="t"), HostConfig(), run_dir=tmp_path)
    assert result.outcome == "ERROR" and result.exit_code == 3
    assert "RecursionError" in json.loads((tmp_path / "report.json").read_text())["error"]["message"]


def _dying_stack(monkeypatch, deaths: int, smoke: list, kind: str = "outside-modules", also: tuple = ()) -> list:
    """A fake stack whose guest dies (Xen's word, placed by `kind`) in the
    first `deaths` attempts; returns the list that counts the attempts."""
    attempts = []

    @contextlib.contextmanager
    def host(*a, **k):
        attempts.append(1)
        yield _Xen(), None

    @contextlib.contextmanager
    def guest(*a, **k):
        if len(attempts) <= deaths:
            raise InfraError("guest xenrig-guest: guestctl: cannot connect to agent.sock")
        yield None, None

    _fake_stack(monkeypatch, host, guest, dom0_canary=PASS, smoke=smoke)
    monkeypatch.setattr(runner.aftermath, "crash_checks", lambda *a: [CheckResult(
        "guest.crash", ERROR, "the guest died", extra={"kind": kind, "line": "(XEN) d1v0 Triple fault"}), *also]
        if len(attempts) <= deaths else [])
    return attempts


def test_a_guest_dying_outside_every_module_is_made_once_more_and_says_so(tmp_path, monkeypatch):
    attempts = _dying_stack(monkeypatch, deaths=1, smoke=[CheckResult("guest.sees-platform-pci", PASS, "")])
    result = runner.run_scenario(Scenario(name="t"), HostConfig(), run_dir=tmp_path)
    assert result.outcome == PASS and len(attempts) == 2
    first = json.loads((tmp_path / "first-attempt" / "report.json").read_text())
    assert first["outcome"] == "ERROR" and (tmp_path / "first-attempt" / "xenrig.log").exists()
    rep = json.loads((tmp_path / "report.json").read_text())
    assert rep["info"]["retried"] == {"reason": "(XEN) d1v0 Triple fault", "first_attempt": "first-attempt",
                                      "first_outcome": "ERROR"}
    assert "second attempt" in (tmp_path / "summary.txt").read_text()


def test_a_second_death_is_the_runs_error_and_there_is_no_third(tmp_path, monkeypatch):
    attempts = _dying_stack(monkeypatch, deaths=2, smoke=[])
    result = runner.run_scenario(Scenario(name="t"), HostConfig(), run_dir=tmp_path)
    assert result.outcome == ERROR and len(attempts) == 2
    assert json.loads((tmp_path / "report.json").read_text())["info"]["retried"]["first_outcome"] == "ERROR"


@pytest.mark.parametrize("kind,also", [
    ("outside-modules", (CheckResult("stack.crash", FAIL, "dom0 oops"),)),    # a FAIL stands
    ("unplaced", ()),                     # maybe the subject's: no second chance
    ("in-harness-module", ()),
])
def test_no_retry_when_the_first_attempt_proved_or_may_have_proved_something(tmp_path, monkeypatch, kind, also):
    attempts = _dying_stack(monkeypatch, deaths=1, smoke=[], kind=kind, also=also)
    result = runner.run_scenario(Scenario(name="t"), HostConfig(), run_dir=tmp_path)
    assert len(attempts) == 1 and result.outcome in (ERROR, FAIL) and not (tmp_path / "first-attempt").exists()
