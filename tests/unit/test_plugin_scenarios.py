"""Scenario YAML files as pytest items (harness.pytest_scenarios), with the
run faked: items per step, each result's outcome mapped, a broken run never
passing an item, bad files as clean collection errors, one run per file."""

from pathlib import Path

import pytest

from harness import logfile, runner
from harness.checks.result import ERROR, FAIL, PASS, SKIP, CheckResult
from harness.errors import InfraError
from harness.pytest_scenarios import classify
from harness.report import RunReport

pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parents[2]
HOST = REPO / "configs" / "hosts" / "local.yaml"

DEMO = f"""\
name: demo
host: {HOST}
capture: true
checks: [guest.grant-table-v1]
guest:
  disks:
    - {{vdev: xvda, backend: phy, size_mib: 16}}
steps:
  - {{id: rw, name: grant a page, guest: handoff rw 0 rw}}
  - {{name: map it, dom0: {{op: map, ref: "@rw.ref", flags: 1}}}}
  - {{dump: true}}
"""

IDS = ["guest.grant-table-v1", "step grant a page", "step map it", "step xen dump", "trace.model", "hang",
       "stack.guest-canary", "stack.dom0-canary", "run verdict"]


class FakeRuns:
    """Stands in for runner.run_scenario: answers each scenario name with
    the results (and error) given, and counts the runs."""

    def __init__(self):
        self.answers: dict[str, tuple[list[CheckResult], InfraError | None]] = {}
        self.calls: list[str] = []

    def __call__(self, scenario, host_cfg, *, run_dir, timeline, **kw):
        self.calls.append(scenario.name)
        results, error = self.answers[scenario.name]
        if error is not None:
            results = results + [CheckResult("harness", ERROR, f"in stage 'boot xen': {error.paragraph()}")]
        from harness.checks.result import overall

        verdict = overall(results)
        rep = RunReport(scenario.name, verdict, run_dir, 0.0, 1.0, [], results,
                        error={"kind": error.kind, "message": error.paragraph()} if error else None)
        return runner.RunOutcome(verdict, rep, error)


@pytest.fixture
def fake(monkeypatch, pytester):
    runs = FakeRuns()
    monkeypatch.setattr(runner, "run_scenario", runs)
    monkeypatch.setattr(logfile, "attach", lambda d: d / "xenrig.log")
    (pytester.path / "scenarios").mkdir()
    (pytester.path / "scenarios" / "demo.yaml").write_text(DEMO)
    return runs


def _passing() -> list[CheckResult]:
    return [CheckResult(cid, PASS, f"{cid} fine") for cid in IDS if cid not in ("hang", "run verdict")]


def _outcomes(rec) -> dict[str, str]:
    """nodeid's last part -> passed | failed | error | skipped."""
    out = {}
    for r in rec.getreports("pytest_runtest_logreport"):
        name = r.nodeid.split("::", 1)[1]
        if r.when == "setup" and r.failed:
            out[name] = "error"
        elif r.when == "setup" and r.skipped:
            out[name] = "skipped"
        elif r.when == "call":
            out[name] = r.outcome
    return out


def _longrepr(rec, name) -> str:
    return "\n".join(r.longreprtext for r in rec.getreports("pytest_runtest_logreport")
                     if r.nodeid.endswith("::" + name) and r.longrepr)


def test_one_item_per_check_and_step_named_from_the_step_with_markers(pytester, fake):
    items, _ = pytester.inline_genitems("scenarios/demo.yaml")
    assert [i.name for i in items] == IDS
    for item in items:
        assert item.get_closest_marker("xenrig_scenario").args == ("demo",)
        assert item.get_closest_marker("e2e") is not None
    assert fake.calls == []     # collecting runs nothing


def test_a_step_inserted_renames_no_other_item(pytester, fake):
    (pytester.path / "scenarios" / "demo.yaml").write_text(
        DEMO.replace("  - {dump: true}", "  - {name: look first, shell: true}\n  - {dump: true}"))
    items, _ = pytester.inline_genitems("scenarios/demo.yaml")
    assert [i.name for i in items] == IDS[:3] + ["step look first"] + IDS[3:]


def test_all_passing_passes_every_item_with_one_run(pytester, fake):
    fake.answers["demo"] = (_passing(), None)
    rec = pytester.inline_run("scenarios/", "--xenrig-runs", str(pytester.path / "runs"))
    assert _outcomes(rec) == {cid: "passed" for cid in IDS}
    assert fake.calls == ["demo"]
    assert rec.ret == 0


