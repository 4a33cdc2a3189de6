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

# A kernel that found itself wrong.  Hung tasks, RCU stalls, soft and
# workqueue lockups are evidence (the nightly's classifier reads them) but
# no verdict of the run's own: under nested TCG a starved vCPU (or a guest
# that sees the clock jump after a restore) shows them without any bug.  A
# general protection fault counts in the kernel's own form ("... [#1]"), not
# the one line a user process's fault gets ("traps: prog[pid] general ...").
KERNEL_CRASH = re.compile(
    r"Kernel panic - not syncing.*|kernel BUG at .*|\bBUG: (?!soft lockup|workqueue lockup).*|\bOops: .*"
    r"|WARNING: CPU: \d+ PID: \d+ at .*|general protection fault\b[^\[]*: [0-9a-f]+ \[#\d+\].*")
KERNEL_TROUBLE = re.compile(
    KERNEL_CRASH.pattern + r"|\bBUG: .*|general protection fault.*"
    r"|INFO: task \S+ blocked for more than \d+ seconds.*|rcu: INFO: \S+ (?:self-)?detected stalls?.*")
XEN_TROUBLE = re.compile(
    r"Panic on CPU \d+.*|FATAL TRAP.*|Xen BUG at .*|Assertion '.*' failed at .*|Xen WARN at .*"
    r"|domain_crash called from .*")
# What an HVM guest prints through Xen's debug port (hvmloader, SeaBIOS, or
# a hostile guest writing port 0xe9): the guest's own words on the serial
# line, never Xen's or dom0's, whatever they say.
GUEST_DEBUG = re.compile(r"^\(d\d+\)")


def hits(pattern: re.Pattern, text: str, limit: int = 5, skip: re.Pattern | None = None) -> list[str]:
    """The matching lines, at most `limit`, each cut to 200 characters."""
    out = []
    for line in text.split("\n"):
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
    found = hits(XEN_TROUBLE, text, skip=GUEST_DEBUG) + hits(KERNEL_CRASH, text, skip=GUEST_DEBUG)
    if found:
        return CheckResult("stack.crash", FAIL,
                           f"after {subject} was loaded, Xen or dom0 crashed (product-suspect): {found[0]}",
                           _tail(text), expected="no crash of Xen or dom0", actual=found[0],
                           extra={"kind": "product-suspect", "lines": found})
    return CheckResult("stack.crash", PASS, f"no crash of Xen or dom0 since {subject} was loaded")


def guest_check(dmesg: str, from_line: int, subject: str) -> CheckResult:
    """The guest kernel's log from line `from_line` (when `subject` loaded)."""
    # split("\n"), as `wc -l` counted: splitlines() also breaks at \r, \f...
    since = "\n".join(dmesg.split("\n")[from_line:])
    found = hits(KERNEL_CRASH, since)
    if found:
        return CheckResult("guest.kernel-log", FAIL, f"after {subject} was loaded the guest kernel says: {found[0]}",
                           _tail(since), expected="no oops, BUG or WARN", actual=found[0], extra={"lines": found})
    return CheckResult("guest.kernel-log", PASS, f"no oops, BUG or WARN in the guest since {subject} was loaded")
