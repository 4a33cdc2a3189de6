"""A stand-in for `xenrig run` that boots nothing: it builds the cell's real
variant (scenario + --set, through harness.config.overrides) and writes a
genuine run folder through harness.report.write() with a scripted outcome,
plus the logs the classifier reads.

In-process: `ScriptedRunner(script)` is a CellRunner.  As a program
(`python fakes.py run SCENARIO --run-dir D --set ...`, the nightly's
--cell-command), the script comes from $FAKE_NIGHTLY_SCRIPT (a JSON file).
A script maps a cell id to the behaviour of each attempt, e.g.
{"smoke/qdisk/default": ["infra-boot", "pass"]}; unlisted cells pass.
As a program it draws no plot: its report.html has a blank picture where
the stage timeline goes (see _UNDRAWN).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
import types
from pathlib import Path
from unittest import mock

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from harness import config, outcome, report  # noqa: E402
from harness.checks.result import ERROR, FAIL, PASS, CheckResult, overall  # noqa: E402
from harness.config import overrides  # noqa: E402
from harness.stages import StageRecord  # noqa: E402

STAGES = ["images", "build guest modules", "boot xen + dom0", "connect to dom0", "start HVM guest",
          "load guest modules", "checks", "steps", "check trace", "destroy HVM guest", "tear down L0 VM"]
XEN_BOOT = "(XEN) Xen version 4.17.7 (Debian)\n(XEN) HVM: SVM enabled\n(XEN) d0 has maximum 416 PIRQs\n"
GUEST_CREATED = "# (XEN) HVM d1v0 save: CPU\n(XEN) HVM d1 save: PIC\n"


def _stages(upto: str | None = None, failed: str | None = None) -> list[StageRecord]:
    out, t = [], 0.0
    for name in STAGES:
        outcome = "failed" if name == failed else "ok"
        out.append(StageRecord(name, t, 1.5, outcome, "boom" if outcome == "failed" else ""))
        t += 1.5
        if name in (failed, upto):
            break
    return out


def write_run(run_dir: Path, scenario, behaviour: str) -> int | None:
    """Write the run folder for `behaviour`; return the exit code xenrig
    would give (None: the process 'crashed' without a report)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    info = {"run_dir": str(run_dir), "variant": {"backends": [d.backend for d in scenario.guest.disks],
                                                 "blkfront_params": dict(scenario.modules.blkfront.params)}}
    ok = [CheckResult("guest.platform-pci", PASS, "5853:0001 present"),
          CheckResult(f"guest.blkfront-bound[{scenario.guest.disks[0].vdev}]", PASS, "bound")]
    error = None
    stages = _stages()
    serial = XEN_BOOT + GUEST_CREATED
    if behaviour == "crash":
        return None
    if behaviour in ("pass", "pass-second-in-run"):
        checks = ok + [CheckResult("trace.model", PASS, "the model accepts all 120 events of the trace")]
        if behaviour == "pass-second-in-run":      # the run made itself once more (harness.runner)
            (run_dir / "first-attempt").mkdir()
            info["retried"] = {"reason": "(XEN) d1v0 Triple fault - invoking HVM shutdown action 1",
                               "first_attempt": "first-attempt", "first_outcome": "ERROR"}
    elif behaviour == "fail":
        checks = ok + [CheckResult("trace.model", FAIL, "first divergence at seq 42: blkif.grant-ended-early: "
                                   "grant 17 ended before its response", "{}", expected="mapped", actual="ended",
                                   extra={"rule": "blkif.grant-ended-early"})]
    elif behaviour == "hang":
        checks = ok + [CheckResult("hang", FAIL, "block I/O stopped while step02: ring xvda: 3 requests outstanding",
                                   "ring xvda: req_prod 35 rsp_prod 32")]
        stages = _stages(upto="steps")
    elif behaviour in ("infra-boot", "infra-download", "infra-ssh", "xen-panic-at-boot"):
        stage, kind, message = {
            "infra-boot": ("boot xen + dom0", "infrastructure",
                           "stage 'boot xen + dom0': timed out after 300s waiting for 'xenrig-dom0-ready' on the console"),
            "infra-download": ("images", "infrastructure", "apt-get download xen-hypervisor-4.17-amd64 failed: "
                               "Temporary failure resolving 'deb.debian.org'"),
            "infra-ssh": ("connect to dom0", "infrastructure", "dom0: the SSH connection failed: Connection reset by peer"),
            "xen-panic-at-boot": ("boot xen + dom0", "infrastructure",
                                  "stage 'boot xen + dom0': the console shows 'Panic on CPU 0' (boot failed)"),
        }[behaviour]
        error = {"kind": kind, "message": message}
        checks = [CheckResult("harness", ERROR, message)]
        stages = _stages(failed=stage)
        serial = XEN_BOOT + ("(XEN) Panic on CPU 0:\n(XEN) FATAL TRAP: vector = 13\n" if behaviour == "xen-panic-at-boot" else "")
    elif behaviour == "oops":
        message = "stage 'load guest modules': guest xenrig-guest console shows 'BUG: kernel NULL pointer dereference'"
        error = {"kind": "infrastructure", "message": message}
        checks = [CheckResult("harness", ERROR, message)]
        stages = _stages(failed="load guest modules")
        (run_dir / "xenrig-guest-console.log").write_text(
            "[   40.1] BUG: kernel NULL pointer dereference, address: 0000000000000008\n[   40.1] Oops: 0000 [#1] SMP\n")
    elif behaviour == "warn":
        message = "guest xenrig-guest: guestctl: the guest agent did not answer in time"
        error = {"kind": "infrastructure", "message": message}
        checks = ok + [CheckResult("harness", ERROR, message)]
        (run_dir / "guest-dmesg.txt").write_text(
            "[   50.2] WARNING: CPU: 0 PID: 77 at drivers/block/xen-blkfront.c:1290 blkif_free+0x1c/0x40\n")
    elif behaviour == "xen-panic":
        message = "dom0: the SSH connection failed while running 'xl list': Socket is closed"
        error = {"kind": "infrastructure", "message": message}
        checks = ok + [CheckResult("harness", ERROR, message)]
        serial += "(XEN) Assertion 'pg->count_info & PGC_allocated' failed at common/grant_table.c:1520\n"
    elif behaviour == "guest-died-twice":
        # The run's own second attempt lost its guest outside every module too.
        message = "guest xenrig-guest: guestctl: cannot connect to agent.sock"
        error = {"kind": "infrastructure", "message": message, "after_subject": "xen_blkfront"}
        checks = ok + [CheckResult("guest.crash", ERROR, "the guest died in the core kernel, outside every module",
                                   extra={"kind": "outside-modules",
                                          "line": "(XEN) d1v0 Triple fault - invoking HVM shutdown action 1"}),
                       CheckResult("harness", ERROR, message)]
        stages = _stages(failed="steps")
    elif behaviour == "capture-missed":
        checks = ok + [CheckResult("step07 quiet point after the I/O", ERROR, "the guest trace cannot be used: "
                                   "the capture missed 33 event(s) at 'gnttab_try_end_foreign_access'")]
    else:
        raise ValueError(f"unknown behaviour {behaviour!r}")
    (run_dir / "serial-l0.log").write_text(serial)
    verdict = overall(checks)
    from harness.report import plots      # here: as a program, main() has put _UNDRAWN in its place

    with mock.patch.object(plots, "stage_timeline", _drawn_once(plots.stage_timeline)):
        report.write(report.RunReport(scenario.name, verdict, run_dir, time.time(), 12.5, stages, checks,
                                      error=error, info=info))
    return outcome.exit_code(verdict, (error or {}).get("kind"))


