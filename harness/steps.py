"""Scenario steps: exerciser commands in the guest, shell commands in the
guest, GNTTABOPs from dom0, Xen dumps at quiet points, run in order on a
capture session, each reported as its own test case.

A step passes when every field in its `expect` has the value given there,
and, for a GNTTABOP, when Xen's answer is what the model predicts for that
state (the model's judgement comes after the run, from the whole trace).
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from dataclasses import dataclass, field

from harness.capture.lifecycle import Lifecycle
from harness.capture.live import CaptureSession
from harness.checks.result import ERROR, FAIL, PASS, SKIP, CheckResult
from harness.config import Step
from harness.errors import HangDetected, InfraError, UsageError, XenrigError
from harness.model.constants import GNTST_NAMES

_GNTST_BY_NAME = {name: value for value, name in GNTST_NAMES.items()}
_REF = re.compile(r"@([A-Za-z0-9_]+)\.([A-Za-z0-9_]+)")


@dataclass
class StepRecord:
    index: int
    step: Step
    label: str
    result: dict = field(default_factory=dict)
    seq: int | None = None            # trace seq of the step's GNTTABOP event, if any
    op: str | None = None
    duration_s: float = 0.0
    error: str | None = None
    skipped: str | None = None        # why the step never ran
    hung: str | None = None           # the watchdog proved the device stuck during it


TIMED_OUT = (124, 143)    # timeout(1): the time ran out / SIGTERM


class StepTimeout(InfraError):
    """A step's command ran out of its time in the guest."""


def _label(step: Step, taken: set[str]) -> str:
    """The step's test-case name: from its name (or id, or what it does), not
    its position, so inserting a step renames no other; made unique."""
    what = (f"guest {step.guest}" if step.guest is not None else f"shell {step.shell}" if step.shell is not None
            else f"dom0 {step.dom0.get('op')}" if step.dom0 is not None
            else f"{step.vbd.op} {step.vbd.vdev}" if step.vbd is not None
            else f"{step.module.op} {step.module.name}" if step.module is not None
            else f"idle {step.idle_s} s" if step.idle_s is not None else "xen dump")
    base = f"step {step.name or step.id or what}"
    label, n = base, 1
    while label in taken:
        n += 1
        label = f"{base} ({n})"
    taken.add(label)
    return label


