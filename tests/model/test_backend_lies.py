"""The rules for a backend that lies (harness/model/backend_lies.py) on small
logs written here; real logs from the stack are the golden traces
tests/golden/lie.*.jsonl, run through `xenrig check` by tests/check/test_golden.py."""

from __future__ import annotations

import json

import pytest

from harness.check import backend_log
from harness.checks import backend_model
from harness.model import backend_lies


def connect(persistent=False, trusted=1):
    return [{"ev": "nodes", "trusted": trusted}, {"ev": "connected", "queues": 1, "order": 0, "persistent": persistent},
            {"ev": "seen", "ring": "q0", "rsp_event": 1}]


def req(at, rid):
    return {"ev": "request", "ring": "q0", "at": at, "id": rid, "op": 0, "sector": 2048, "segs": 1, "status": 0}


def rsp(at, rid, lie=None):
    ev = {"ev": "rsp", "ring": "q0", "at": at, "id": rid, "op": 0, "st": 0}
    if lie:
        ev["lie"] = lie
    return ev


def seen(event):
    return {"ev": "seen", "ring": "q0", "rsp_event": event}


def rule_of(events):
    found = backend_lies.judge(events)
    return None if found is None else (found[1].rule, found[0])


def test_a_correct_exchange_passes():
    assert rule_of(connect() + [req(0, 3), rsp(0, 3), seen(2), req(1, 3), rsp(1, 3), seen(3)]) is None


@pytest.mark.parametrize("lie", ["duplicate", "unknown-id", "id-out-of-range", "wrong-op", "unsolicited"])
def test_a_refused_lie_must_stop_the_frontend_at_its_slot(lie):
    head = connect() + [req(0, 3), rsp(0, 3), rsp(1, 3, lie)]
    assert rule_of(head + [seen(2)]) is None               # consumed up to the lie, not past it
    assert rule_of(head + [seen(2), seen(3)]) == ("lie.disable", len(head) + 1)


def test_rsp_prod_ahead_marks_the_first_slot_never_produced():
    events = connect() + [req(0, 3), rsp(0, 3),
                          {"ev": "lie", "ring": "q0", "did": "rsp-prod-ahead", "published": 35, "produced": 1}]
    assert rule_of(events + [seen(2)]) is None
    assert rule_of(events + [seen(3)])[0] == "lie.disable"


def test_keep_mapped_is_refused_without_persistent_grants_and_tolerated_with_them():
    body = [req(0, 3), rsp(0, 3, "keep-mapped"), seen(2)]
    assert rule_of(connect(persistent=False) + body) == ("lie.disable", 5)
    assert rule_of(connect(persistent=True) + body) is None
    # Tolerated: the frontend must get past it.
    assert rule_of(connect(persistent=True) + body[:2]) == ("lie.tolerate", 4)


@pytest.mark.parametrize("lie", ["bad-status", "delay", "reorder", "map-other", "scribble-write"])
def test_a_tolerated_lie_must_be_consumed_before_the_log_ends(lie):
    events = connect() + [req(0, 3), rsp(0, 3, lie)]
    assert rule_of(events + [seen(2)]) is None
    assert rule_of(events + [seen(1)]) == ("lie.tolerate", len(events))


def test_a_rewritten_response_owes_the_next_one_only_if_one_was_put():
    events = connect() + [req(0, 3), rsp(0, 3, "rewrite-after-push"), seen(2),
                          {"ev": "lie", "ring": "q0", "did": "rewrite-after-push", "id": 3, "next_at": 1}]
    assert rule_of(events) is None                         # nothing put after it
    stuck = events + [req(1, 4), rsp(1, 4)]
    assert rule_of(stuck) == ("lie.tolerate", len(stuck) - 1)
    assert rule_of(stuck + [seen(3)]) is None