def test_each_outcome_maps_to_its_pytest_outcome(pytester, fake):
    results = _passing()
    results[2] = CheckResult("step map it", FAIL, "rule gnttab.map.status: the scenario expected okay, Xen answered "
                             "general_error", '{"status": -1}', expected="status=0", actual="status=-1")
    results[3] = CheckResult("step xen dump", ERROR, "step xen dump: the dump could not be read. Check dom0.")
    results[1] = CheckResult("step grant a page", SKIP, "not run: 'step x' errored")
    fake.answers["demo"] = (results, None)
    rec = pytester.inline_run("scenarios/demo.yaml", "--xenrig-runs", str(pytester.path / "runs"))
    got = _outcomes(rec)
    assert got == {"guest.grant-table-v1": "passed", "step grant a page": "skipped", "step map it": "failed",
                   "step xen dump": "error", "trace.model": "passed", "hang": "passed",
                   "stack.guest-canary": "passed", "stack.dom0-canary": "passed", "run verdict": "failed"}
    failed = _longrepr(rec, "step map it")
    assert "Xen answered general_error" in failed and '{"status": -1}' in failed and "status=-1" in failed
    assert "Traceback" not in failed and "report.json" in failed
    assert "the dump could not be read" in _longrepr(rec, "step xen dump")
    verdict = _longrepr(rec, "run verdict")
    assert "FAIL step map it" in verdict and "ERROR step xen dump" in verdict
    assert fake.calls == ["demo"]


def test_a_run_level_error_passes_no_item_without_a_result(pytester, fake):
    fake.answers["demo"] = ([CheckResult("guest.grant-table-v1", PASS, "v1")],
                            InfraError("dom0 never answered on SSH", hint="See the serial log"))
    rec = pytester.inline_run("scenarios/demo.yaml", "--xenrig-runs", str(pytester.path / "runs"))
    got = _outcomes(rec)
    assert got.pop("guest.grant-table-v1") == "passed"     # a result of its own, from before the error
    assert got == {cid: "error" for cid in IDS[1:]}        # hang included: no result is no pass
    for cid in IDS[1:]:
        assert "dom0 never answered on SSH" in _longrepr(rec, cid)
        assert "in stage 'boot xen'" in _longrepr(rec, cid)
    assert rec.ret != 0


def test_a_run_that_crashes_errors_every_item(pytester, fake, monkeypatch):
    def crash(*a, **kw):
        fake.calls.append("crash")
        raise RuntimeError("a bug")
    monkeypatch.setattr(runner, "run_scenario", crash)
    rec = pytester.inline_run("scenarios/demo.yaml", "--xenrig-runs", str(pytester.path / "runs"))
    assert _outcomes(rec) == {cid: "error" for cid in IDS}
    assert "RuntimeError: a bug" in _longrepr(rec, "hang")
    assert fake.calls == ["crash"]


def test_corrupted_data_makes_every_pass_and_fail_an_error(pytester, fake):
    results = _passing()
    results[-1] = CheckResult("stack.dom0-canary", ERROR, "the dom0 canary's pattern changed", extra={"kind": "corruption"})
    results[0] = CheckResult(results[0].id, FAIL, "a FAIL seen on a stack that corrupts data is no evidence")
    fake.answers["demo"] = (results, None)
    rec = pytester.inline_run("scenarios/demo.yaml", "--xenrig-runs", str(pytester.path / "runs"))
    assert set(_outcomes(rec).values()) == {"error"}


def test_a_result_no_item_covers_is_named_by_the_verdict(pytester, fake):
    results = _passing() + [CheckResult("stack.crash", FAIL, "Xen panicked")]
    fake.answers["demo"] = (results, None)
    rec = pytester.inline_run("scenarios/demo.yaml", "--xenrig-runs", str(pytester.path / "runs"))
    got = _outcomes(rec)
    assert got.pop("run verdict") == "failed"
    assert set(got.values()) == {"passed"}
    assert "results no other item covers" in _longrepr(rec, "run verdict")
    assert "FAIL stack.crash: Xen panicked" in _longrepr(rec, "run verdict")


def test_a_missing_result_without_a_run_error_is_never_a_pass(pytester, fake):
    fake.answers["demo"] = ([r for r in _passing() if r.id != "trace.model"], None)
    rec = pytester.inline_run("scenarios/demo.yaml", "--xenrig-runs", str(pytester.path / "runs"))
    assert _outcomes(rec)["trace.model"] == "error"
    assert "reported no result for trace.model" in _longrepr(rec, "trace.model")