def behaviour_for(script: dict, cell_id: str, attempt: int) -> str:
    plan = script.get(cell_id, ["pass"])
    return plan[min(attempt, len(plan)) - 1]


_scenarios: dict[tuple, object] = {}
_stage_svgs: dict[str, str] = {}


def _load_scenario(path: Path):
    """config.load_scenario, once per file as it is on disk: a matrix's cells
    share three scenario files, and each cell gets its own copy (variant)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_mtime_ns, st.st_size)
    if key not in _scenarios:
        _scenarios[key] = config.load_scenario(path)
    return _scenarios[key]


def _drawn_once(draw):
    """plots.stage_timeline, drawing each distinct list of stages once.  The
    fake's runs have a handful (_stages), and the tests write well over a
    hundred reports: drawing each picture anew was most of their time."""
    def stage_timeline(stages: list[dict]) -> str:
        key = json.dumps(stages, sort_keys=True)
        if key not in _stage_svgs:
            _stage_svgs[key] = draw(stages)
        return _stage_svgs[key]
    return stage_timeline


class ScriptedRunner:
    """A CellRunner: runs nothing, writes what the script says."""

    def __init__(self, script: dict | None = None):
        self.script = script or {}
        self.calls: list[tuple[str, int]] = []

    def __call__(self, cell, run_dir: Path, attempt: int):
        from harness.nightly.cells import RunnerExit

        self.calls.append((cell.id, attempt))
        scenario = cell.variant(_load_scenario(cell.scenario_path))
        code = write_run(run_dir, scenario, behaviour_for(self.script, cell.id, attempt))
        return RunnerExit(-11 if code is None else code, "xenrig run died of SIGSEGV" if code is None else "")


# What the program's report.html shows for its stages.  matplotlib is most of
# what a cell process would cost (0.6 s of 1 s), and the tests that run cells
# as processes look at the nightly, not at the runs' pictures; the in-process
# ScriptedRunner still draws them.
_UNDRAWN = types.ModuleType("harness.report.plots")
_UNDRAWN.stage_timeline = lambda stages: "<svg xmlns='http://www.w3.org/2000/svg' width='1' height='1'></svg>"


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("action", choices=["run"])
    ap.add_argument("scenario", type=Path)
    ap.add_argument("--run-dir", type=Path, required=True)
    ap.add_argument("--host", type=Path)
    ap.add_argument("--set", dest="sets", action="append", default=[])
    args = ap.parse_args(argv)
    script = json.loads(Path(os.environ["FAKE_NIGHTLY_SCRIPT"]).read_text())
    cell_id = "/".join(args.run_dir.parts[-3:])
    attempt = 1 + sum(1 for p in args.run_dir.glob("attempt-*"))
    behaviour = behaviour_for(script, cell_id, attempt)
    if behaviour == "sleep":
        time.sleep(60)
        return 2
    scenario = overrides.apply(config.load_scenario(args.scenario), args.sets)
    print(f"fake xenrig run {cell_id} attempt {attempt}: {behaviour}")
    with mock.patch.dict(sys.modules, {"harness.report.plots": _UNDRAWN}):
        code = write_run(args.run_dir, scenario, behaviour)
    if code is None:
        os.kill(os.getpid(), signal.SIGSEGV)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
