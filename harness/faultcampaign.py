"""The fault campaign: break a run for real at each point that matters
(harness.faults) and check what follows.  Each case must end in the right
classified verdict within its time, keep its evidence, leave no process
running once the next run has started (a SIGKILLed harness cannot clean up
after itself: its QEMU is the next run's to reap), and the next, unbroken
run must pass.  Used by tests/e2e/test_faults.py (one test per case) and
benchmarks/bench_faults.py (the table).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness.nightly.classify import INFRASTRUCTURE, PRODUCT, classify
from harness.paths import repo_root

SCENARIO = "tests/e2e/scenarios/faults.yaml"
NEXT_SCENARIO = "tests/e2e/scenarios/faults-next.yaml"    # the same guest: the same snapshot
RUN_TIMEOUT_S = 900


@dataclass(frozen=True)
class Case:
    name: str
    fault: str
    category: str | None            # what the nightly's classifier must say
    outcome: str | None             # the run's own verdict; None: it cannot write one
    check: str | None = None        # the check that must carry the verdict
    tmpfs_mib: int = 0              # the broken run's folder on a tmpfs of this size
    retried: bool = False           # the run must have made itself once more (harness.runner)


CASES = [
    Case("harness SIGKILLed while booting", "sigkill@stage:connect to dom0", INFRASTRUCTURE, None),
    Case("harness SIGKILLed at guest start", "sigkill@stage:wake restored stack", INFRASTRUCTURE, None),
    Case("harness SIGKILLed in a step", "sigkill@step:2", INFRASTRUCTURE, None),
    Case("QEMU killed", "kill-qemu@step:2", INFRASTRUCTURE, "ERROR"),
    Case("dom0 panicked", "dom0-panic@step:2", PRODUCT, "FAIL", "stack.crash"),
    Case("guest panicked", "guest-panic@step:2", PRODUCT, "FAIL", "guest.kernel-log"),
    # The nested-TCG flake made on demand: the guest dies outside every
    # module, the run keeps that try in first-attempt/ and passes on its
    # second (the fault fires once per process).
    Case("guest triple-faulted outside every module", "guest-triple-fault@step:2", None, "PASS", retried=True),
    # The harness reconnects, but the step whose channel was cut may or may
    # not have happened: it is not retried, so the run errs, as infrastructure.
    Case("transport cut", "cut-transport@step:2", INFRASTRUCTURE, "ERROR"),
    # QEMU stops the L0 VM when dom0's overlay cannot grow; the death watch
    # sees it, and the teardown (which removes the overlay) frees enough
    # space for the final report.
    Case("run folder's disk full", "disk-full@step:2", INFRASTRUCTURE, "ERROR", tmpfs_mib=64),
]


@dataclass
class RunSeen:
    exit_code: int | None
    seconds: float
    run_dir: Path
    output: str
    report: dict = field(default_factory=dict)


@dataclass
class CaseResult:
    case: Case
    broken: RunSeen
    category: str | None
    reason: str
    evidence_kept: list[str]
    left_after_case: int
    orphans: int
    next_run: RunSeen | None
    problems: list[str]

    @property
    def classified_right(self) -> bool:
        return not [p for p in self.problems if p.startswith("verdict")]

    @property
    def next_run_ok(self) -> bool:
        return self.next_run is not None and self.next_run.exit_code == 0

    def row(self) -> dict:
        return {"case": self.case.name, "fault": self.case.fault,
                "outcome": self.broken.report.get("outcome"), "exit": self.broken.exit_code,
                "category": self.category, "reason": self.reason[:120], "seconds": round(self.broken.seconds, 1),
                "left_after_case": self.left_after_case, "orphans": self.orphans,
                "next_run": self.next_run.report.get("outcome") if self.next_run else None,
                "problems": self.problems}


def qemu_left() -> list[int]:
    """xenrig QEMUs of this state directory's libvirt root, by this user."""
    from harness.machine import vm

    return vm._qemu_processes_of(vm.embed_root())


