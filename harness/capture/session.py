"""One trace out of three views.

The harness drives a run in phases (guest work, dom0 operations, a Xen dump
at a quiet point), so program order is the order of the views: each batch of
events is appended after everything captured before it.  Within a batch the
source's own clock orders the events.  Clocks differ between the guest,
dom0 and the harness, so each batch's times are shifted, if needed, to start
after the previous batch: t_ns stays non-decreasing and keeps each source's
own intervals.
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

    def add(self, batch: list[dict]) -> list[dict]:
        """Append a batch (schema-shaped dicts without seq) in program order."""
        if not batch:
            return []
        batch = sorted(batch, key=lambda e: e["t_ns"])
        shift = max(0, self._last_t + 1 - batch[0]["t_ns"])
        placed = []
        for ev in batch:
            ev = dict(ev)
            ev["t_ns"] = ev["t_ns"] + shift
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
