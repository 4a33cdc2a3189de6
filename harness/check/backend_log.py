"""A scripted backend's log (xrback-<vdev>.jsonl) through the rules of
harness/model/backend_lies.py: the verdict `xenrig check` prints, and the
`backend.model` check of a run with scripted vbds."""

from __future__ import annotations

import json
from pathlib import Path

from harness.check.verdict import ERROR, FAIL, PASS, Divergent, Verdict
from harness.errors import UsageError
from harness.model import backend_lies
from harness.model.rules import RULES

CONTEXT_EVENTS = 5
POLICY = "linux-6.1"


class BackendLogError(UsageError):
    def __init__(self, path: str, line: int, problem: str):
        super().__init__(f"{path}:{line}: {problem}",
                         hint="a scripted backend's log has one JSON object per line, each with an 'ev' "
                              "(harness/remote/xrback.py writes it; docs/model.md describes the rules)")


def is_backend_log(path: str | Path) -> bool:
    """The first line of an xrback log is an object with 'ev' (a trace's
    is its header, with 'kind')."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            first = f.readline()
        return isinstance(obj := json.loads(first), dict) and "ev" in obj and "kind" not in obj
    except (OSError, ValueError):
        return False


def read(path: str | Path) -> list[dict]:
    events = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                ev = json.loads(line)
            except ValueError as exc:
                raise BackendLogError(str(path), n, f"not JSON ({exc})") from None
            if not isinstance(ev, dict) or not isinstance(ev.get("ev"), str):
                raise BackendLogError(str(path), n, "not an object with an 'ev' field")
            ev["_line"] = n
            events.append(ev)
    return events


def verdict_of(events: list[dict], name: str | None = None) -> Verdict:
    """PASS, FAIL with the first broken rule, or ERROR when the log cannot
    speak for the frontend (the backend itself crashed, or logged nothing)."""
    plain = [{k: v for k, v in ev.items() if k != "_line"} for ev in events]
    notes = [f"lies told: {', '.join(told)}"] if (told := backend_lies.lies_told(plain)) else []
    base = {"policy": POLICY, "events": len(events), "trace": name,
            "kinds": _kinds(plain), "notes": notes}
    crashed = next((ev for ev in plain if ev["ev"] == "crashed"), None)
    if not events or crashed is not None:
        why = f"the backend crashed: {crashed.get('why')}" if crashed else "the log is empty"
        return Verdict(ERROR, error=f"{why}; its log cannot judge the frontend", **base)
    try:
        found = backend_lies.judge(plain)
    except backend_lies.Malformed as exc:
        where = events[exc.args[1]].get("_line", exc.args[1] + 1)
        return Verdict(ERROR, error=f"{name or '<log>'}:{where}: {exc.args[0]}; the log cannot judge the frontend",
                       **base)
    if found is None:
        return Verdict(PASS, **base)
    index, exc = found
    rule = RULES[exc.rule]
    line = events[index].get("_line", index + 1)
    before = [{"line": ev.get("_line"), "event": plain[i]}
              for i, ev in enumerate(events[max(0, index - CONTEXT_EVENTS):index], max(0, index - CONTEXT_EVENTS))]
    return Verdict(FAIL, divergence=Divergent(
        rule=exc.rule, meaning=rule.meaning, source=rule.source, message=exc.message, seq=line, line=line,
        event=plain[index], state=exc.state, expected=exc.expected, actual=exc.actual, before=before), **base)


def check_file(path: str | Path) -> Verdict:
    return verdict_of(read(path), str(path))


def _kinds(events: list[dict]) -> dict[str, int]:
    out: dict[str, int] = {}
    for ev in events:
        out[ev["ev"]] = out.get(ev["ev"], 0) + 1
    return out