def run(out: Path, fault: str | None = None, scenario: str = SCENARIO, timeout_s: float = RUN_TIMEOUT_S) -> RunSeen:
    env = dict(os.environ)
    env.pop("XENRIG_FAULT", None)
    if fault:
        env["XENRIG_FAULT"] = fault
    started = time.monotonic()
    try:
        p = subprocess.run([sys.executable, "-m", "harness", "run", scenario, "--run-dir", str(out)],
                           cwd=repo_root(), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           timeout=timeout_s, start_new_session=True)
        code, output = p.returncode, p.stdout
    except subprocess.TimeoutExpired as exc:
        raw = exc.stdout or ""
        code, output = None, raw.decode(errors="replace") if isinstance(raw, bytes) else raw
    seen = RunSeen(code, time.monotonic() - started, out, output)
    try:
        seen.report = json.loads((out / "report.json").read_text())
    except (OSError, ValueError):
        seen.report = {}
    return seen


def _evidence(run_dir: Path) -> list[str]:
    """The files that must survive any break.  The serial log may be empty:
    a VM just restored has printed nothing yet."""
    wanted = ["report.json", "xenrig.log", "serial-l0.log"]
    return [name for name in wanted if (run_dir / name).exists()
            and (name == "serial-l0.log" or (run_dir / name).stat().st_size > 0)]


def _broken_run(case: Case, out: Path) -> RunSeen:
    if not case.tmpfs_mib:
        return run(out / "broken", case.fault)
    where = out / "broken-tmpfs"
    where.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={case.tmpfs_mib}m,mode=0755", "xenrig-fault", str(where)],
                   check=True, timeout=30)
    kept = out / "broken"
    try:
        seen = run(where, case.fault)
    finally:
        # What the run managed to write is the evidence; the tmpfs goes.
        try:
            shutil.copytree(where, kept, ignore=shutil.ignore_patterns(".xr-fault-fill", "*.qcow2"))
        finally:
            subprocess.run(["umount", str(where)], check=False, timeout=60)
    seen.run_dir = kept
    return seen


def _first_attempt(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "first-attempt" / "report.json").read_text())
    except (OSError, ValueError):
        return {}


def run_case(case: Case, out: Path) -> CaseResult:
    broken = _broken_run(case, out)
    verdict = classify(broken.run_dir)
    problems = []
    if broken.exit_code is None:
        problems.append(f"verdict: the run did not end within {RUN_TIMEOUT_S} s")
    elif broken.exit_code not in (-9, 0, 1, 2):
        problems.append(f"verdict: the run exited {broken.exit_code}: {broken.output[-300:]}")
    if "Traceback" in broken.output:
        problems.append("verdict: a traceback on the terminal")
    if verdict.category != case.category:
        problems.append(f"verdict: classified {verdict.category} ({verdict.reason}), want {case.category}")
    outcome = broken.report.get("outcome")
    if outcome != case.outcome:
        problems.append(f"verdict: the run says {outcome}, want {case.outcome}")
    if case.check:
        carried = {c["id"]: c["outcome"] for c in broken.report.get("checks", [])}
        if carried.get(case.check) != case.outcome:
            problems.append(f"verdict: check {case.check} is {carried.get(case.check)}, want {case.outcome}")
    if case.retried:
        first = _first_attempt(broken.run_dir)
        crash = {c["id"]: c for c in first.get("checks", [])}.get("guest.crash", {})
        if not (broken.report.get("info") or {}).get("retried") or crash.get("outcome") != "ERROR":
            problems.append(f"verdict: the run did not make itself again after its guest died outside every module "
                            f"(first attempt's guest.crash: {crash.get('outcome')} {crash.get('message', '')[:160]})")
    if case.outcome is None and broken.report.get("complete") is not False:
        problems.append("verdict: a killed run's report.json must say complete: false")
    kept = _evidence(broken.run_dir)
    if "serial-l0.log" not in kept or "xenrig.log" not in kept:
        problems.append(f"evidence: only {kept} kept")
    left = len(qemu_left())
    if case.outcome is not None and left:
        problems.append(f"orphans: {left} QEMU left by a run that could clean up")
    nxt = run(out / "next", scenario=NEXT_SCENARIO)
    orphans = len(qemu_left())
    if orphans:
        problems.append(f"orphans: {orphans} QEMU still running after the next run")
    if nxt.exit_code != 0:
        problems.append(f"next run: {nxt.report.get('headline') or nxt.output[-400:]}")
    return CaseResult(case, broken, verdict.category, verdict.reason, kept, left, orphans, nxt, problems)


def make_snapshot() -> None:
    """The campaign's stages assume a restored stack: make its snapshot first."""
    subprocess.run([sys.executable, "-m", "harness", "snapshot", "make", SCENARIO], cwd=repo_root(),
                   check=True, timeout=1800, stdout=subprocess.DEVNULL)
