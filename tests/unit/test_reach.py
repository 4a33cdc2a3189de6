"""A scenario's fill_rings: a run that never reached a full ring cannot
judge the queue stop and restart it was written for."""

import pytest

from harness.checks.reach import rings_filled
from harness.config import Scenario


def test_no_rings_asked_no_result():
    assert rings_filled([], {"xvda/0": {"peak": 3, "slots": 32}}) == []


def test_a_ring_that_held_every_slot_passes():
    [r] = rings_filled(["xvdb/1"], {"xvdb/1": {"peak": 32, "slots": 32}, "xvdb/0": {"peak": 2, "slots": 32}})
    assert r.outcome == "PASS" and "xvdb/1 held all 32 slots" in r.message


@pytest.mark.parametrize("fullest, says", [
    ({"xvdb/1": {"peak": 31, "slots": 32}}, "xvdb/1 held at most 31 of its 32 slots"),
    ({"xvdb/0": {"peak": 32, "slots": 32}}, "xvdb/1 was never set up (rings in the trace: xvdb/0)"),
])
def test_a_ring_short_of_full_or_absent_is_an_error_not_a_pass(fullest, says):
    [r] = rings_filled(["xvdb/1"], fullest)
    assert r.outcome == "ERROR" and says in r.message and "cannot judge" in r.message


def test_every_ring_asked_is_judged():
    [r] = rings_filled(["xvdb/0", "xvdb/1"], {"xvdb/0": {"peak": 32, "slots": 32}, "xvdb/1": {"peak": 5, "slots": 32}})
    assert r.outcome == "ERROR" and "xvdb/1 held at most 5" in r.message and "xvdb/0" not in r.message


@pytest.mark.parametrize("rings, capture, key", [
    (["xvdb"], True, "fill_rings"), (["xvdb/1; reboot"], True, "fill_rings"), (["xvdb/1"], False, "fill_rings"),
    (["xvdb/1"], True, None),
])
def test_fill_rings_names_vdev_and_queue_of_a_captured_run(rings, capture, key):
    got = Scenario(name="s", capture=capture, fill_rings=rings).validate()
    assert (got[0] if got else None) == key
