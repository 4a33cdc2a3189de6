"""Scenario YAML files as pytest items: `pytest configs/scenarios/`.

A scenario file named on pytest's command line, or lying directly in a
folder named there, becomes a pytest File whose items are the checks its run
reports: the smoke checks the scenario selects, one per step (named as the
step's JUnit case, harness.steps._label), trace.model when it captures, hang,
the two canaries, and a last `run verdict` item that asserts the run's
overall outcome and names any result no item covers.

The first item that runs makes the file's one run (harness.runner.
run_scenario, the same call as `xenrig run`); every item then reports its
result from that run: PASS passes, FAIL fails with the message and
evidence, ERROR errors (at setup: the harness failed, no verdict on the
subject), SKIP skips.  An item the run has no result for never passes.

YAML reached only through `testpaths` (the default `pytest` run) is never
collected, nor YAML in a subfolder of a folder named on the command line:
`pytest tests/` leaves tests/e2e/scenarios/*.yaml (scenarios the e2e tests
expect to fail) alone.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

SCENARIO_MARK = "xenrig_scenario"
VERDICT_ID = "run verdict"
HANG_ID = "hang"
CANARY_IDS = ("stack.guest-canary", "stack.dom0-canary")


class ScenarioCheckFailed(pytest.fail.Exception):
    """A check of the scenario's run failed: the subject is wrong."""

    __module__ = "builtins"     # as pytest's own Failed: the summary line shows the message, not a dotted path

    def __init__(self, text: str):
        super().__init__(text, pytrace=False)


class ScenarioRunError(pytest.fail.Exception):
    """The scenario's run gave no verdict on this check (the harness or the
    infrastructure failed); raised at setup so pytest shows an ERROR."""

    __module__ = "builtins"

    def __init__(self, text: str):
        super().__init__(text, pytrace=False)


# -- which YAML files are scenarios ------------------------------------------

def _scenario_keys() -> tuple[set[str], set[str]]:
    """(every top-level key of a scenario, the keys only a scenario has)."""
    from harness.config import Scenario

    every = {f.name for f in dataclasses.fields(Scenario)}
    return every, every - {"name", "host", "description"}


def _named_paths(config) -> set[Path] | None:
    """The paths given on the command line; None when pytest runs on its
    `testpaths` (or the current folder) because none were."""
    if config.args_source != pytest.Config.ArgsSource.ARGS:
        return None
    base = Path(config.invocation_params.dir)
    return {(base / arg.split("::")[0]).resolve() for arg in config.args}


def classify(path: Path, explicit: bool) -> tuple[str | None, str]:
    """("scenario" | "reject" | None, why).  `explicit`: the file itself was
    named on the command line.  A file that does not parse, or parses to no
    mapping, is a scenario (so loading it reports the problem) only where a
    scenario is meant: named, or in a folder called `scenarios`."""
    meant = explicit or path.parent.name == "scenarios"
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return ("scenario" if meant else None), ""
    if not isinstance(data, dict):
        # Loading it says what is wrong (an empty file lacks 'name', a list is no mapping).
        return ("scenario" if meant else None), ""
    keys = {str(k) for k in data}
    if "repro" in keys:
        return ("reject" if explicit else None), ("a repro file: run it with `xenrig repro FILE` (its verdict is "
                                                  "REPRODUCED or NOT REPRODUCED, not pass or fail)")
    every, own = _scenario_keys()
    hits, foreign = keys & own, keys - every
    # An image recipe has `modules` too, but no name and keys of its own.
    if hits and ("name" in keys or len(foreign) < len(hits)) or meant and not foreign:
        return "scenario", ""
    return ("reject" if explicit else None), (f"not a xenrig scenario: a scenario has 'name' and some of "
                                              f"{', '.join(sorted(own))}; this file's top-level keys are "
                                              f"{', '.join(sorted(keys)) or 'none'}")


