"""Canaries: does the stack damage memory while a run goes on?

A known pattern is kept in dom0 (harness/remote/canary.py: resident and in
freshly reused pages, checked every second) and in the guest (a tmpfs file
hashed at the start and at the end).  A damaged canary is an ERROR of kind
corruption: the stack, not the subject, broke the run, and nothing read from
it can be trusted as evidence (docs/dom0-corruption.md).
"""

from __future__ import annotations

import json
import shlex

from harness.checks.result import ERROR, PASS, CheckResult
from harness.errors import XenrigError
from harness.host.xen_host import AGENT_DIR, WORK_DIR, XenHost

DOM0_STATE = f"{WORK_DIR}/canary"
GUEST_FILE = "/tmp/.xr-canary"
DOM0_MIB = 16
GUEST_MIB = 4


def start_dom0(xen: XenHost) -> None:
    xen.run(f"rm -rf {DOM0_STATE} && python3 {AGENT_DIR}/canary.py start --state {DOM0_STATE} --mib {DOM0_MIB}",
            check=True, timeout_s=60, what="starting the dom0 memory canary")


def stop_dom0(xen: XenHost) -> CheckResult:
    cid = "stack.dom0-canary"
    try:
        res = xen.run(f"python3 {AGENT_DIR}/canary.py stop --state {DOM0_STATE}", timeout_s=60, retry=True,
                      digest=True)
        status = json.loads(res.stdout)
    except (XenrigError, ValueError) as exc:
        return CheckResult(cid, ERROR, f"the dom0 canary could not be read: {exc}")
    return judge_dom0(status)


def judge_dom0(status: dict) -> CheckResult:
    cid = "stack.dom0-canary"
    if status.get("error"):
        return CheckResult(cid, ERROR, f"dom0 canary: {status['error']}", extra={"canary": status})
    checks, damaged = int(status.get("checks", 0)), int(status.get("damaged_blocks", 0))
    if damaged:
        where = ", ".join(f"{f['where']}+{f['offset']} (page offset {f['page_offset']})" for f in status["found"][:6])
        return CheckResult(cid, ERROR,
                           f"the stack corrupted dom0's memory during this run: {damaged} damaged 64-byte blocks "
                           f"in {checks} checks of a {status.get('mib')} MiB pattern; no result of this run can be "
                           "trusted (docs/dom0-corruption.md)",
                           evidence=where, extra={"canary": status, "kind": "corruption"})
    if not status.get("alive_at_stop", False):
        return CheckResult(cid, ERROR, f"the dom0 canary died during the run after {checks} checks",
                           extra={"canary": status})
    if checks == 0:
        return CheckResult(cid, ERROR, "the dom0 canary never completed a check", extra={"canary": status})
    return CheckResult(cid, PASS, f"{status.get('mib')} MiB pattern in dom0 intact over {checks} checks",
                       extra={"canary": status})


def start_guest(guest) -> str:
    """The sha256 of a fresh random file in the guest's tmpfs."""
    res = guest.run(f"head -c {GUEST_MIB << 20} /dev/urandom > {GUEST_FILE} && sha256sum {GUEST_FILE}",
                    check=True, timeout_s=60, what="writing the guest canary")
    return res.stdout.split()[0]


def check_guest(guest, want: str) -> CheckResult:
    cid = "stack.guest-canary"
    try:
        res = guest.run(f"sha256sum {shlex.quote(GUEST_FILE)}", timeout_s=60)
    except XenrigError as exc:
        return CheckResult(cid, ERROR, f"the guest canary could not be read: {exc}")
    got = res.stdout.split()[0] if res.ok and res.stdout.split() else ""
    if got != want:
        return CheckResult(cid, ERROR, f"the guest canary ({GUEST_MIB} MiB in its tmpfs) changed during the run: "
                           "the stack corrupted the guest's memory; no result of this run can be trusted",
                           expected=want, actual=got or res.stdout.strip()[:200], extra={"kind": "corruption"})
    return CheckResult(cid, PASS, f"{GUEST_MIB} MiB pattern in the guest intact")
