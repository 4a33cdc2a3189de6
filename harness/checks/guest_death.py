"""A guest that died without a word of its own: Xen's log says the HVM
guest triple-faulted (or Xen crashed it) and dumps the vCPU's registers.

Where it died decides what the run may say.  An instruction pointer inside
a module under test is a FAIL of that module.  Anywhere else the run cannot
judge: on nested TCG a Linux HVM guest now and then triple-faults with no
subject loaded at all (FIELD-NOTES: in the Xen upcall's x2APIC EOI, taken
from user mode), so a death in the core kernel is an ERROR that names the
place, and `runner` may make such a run once more from the start.

Only Xen's own lines count: what a guest prints through Xen's debug port
comes as `(dN) ...` and could forge any text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from harness.checks.result import ERROR, FAIL, CheckResult

CHECK_ID = "guest.crash"
# The kind a death outside every loaded module carries: what the runner's
# one retry looks for.
OUTSIDE = "outside-modules"
_RIP = re.compile(r"^\(XEN\) RIP:\s+([0-9a-f]{4}):\[<([0-9a-f]{16})>\]")
_DUMP_LINES = 8      # the RIP line follows the death line within this many
# x86-64's module area (Documentation/arch/x86/x86_64/mm.rst): kernel code
# below it is the core kernel's (KASLR moves it within the 1 GiB before).
MODULES_START, MODULES_END = 0xFFFFFFFFC0000000, 0xFFFFFFFFFF000000


@dataclass(frozen=True)
class Death:
    line: str                 # Xen's line that says the guest died
    cs: int | None
    rip: int | None


def deaths(xen_log: str, domid: int | Iterable[int]) -> list[Death]:
    """Every triple fault or crash of domain `domid` (or of any of the
    domain ids one guest had: a restore makes it another domain) in Xen's
    log, with the instruction pointer of the register dump that follows it."""
    ids = "|".join(str(int(d)) for d in ([domid] if isinstance(domid, int) else domid))
    died = re.compile(rf"^\(XEN\) (?:d(?:{ids})v\d+ Triple fault\b.*|Domain (?:{ids}) \(vcpu#\d+\) crashed on .*)")
    lines = xen_log.split("\n")
    out = []
    for i, line in enumerate(lines):
        line = line.rstrip("\r")
        if not died.match(line):
            continue
        cs = rip = None
        for follow in lines[i + 1:i + 1 + _DUMP_LINES]:
            m = _RIP.match(follow.rstrip("\r"))
            if m:
                cs, rip = int(m.group(1), 16), int(m.group(2), 16)
                break
        out.append(Death(line[:200], cs, rip))
    return out


def parse_proc_modules(text: str) -> dict[str, tuple[int, int]]:
    """/proc/modules (`name size refs deps state address`) as name ->
    (address, size).  A hidden address (0, kptr_restrict) is left out."""
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 6 or not parts[1].isdigit():
            continue
        try:
            address = int(parts[5], 16)
        except ValueError:
            continue
        if address:
            out[parts[0]] = (address, int(parts[1]))
    return out


def where(rip: int, modules: dict[str, tuple[int, int]]) -> str | None:
    for name, (address, size) in modules.items():
        if address <= rip < address + size:
            return f"{name}+{rip - address:#x}"
    return None


def check(xen_log: str, domid: int | Iterable[int], modules: dict[str, tuple[int, int]], subjects: list[str],
          subject: str) -> CheckResult | None:
    """None when the guest did not die; else FAIL if it died inside one of
    `subjects` (module names), ERROR anywhere else."""
    found = deaths(xen_log, domid)
    if not found:
        return None
    death = found[0]
    evidence = "\n".join(d.line for d in found)
    if death.rip is None:
        return CheckResult(CHECK_ID, ERROR, f"after {subject} was loaded the guest died ({death.line}); "
                           "Xen dumped no instruction pointer, so the run cannot say where",
                           evidence, extra={"kind": "unplaced", "line": death.line})
    place = where(death.rip, modules)
    at = f"RIP {death.rip:#x}" + (f" ({place})" if place else "")
    if place and place.split("+")[0] in subjects:
        return CheckResult(CHECK_ID, FAIL, f"after {subject} was loaded the guest died inside it: {death.line} at {at}",
                           evidence, expected="the guest stays up", actual=f"{death.line} at {at}",
                           extra={"kind": "in-subject", "rip": f"{death.rip:#x}", "where": place})
    user = death.cs is not None and bool(death.cs & 3)
    if place:
        inside, kind = f"in {place}, a module of the harness", "in-harness-module"
    elif not user and MODULES_START <= death.rip < MODULES_END:
        # Module space, but no module known there (the run had not read the
        # addresses yet): it may be the subject's.
        inside, kind = "in the kernel's module area, in no module the run had placed", "unplaced"
    else:
        inside, kind = ("in user mode" if user else "in the core kernel") + ", outside every module", OUTSIDE
    return CheckResult(CHECK_ID, ERROR,
                       f"the guest died {inside} ({death.line} at {at}): no verdict on {subject}. On nested TCG "
                       "a guest now and then triple-faults with nothing under test loaded",
                       evidence, extra={"kind": kind, "rip": f"{death.rip:#x}", "line": death.line})