def test_one_run_per_file_even_for_one_selected_item(pytester, fake):
    (pytester.path / "scenarios" / "other.yaml").write_text(DEMO.replace("name: demo", "name: other"))
    fake.answers["demo"] = (_passing(), None)
    fake.answers["other"] = (_passing(), None)
    rec = pytester.inline_run("scenarios", "--xenrig-runs", str(pytester.path / "runs"))
    assert sorted(fake.calls) == ["demo", "other"]
    assert rec.countoutcomes() == [2 * len(IDS), 0, 0]
    fake.calls.clear()
    pytester.inline_run("scenarios/demo.yaml", "-k", "canary", "--xenrig-runs", str(pytester.path / "runs"))
    assert fake.calls == ["demo"]


@pytest.mark.parametrize("text, says", [
    ("name: bad\nguest: {memory_mib: lots}\n", "key 'guest.memory_mib': expected a whole number"),
    ("name: bad\nstepz: []\nguest: {}\n", "key 'stepz': is not a known setting. Did you mean 'steps'?"),
    ("name: bad\nsteps: [{name: x\n", "not valid YAML"),
    ("", "key 'name': is required but missing"),     # an empty file
    ("guest: {}\n", "key 'name': is required but missing"),
])
def test_a_bad_scenario_is_a_collection_error_in_one_paragraph(pytester, fake, text, says):
    (pytester.path / "scenarios" / "bad.yaml").write_text(text)
    res = pytester.runpytest("scenarios/")
    out = res.stdout.str()
    assert "ERROR collecting scenarios/bad.yaml" in out and says in out
    assert "Traceback" not in out and "raise " not in out
    assert fake.calls == []


def test_a_repro_file_named_says_to_use_xenrig_repro(pytester, fake):
    res = pytester.runpytest(str(REPO / "configs" / "repro" / "never-notify.yaml"), "--collect-only")
    assert "xenrig repro FILE" in res.stdout.str()


def test_other_yaml_is_left_alone(pytester, fake):
    (pytester.path / "scenarios" / "matrix.yaml").write_text("scenarios: [demo.yaml]\nbackends: [phy]\n")
    (pytester.path / "scenarios" / "host.yaml").write_text(HOST.read_text())
    (pytester.path / "scenarios" / "deeper").mkdir()
    (pytester.path / "scenarios" / "deeper" / "demo2.yaml").write_text(DEMO.replace("name: demo", "name: demo2"))
    items, _ = pytester.inline_genitems("scenarios")
    assert {i.parent.path.name for i in items} == {"demo.yaml"}


def test_the_default_testpaths_run_collects_no_yaml(pytester, fake):
    pytester.makepyprojecttoml('[tool.pytest.ini_options]\ntestpaths = ["tests"]\n')
    (pytester.path / "tests" / "scenarios").mkdir(parents=True)
    (pytester.path / "tests" / "scenarios" / "x.yaml").write_text(DEMO)
    (pytester.path / "tests" / "x.yaml").write_text(DEMO)
    (pytester.path / "tests" / "test_a.py").write_text("def test_a():\n    pass\n")
    items, _ = pytester.inline_genitems()
    assert [i.name for i in items] == ["test_a"]
    items, _ = pytester.inline_genitems("tests")    # a folder named: not its subfolders
    assert {i.name for i in items} == {"test_a"} | set(IDS)    # tests/x.yaml lies directly in it


@pytest.mark.parametrize("path, explicit, kind", [
    ("configs/scenarios/smoke.yaml", False, "scenario"),
    ("configs/smoke.yaml", False, "scenario"),
    ("configs/nightly.yaml", False, None),
    ("configs/nightly.yaml", True, "reject"),
    ("configs/hosts/local.yaml", False, None),
    ("configs/repro/never-notify.yaml", False, None),
    ("images/guest.yaml", False, None),
    ("images/guest.yaml", True, "reject"),
    ("tests/e2e/scenarios/nightly-small.yaml", False, None),
    ("ci/github-actions.example.yml", False, None),
])
def test_which_of_the_repos_yaml_files_are_scenarios(path, explicit, kind):
    assert classify(REPO / path, explicit)[0] == kind


def test_the_repos_own_default_run_collects_no_yaml(pytester, monkeypatch):
    """ci/test's run (testpaths) and `pytest tests` keep their item set:
    tests/e2e/scenarios/*.yaml are files e2e tests run, not items."""
    monkeypatch.chdir(REPO)
    for args in ([], ["tests"]):
        items, rec = pytester.inline_genitems("-p", "no:cacheprovider", *args)
        assert len(items) > 100 and not rec.getfailedcollections()
        assert not [i.nodeid for i in items if ".yaml::" in i.nodeid or ".yml::" in i.nodeid]
