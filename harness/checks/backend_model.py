"""Check `backend.model[<vdev>]`: each scripted backend's log of a run
(xrback-<vdev>.jsonl in the run folder) judged by the rules for a backend
that lies (harness/model/backend_lies.py), one result per vbd so that a
broken rule points at the vbd, and so at the lie its script told."""

from __future__ import annotations

import json
from pathlib import Path

from harness.check import backend_log
from harness.checks.result import ERROR, FAIL, PASS, CheckResult
from harness.errors import XenrigError
from harness.model import backend_lies


def check(run_dir: Path) -> list[CheckResult]:
    results = []
    for path in sorted(run_dir.glob("xrback-*.jsonl")):
        vdev = path.name[len("xrback-"):-len(".jsonl")]
        cid = f"backend.model[{vdev}]"
        try:
            events = backend_log.read(path)
            verdict = backend_log.verdict_of(events, str(path))
        except XenrigError as exc:
            results.append(CheckResult(cid, ERROR, f"the backend's log of {vdev} could not be read: {exc.message}"))
            continue
        except Exception as exc:  # noqa: BLE001 - runs while the run's results are collected: must not hide them
            results.append(CheckResult(cid, ERROR, f"judging the backend's log of {vdev} failed: "
                                       f"{type(exc).__name__}: {exc}"))
            continue
        lies = ", ".join(backend_lies.lies_told(events)) or "none"
        d = verdict.divergence
        if verdict.outcome == PASS:
            results.append(CheckResult(cid, PASS, f"the model accepts the {verdict.events} events of {vdev}'s "
                                       f"backend (lies told: {lies})"))
        elif verdict.outcome == FAIL and d is not None:
            results.append(CheckResult(
                cid, FAIL, f"{vdev} (lies told: {lies}): rule {d.rule} at {path.name}:{d.line}: {d.message}",
                evidence=json.dumps({"rule": d.rule, "source": d.source, "event": d.event, "state": d.state,
                                     "before": d.before}, default=str),
                expected=None if d.expected is None else str(d.expected),
                actual=None if d.actual is None else str(d.actual), extra={"rule": d.rule}))
        else:
            results.append(CheckResult(cid, ERROR, f"{vdev}: {verdict.error}"))
    return results
