"""End to end: xenrig's scripted blkif backend in dom0 (harness/remote/xrback.py)
behind the guest's blkfront, first correct, then lying."""

import json
import re

import pytest

from .conftest import REPO
from .test_capture import run


def backend_events(run_dir, vdev):
    return [json.loads(line) for line in (run_dir / f"xrback-{vdev}.jsonl").read_text().splitlines()]


@pytest.mark.timeout(1800)
def test_blkfront_io_on_the_scripted_backend_passes_with_the_model_and_the_data_check(tmp_path, no_stack_left):
    rc, out, report = run(REPO / "configs" / "scenarios" / "blkfront-io-scripted.yaml", tmp_path)
    assert rc == 0, out
    model = next(c for c in report["checks"] if c["id"] == "trace.model")
    assert model["outcome"] == "PASS", model
    steps = {c["id"]: c for c in report["checks"] if c["id"].startswith("step ")}
    for name, check in steps.items():
        if "scripted:" in name:
            # xr-io read back every byte it wrote through our backend.
            assert re.search(r"errors=0 mismatches=0", json.loads(check["evidence"])["output"]), check
    # The model judged blkfront's traffic on the scripted ring too.
    rings = {ev["ring"] for ev in map(json.loads, (tmp_path / "trace.jsonl").read_text().splitlines()[1:])
             if ev.get("kind") == "blkif.req"}
    assert {"xvda/0", "xvdb/0"} <= rings, rings
    events = backend_events(tmp_path, "xvdb")
    served = [e for e in events if e["ev"] == "request"]
    assert len(served) > 300 and all(e["status"] == 0 and e["rule"] is None for e in served)
    assert {1, 0} <= {e["op"] for e in served}
    assert [e["state"] for e in events if e["ev"] == "state"] == ["InitWait", "Connected", "Closing", "Closed"]
    assert events[-1]["ev"] == "nodes-removed"


@pytest.mark.timeout(1800)
def test_every_lie_of_the_hostile_backend_is_its_own_case_and_the_unmodified_blkfront_passes_them(
        tmp_path, no_stack_left):
    rc, out, report = run(REPO / "configs" / "scenarios" / "hostile-backend.yaml", tmp_path)
    assert rc == 0, out
    steps = [c for c in report["checks"] if c["id"].startswith("step ")]
    assert len(steps) == 65 and all(c["outcome"] == "PASS" for c in steps), steps
    # One case per behaviour besides its attach, the helpers, the dirtying of
    # free memory and the last probe.
    cases = [c for c in steps[1:-1] if not c["id"].startswith(("step attach", "step dirty"))]
    assert len(cases) == 33, [c["id"] for c in cases]
    # The untrusted disk: the backend checked its shared pages sector by sector.
    zeroed = json.loads(next(c for c in steps if c["id"].startswith("step untrusted xvdq: every"))["evidence"])
    assert zeroed["unzeroed"] == 0 and zeroed["sectors_checked"] > 100 and zeroed["ring_pages_checked"] >= 1, zeroed
    crash = next(c for c in report["checks"] if c["id"] == "guest.kernel-log")
    assert crash["outcome"] == "PASS", crash
    # Each lie was told, once, by the backend of its own vbd.
    told = {}
    for vdev in "bcdefghijklmstuvwxyz":
        for e in backend_events(tmp_path, f"xvd{vdev}"):
            if e["ev"] == "lie":
                told.setdefault(e["did"], set()).add(f"xvd{vdev}")
    assert told == {"duplicate": {"xvdb"}, "unknown-id": {"xvdc"}, "id-out-of-range": {"xvdd"},
                    "wrong-op": {"xvde"}, "rsp-prod-ahead": {"xvdf"}, "unsolicited": {"xvdg"},
                    "keep-mapped": {"xvdh"}, "bad-status": {"xvdi"}, "storm": {"xvdk"},
                    "no-notify": {"xvdl"}, "rewrite-after-push": {"xvdm"}, "reorder": {"xvds"},
                    "map-other": {"xvdt"}, "scribble-write": {"xvdu", "xvdv"}, "state-jump": {"xvdw"},
                    "connect-early": {"xvdx"}, "hold-persistent": {"xvdy"}, "vanish-with-io": {"xvdz"}}, told
    # Responses really went out of order; Xen refused every re-map of an
    # ended grant; the held persistent pages stayed the backend's.
    assert any(e["ev"] == "reordered" for e in backend_events(tmp_path, "xvds"))
    remapped = json.loads(next(c for c in steps if c["id"].startswith("step grants mapped after the response: Xen"))["evidence"])
    assert remapped["other_maps_refused"] >= 2 and remapped["other_maps_allowed"] == 0, remapped
    held = [e for e in backend_events(tmp_path, "xvdy") if e.get("did") == "hold-persistent"]
    assert held and held[0]["pages"] > 0, held
    # The model read every backend's log: the ring-breaking lies stopped
    # blkfront at their slot, the tolerated ones were consumed past.
    models = {c["id"]: c for c in report["checks"] if c["id"].startswith("backend.model[")}
    again = {"backend.model[xvdt.2]", "backend.model[xvdt.3]", "backend.model[xvdy.2]", "backend.model[xvdq.2]"}
    assert set(models) == {f"backend.model[xvd{v}]" for v in "bcdefghijklmnopqrstuvwxyz"} | again, sorted(models)
    assert all(c["outcome"] == "PASS" for c in models.values()), models
    assert "lies told: wrong-op" in models["backend.model[xvde]"]["message"]
    junit = (tmp_path / "junit.xml").read_text()
    assert junit.count("<testcase") >= 33


@pytest.mark.timeout(1800)
def test_a_blkfront_without_the_response_operation_check_fails_the_wrong_operation_case(tmp_path, no_stack_left):
    """Detection proven: with revert-rsp-op-check.patch blkfront completes a
    read the backend answered as a write; the case names the missing alert."""
    rc, out, report = run(REPO / "tests" / "e2e" / "scenarios" / "hostile-wrong-op.yaml", tmp_path,
                          "--set", "modules.blkfront.patches=[guest-kernel/patches/revert-rsp-op-check.patch]")
    assert rc == 1, out
    case = next(c for c in report["checks"] if c["id"].startswith("step wrong operation"))
    assert case["outcome"] == "FAIL", case
    assert "not in the kernel log: xvde: response has wrong operation" in json.loads(case["evidence"])["output"]
    lies = [e for e in backend_events(tmp_path, "xvde") if e["ev"] == "lie"]
    assert [e["did"] for e in lies] == ["wrong-op"]
    # The model, from the backend's side of the ring: blkfront consumed past
    # the response it had to refuse.
    model = next(c for c in report["checks"] if c["id"] == "backend.model[xvde]")
    assert model["outcome"] == "FAIL" and model["extra"]["rule"] == "lie.disable", model
    assert "after the wrong-op response" in model["message"], model
