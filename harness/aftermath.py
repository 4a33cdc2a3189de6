"""What a run still proves when the stack breaks under it.

The run marks the moment the subject under test (the exerciser, blkfront)
is loaded.  From then on:
- every step's events leave the guest as the run goes (StepRunner drains
  the capture after each step), so when dom0, the guest or the transport
  dies, the model still replays everything captured up to then: a
  divergence there is a FAIL that stands; no divergence in an incomplete
  trace is no verdict (ERROR), never a PASS;
- Xen's and dom0's console (the L0 serial log, read locally: it survives
  dom0) and the guest's kernel log are searched for crashes that came after
  the subject loaded: a FAIL of the subject, product-suspect;
- the last console lines of Xen and dom0, and of the guest, go into the
  report for a person.

Nothing here talks to the guest or dom0 once the run has broken, except to
fetch the guest's console while dom0 still answers.
"""

from __future__ import annotations

import contextlib
import json
import shlex
from pathlib import Path

from harness.check import stepwise
from harness.checks import crash, guest_death
from harness.checks.result import ERROR, FAIL, CheckResult
from harness.errors import XenrigError

TAIL_LINES = 30


def mark_subject(xen, g, info: dict, module: str) -> None:
    """Remember where Xen's console, the guest's kernel log and its console
    stood just before `module` (the first module under test) loads."""
    if "subject" in info:
        return
    mark: dict = {"module": module, "serial_offset": None, "guest_dmesg_line": None, "guest_console_offset": None}
    machine = getattr(xen, "machine", None)
    if machine is not None:
        with contextlib.suppress(OSError):
            mark["serial_offset"] = machine.serial.path.stat().st_size
    with contextlib.suppress(XenrigError, ValueError):
        mark["guest_dmesg_line"] = int(g.run("dmesg | wc -l", timeout_s=30).stdout.strip() or 0)
    with contextlib.suppress(XenrigError, ValueError):
        res = xen.run(f"stat -c %s {shlex.quote(g.paths.console_log)}", timeout_s=30)
        mark["guest_console_offset"] = int(res.stdout.strip() or 0)
    info["subject"] = mark


def crash_checks(xen, run_dir: Path, info: dict, guest_name: str | None) -> list[CheckResult]:
    """The crash checks since the subject loaded (none before it loaded)."""
    mark = info.get("subject")
    if not mark:
        return []
    out = []
    machine = getattr(xen, "machine", None)
    if machine is not None and mark.get("serial_offset") is not None:
        out.append(crash.stack_check(machine.serial.path, mark["serial_offset"], mark["module"]))
    dmesg = run_dir / "guest-dmesg.txt"
    console = run_dir / f"{guest_name}-console.log" if guest_name else None
    if dmesg.exists() and mark.get("guest_dmesg_line") is not None:
        out.append(crash.guest_check(dmesg.read_text(errors="replace"), mark["guest_dmesg_line"], mark["module"]))
    elif console is not None and console.exists() and mark.get("guest_console_offset") is not None:
        # The guest died before its log could be read: its console (kept in
        # dom0, fetched on the way out) holds the last words.
        text = crash.read_from(console, mark["guest_console_offset"])
        out.append(crash.guest_check(text, 0, mark["module"]))
    died = _guest_death(machine, run_dir, info, mark)
    if died is not None:
        out.append(died)
    return out


def _guest_death(machine, run_dir: Path, info: dict, mark: dict) -> CheckResult | None:
    """Xen's word that the guest triple-faulted or was crashed, placed inside
    or outside the modules under test (harness.checks.guest_death).  Xen's
    log: the L0 serial line since the subject loaded, or on a real host the
    `xl dmesg` the run kept."""
    domid = (info.get("guest") or {}).get("domid")
    if domid is None:
        return None
    # After a save-restore the guest is another domain (runner._note_domids).
    domids = [int(d) for d in (info["guest"].get("domids") or [domid])]
    if machine is not None and mark.get("serial_offset") is not None:
        text = crash.read_from(machine.serial.path, mark["serial_offset"])
    else:
        text = crash.read_from(run_dir / "xl-dmesg.txt", 0)
    modules = {name: (int(address, 16), size) for name, (address, size) in (info.get("module_text") or {}).items()}
    subjects = [m["name"] for m in info.get("modules", []) if m.get("role") in ("blkfront", "exerciser")]
    return guest_death.check(text, domids, modules, subjects, mark["module"])


def judge_partial(session, steps, info: dict, why: str) -> list[CheckResult]:
    """The model's judgement of the trace captured before the run broke;
    with the steps' own expectations for the steps that got a result."""
    if session is None or not session.armed:
        return steps.judge({}, None) if steps is not None else []
    dropped = session.stats.get("dropped") or getattr(session, "dropped_seen", None)
    lost = session.failure or (dropped not in (None, "", "0") and f"the tracer dropped {dropped} records")
    if lost:
        # A trace with a hole could diverge where the subject did nothing wrong.
        return (steps.judge({}, None) if steps is not None else []) + [
            CheckResult("trace.model", ERROR, f"the capture lost data ({lost}) before the run broke ({why}): "
                        "not judged", extra={"complete": False})]
    header, events = session.assembly.parsed()
    path = session.assembly.write(session.run_dir / "trace.jsonl")
    verdict, expectations = stepwise.judge(header, events, name=path.name)
    info["trace"] = {"path": path.name, "events": len(events), "complete": False, "kinds": verdict.kinds}
    info["verdict"] = {k: v for k, v in verdict.to_dict().items() if k not in ("series", "ledger")}
    results = (steps.judge(expectations, verdict.divergence, cannot_judge=verdict.outcome == ERROR)
               if steps is not None else [])
    d = verdict.divergence
    if verdict.outcome == FAIL and d is not None:
        results.append(CheckResult(
            "trace.model", FAIL,
            f"first divergence at seq {d.seq}: {d.rule}: {d.message} (in the {len(events)} events captured "
            f"before the run broke)",
            json.dumps({"event": d.event, "state": d.state, "before": d.before}, indent=1, default=str),
            expected=str(d.expected), actual=str(d.actual), extra={"rule": d.rule, "complete": False}))
    elif verdict.outcome == ERROR:
        # The model could not judge (a path it does not cover): no verdict either way.
        results.append(CheckResult("trace.model", ERROR, verdict.error or (d.message if d else "the model could "
                                   "not judge the trace"), extra={"complete": False}))
    else:
        results.append(CheckResult(
            "trace.model", ERROR,
            f"the capture is incomplete ({why}): the model found no divergence in the {len(events)} events "
            f"captured before that, which is no verdict", extra={"complete": False}))
    return results


def last_console(xen, run_dir: Path, guest_name: str | None, session=None) -> dict:
    """The last lines of Xen's and dom0's console and of the guest's."""
    out = {}
    machine = getattr(xen, "machine", None) if xen is not None else None
    if machine is not None:
        out["xen+dom0"] = machine.serial.tail(TAIL_LINES)
    console = run_dir / f"{guest_name}-console.log" if guest_name else None
    if console is not None and console.exists():
        out["guest"] = "\n".join(console.read_text(errors="replace").rstrip().splitlines()[-TAIL_LINES:])
    elif session is not None and getattr(session, "console_tail", ""):
        out["guest"] = session.console_tail
    return out
