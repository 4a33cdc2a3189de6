"""One result vocabulary everywhere (DESIGN.md): PASS, FAIL, ERROR, SKIP."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from harness import outcome as _outcome
from harness.outcome import ERROR, FAIL, PASS, SKIP  # noqa: F401  (the vocabulary, re-exported)


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


def corrupted(results: list[CheckResult]) -> bool:
    """A result says the stack damaged data (a canary, a digest)."""
    return any(r.outcome == ERROR and r.extra.get("kind") == _outcome.CORRUPTION for r in results)


def overall(results: list[CheckResult]) -> str:
    """harness.outcome's precedence over these results: a proven FAIL stands
    over later errors, unless the stack corrupted data; none is an ERROR."""
    return _outcome.overall([r.outcome for r in results], corrupted=corrupted(results))
