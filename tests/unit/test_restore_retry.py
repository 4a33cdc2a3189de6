"""A restored guest that dies before anything is loaded gets one fresh
restore, said in the run's record; every other failure after a restore is
the run's error as before.  Fakes stand in for the stack and the guest:
what is under test is only booted.stack_and_guest's control flow."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from harness import booted
from harness.config import GuestConfig, HostConfig
from harness.errors import InfraError
from harness.stages import Timeline


class FakeXen:
    def __init__(self, log: str, running: bool):
        self.log, self.running = log, running

    def dmesg(self) -> str:
        return self.log

    def domid(self, name: str):
        return 1 if self.running else None


class FakeSnap:
    meta = {"guest": "xenrig-guest"}


def _rig(monkeypatch, hosts: list[FakeXen], wake_errors: list):
    events: list[str] = []
    monkeypatch.setattr(booted.snapshot, "key_for", lambda *a: "k")
    monkeypatch.setattr(booted.snapshot, "lookup", lambda key: FakeSnap())
    monkeypatch.setattr(booted.accel_mod, "choose", lambda accel: "tcg")

    @contextlib.contextmanager
    def xen_host(*a, **kw):
        n = len([e for e in events if e.startswith("up")]) + 1
        events.append(f"up{n}")
        try:
            yield hosts[n - 1]
        finally:
            events.append(f"down{n}")

    @contextlib.contextmanager
    def owned(g, *a):
        try:
            yield g
        finally:
            events.append("guest destroyed")

    def wake(xen, g, snap, timeline, out):
        err = wake_errors.pop(0)
        if err:
            raise err

    monkeypatch.setattr(booted.stack, "xen_host", xen_host)
    monkeypatch.setattr(booted.hvm, "attach", lambda xen, name, cfg: ("guest", xen))
    monkeypatch.setattr(booted.hvm, "owned", owned)
    monkeypatch.setattr(booted, "_wake", wake)
    return events


def _run(tmp_path: Path, info: dict):
    with booted.stack_and_guest(HostConfig(), GuestConfig(), Timeline(), tmp_path, built=None, info=info) as (x, g):
        return x, g


def test_a_guest_that_triple_faulted_after_the_restore_is_restored_once_more(monkeypatch, tmp_path):
    dead = FakeXen("(XEN) d1v0 Triple fault - invoking HVM shutdown action\n", running=False)
    good = FakeXen("", running=True)
    events = _rig(monkeypatch, [dead, good], [InfraError("guest agent socket missing"), None])
    info: dict = {}
    xen, _ = _run(tmp_path, info)
    assert xen is good
    assert events == ["up1", "guest destroyed", "down1", "up2", "guest destroyed", "down2"]
    (retry,) = info["snapshot"]["retries"]
    assert "Triple fault" in retry["evidence"] and retry["error"] == "guest agent socket missing"
    assert "Triple fault" in (tmp_path / "xl-dmesg.restore-1.txt").read_text()


def test_a_guest_still_running_but_silent_is_not_retried(monkeypatch, tmp_path):
    silent = FakeXen("", running=True)
    events = _rig(monkeypatch, [silent], [InfraError("guest agent did not answer")])
    info: dict = {}
    with pytest.raises(InfraError, match="did not answer"):
        _run(tmp_path, info)
    assert events == ["up1", "guest destroyed", "down1"]
    assert "retries" not in info["snapshot"]


def test_a_second_death_is_the_run_error_and_nothing_is_left_up(monkeypatch, tmp_path):
    dead = [FakeXen("(XEN) d1v0 Triple fault\n", running=False) for _ in range(2)]
    events = _rig(monkeypatch, dead, [InfraError("socket missing"), InfraError("socket missing again")])
    info: dict = {}
    with pytest.raises(InfraError, match="again"):
        _run(tmp_path, info)
    assert events == ["up1", "guest destroyed", "down1", "up2", "guest destroyed", "down2"]
    assert len(info["snapshot"]["retries"]) == 1
    assert (tmp_path / "xl-dmesg.txt").exists()


def test_ctrl_c_during_the_wake_tears_down_without_a_retry(monkeypatch, tmp_path):
    dead = FakeXen("(XEN) d1v0 Triple fault\n", running=False)
    events = _rig(monkeypatch, [dead], [KeyboardInterrupt()])
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, {})
    assert events == ["up1", "guest destroyed", "down1"]


def test_the_wake_looks_again_after_a_settle_and_reports_a_late_triple_fault(monkeypatch):
    # The guest answered the clock checks, then triple-faulted: the wake
    # itself fails, inside the window stack_and_guest retries.
    class Guest:
        name = "xenrig-guest"

        def run(self, command, timeout_s=None):
            return None

    xen = FakeXen("(XEN) d1v0 Triple fault - invoking HVM shutdown action 1\n", running=False)
    xen.machine = type("M", (), {"notes": {}})()
    monkeypatch.setattr(booted, "check_clocks", lambda xen, g, on_guest_answer: {"guest_rate": 1.0})
    monkeypatch.setattr(booted.time, "sleep", lambda s: None)
    timeline = Timeline()
    with timeline.stage("restore snapshot"):
        pass
    with pytest.raises(InfraError, match="died after it first answered: .*Triple fault"):
        booted._wake(xen, Guest(), FakeSnap(), timeline, {})
