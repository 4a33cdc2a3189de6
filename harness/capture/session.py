"""One trace out of three views.

The harness drives a run in phases (guest work, dom0 operations, a Xen dump
at a quiet point), so program order is the order of the views: each batch of
events is appended after everything captured before it.  Within a batch the
source's own clock orders the events.  The trace is timed by the guest's
clock; batches from dom0 and Xen are slotted in just after what preceded
them, so t_ns stays non-decreasing and the guest's intervals stay true.
"""

from __future__ import annotations

import json
from pathlib import Path

from harness.trace import parse_lines

HEADER_DEFAULTS = {"v": 1, "kind": "header", "policy": "linux-6.1", "mappings": "inferred"}


class TraceAssembly:
    def __init__(self, **header):
        self.header = {**HEADER_DEFAULTS, **{k: v for k, v in header.items() if v is not None}}
        self.events: list[dict] = []
        self._last_t = 0
        self._offset = 0

    def add(self, batch: list[dict], own_clock: bool = True) -> list[dict]:
        """Append a batch (schema-shaped dicts without seq) in program order.

        `own_clock`: the batch's times come from the clock that times the
        trace (the guest's), shifted only as far as needed to stay after what
        came before.  Otherwise (dom0's agent, Xen's dumps: other machines'
        clocks) the batch is placed 1 us after the previous event, keeping
        only its own intervals, so a foreign clock never stretches the trace.
        """
        if not batch:
            return []
        batch = sorted(batch, key=lambda e: e["t_ns"])
        first = batch[0]["t_ns"]
        if own_clock:
            self._offset = max(self._offset, self._last_t + 1 - first)
            shift = self._offset
        else:
            shift = self._last_t + 1000 - first
        placed = []
        for ev in batch:
            ev = dict(ev)
            ev["t_ns"] = max(0, ev["t_ns"] + shift)
            ev["seq"] = len(self.events) + 1
            self.events.append(ev)
            placed.append(ev)
        self._last_t = self.events[-1]["t_ns"]
        return placed

    def lines(self) -> list[str]:
        ordered = ("seq", "t_ns", "dom", "src", "kind")
        out = [json.dumps(self.header, separators=(",", ":"))]
        for ev in self.events:
            rec = {k: ev[k] for k in ordered}
            # Keys starting with "_" are the capture's own bookkeeping.
            rec.update((k, v) for k, v in ev.items() if k not in rec and not k.startswith("_"))
            out.append(json.dumps(rec, separators=(",", ":")))
        return out

    def write(self, path: Path) -> Path:
        path.write_text("\n".join(self.lines()) + "\n")
        return path

    def parsed(self, name: str = "<capture>"):
        """(Header, typed events): validates every event against the schema."""
        return parse_lines(self.lines(), name)
