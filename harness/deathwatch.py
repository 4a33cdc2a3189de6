"""Knowing at once that the nested stack is dead, instead of waiting out a
timeout on a connection that will never answer: Xen's and dom0's console
(the L0 serial log, a local file) says when dom0 or Xen crashed, and QEMU's
pid says when the L0 VM itself is gone, and libvirt says when QEMU stopped
it on an I/O error (the run folder's disk is full: the dom0 overlay cannot
grow).  harness.host.ssh, the guest relay and the dom0 grant agent ask
this between reads, about once a second; a `None` means alive.  `cause`
tells whose end it is: "stack" (Xen or dom0 crashed: maybe the subject's
doing) or "l0" (the L0 VM itself: never the subject's).
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Callable

from harness.checks import crash

# Lines after which dom0 will never answer again (unless a guest wrote them
# through Xen's debug port: crash.GUEST_DEBUG lines are skipped).
DEATH = re.compile(r"Hardware Dom0 crashed.*|Hardware Dom0 shutdown.*|Panic on CPU \d+.*|Kernel panic - not syncing.*")


def l0_qemu_pid(machine) -> int | None:
    """The pid of the L0 VM's QEMU: libvirt's pid file, else the one QEMU
    process of a xenrig VM under this run's libvirt root (the stack lock
    makes it ours)."""
    from harness.machine import vm

    pid = machine.qemu_pid()
    if pid is not None:
        return pid
    found = vm._qemu_processes_of(vm.embed_root())
    return found[0] if len(found) == 1 else None


def alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


class DeathWatch:
    def __init__(self, serial: Path, qemu_pid: int | None, every_s: float = 1.0,
                 stopped: Callable[[], str | None] = lambda: None):
        """`qemu_pid`: None when it could not be found; then only the
        console is watched.  `stopped()`: why the VM is stopped, if it is."""
        self.serial, self.qemu_pid, self.every_s, self.stopped = serial, qemu_pid, every_s, stopped
        self.cause: str | None = None
        self._pos = self._size()    # only what comes after the watch began
        self._carry = ""
        self._last = 0.0
        self.verdict: str | None = None

    def _size(self) -> int:
        try:
            return self.serial.stat().st_size
        except OSError:
            return 0

    def __call__(self, force: bool = False) -> str | None:
        """`force`: look now, whenever the last look was."""
        if self.verdict is not None:
            return self.verdict
        now = time.monotonic()
        if not force and now - self._last < self.every_s:
            return None
        self._last = now
        try:
            with open(self.serial, "rb") as fh:
                fh.seek(self._pos)
                data = fh.read()
        except OSError:
            data = b""
        self._pos += len(data)
        text = self._carry + data.decode(errors="replace")
        whole, _, self._carry = text.rpartition("\n")
        m = next((m for m in map(DEATH.search, whole.split("\n"))
                  if m and not crash.GUEST_DEBUG.match(m.string)), None)
        if m:
            self.verdict, self.cause = f"the L0 serial console says: {m.group(0).strip()[:200]}", "stack"
        elif self.qemu_pid is not None and not alive(self.qemu_pid):
            self.verdict, self.cause = "the L0 VM's QEMU is gone", "l0"
        else:
            why = self.stopped()
            if why:
                self.verdict, self.cause = why, "l0"
        return self.verdict


def libvirt_stopped(domain) -> Callable[[], str | None]:
    """Why libvirt says `domain` is stopped on an error, else None."""
    from harness.machine._libvirt import libvirt

    def stopped() -> str | None:
        try:
            state, reason = domain.state()
        except libvirt.libvirtError:
            return None
        if state == libvirt.VIR_DOMAIN_PAUSED and reason == libvirt.VIR_DOMAIN_PAUSED_IOERROR:
            return "QEMU stopped the L0 VM on a disk I/O error (is the disk of the run folder full?)"
        return None
    return stopped
