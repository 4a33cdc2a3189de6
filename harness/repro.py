"""Reproducing a driver bug on demand: build the variant, boot, trigger,
and say REPRODUCED, NOT REPRODUCED or INFRASTRUCTURE ERROR with evidence.

A repro file is a scenario (configs/repro/*.yaml) whose `repro.signature`
says what the bug looks like: a model rule id, a guest log pattern, a Xen
log pattern, or a hang.  The run itself is `harness.runner.run_scenario`;
this module only reads its run folder against the signature.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from harness.checks.result import corrupted
from harness.config import ReproSignature
from harness.runner import RunOutcome

REPRODUCED, NOT_REPRODUCED, INFRA = "REPRODUCED", "NOT REPRODUCED", "INFRASTRUCTURE ERROR"
EXIT_CODES = {REPRODUCED: 0, NOT_REPRODUCED: 1, INFRA: 2}


@dataclass
class ReproVerdict:
    verdict: str
    evidence: list[str] = field(default_factory=list)
    run_dir: Path | None = None

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.verdict]


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _log_matches(pattern: str, sources: dict[str, str]) -> list[str]:
    rx = re.compile(pattern)
    hits = []
    for name, text in sources.items():
        for line in text.splitlines():
            if rx.search(line):
                hits.append(f"{name}: {line.strip()}")
    return hits


def _state_at_end(run_dir: Path) -> list[str]:
    """The ring and grant state at the end, from the model's ledger."""
    try:
        ledger = json.loads((run_dir / "model-state.json").read_text()).get("ledger") or {}
    except (OSError, ValueError):
        return []
    out = []
    for dom, led in ledger.items():
        granted = led.get("granted", [])
        mapped = sum(1 for r in granted if r.get("mapped_by") is not None)
        out.append(f"grant table of d{dom} at the end: {led.get('nr_frames')} frame(s), {len(granted)} entries "
                   f"granted and not ended ({mapped} mapped by another domain), {led.get('leaked')} leaked, "
                   f"{led.get('deferred')} deferred")
    return out


def judge(outcome: RunOutcome, sig: ReproSignature) -> ReproVerdict:
    report = outcome.report
    run_dir = report.run_dir
    checks = report.checks
    evidence: list[str] = []
    divergence = (report.info.get("verdict") or {}).get("divergence")
    if sig.rule:
        for c in checks:
            if c.extra.get("rule") == sig.rule and c.outcome == "FAIL":
                evidence.append(f"{c.id}: {c.message}")
        if divergence and divergence.get("rule") == sig.rule:
            evidence.append(f"first divergence at trace seq {divergence['seq']}: rule {divergence['rule']}: "
                            f"{divergence['message']}")
            evidence.append(f"event: {json.dumps(divergence['event'])}")
    if sig.hang:
        for c in checks:
            if c.id == "hang" and c.outcome == "FAIL":
                evidence.append(c.message)
                evidence.extend(c.evidence.splitlines()[1:12])
    if sig.guest_log:
        evidence += _log_matches(sig.guest_log, {"guest console": _read(run_dir / "xenrig-guest-console.log"),
                                                 "guest dmesg": _read(run_dir / "guest-dmesg.txt")})[:10]
    if sig.xen_log:
        # Xen's console on the L0 serial line survives a dom0 that died before
        # `xl dmesg` could be read.
        evidence += _log_matches(sig.xen_log, {"xl dmesg": _read(run_dir / "xl-dmesg.txt"),
                                               "Xen console": _read(run_dir / "serial-l0.log")})[:10]
    if corrupted(checks):
        # The stack damaged data: a matching signature may be the damage's.
        why = [f"{c.id}: {c.message}" for c in checks if c.extra.get("kind") == "corruption"]
        return ReproVerdict(INFRA, why + [f"(would have matched: {e})" for e in evidence[:3]], run_dir)
    if evidence:
        return ReproVerdict(REPRODUCED, evidence + _state_at_end(run_dir), run_dir)
    if outcome.outcome == "ERROR":
        why = outcome.error.paragraph() if outcome.error else "the run produced no result"
        return ReproVerdict(INFRA, [why], run_dir)
    other = [f"{c.id}: {c.outcome}: {c.message}" for c in checks if c.outcome != "PASS"]
    return ReproVerdict(NOT_REPRODUCED, (other or ["every check passed; the signature did not appear"])
                        + _state_at_end(run_dir), run_dir)
