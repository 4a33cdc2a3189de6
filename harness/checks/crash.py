"""Signs that a kernel or Xen itself found something wrong, and the checks
a run makes from them once the subject under test was loaded: the guest's
kernel log, and Xen's and dom0's console (one serial line of the L0 VM).

A crash after the subject started is a proven FAIL of the subject (the
product, or a path the guest drove), never infrastructure: it stands even
when the stack it took down makes the rest of the run error.
"""

from __future__ import annotations

import re
from pathlib import Path

from harness.checks.result import FAIL, PASS, CheckResult

# A kernel that found itself wrong.  Hung tasks and RCU stalls are evidence
# (the nightly's classifier reads them) but no verdict of the run's own:
# under nested TCG a starved vCPU shows them without any bug.
KERNEL_CRASH = re.compile(
    r"Kernel panic - not syncing.*|kernel BUG at .*|\bBUG: .*|\bOops: .*|WARNING: CPU: \d+ PID: \d+ at .*"
    r"|general protection fault.*")
KERNEL_TROUBLE = re.compile(
    KERNEL_CRASH.pattern + r"|INFO: task \S+ blocked for more than \d+ seconds.*"
    r"|rcu: INFO: \S+ (?:self-)?detected stalls?.*")
XEN_TROUBLE = re.compile(
    r"Panic on CPU \d+.*|FATAL TRAP.*|Xen BUG at .*|Assertion '.*' failed at .*|Xen WARN at .*"
    r"|domain_crash called from .*")
# What an HVM guest prints through Xen's debug port (hvmloader, SeaBIOS):
# the guest's own words on the serial line, not Xen's or dom0's.
_GUEST_DEBUG = re.compile(r"^\(d\d+\)")


def hits(pattern: re.Pattern, text: str, limit: int = 5, skip: re.Pattern | None = None) -> list[str]:
    """The matching lines, at most `limit`, each cut to 200 characters."""
    out = []
    for line in text.splitlines():
        if skip is not None and skip.search(line):
            continue
        m = pattern.search(line)
        if m:
            out.append(m.group(0).strip()[:200])
            if len(out) >= limit:
                break
    return out


def read_from(path: Path, offset: int) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            return fh.read().decode(errors="replace")
    except OSError:
        return ""


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def stack_check(serial: Path, offset: int, subject: str) -> CheckResult:
    """Xen's and dom0's console since `subject` was loaded (from `offset`
    of the L0 serial log)."""
    text = read_from(serial, offset)
    found = hits(XEN_TROUBLE, text) + hits(KERNEL_CRASH, text, skip=_GUEST_DEBUG)
    if found:
        return CheckResult("stack.crash", FAIL,
                           f"after {subject} was loaded, Xen or dom0 crashed (product-suspect): {found[0]}",
                           _tail(text), expected="no crash of Xen or dom0", actual=found[0],
                           extra={"kind": "product-suspect", "lines": found})
    return CheckResult("stack.crash", PASS, f"no crash of Xen or dom0 since {subject} was loaded")


def guest_check(dmesg: str, from_line: int, subject: str) -> CheckResult:
    """The guest kernel's log from line `from_line` (when `subject` loaded)."""
    since = "\n".join(dmesg.splitlines()[from_line:])
    found = hits(KERNEL_CRASH, since)
    if found:
        return CheckResult("guest.kernel-log", FAIL, f"after {subject} was loaded the guest kernel says: {found[0]}",
                           _tail(since), expected="no oops, BUG or WARN", actual=found[0], extra={"lines": found})
    return CheckResult("guest.kernel-log", PASS, f"no oops, BUG or WARN in the guest since {subject} was loaded")