def collect_file(file_path: Path, parent):
    """pytest_collect_file for .yaml/.yml (harness.pytest_plugin)."""
    named = _named_paths(parent.config)
    if named is None:
        return None
    resolved = file_path.resolve()
    explicit = resolved in named
    if not explicit and resolved.parent not in named:
        return None
    kind, why = classify(file_path, explicit)
    if kind is None:
        return None
    node = ScenarioFile.from_parent(parent, path=file_path)
    if kind == "reject":
        node.problem = f"xenrig: {file_path}: {why}"
    return node


# -- what each item reports --------------------------------------------------

@dataclass
class Judgement:
    kind: str        # "pass" | "fail" | "error" | "skip"
    text: str


def expected_ids(scenario) -> list[str]:
    """The ids of the results a run of `scenario` reports, known before it
    runs, in the order the run reports them."""
    from harness.checks import smoke
    from harness.steps import _label

    ids = [cid for cid, _ in smoke.select(scenario)]
    taken: set[str] = set()
    ids += [_label(step, taken) for step in scenario.steps]
    if scenario.capture:
        ids.append("trace.model")
    ids.append(HANG_ID)
    ids += CANARY_IDS
    return ids


def _result_text(r) -> str:
    lines = [f"{r.outcome} {r.id}: {r.message}"]
    if r.expected is not None or r.actual is not None:
        lines += [f"expected: {r.expected}", f"actual:   {r.actual}"]
    if r.evidence:
        lines += ["evidence:"] + ["  " + line for line in r.evidence.splitlines()]
    return "\n".join(lines)


def _report_line(outcome) -> str:
    return f"report: {Path(outcome.report.run_dir) / 'report.json'}"


def _run_error(outcome) -> str | None:
    """The run-level error's paragraph, with the stage it began in."""
    harness = [r for r in outcome.report.checks if r.id == "harness"]
    if harness:
        return harness[-1].message
    if outcome.error is not None:
        return outcome.error.paragraph()
    return None


def judge(check_id: str, outcome) -> Judgement:
    """What the item for `check_id` reports from the file's run."""
    from harness.checks.result import ERROR, FAIL, PASS, SKIP, corrupted
    from harness.outcome import CORRUPTION

    results = outcome.report.checks
    mine = [r for r in results if r.id == check_id]
    # A stack that corrupted data voids every result, a FAIL too (harness.outcome);
    # the corruption check's own ERROR still reports itself below.
    if corrupted(results) and not any(r.outcome == ERROR for r in mine):
        bad = next(r for r in results if r.outcome == ERROR and r.extra.get("kind") == CORRUPTION)
        return Judgement("error", f"xenrig ERROR: the stack corrupted data ({bad.id}: {bad.message}); nothing this "
                                  f"run saw is evidence\n{_report_line(outcome)}")
    if mine:
        r = next((r for r in mine if r.outcome != PASS), mine[0])
        text = f"{_result_text(r)}\n{_report_line(outcome)}"
        return {PASS: Judgement("pass", text), FAIL: Judgement("fail", text),
                SKIP: Judgement("skip", f"{check_id}: {r.message}")}.get(r.outcome, Judgement("error", text))
    error = _run_error(outcome)
    if error is not None:
        return Judgement("error", f"xenrig ERROR: the run ended without a result for {check_id}: {error}\n"
                                  f"{_report_line(outcome)}")
    if check_id == HANG_ID:
        return Judgement("pass", "no guest operation ran out of time with the block rings stuck")
    if any(r.id == HANG_ID and r.outcome == FAIL for r in results):
        return Judgement("skip", f"{check_id}: not run: the run hung before it (see the '{HANG_ID}' item)")
    return Judgement("error", f"xenrig ERROR: the run (verdict {outcome.outcome}) reported no result for {check_id}\n"
                              f"{_report_line(outcome)}")


