"""Running a shard's cells: one `xenrig run` per cell, in its own process,
with the retry policy.

Why a subprocess per cell rather than `runner.run_scenario` in this process:
libvirt's embedded driver allows one embedded connection per process, and a
crash in libvirt, QEMU's monitor or paramiko's threads must cost one cell,
not the night.  A process can also be stopped at the cell's time limit
(SIGTERM: `xenrig run` tears its stack down, as on Ctrl-C; SIGKILL after a
grace period, and the next run clears what is left).  And the command that
ran a cell is the command a person types to rerun it.

Retry policy: an infrastructure failure is retried (once by default); the
earlier attempt's folder is kept as `attempt-N/` inside the cell's folder.
A product failure is never retried.  A cell that passed only on a retry is
FLAKY.  The runner is injectable: tests give one that writes reports
without booting anything.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

from harness import paths
from harness.errors import UsageError
from harness.nightly.classify import CONFIGURATION, INFRASTRUCTURE, PRODUCT, Classification, classify
from harness.nightly.matrix import Cell, Matrix
from harness.nightly.shard import Shard

# Cell statuses in the grid.
PASS, FAIL, INFRA, FLAKY, SKIP, MISSING = "PASS", "FAIL", "INFRA", "FLAKY", "SKIP", "MISSING"
SHARD_SCHEMA = "xenrig-nightly-shard/1"


@dataclass
class RunnerExit:
    """What the runner itself saw of one attempt (the run folder says the rest)."""

    exit_code: int | None
    note: str = ""          # e.g. "killed at the cell's time limit of 7200 s"
    command: list[str] = field(default_factory=list)


class CellRunner(Protocol):
    def __call__(self, cell: Cell, run_dir: Path, attempt: int) -> RunnerExit: ...


class SubprocessCellRunner:
    """`python -m harness run SCENARIO --run-dir DIR --set ...` per attempt;
    its output goes to `xenrig-run.log` in the run folder."""

    def __init__(self, *, host: Path | None = None, timeout_s: float = 7200, grace_s: float = 180,
                 command: list[str] | None = None, cold: bool = False):
        self.host = host
        # Each cell restores the booted stack's snapshot for its host and
        # guest (made by the first cell that needs it) unless cold.
        self.cold = cold
        self.timeout_s = timeout_s
        self.grace_s = grace_s
        self.command = command or [sys.executable, "-m", "harness"]

    def argv(self, cell: Cell, run_dir: Path) -> list[str]:
        argv = [*self.command, "run", str(cell.scenario_path.resolve()), "--run-dir", str(run_dir.resolve())]
        if self.host is not None:
            argv += ["--host", str(self.host.resolve())]
        for assignment in cell.sets:
            argv += ["--set", assignment]
        if self.cold:
            argv.append("--cold")
        return argv

    def __call__(self, cell: Cell, run_dir: Path, attempt: int) -> RunnerExit:
        argv = self.argv(cell, run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        with open(run_dir / "xenrig-run.log", "wb") as log:
            log.write(f"# nightly cell {cell.id}, attempt {attempt}\n# {shlex.join(argv)}\n".encode())
            log.flush()
            # Its own session: a Ctrl-C at our terminal must not reach it
            # twice; we forward one SIGTERM and wait for its teardown.
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
            try:
                code = proc.wait(timeout=self.timeout_s)
                return RunnerExit(code, _died(code), argv)
            except subprocess.TimeoutExpired:
                code = self._stop(proc)
                return RunnerExit(code, f"killed at the cell's time limit of {self.timeout_s:g} s", argv)
            except KeyboardInterrupt:
                self._stop(proc)
                raise

    def _stop(self, proc: subprocess.Popen) -> int | None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=self.grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()


def _died(code: int) -> str:
    if code >= 0:
        return ""
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = f"signal {-code}"
    return f"xenrig run died of {name}"


@dataclass
class Attempt:
    number: int
    outcome: str | None            # the run's own outcome; None when it wrote no report
    category: str | None
    reason: str
    evidence: list[str]
    duration_s: float
    run_dir: str                   # relative to the shard's output folder
    exit_code: int | None
    note: str = ""

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class CellResult:
    cell: Cell
    status: str
    attempts: list[Attempt]
    command: list[str]

    @property
    def final(self) -> Attempt:
        return self.attempts[-1]

    def to_dict(self) -> dict:
        failed = next((a for a in reversed(self.attempts) if a.category), None)
        return {
            "id": self.cell.id, "scenario": self.cell.scenario, "backend": self.cell.backend,
            "params": self.cell.params, "set": list(self.cell.sets),
            "status": self.status, "outcome": self.final.outcome,
            "classification": failed.category if failed else None,
            "reason": failed.reason if failed else "",
            "evidence": failed.evidence if failed else [],
            "attempts": [a.to_dict() for a in self.attempts],
            "duration_s": round(sum(a.duration_s for a in self.attempts), 3),
            "run_dir": self.final.run_dir,
            "command": shlex.join(self.command) if self.command else "",
        }


def status_of(attempts: list[Attempt]) -> str:
    final = attempts[-1]
    if final.category == PRODUCT:
        return FAIL
    if final.category in (INFRASTRUCTURE, CONFIGURATION):
        return INFRA
    if final.outcome == "SKIP":
        return SKIP
    return FLAKY if len(attempts) > 1 else PASS


def _set_aside(run_dir: Path, number: int) -> None:
    """Keep a failed attempt's files as attempt-N/ in the cell's folder."""
    keep = run_dir / f"attempt-{number}"
    keep.mkdir()
    for entry in run_dir.iterdir():
        if entry.name.startswith("attempt-"):
            continue
        entry.rename(keep / entry.name)


def run_cell(cell: Cell, out: Path, runner: CellRunner, retries: int,
             progress: Callable[[str], None] = lambda s: None) -> CellResult:
    run_dir = out / cell.id
    if run_dir.exists() and any(run_dir.iterdir()):
        raise UsageError(f"{run_dir} already holds a run of cell {cell.id}", hint="Give the nightly a fresh --out folder")
    run_dir.mkdir(parents=True, exist_ok=True)
    attempts: list[Attempt] = []
    command: list[str] = []
    for number in range(1, retries + 2):
        if attempts:
            _set_aside(run_dir, number - 1)
            attempts[-1].run_dir = f"{cell.id}/attempt-{number - 1}"
        started = time.monotonic()
        seen = runner(cell, run_dir, number)
        command = seen.command or command
        duration = time.monotonic() - started
        verdict = classify(run_dir, note=seen.note)
        try:
            written = json.loads((run_dir / "report.json").read_text())
        except (OSError, ValueError):
            written = {}
        outcome = written.get("outcome")
        said = written.get("exit_code")
        if said is not None and seen.exit_code is not None and said != seen.exit_code and verdict.category != PRODUCT:
            # The process and its report disagree: believe neither.
            verdict = Classification(INFRASTRUCTURE, f"the run exited {seen.exit_code} but its report says "
                                     f"{outcome} (exit {said})", verdict.evidence)
        retried = (written.get("info") or {}).get("retried")
        if retried:
            # The run made itself once more after its guest died outside every
            # module: that first try is an infrastructure attempt of its own.
            attempts.append(Attempt(number, retried.get("first_outcome"), INFRASTRUCTURE,
                                    f"in the run: the guest died outside every module: {retried.get('reason')}",
                                    [str(retried.get("reason"))], 0.0,
                                    f"{cell.id}/{retried.get('first_attempt')}", None, "made again by the run itself"))
        attempts.append(Attempt(number, outcome, verdict.category, verdict.reason, verdict.evidence,
                                round(duration, 3), cell.id, seen.exit_code, seen.note))
        progress(f"{cell.id}: attempt {number}: {outcome or 'no report'}"
                 + (f" ({verdict.category}: {verdict.reason})" if verdict.category else "") + f" in {duration:.0f}s")
        if verdict.category != INFRASTRUCTURE:
            break
    return CellResult(cell, status_of(attempts), attempts, command)


def _git_commit() -> str | None:
    try:
        res = subprocess.run(["git", "-C", str(paths.repo_root()), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if res.returncode != 0:
        return None
    return res.stdout.strip() or None


def run_shard(matrix: Matrix, shard: Shard, out: Path, runner: CellRunner, *, retries: int | None = None,
              progress: Callable[[str], None] = lambda s: None) -> Path:
    """Run this shard's cells into `out`; write and return shard-I-of-N.json."""
    out.mkdir(parents=True, exist_ok=True)
    summary_path = out / f"{shard.name}.json"
    if summary_path.exists():
        raise UsageError(f"{summary_path} exists: this shard already ran into {out}",
                         hint="Give the nightly a fresh --out folder")
    cells = shard.pick(matrix.cells)
    retries = matrix.spec.retries if retries is None else retries
    wall_start, started = time.time(), time.monotonic()
    data = {
        "schema": SHARD_SCHEMA,
        "shard": {"index": shard.index, "total": shard.total},
        "matrix": matrix.describe(paths.repo_root()),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(wall_start)),
        "duration_s": 0.0,
        "host": socket.gethostname(),
        "commit": _git_commit(),
        "retries": retries,
        "complete": False,        # until the last cell is done: a killed job leaves what it finished
        "cells": [],
    }
    for i, cell in enumerate(cells, start=1):
        progress(f"[{i}/{len(cells)}] {cell.id} ...")
        result = run_cell(cell, out, runner, retries, progress)
        progress(f"[{i}/{len(cells)}] {cell.id}: {result.status}")
        data["cells"].append(result.to_dict())
        data["duration_s"] = round(time.monotonic() - started, 3)
        data["complete"] = i == len(cells)
        _write_json(summary_path, data)
    if not cells:
        data["complete"] = True
        _write_json(summary_path, data)
    return summary_path


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)