class StepRunner:
    def __init__(self, capture: CaptureSession, watch=None, before=None):
        """`watch(what)`: a context manager that turns a guest operation's
        timeout into a hang verdict when the rings are stuck.  `before(i)`:
        called before step i (from 1) starts (harness.faults)."""
        self.capture = capture
        self.before = before or (lambda index: None)
        self.watch = watch or (lambda what: contextlib.nullcontext())
        self.saved: dict[str, dict] = {}
        self.records: list[StepRecord] = []
        self.hang: HangDetected | None = None

    # -- value resolution ----------------------------------------------------
    def _resolve(self, text: str, where: str) -> str:
        def sub(m: re.Match) -> str:
            sid, fld = m.group(1), m.group(2)
            if sid not in self.saved or fld not in self.saved[sid]:
                raise UsageError(f"{where}: '@{sid}.{fld}' names no field of an earlier step's result",
                                 hint=f"Known results: {', '.join(sorted(self.saved)) or 'none yet'}")
            return str(self.saved[sid][fld])
        return _REF.sub(sub, text)

    def _value(self, text: str, where: str):
        text = self._resolve(str(text), where)
        if text == "guest":
            return self.capture.guest.domid
        if text in _GNTST_BY_NAME:
            return _GNTST_BY_NAME[text]
        try:
            return int(text, 0)
        except ValueError:
            lowered = text.lower()
            if lowered in ("true", "false"):
                return lowered == "true"
            return text

    # -- running -------------------------------------------------------------
    def run(self, steps: list[Step], on_record=None) -> list[StepRecord]:
        taken: set[str] = set()
        labels = [_label(step, taken) for step in steps]
        stopped_by: str | None = None
        for i, step in enumerate(steps, start=1):
            if stopped_by:
                # Later steps depend on the failed one's state: not run, and said so.
                why = "hung" if self.hang else "errored"
                self.records.append(StepRecord(i, step, labels[i - 1], skipped=f"not run: '{stopped_by}' {why}"))
                continue
            rec = StepRecord(i, step, labels[i - 1])
            self.before(i)
            started = time.monotonic()
            try:
                with self.watch(rec.label):
                    self._run_one(step, rec)
                    # The step's events leave the guest now: if the guest, dom0
                    # or the transport dies later, they are still judged.
                    self.capture.checkpoint()
            except HangDetected as exc:
                # A verdict, found once: the steps after it are not run (each
                # would only wait out its own timeout on the stuck device),
                # and what was captured up to here is still judged.
                self.hang = exc
                rec.hung = exc.message
            except XenrigError as exc:
                rec.error = exc.paragraph()
            rec.duration_s = round(time.monotonic() - started, 3)
            if step.id:
                self.saved[step.id] = rec.result
            self.records.append(rec)
            if on_record:
                on_record(rec)
            if rec.error or rec.hung:
                stopped_by = rec.label
        return self.records

    def _run_one(self, step: Step, rec: StepRecord) -> None:
        cap = self.capture
        where = rec.label
        if step.guest is not None:
            rec.result = cap.exerciser(self._resolve(step.guest, where), timeout_s=step.timeout_s)
            rec.op = rec.result.get("op")
        elif step.shell is not None:
            res = cap.guest.run(self._resolve(step.shell, where), timeout_s=step.timeout_s)
            rec.result = {"exit": res.exit_status, "output": res.stdout[-2000:]}
            if res.exit_status in TIMED_OUT:
                # The agent's timeout(1) stopped it: let the watchdog look at
                # the rings now, rather than the next step waiting out its own.
                raise StepTimeout(f"{where}: the command ran out of its {step.timeout_s} s "
                                  f"(exit {res.exit_status}); its output ends: {res.stdout[-300:].strip()!r}")
        elif step.dom0 is not None:
            op = {k: self._value(v, where) for k, v in step.dom0.items()}
            rec.result = cap.dom0(op)
            rec.seq = rec.result.pop("_seq", None)
            rec.op = op["op"]
        elif step.vbd is not None or step.module is not None or step.domain is not None:
            life = Lifecycle(cap)
            if step.vbd is not None:
                rec.result = life.vbd(step.vbd, step.timeout_s)
            elif step.module is not None:
                rec.result = life.module(step.module, step.timeout_s)
            elif step.domain.op == "migrate":
                rec.result = life.migrate(step.timeout_s)
            else:
                rec.result = life.save_restore(step.timeout_s)
            # After every lifecycle step a quiet point: the torn-down rings
            # owe the end of their grants by now, and Xen's table says.
            # (Without capture only a scripted vbd's steps come here: no model
            # to hold the table to.)
            if cap.scenario.capture:
                self._dump(rec, prefix="quiet_")
        elif step.idle_s is not None:
            rec.result = Lifecycle(cap).idle(step.idle_s)
            self._dump(rec, prefix="quiet_")
        else:
            self._dump(rec)
        if step.guest is not None and rec.result.get("op") in ("query_size", "setup_table", "get_version", "set_version"):
            # The hypercall event is drained from the exerciser's log later;
            # find its seq then (see judge()).
            rec.result["_exerciser_seq"] = rec.result.get("seq")

    def _dump(self, rec: StepRecord, prefix: str = "") -> None:
        dumped = self.capture.dump()
        rec.result.update({f"{prefix}entries": len(dumped["entries"]), f"{prefix}nr_frames": dumped["nr_frames"],
                           f"{prefix}max_frames": dumped["max_frames"],
                           f"{prefix}table_entries": dumped["table_entries"]})
        rec.seq = dumped["seq"]

    # -- judging ---------------------------------------------------------------
    def judge(self, expectations: dict, divergence, cannot_judge: bool = False) -> list[CheckResult]:
        """One CheckResult per step: explicit expectations first, then the
        model's prediction for GNTTABOPs; a step after the model's first
        divergence has no model judgement.  `cannot_judge`: that divergence
        is a path the model does not cover, not a failure of the subject."""
        out = []
        div_seq = divergence.seq if divergence is not None else None
        exer_seq_to_trace = self._exerciser_seqs()
        for rec in self.records:
            cid = rec.label
            if rec.skipped:
                out.append(CheckResult(cid, SKIP, rec.skipped))
                continue
            if rec.hung:
                out.append(CheckResult(cid, FAIL, rec.hung, duration_s=rec.duration_s))
                continue
            if rec.error:
                out.append(CheckResult(cid, ERROR, rec.error, duration_s=rec.duration_s))
                continue
            seq = rec.seq if rec.seq is not None else exer_seq_to_trace.get(rec.result.get("_exerciser_seq"))
            evidence = json.dumps({k: v for k, v in rec.result.items() if not k.startswith("_")}, sort_keys=True)
            problems = []
            for key, want in rec.step.expect.items():
                got = rec.result.get(key)
                # Text results (e.g. hex bytes) compare as text, not as numbers.
                want_v = self._resolve(str(want), cid) if isinstance(got, str) else self._value(want, cid)
                if got != want_v:
                    problems.append((key, want, want_v, got))
            rule = f"gnttab.{rec.op}.status" if rec.op and rec.op in ("query_size", "setup_table", "map", "unmap", "copy", "transfer") else None
            if problems:
                key, want, want_v, got = problems[0]
                name = f" ({GNTST_NAMES.get(got, got)})" if key == "status" and isinstance(got, int) else ""
                msg = f"expected {key} = {want}, got {got}{name}"
                if rule and key == "status":
                    msg = f"rule {rule}: the scenario expected {want}, Xen answered {GNTST_NAMES.get(got, got)}"
                out.append(CheckResult(cid, FAIL, msg, evidence, rec.duration_s, expected=f"{key}={want_v}",
                                       actual=f"{key}={got}", extra={"rule": rule, "seq": seq}))
                continue
            if seq is not None and div_seq is not None and seq == div_seq and cannot_judge:
                out.append(CheckResult(cid, SKIP, f"the model cannot judge from here: {divergence.message}",
                                       evidence, rec.duration_s))
                continue
            if seq is not None and div_seq is not None and seq == div_seq:
                out.append(CheckResult(cid, FAIL, f"the model diverges here: {divergence.rule}: {divergence.message}",
                                       evidence, rec.duration_s, expected=str(divergence.expected),
                                       actual=str(divergence.actual), extra={"rule": divergence.rule, "seq": seq}))
                continue
            exp = expectations.get(seq) if seq is not None else None
            actual = rec.result.get("status", rec.result.get("rc"))
            if seq is not None and div_seq is not None and seq > div_seq:
                out.append(CheckResult(cid, SKIP, "after the model's first divergence: not judged", evidence, rec.duration_s))
            elif exp is not None:
                expected = "any (the model cannot see what decides it)" if exp.value is None else _status_text(exp.value)
                out.append(CheckResult(cid, PASS, f"Xen answered {_status_text(actual)}; the model expected {expected}: {exp.why}",
                                       evidence, rec.duration_s, expected=expected, actual=_status_text(actual),
                                       extra={"seq": seq}))
            else:
                out.append(CheckResult(cid, PASS, "done" + (f"; expectations met: {', '.join(rec.step.expect)}" if rec.step.expect else ""),
                                       evidence, rec.duration_s, extra={"seq": seq}))
        return out

    def _exerciser_seqs(self) -> dict[int, int]:
        """exerciser log seq -> trace seq of the hypercall event it produced."""
        return dict(self.capture.exerciser_events)


def _status_text(value) -> str:
    if isinstance(value, int) and value in GNTST_NAMES:
        return f"{GNTST_NAMES[value]} ({value})"
    return str(value)