def test_an_id_pushed_again_before_its_answer_breaks_id_reuse():
    assert rule_of(connect() + [req(0, 3), req(1, 3)]) == ("lie.id-reuse", 4)
    # An id never answered (unknown-id answered another) stays pending.
    assert rule_of(connect() + [req(0, 3), rsp(0, 7, "unknown-id"), req(1, 3)])[0] == "lie.id-reuse"


def test_grants_mapped_again_zeroed_pages_and_held_pages():
    remap = {"ev": "lie", "ring": "q0", "did": "map-other", "id": 3, "grefs": [40, 41], "allowed": [41]}
    assert rule_of(connect() + [remap]) == ("lie.grant-ended", 3)
    assert rule_of(connect() + [dict(remap, allowed=[])]) is None
    unzeroed = {"ev": "unzeroed", "kind": "persistent data page", "gref": 40, "sector": 3, "nonzero_bytes": 12}
    assert rule_of(connect(trusted=0) + [unzeroed]) == ("lie.zeroed", 3)
    assert rule_of(connect(trusted=1) + [unzeroed]) is None   # a trusted disk is not bounced
    assert rule_of(connect() + [{"ev": "held-page-reused", "gref": 40, "changed_bytes": 4096}])[0] == "lie.held-page"


def test_ring_indexes_wrap():
    top = 0xFFFFFFFF
    events = connect() + [req(top, 3), rsp(top, 3), rsp(0, 3, "duplicate")]
    assert rule_of(events + [seen(1)]) is None
    assert rule_of(events + [seen(2)])[0] == "lie.disable"


def write(tmp_path, events, name="xrback-xvdb.jsonl"):
    path = tmp_path / name
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    return path


def test_the_run_check_names_the_vbd_its_lie_and_the_rule(tmp_path):
    write(tmp_path, connect() + [req(0, 3), rsp(0, 3), rsp(1, 3, "duplicate"), seen(3)])
    write(tmp_path, connect() + [req(0, 3), rsp(0, 3, "bad-status"), seen(2)], "xrback-xvdi.jsonl")
    (tmp_path / "xrback-xvdb.spec.json").write_text("{}")
    results = {r.id: r for r in backend_model.check(tmp_path)}
    assert set(results) == {"backend.model[xvdb]", "backend.model[xvdi]"}
    bad = results["backend.model[xvdb]"]
    assert bad.outcome == "FAIL" and bad.extra["rule"] == "lie.disable"
    assert "xvdb (lies told: duplicate)" in bad.message and "xrback-xvdb.jsonl:7" in bad.message
    assert results["backend.model[xvdi]"].outcome == "PASS"


def test_a_crashed_or_unreadable_log_is_an_error_never_a_pass(tmp_path):
    write(tmp_path, connect() + [{"ev": "crashed", "why": "OSError: boom"}])
    (tmp_path / "xrback-xvdc.jsonl").write_text('{"ev": "nodes"}\nnot json\n')
    results = {r.id: r for r in backend_model.check(tmp_path)}
    assert results["backend.model[xvdb]"].outcome == "ERROR" and "crashed" in results["backend.model[xvdb]"].message
    assert results["backend.model[xvdc]"].outcome == "ERROR" and "xrback-xvdc.jsonl:2" in results["backend.model[xvdc]"].message


def test_a_backend_log_is_told_apart_from_a_trace(tmp_path):
    assert backend_log.is_backend_log(write(tmp_path, connect()))
    trace = tmp_path / "trace.jsonl"
    trace.write_text('{"v":1,"kind":"header","policy":"linux-6.1"}\n')
    assert not backend_log.is_backend_log(trace)


def test_an_event_missing_a_field_is_an_error_naming_its_line_not_a_traceback(tmp_path):
    path = write(tmp_path, connect() + [{"ev": "rsp", "ring": "q0", "id": 3}])
    verdict = backend_log.check_file(path)
    assert verdict.outcome == "ERROR" and "xrback-xvdb.jsonl:4" in verdict.error and "'at'" in verdict.error
    assert backend_model.check(tmp_path)[0].outcome == "ERROR"
