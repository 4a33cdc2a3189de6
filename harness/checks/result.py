"""One result vocabulary everywhere (DESIGN.md): PASS, FAIL, ERROR, SKIP."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

PASS, FAIL, ERROR, SKIP = "PASS", "FAIL", "ERROR", "SKIP"
EXIT_CODES = {PASS: 0, FAIL: 1, ERROR: 2, SKIP: 0}


@dataclass
class CheckResult:
    id: str                   # stable, e.g. "guest.blkfront-bound[xvda]"
    outcome: str
    message: str              # one line a person reads first
    evidence: str = ""        # the lines the verdict rests on
    duration_s: float = 0.0
    expected: str | None = None
    actual: str | None = None
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def overall(results: list[CheckResult]) -> str:
    """ERROR beats FAIL beats PASS; no result at all is an ERROR, never a PASS."""
    outcomes = {r.outcome for r in results}
    if not results:
        return ERROR
    if ERROR in outcomes:
        return ERROR
    if FAIL in outcomes:
        return FAIL
    if outcomes == {SKIP}:
        return SKIP
    return PASS
