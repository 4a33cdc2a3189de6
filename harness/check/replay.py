"""Replay a trace through the model: the first divergence, or PASS.

`replay` runs events held in memory, `check_file` streams a JSONL file block
by block; both drive the `Checker` (harness/check/checker.py) and turn the
first broken rule into a verdict with the events just before it.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable
from pathlib import Path

import msgspec

from harness.check.checker import Checker
from harness.check.verdict import ERROR, FAIL, PASS, Divergent, Verdict
from harness.model.rules import RULES, Divergence, Unsupported
from harness.trace.io import BLOCK_BYTES, TraceFormatError, TraceReader, gc_paused
from harness.trace.schema import Event, Header

CONTEXT_EVENTS = 5


class TraceOrderError(Exception):
    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


# --- running a whole trace


def _divergent(exc: Divergence | Unsupported, ev: Event, line: int | None,
               before: list[tuple[int | None, Event]]) -> Divergent:
    rule = RULES.get(exc.rule)
    return Divergent(
        rule=exc.rule,
        meaning=rule.meaning if rule else "the model does not cover this",
        source=rule.source if rule else "harness/model",
        message=exc.message,
        seq=ev.seq,
        line=line,
        event=msgspec.to_builtins(ev),
        state=getattr(exc, "state", {}),
        expected=getattr(exc, "expected", None),
        actual=getattr(exc, "actual", None),
        before=[{"line": ln, "event": msgspec.to_builtins(e)} for ln, e in before],
    )


class _Run:
    """Drives a Checker over blocks of events, keeping what a verdict needs."""

    def __init__(self, checker: Checker, name: str | None):
        self.checker = checker
        self.name = name
        self.count = 0
        self.last_seq = -1
        self.kinds: Counter = Counter()
        self.tail: deque[tuple[int | None, Event]] = deque(maxlen=CONTEXT_EVENTS)

    def run_block(self, events: list[Event], line_of) -> Verdict | None:
        handlers = self.checker.handlers
        sample = self.checker.sample if self.checker.series is not None else None
        last_seq = self.last_seq
        ev = None
        try:
            if sample is None:
                for ev in events:
                    seq = ev.seq
                    if seq <= last_seq:
                        raise TraceOrderError(f"seq {seq} after seq {last_seq}: seq must increase")
                    last_seq = seq
                    handlers[ev.__class__](ev)
            else:
                for ev in events:
                    seq = ev.seq
                    if seq <= last_seq:
                        raise TraceOrderError(f"seq {seq} after seq {last_seq}: seq must increase")
                    last_seq = seq
                    handlers[ev.__class__](ev)
                    sample(ev)
        except (Divergence, Unsupported, TraceOrderError) as exc:
            index = next(i for i, e in enumerate(events) if e is ev)
            self.count += index
            if sample is not None:
                self.kinds.update(map(type, events[:index]))
            before = list(self.tail) + [(line_of(i), events[i])
                                        for i in range(max(0, index - CONTEXT_EVENTS), index)]
            before = before[-CONTEXT_EVENTS:]
            line = line_of(index)
            if isinstance(exc, TraceOrderError):
                return self.verdict(ERROR, error=f"{self.name or '<trace>'}:{line}: {exc.message}")
            outcome = ERROR if isinstance(exc, Unsupported) else FAIL
            verdict = self.verdict(outcome, divergence=_divergent(exc, ev, line, before))
            if outcome == ERROR:
                verdict.error = f"the model cannot judge this trace: {exc.message}"
            return verdict
        self.last_seq = last_seq
        self.count += len(events)
        if sample is not None:  # the kinds histogram is report data, like the series
            self.kinds.update(map(type, events))
        start = max(0, len(events) - CONTEXT_EVENTS)
        self.tail.extend((line_of(i), events[i]) for i in range(start, len(events)))
        return None

    def verdict(self, outcome: str, **extra) -> Verdict:
        checker = self.checker
        notes = list(checker.notes)
        if checker.purged:
            notes.append(f"{checker.purged} mapping(s) the model had only inferred were absent from "
                         "Xen's dump and are forgotten (blkback purges persistent grants: "
                         "blkback.c purge_persistent_gnt)")
        judged = checker.negotiation.judged
        if judged:
            notes.append(f"feature negotiation judged on {len(judged)} ring(s) ({', '.join(judged[:6])}"
                         f"{', ...' if len(judged) > 6 else ''}): both ends' xenstore nodes, then every request")
        unjudged = sorted(name for name, ring in checker.rings.items() if ring.negotiated is None)
        if unjudged and checker.policy != "seed":
            notes.append(f"feature negotiation not judged on ring(s) {', '.join(unjudged[:6])}: the trace has no "
                         "blkif.features for them (the capture reads it only while the device is Connected)")
        view = checker.xen_view
        if view.table_reads:
            held = sum(len(b) for b in view.baseline.values())
            notes.append(f"dom0 read the guest's whole grant table from Xen {view.table_reads} time(s): "
                         f"{view.entries_compared} entry readings held against the model, {held} granted entries "
                         "the trace never touched held to their first reading"
                         + (f"; {view.concurrent_readings} entry reading(s) showed a state the guest moved the "
                            "entry through while dom0 read the table (blkfront's purge work runs on at a "
                            "quiet point)" if view.concurrent_readings else ""))
        verdict = Verdict(
            outcome=outcome, policy=checker.policy, events=self.count, trace=self.name,
            kinds={t.__struct_config__.tag: n for t, n in self.kinds.items()},
            notes=notes, rings=checker.state.fullest(), **extra,
        )
        if checker.series is not None:
            verdict.series = checker.series
            verdict.ledger = checker.ledger()
        return verdict


def replay(events: Iterable[Event], policy: str | None = None, header: Header | None = None,
           series: bool = False, name: str | None = None) -> Verdict:
    """Check events held in memory (line numbers are 2 + index: the header is line 1)."""
    checker = Checker(header, policy, series)
    run = _Run(checker, name)
    events = list(events)
    verdict = run.run_block(events, lambda i: i + 2)
    return verdict or run.verdict(PASS)


def check_file(path: str | Path, policy: str | None = None, series: bool = False,
               block_bytes: int = BLOCK_BYTES) -> Verdict:
    """Stream a JSONL trace through the model; bad input raises TraceFormatError."""
    path = str(path)
    with TraceReader(path, block_bytes) as reader:
        checker = Checker(reader.header, policy, series)
        run = _Run(checker, path)
        with gc_paused():
            for block in reader.blocks():
                verdict = run.run_block(block.events, block.line_of)
                if verdict is not None:
                    return verdict
        return run.verdict(PASS)


__all__ = ["Checker", "TraceFormatError", "check_file", "replay"]
