"""Whose fault is a failed run: the product (the drivers, Xen, the backends
under test) or the infrastructure (images, downloads, boot, SSH, the
harness itself)?  Read from what the run left in its folder.

Product, never retried away; the first rule that matches gives the reason:
  1. a FAIL check: a model divergence (trace.model), a step whose result is
     not what it expects, a smoke check, a hang the watchdog proved (`hang`);
  2. the guest kernel reports a crash, a WARN, a BUG, a hung task or an RCU
     stall (its console, and its dmesg when the run got that far);
  3. after the guest was created, Xen crashes, asserts, WARNs or crashes a
     domain, or dom0's kernel (blkback) oopses: a guest-triggered path;
  4. product-suspect: the run errored (dom0, the transport, a timeout) after
     the driver under test was loaded: the driver may be what broke it.
Configuration, never retried (it would fail the same way): a usage,
configuration, patch or compile error (exit 4).
Infrastructure, retried: every other ERROR, named by the error's kind and
the stage that failed (image build, package download, boot before dom0,
SSH, patch, build, an incomplete capture...), and a run that wrote no
report at all (crashed, or killed at the cell's time limit).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from harness.checks.crash import KERNEL_TROUBLE, XEN_TROUBLE
from harness.outcome import USAGE_KINDS

PRODUCT, INFRASTRUCTURE, CONFIGURATION = "product", "infrastructure", "configuration"

# The first line of Xen's console that concerns a guest domain (d1 and up):
# what comes after it may have been triggered by the guest.
GUEST_CREATED = re.compile(r"\(XEN\).*\bd[1-9]\d*(?:v\d+)?\b|^\(d[1-9]\d*\)", re.M)

# The stage that failed -> what a person calls that kind of trouble.
STAGE_TROUBLE = {
    "images": "image build or package download",
    "build guest modules": "module build",
    "clean up leftovers": "leftovers of an earlier run",
    "boot xen + dom0": "boot before dom0 was up",
    "connect to dom0": "SSH to dom0",
    "guest image to dom0": "copying the guest image",
    "start HVM guest": "guest boot",
    "load guest modules": "loading the guest modules",
    "checks": "checks",
    "steps": "steps",
    "check trace": "trace assembly",
}


@dataclass
class Classification:
    category: str | None              # product | infrastructure | None (passed)
    reason: str = ""                  # one line a person reads first
    evidence: list[str] = field(default_factory=list)   # "source:line: text"

    def to_dict(self) -> dict:
        return {"category": self.category, "reason": self.reason, "evidence": self.evidence}


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _hits(pattern: re.Pattern, text: str, source: str, first_line: int = 1, limit: int = 5) -> list[str]:
    out = []
    for n, line in enumerate(text.splitlines(), start=first_line):
        m = pattern.search(line)
        if m:
            out.append(f"{source}:{n}: {m.group(0).strip()[:200]}")
            if len(out) >= limit:
                break
    return out


def _after_guest_created(text: str) -> tuple[str, int]:
    """The part of a Xen console log from the guest's creation on, and the
    line number it starts at; empty when no guest was created."""
    m = GUEST_CREATED.search(text)
    if not m:
        return "", 0
    start = text.rfind("\n", 0, m.start()) + 1
    return text[start:], text.count("\n", 0, start) + 1


def guest_kernel_trouble(run_dir: Path) -> list[str]:
    hits = []
    for log in sorted(run_dir.glob("*-console.log")) + [run_dir / "guest-dmesg.txt"]:
        hits += _hits(KERNEL_TROUBLE, _read(log), log.name)
    return hits


def xen_trouble(run_dir: Path) -> list[str]:
    """Xen crashes, and dom0 kernel trouble, after the guest was created."""
    hits = []
    for name in ("serial-l0.log", "xl-dmesg.txt"):
        text, first = _after_guest_created(_read(run_dir / name))
        if text:
            hits += _hits(XEN_TROUBLE, text, name, first)
            if name == "serial-l0.log":      # dom0's console is on the same serial line
                hits += _hits(KERNEL_TROUBLE, text, name, first)
    return hits


def _failed_stage(report: dict) -> str | None:
    failed = [s["name"] for s in report.get("stages", []) if s.get("outcome") in ("failed", "interrupted")]
    return failed[0] if failed else None


def _first_line(text: str) -> str:
    return (text or "").strip().splitlines()[0][:240] if (text or "").strip() else ""


def classify(run_dir: Path, *, note: str = "") -> Classification:
    """Classify the run in `run_dir`.  `note` says what the runner saw when
    the run could not say it itself (killed at the time limit, crashed)."""
    try:
        report = json.loads((run_dir / "report.json").read_text())
    except (OSError, ValueError):
        report = None
    outcome = report.get("outcome") if report else None
    if outcome in ("PASS", "SKIP"):
        return Classification(None)
    checks = report.get("checks", []) if report else []

    # The stack damaged data (docs/dom0-corruption.md): nothing in the run,
    # a FAIL included, is evidence about the product.  Infrastructure.
    damaged = [c for c in checks if c.get("outcome") == "ERROR" and (c.get("extra") or {}).get("kind") == "corruption"]
    if damaged or (report and (report.get("error") or {}).get("kind") == "corruption"):
        lines = [f"{c['id']}: {_first_line(c.get('message', ''))}" for c in damaged]
        return Classification(INFRASTRUCTURE, "the stack corrupted data: " + (lines[0] if lines else
                              _first_line(report["error"].get("message", ""))), lines)
    if report is not None and report.get("complete") is False:
        return Classification(INFRASTRUCTURE, "the run stopped before finishing its report"
                              + (f" ({note})" if note else ""), [note] if note else [])

    fails = [c for c in checks if c.get("outcome") == "FAIL"]
    if fails:
        # The model's divergence and a proven hang say most; then the first.
        first = next((c for c in fails if c["id"] in ("trace.model", "hang")), fails[0])
        evidence = [f"{c['id']}: {_first_line(c.get('message', ''))}" for c in fails[:8]]
        return Classification(PRODUCT, f"FAIL {first['id']}: {_first_line(first.get('message', ''))}", evidence)

    guest = guest_kernel_trouble(run_dir)
    if guest:
        return Classification(PRODUCT, f"guest kernel: {guest[0].split(': ', 1)[1]}", guest)
    xen = xen_trouble(run_dir)
    if xen:
        return Classification(PRODUCT, f"after the guest started: {xen[0].split(': ', 1)[1]}", xen)

    outside = [c for c in checks if c.get("id") == "guest.crash" and c.get("outcome") == "ERROR"
               and (c.get("extra") or {}).get("kind") == "outside-modules"]
    if outside:
        # The guest died in the core kernel or user mode (harness.checks.
        # guest_death): what nested TCG does with nothing under test; not
        # product-suspect even though the subject was loaded.
        line = (outside[0].get("extra") or {}).get("line", "")
        return Classification(INFRASTRUCTURE, f"the guest died outside every module: {line}",
                              [f"guest.crash: {_first_line(outside[0].get('message', ''))}"])

    if report is None:
        why = note or "the run wrote no report.json"
        return Classification(INFRASTRUCTURE, f"no report: {why}", [why])
    error = report.get("error") or {}
    stage = _failed_stage(report)
    errors = [c for c in checks if c.get("outcome") == "ERROR"]
    if error:
        message = _first_line(error.get("message", ""))
        kind = error.get("kind", "infrastructure")
    elif errors:
        message, kind = f"{errors[0]['id']}: {_first_line(errors[0].get('message', ''))}", "infrastructure"
    else:
        message, kind = "the run produced no result", "infrastructure"
    if kind in USAGE_KINDS:
        # A configuration, patch or compile error happens again on a retry.
        return Classification(CONFIGURATION, f"{kind}: {message}", [f"{c['id']}: {_first_line(c.get('message', ''))}"
                                                                   for c in errors[:8]])
    if error.get("after_subject") and kind not in ("internal", "corruption", "disk-full"):
        return Classification(PRODUCT, f"product-suspect: after {error['after_subject']} was loaded: {message}",
                              [f"{c['id']}: {_first_line(c.get('message', ''))}" for c in errors[:8]] or [message])
    trouble = STAGE_TROUBLE.get(stage, stage) if stage else None
    if kind == "infrastructure":
        where = trouble or kind
    else:
        where = f"{kind} ({trouble})" if trouble else kind
    reason = f"{where}: {message}" + (f" ({note})" if note else "")
    return Classification(INFRASTRUCTURE, reason, [f"{c['id']}: {_first_line(c.get('message', ''))}" for c in errors[:8]])
