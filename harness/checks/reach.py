"""Did the run reach the path its scenario tests?

Some driver paths run only in a state the workload has to bring about: the
queue stop and restart of blkfront run only when a ring is full.  A broken
variant that never got there passes for the wrong reason, and so does its
control.  A scenario names the rings its steps must fill (`fill_rings`);
the model knows how many requests each ring held at once.  A ring that never
filled is an ERROR: the run could not judge what it was written for.
"""

from __future__ import annotations

from harness.checks.result import ERROR, PASS, CheckResult


def rings_filled(wanted: list[str], fullest: dict[str, dict[str, int]]) -> list[CheckResult]:
    """One result for the scenario's `fill_rings` (none when it names none).
    `fullest`: per ring, the most requests in flight at once and its slots
    (the model's Verdict.rings)."""
    if not wanted:
        return []
    missed, reached = [], []
    for name in wanted:
        ring = fullest.get(name)
        if ring is None:
            missed.append(f"{name} was never set up (rings in the trace: {', '.join(sorted(fullest)) or 'none'})")
        elif ring["peak"] < ring["slots"]:
            missed.append(f"{name} held at most {ring['peak']} of its {ring['slots']} slots")
        else:
            reached.append(f"{name} held all {ring['slots']} slots")
    if missed:
        return [CheckResult("trace.rings-filled", ERROR,
                            "the steps never filled " + "; ".join(missed)
                            + ": the path the scenario tests (a full ring) did not run, so the run cannot judge it",
                            extra={"rings": {n: fullest.get(n) for n in wanted}})]
    return [CheckResult("trace.rings-filled", PASS, "; ".join(reached), extra={"rings": {n: fullest[n] for n in wanted}})]
