"""`xenrig run SCENARIO`: boot (or reach) a Xen host, start the HVM guest,
run the scenario's checks, collect the evidence, write the reports.

The verdict follows DESIGN.md: PASS, FAIL (the subject is wrong), ERROR
(the harness or infrastructure failed).  A run that produced no result is
an ERROR, never a PASS.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path

from harness import config, guest, paths, report, stack
from harness.checks import smoke
from harness.checks.result import ERROR, CheckResult, overall
from harness.config import HostConfig, Scenario
from harness.errors import XenrigError
from harness.stages import ConsoleProgress, Timeline


@dataclass
class RunOutcome:
    outcome: str
    report: report.RunReport
    error: XenrigError | None = None

    @property
    def exit_code(self) -> int:
        return {"PASS": 0, "FAIL": 1}.get(self.outcome, 2)


def new_run_dir(name: str, base: Path | None = None) -> Path:
    base = base or paths.runs_dir()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    d = base / f"{stamp}-{name}"
    n = 1
    while d.exists():
        n += 1
        d = base / f"{stamp}-{name}-{n}"
    d.mkdir(parents=True)
    return d


def load(scenario_path: Path, host_path: Path | None = None) -> tuple[Scenario, HostConfig]:
    scenario = config.load_scenario(scenario_path)
    return scenario, config.load_host(host_path or scenario.host)


def collect_xen_logs(xen, run_dir: Path) -> None:
    """Xen's own log (and the grant dump it holds) into the run folder."""
    with contextlib.suppress(XenrigError):
        (run_dir / "xl-dmesg.txt").write_text(xen.dmesg())


def run_scenario(scenario: Scenario, host_cfg: HostConfig, *, run_dir: Path | None = None,
                 timeline: Timeline | None = None, console: bool = False) -> RunOutcome:
    run_dir = run_dir or new_run_dir(scenario.name)
    timeline = timeline or Timeline([ConsoleProgress()])
    results: list[CheckResult] = []
    info: dict = {"run_dir": str(run_dir)}
    error: XenrigError | None = None
    interrupted = False
    try:
        with stack.xen_host(host_cfg, timeline, run_dir, console=console, info=info) as xen:
            try:
                with guest.start(xen, scenario.guest, timeline, artifacts=run_dir) as g:
                    info["guest"] = {"name": g.name, "domid": g.domid}
                    with timeline.stage("checks"):
                        results = smoke.run(xen, g, scenario, on_result=lambda r: timeline.note(f"{r.outcome} {r.id}: {r.message}"))
            finally:
                collect_xen_logs(xen, run_dir)
    except XenrigError as exc:
        error = exc
    except KeyboardInterrupt:
        interrupted = True
        error = XenrigError("interrupted by the user (Ctrl-C); everything started was stopped")
    finally:
        if error is not None:
            results.append(CheckResult("harness", ERROR, error.paragraph()))
        verdict = overall(results)
        rep = report.RunReport(scenario.name, verdict, run_dir, timeline.wall_start, timeline.elapsed(),
                               timeline.records, results, info=info,
                               error={"kind": error.kind, "message": error.paragraph()} if error else None)
        report.write(rep)
    if interrupted:
        raise KeyboardInterrupt
    return RunOutcome(verdict, rep, error)
