"""Reports of a run, in its run folder: report.json (for machines),
junit.xml (for CI), summary.txt and report.html (for people)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness import outcome
from harness.checks.result import CheckResult
from harness.report import html, junit
from harness.report.start import retry_line, start_line
from harness.stages import StageRecord


@dataclass
class RunReport:
    scenario: str
    outcome: str
    run_dir: Path
    started_at: float
    duration_s: float
    stages: list[StageRecord]
    checks: list[CheckResult]
    error: dict | None = None
    info: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "schema": "xenrig-run/1",
            "scenario": self.scenario,
            "outcome": self.outcome,
            "headline": outcome.headline(self.outcome, self.error["message"] if self.error else None),
            "exit_code": outcome.exit_code(self.outcome, (self.error or {}).get("kind")),
            "complete": True,
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started_at)),
            "duration_s": round(self.duration_s, 3),
            "stages": [{"name": s.name, "start_s": round(s.start_s, 3), "duration_s": round(s.duration_s, 3),
                        "outcome": s.outcome, "detail": s.detail} for s in self.stages],
            "checks": [c.to_dict() for c in self.checks],
            "error": self.error,
            "info": self.info,
            "artifacts": sorted({p.name for p in self.run_dir.iterdir() if p.is_file()} | {"report.json"}),
        }


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() or c == "\t" else "?" for c in text)


def summary_text(report: RunReport) -> str:
    lines = [f"{report.outcome} {report.scenario} ({report.duration_s:.1f}s)"]
    for c in report.checks:
        lines.append(f"  {c.outcome:5} {c.id}: {c.message}")
    start = start_line(report.info.get("snapshot") or {})
    if start:
        lines.append(f"  start: {start}")
    retry = retry_line(report.info.get("retried") or {})
    if retry:
        lines.append(f"  {retry}")
    for source, text in (report.info.get("last_console") or {}).items():
        lines.append(f"  last lines of the {source} console:")
        # Console text is the guest's: no escape sequence of its reaches a terminal.
        lines += [f"    {_printable(line)}" for line in text.splitlines()[-8:]]
    lines.append("  stages: " + ", ".join(f"{s.name} {s.duration_s:.1f}s" for s in report.stages))
    return "\n".join(lines) + "\n"


def mark_started(run_dir: Path, scenario: str) -> None:
    """A report.json that says the run has not finished: what a reader (the
    nightly) finds if the run dies before writing the real one."""
    _atomic_write(run_dir / "report.json", json.dumps(
        {"schema": "xenrig-run/1", "scenario": scenario, "outcome": None, "complete": False}, indent=1))


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def write(report: RunReport) -> Path:
    d = report.run_dir
    d.mkdir(parents=True, exist_ok=True)
    stage_times = {s.name: s.duration_s for s in report.stages}
    junit.write(d / "junit.xml", report.scenario, report.checks, stage_times)
    (d / "summary.txt").write_text(summary_text(report))
    data = report.to_dict()
    data["artifacts"] = sorted(set(data["artifacts"]) | {"report.html"})
    html.write(data, d)
    # Last, and atomically: a complete report.json means everything else is written.
    _atomic_write(d / "report.json", json.dumps(data, indent=1, default=str))
    return d / "report.json"
