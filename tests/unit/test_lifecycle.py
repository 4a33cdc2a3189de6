"""Lifecycle steps' control flow over a fake guest: what runs in the guest,
in which order, and what a refusal reports."""

from types import SimpleNamespace

import pytest

from harness.capture.lifecycle import Lifecycle
from harness.errors import InfraError


class FakeGuest:
    def __init__(self, answers):
        self.commands = []
        self.answers = answers   # (substring, exit status, stdout), first match wins

    def run(self, command, timeout_s=None, **_):
        self.commands.append(command)
        for part, status, out in self.answers:
            if part in command:
                return SimpleNamespace(exit_status=status, stdout=out, ok=status == 0)
        return SimpleNamespace(exit_status=0, stdout="", ok=True)


def _lifecycle(guest, vdevs=("xvda", "xvdb")):
    capture = SimpleNamespace(xen=None, guest=guest, vdevs=list(vdevs), rings_stale=False,
                              blkfront=SimpleNamespace(name="xen_blkfront"))
    return Lifecycle(capture), capture


def test_unload_unbinds_every_vbd_before_rmmod():
    # xenbus_dev_probe holds a module reference per bound device: rmmod first would be refused
    guest = FakeGuest([("test -e /sys/module", 1, "")])
    life, capture = _lifecycle(guest)
    out = life.unload(60)
    unbinds = [c for c in guest.commands if "drivers/vbd/unbind" in c]
    assert ["vbd-51712" in unbinds[0], "vbd-51728" in unbinds[1]] == [True, True]
    assert guest.commands.index(unbinds[-1]) < next(i for i, c in enumerate(guest.commands) if c.startswith("rmmod"))
    assert out["unloaded"] and out["unbound"] == ["xvda", "xvdb"] and capture.rings_stale
    assert capture.vdevs == ["xvda", "xvdb"]   # the devices stay: a load binds them again


def test_a_refused_rmmod_names_the_refcount_and_holders():
    guest = FakeGuest([("rmmod", 1, "rmmod: can't unload module: Resource temporarily unavailable"),
                       ("refcnt", 0, "1\n")])
    life, _ = _lifecycle(guest)
    with pytest.raises(InfraError, match=r"Resource temporarily unavailable.*xvda, xvdb.*holders are: 1"):
        life.unload(60)


def test_idle_checks_the_guest_still_answers(monkeypatch):
    monkeypatch.setattr("harness.capture.lifecycle.time.sleep", lambda s: None)
    life, _ = _lifecycle(FakeGuest([("uptime", 255, "")]))
    with pytest.raises(InfraError, match="did not answer after 75 s idle"):
        life.idle(75)
    life, _ = _lifecycle(FakeGuest([]))
    assert life.idle(75)["idle_s"] == 75
