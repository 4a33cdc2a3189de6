"""Failpoints for the fault campaign: `XENRIG_FAULT=ACTION@WHERE` makes a run
break for real at a chosen point, so that tests/e2e/test_faults.py and
benchmarks/bench_faults.py can check the verdict, the evidence and the
clean-up that follow.  Nothing is simulated: the process, QEMU, dom0's
kernel, the guest's kernel or the SSH sessions really die.

WHERE is `stage:NAME` (as that stage starts; e.g. `stage:restore snapshot`)
or `step:N` (before the scenario's N-th step, counting from 1).

| ACTION        | what happens                                                     |
|---------------|------------------------------------------------------------------|
| sigkill       | the harness SIGKILLs itself: no clean-up, no report              |
| kill-qemu     | the L0 VM's QEMU is SIGKILLed (Xen, dom0 and the guest vanish)   |
| dom0-panic    | dom0's kernel crashes (sysrq c)                                  |
| guest-panic   | the guest's kernel crashes (sysrq c)                             |
| guest-triple-fault | the guest triple-faults where it stands (IDT limit 0, set by  |
|               | dom0 through its HVM context): once per process, so the run's    |
|               | own second attempt (harness.runner) runs unbroken                |
| cut-transport | dom0's sshd sessions are killed: the stream breaks from far end  |
| disk-full     | the run folder's filesystem is filled (only a tmpfs of <= 4 GiB) |

Only `sigkill` works at a stage (the others need the stack, which only a
step point has).  Unset, this module does nothing.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
from dataclasses import dataclass
from pathlib import Path

from harness.errors import UsageError, XenrigError
from harness.host.xen_host import AGENT_DIR

log = logging.getLogger(__name__)

ENV = "XENRIG_FAULT"
ACTIONS = ("sigkill", "kill-qemu", "dom0-panic", "guest-panic", "guest-triple-fault", "cut-transport", "disk-full")
_fired: set = set()     # once-per-process faults that have fired already
FILL_LIMIT = 4 << 30    # never fill anything bigger: a real disk is not ours to fill


@dataclass(frozen=True)
class Fault:
    action: str
    stage: str | None = None
    step: int | None = None


def parse(text: str) -> Fault:
    action, sep, where = text.partition("@")
    kind, _, arg = where.partition(":")
    problem = None
    if not sep or action not in ACTIONS:
        problem = f"the action must be one of {', '.join(ACTIONS)}"
    elif kind == "stage" and arg:
        if action != "sigkill":
            problem = "only sigkill works at a stage; the others need a step point (step:N)"
        else:
            return Fault(action, stage=arg)
    elif kind == "step" and arg.isdigit() and int(arg) >= 1:
        return Fault(action, step=int(arg))
    else:
        problem = "the point must be stage:NAME or step:N (N from 1)"
    raise UsageError(f"{ENV}={text!r} is not a fault this harness can inject: {problem}",
                     hint=f"e.g. {ENV}='dom0-panic@step:2' or {ENV}='sigkill@stage:restore snapshot'; "
                          f"unset it for a normal run")


def configured() -> Fault | None:
    text = os.environ.get(ENV, "").strip()
    return parse(text) if text else None


class StageFault:
    """A timeline subscriber that fires a stage fault as its stage starts."""

    def __init__(self, fault: Fault):
        self.fault = fault

    def stage_started(self, record) -> None:
        if record.name == self.fault.stage:
            _die()

    def stage_finished(self, record) -> None:
        pass

    def note(self, text: str, elapsed_s: float) -> None:
        pass


def _die() -> None:
    log.warning("fault injected: the harness SIGKILLs itself")
    logging.shutdown()
    os.kill(os.getpid(), signal.SIGKILL)


def _fill(run_dir: Path) -> None:
    """Fill the filesystem of `run_dir`, which must be a small tmpfs."""
    mount, fstype = _mount_of(run_dir)
    st = os.statvfs(run_dir)
    if fstype != "tmpfs" or st.f_blocks * st.f_frsize > FILL_LIMIT:
        raise UsageError(f"{ENV}: disk-full fills only a tmpfs of at most 4 GiB; {run_dir} is on {mount} ({fstype})",
                         hint="Give the run a --run-dir on a small tmpfs (harness.faultcampaign mounts one)")
    chunk = b"\0" * (1 << 20)
    with open(run_dir / ".xr-fault-fill", "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(chunk)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
    log.warning("fault injected: %s is full", mount)


def _mount_of(path: Path) -> tuple[str, str]:
    """(mount point, filesystem type) of the mount holding `path`."""
    best = ("/", "?")
    target = str(path.resolve())
    with open("/proc/self/mounts") as fh:
        for line in fh:
            fields = line.split()
            point = fields[1].replace("\\040", " ")
            if (target == point or target.startswith(point.rstrip("/") + "/")) and len(point) >= len(best[0]):
                best = (point, fields[2])
    return best


def before_step(fault: Fault | None, index: int, xen, guest, run_dir: Path | None = None) -> None:
    """Fire a step fault before step `index` (from 1)."""
    if fault is None or fault.step != index or fault in _fired:
        return
    log.warning("fault injected before step %d: %s", index, fault.action)
    if fault.action == "sigkill":
        _die()
    elif fault.action == "kill-qemu":
        from harness.deathwatch import l0_qemu_pid

        pid = l0_qemu_pid(xen.machine) if xen.machine is not None else None
        if pid is None:
            raise UsageError(f"{ENV}: kill-qemu needs the nested stack's QEMU; this host has none")
        os.kill(pid, signal.SIGKILL)
    elif fault.action in ("dom0-panic", "guest-panic"):
        target = xen if fault.action == "dom0-panic" else guest
        # The kernel dies under the command: its channel never answers.
        with contextlib.suppress(XenrigError):
            target.run("echo 1 > /proc/sys/kernel/sysrq; (sleep 1; echo c > /proc/sysrq-trigger) "
                       ">/dev/null 2>&1 </dev/null &", timeout_s=20)
    elif fault.action == "guest-triple-fault":
        _fired.add(fault)
        xen.run(f"python3 {AGENT_DIR}/triplefault.py {int(guest.domid)}", check=True, timeout_s=60,
                what="making the guest triple-fault")
    elif fault.action == "disk-full":
        _fill(run_dir)
    elif fault.action == "cut-transport":
        with contextlib.suppress(XenrigError):
            xen.run("(sleep 1; pkill -KILL -f '^sshd: root@') >/dev/null 2>&1 </dev/null &", timeout_s=20)
