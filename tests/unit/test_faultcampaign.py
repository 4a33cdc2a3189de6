"""The fault campaign's scoring (harness.faultcampaign.run_case), with the
runs faked: a wrong class, a QEMU left behind, a next run that fails, each
shows as a problem; the right outcome shows none."""

import json

from harness import faultcampaign
from harness.faultcampaign import Case, RunSeen


def _fake(monkeypatch, tmp_path, broken_report: dict, next_code=0, left=(0, 0)):
    lefts = list(left)

    def run(out, fault=None, scenario=faultcampaign.SCENARIO, timeout_s=0):
        out.mkdir(parents=True)
        if fault:
            (out / "report.json").write_text(json.dumps(broken_report))
            (out / "xenrig.log").write_text("log\n")
            (out / "serial-l0.log").write_text("")
            return RunSeen(broken_report.get("exit_code", -9), 1.0, out, "", broken_report)   # -9: SIGKILLed
        return RunSeen(next_code, 1.0, out, "", {"outcome": "PASS" if next_code == 0 else "ERROR"})

    monkeypatch.setattr(faultcampaign, "run", run)
    monkeypatch.setattr(faultcampaign, "qemu_left", lambda: [1] * lefts.pop(0))


CRASH = {"outcome": "FAIL", "exit_code": 1, "complete": True,
         "checks": [{"id": "stack.crash", "outcome": "FAIL", "message": "Kernel panic"}]}
DOM0_PANIC = Case("dom0 panicked", "dom0-panic@step:2", "product", "FAIL", "stack.crash")


def test_the_right_verdict_and_a_clean_machine_are_no_problem(monkeypatch, tmp_path):
    _fake(monkeypatch, tmp_path, CRASH)
    r = faultcampaign.run_case(DOM0_PANIC, tmp_path)
    assert r.problems == [] and r.classified_right and r.next_run_ok and r.orphans == 0


def test_a_wrong_verdict_is_a_classification_problem(monkeypatch, tmp_path):
    _fake(monkeypatch, tmp_path, {"outcome": "ERROR", "exit_code": 2, "complete": True, "checks": [],
                                  "error": {"kind": "transport", "message": "dom0 lost"}})
    r = faultcampaign.run_case(DOM0_PANIC, tmp_path)
    assert not r.classified_right
    assert any("want product" in p for p in r.problems) and any("stack.crash" in p for p in r.problems)


def test_a_qemu_left_by_a_run_that_could_clean_up_is_an_orphan(monkeypatch, tmp_path):
    _fake(monkeypatch, tmp_path, CRASH, left=(1, 1), next_code=2)
    r = faultcampaign.run_case(DOM0_PANIC, tmp_path)
    assert r.classified_right and not r.next_run_ok and r.orphans == 1
    assert {p.split(":")[0] for p in r.problems} == {"orphans", "next run"}


def test_a_killed_harness_may_leave_its_qemu_for_the_next_run(monkeypatch, tmp_path):
    killed = {"schema": "xenrig-run/1", "scenario": "faults", "outcome": None, "complete": False}
    _fake(monkeypatch, tmp_path, killed, left=(1, 0))
    case = Case("harness SIGKILLed in a step", "sigkill@step:2", "infrastructure", None)
    r = faultcampaign.run_case(case, tmp_path)
    assert r.problems == [] and r.left_after_case == 1 and r.orphans == 0