def judge_verdict(outcome, covered: list[str]) -> Judgement:
    """The `run verdict` item: the run's overall outcome, and every result
    no other item covers, so that none can hide."""
    from harness.checks.result import PASS

    results = outcome.report.checks
    extra = [r for r in results if r.id not in covered and r.id != "harness"]   # harness: the run's error, said first
    lines = [f"{outcome.outcome} {outcome.report.scenario}: "
             f"{sum(r.outcome == 'PASS' for r in results)} passed, {sum(r.outcome == 'FAIL' for r in results)} failed, "
             f"{sum(r.outcome == 'ERROR' for r in results)} errors"]
    lines += [f"  {r.outcome} {r.id}: {r.message}" for r in results if r.outcome not in (PASS, "SKIP")]
    if extra:
        lines.append("results no other item covers:")
        lines += [f"  {r.outcome} {r.id}: {r.message}" for r in extra]
    lines.append(_report_line(outcome))
    text = "\n".join(lines)
    if outcome.outcome == "PASS":
        return Judgement("pass", text)
    if outcome.outcome == "SKIP":
        return Judgement("skip", f"{VERDICT_ID}: no check applied and none failed")
    if outcome.outcome == "FAIL":
        return Judgement("fail", text)
    error = _run_error(outcome)
    return Judgement("error", f"xenrig ERROR: {error}\n{text}" if error else f"xenrig ERROR\n{text}")


# -- the pytest nodes --------------------------------------------------------

class ScenarioFile(pytest.File):
    problem: str | None = None

    def collect(self):
        from harness import config
        from harness.errors import XenrigError

        if self.problem:
            raise self.CollectError(self.problem)
        try:
            self.scenario = config.load_scenario(self.path)
            self.host_cfg = config.load_host(self.config.option.xenrig_host or self.scenario.host)
        except XenrigError as exc:
            raise self.CollectError(f"xenrig: {exc.paragraph()}") from None
        except Exception as exc:  # noqa: BLE001 - a bug of the loader: still one paragraph, not a traceback
            raise self.CollectError(f"xenrig: {self.path}: cannot be loaded as a scenario "
                                    f"({type(exc).__name__}: {exc})") from None
        self.outcome = None
        self.crash: str | None = None
        self.ran = False
        self.ids = expected_ids(self.scenario)
        for cid in self.ids + [VERDICT_ID]:
            item = ScenarioItem.from_parent(self, name=cid, check_id=cid)
            item.add_marker(pytest.mark.e2e)
            item.add_marker(getattr(pytest.mark, SCENARIO_MARK)(self.scenario.name))
            yield item

    def run_once(self) -> None:
        """The file's one run, made by the first of its items to run."""
        if self.ran:
            return
        self.ran = True
        from harness import runner
        from harness.pytest_plugin import _embed_root, embed_root_for_pytest
        from harness.stages import ConsoleProgress, Timeline

        try:
            run_dir = runner.new_run_dir(f"pytest-{self.scenario.name}", self.config.option.xenrig_runs)
            # This process outlives the stack: a libvirt root of its own (see _xenrig_stack).
            with _embed_root(embed_root_for_pytest()):
                self.outcome = runner.run_scenario(self.scenario, self.host_cfg, run_dir=run_dir,
                                                   timeline=Timeline([ConsoleProgress()]))
        except Exception as exc:  # noqa: BLE001 - run_scenario returns its errors; this is a bug, never a pass
            self.crash = f"xenrig ERROR: the run of {self.path.name} crashed: {type(exc).__name__}: {exc}"


class ScenarioItem(pytest.Item):
    def __init__(self, *, check_id: str, **kw):
        super().__init__(**kw)
        self.check_id = check_id
        self.judgement: Judgement | None = None

    def setup(self) -> None:
        f: ScenarioFile = self.parent
        f.run_once()
        if f.crash is not None or f.outcome is None:
            raise ScenarioRunError(f.crash or "xenrig ERROR: the scenario's run did not happen")
        self.judgement = (judge_verdict(f.outcome, f.ids) if self.check_id == VERDICT_ID
                          else judge(self.check_id, f.outcome))
        if self.judgement.kind == "error":
            raise ScenarioRunError(self.judgement.text)
        if self.judgement.kind == "skip":
            pytest.skip(self.judgement.text)

    def runtest(self) -> None:
        j = self.judgement
        if j.kind == "fail":
            raise ScenarioCheckFailed(j.text)
        self.add_report_section("call", "xenrig", j.text)

    def reportinfo(self):
        return self.path, None, f"{self.parent.scenario.name}: {self.check_id}"
