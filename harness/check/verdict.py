"""The checker's result: PASS, FAIL with the first divergence, or ERROR."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

PASS, FAIL, ERROR = "PASS", "FAIL", "ERROR"
EXIT_CODES = {PASS: 0, FAIL: 1, ERROR: 2}


@dataclass(slots=True)
class Divergent:
    """The first event the model could not accept, and why."""

    rule: str
    meaning: str
    source: str
    message: str
    seq: int
    line: int | None
    event: dict
    state: dict
    expected: object = None
    actual: object = None
    before: list[dict] = field(default_factory=list)


@dataclass(slots=True)
class Verdict:
    outcome: str
    policy: str
    events: int
    trace: str | None = None
    divergence: Divergent | None = None
    error: str | None = None
    kinds: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    # Per ring: the most requests in flight at once and its slots.
    rings: dict[str, dict[str, int]] = field(default_factory=dict)
    series: dict | None = None
    ledger: dict | None = None

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.outcome]

    @property
    def passed(self) -> bool:
        return self.outcome == PASS

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=_jsonable)

    def summary(self) -> str:
        """A few lines for a person at a terminal."""
        where = f" {self.trace}" if self.trace else ""
        lines = [f"xenrig check{where}: {self.outcome} ({self.events} events, policy {self.policy})"]
        if self.error:
            lines.append(f"  {self.error}")
        d = self.divergence
        if d is not None:
            at = f"line {d.line}, seq {d.seq}" if d.line is not None else f"seq {d.seq}"
            lines.append(f"  rule {d.rule}: {d.meaning}")
            lines.append(f"  at {at}: {d.message}")
            lines.append(f"  source: {d.source}")
            if d.expected is not None or d.actual is not None:
                lines.append(f"  expected {_show(d.expected)}, got {_show(d.actual)}")
            lines.append(f"  event: {json.dumps(d.event, default=_jsonable)}")
            if d.state:
                lines.append("  model state:")
                for key, value in d.state.items():
                    lines.append(f"    {key}: {json.dumps(value, default=_jsonable)}")
            if d.before:
                lines.append("  events before it:")
                for item in d.before:
                    lines.append(f"    line {item['line']}: {json.dumps(item['event'], default=_jsonable)}")
        for note in self.notes:
            lines.append(f"  note: {note}")
        return "\n".join(lines)


def _show(value: object) -> str:
    return json.dumps(value, default=_jsonable)


def _jsonable(value: object) -> object:
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)
