"""A Xen host with the HVM guest at the point every scenario shares: Xen
and dom0 up, the guest booted to its agent, nothing under test loaded.

On a nested host that point comes from a snapshot when one exists for the
exact images, configs and code (harness.snapshot): the L0 VM is restored in
seconds instead of booted in minutes.  When none exists the stack is booted
and, once the guest answers, saved for the next run (then resumed, so this
run goes on from the very same point).  A real Xen host is always used as
it is.  Callers cannot tell the three apart, which is what makes a restored
run judge exactly as a cold one.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Iterator

from harness import snapshot, stack
from harness.config import GuestConfig, HostConfig
from harness.errors import InfraError
from harness.guest import hvm
from harness.host import XenHost
from harness.images import Images
from harness.machine import accel as accel_mod
from harness.machine import vm
from harness.stages import Timeline

GUEST_NAME = "xenrig-guest"
# A clock that runs at less than a quarter or more than four times the
# host's after a restore is broken (the failure looks like seconds passing
# in microseconds, or the reverse), not merely noisy: the samples are taken
# over SSH and through the agent, a round trip of up to a second each.
CLOCK_RATE_BAND = (0.25, 4.0)
CLOCK_WINDOW_S = 2.0
SETTLE_S = 3.0   # after the guest answered: the window a restore's triple fault was seen in


@contextlib.contextmanager
def stack_and_guest(host_cfg: HostConfig, guest_cfg: GuestConfig, timeline: Timeline, run_dir: Path, *,
                    built: Images, info: dict, cold: bool = False, keep: bool = False, console: bool = False,
                    replace_kept: bool = False) -> Iterator[tuple[XenHost, hvm.HvmGuest]]:
    """`cold`: boot from nothing and save nothing.  The guest is destroyed
    on the way out (its console kept in run_dir), then the stack."""
    key = snap = None
    if host_cfg.kind == "nested" and not cold:
        key = snapshot.key_for(built, host_cfg, guest_cfg, accel_mod.choose(host_cfg.accel))
        with timeline.stage("find snapshot"):
            snap = snapshot.lookup(key)
            timeline.note(f"snapshot stack-{key}: " + ("found, verified" if snap else "none yet; this run makes it"))
    info["snapshot"] = {"restored": snap is not None, "key": key,
                        "mode": "cold" if cold else "remote" if host_cfg.kind != "nested" else "warm"}
    for attempt in (1, 2):
        es = contextlib.ExitStack()
        xen = None
        try:
            xen = es.enter_context(stack.xen_host(host_cfg, timeline, run_dir, built=built, keep=keep,
                                                  console=console, info=info, replace_kept=replace_kept,
                                                  restore=snap))
            if snap is not None:
                name = snap.meta.get("guest", GUEST_NAME)
                try:
                    g = es.enter_context(hvm.owned(hvm.attach(xen, name, guest_cfg), timeline, run_dir, keep))
                    _wake(xen, g, snap, timeline, info["snapshot"])
                except InfraError as exc:
                    died = _died_after_restore(xen, name) if attempt == 1 else None
                    if died is None:
                        raise
                    _restore_failed(xen, exc, died, run_dir, timeline, info["snapshot"])
                    es.close()
                    continue
            else:
                g = es.enter_context(hvm.owned(hvm.create(xen, guest_cfg, timeline, name=GUEST_NAME,
                                                          artifacts=run_dir), timeline, run_dir, keep))
                if key is not None:
                    _save(xen, g, built, key, timeline, info["snapshot"])
        except BaseException as exc:
            if isinstance(exc, Exception) and xen is not None:   # on Ctrl-C stopping fast comes first
                _keep_xen_log(xen, run_dir)
            es.__exit__(type(exc), exc, exc.__traceback__)       # the contexts see the error, as in a `with`
            raise
        break
    with es:
        yield xen, g


def _died_after_restore(xen: XenHost, name: str) -> str | None:
    """Why the restored guest is gone, when it is: a nested-TCG guest now
    and then triple-faults in the first instants after the L0 VM resumes,
    before anything under test is loaded (seen about once in 40 restores).
    That is the stack failing to come back, not a verdict on any subject,
    and one fresh restore of the same snapshot is a fair second try.  A
    guest that is still there but does not answer is not retried: that is
    a different fault and the run says so."""
    with contextlib.suppress(Exception):
        log = xen.dmesg()
        faults = [line.strip() for line in log.splitlines() if "Triple fault" in line or "domain_crash" in line]
        if xen.domid(name) is None or faults:
            return faults[-1] if faults else f"guest {name} is no longer running"
    return None


def _restore_failed(xen: XenHost, exc: InfraError, died: str, run_dir: Path, timeline: Timeline,
                    out: dict) -> None:
    """Keep the first try's evidence under its own names, and say in the
    run's record that the restore was tried twice and why."""
    with contextlib.suppress(Exception):
        (run_dir / "xl-dmesg.restore-1.txt").write_text(xen.dmesg())
    out.setdefault("retries", []).append({"stage": "wake restored stack", "error": exc.message, "evidence": died,
                                          "xen_log": "xl-dmesg.restore-1.txt"})
    timeline.note(f"the restored guest died before anything was loaded ({died}); "
                  f"the stack is torn down and the snapshot restored once more")


def _keep_xen_log(xen: XenHost, run_dir: Path) -> None:
    """The guest never reached the shared point: Xen's log is the evidence
    of why (the caller's own collection comes only after that point)."""
    with contextlib.suppress(Exception):
        (run_dir / "xl-dmesg.txt").write_text(xen.dmesg())


def _wake(xen: XenHost, g: hvm.HvmGuest, snap: snapshot.Snapshot, timeline: Timeline, out: dict) -> None:
    """After a restore: the guest agent answers, the clocks run at the
    host's rate, and the wall clocks are set to the host's (they stood still
    while the snapshot sat on disk)."""
    machine = xen.machine
    with timeline.stage("wake restored stack"):
        began = next(r.start_s for r in timeline.records if r.name == "restore snapshot")
        out["clocks"] = check_clocks(xen, g, on_guest_answer=lambda: out.setdefault(
            "restore_to_guest_cmd_s", round(timeline.elapsed() - began, 2)))
        # The nested-TCG triple fault can also come a moment after the guest
        # first answered (seen within 2.4 s of the end of this stage, as the
        # first line on the L0 console after the restore): look once more
        # after a settle, while a second restore may still mend it.
        time.sleep(SETTLE_S)
        g.run("true", timeout_s=30)
        died = _died_after_restore(xen, g.name)
        if died is not None:
            raise InfraError(f"the restored guest died after it first answered: {died}")
    out.update(name=snap.path.name, restore_s=machine.notes.get("restore_s"), size_bytes=snap.size_bytes(),
               made_at=snap.meta.get("made_at"))
    timeline.note(f"restored {snap.path.name} (made {snap.meta.get('made_at')}): L0 VM in {out['restore_s']}s, "
                  f"first guest command {out['restore_to_guest_cmd_s']}s after the restore began")


def _sample(run, command: str = "cat /proc/uptime") -> tuple[float, float]:
    """(host monotonic time at the middle of the round trip, uptime read)."""
    before = time.monotonic()
    res = run(command)
    after = time.monotonic()
    try:
        return (before + after) / 2, float(res.stdout.split()[0])
    except (IndexError, ValueError):
        raise InfraError(f"could not read /proc/uptime after the restore: {res.stdout[:120]!r}") from None


def check_clocks(xen: XenHost, g: hvm.HvmGuest, on_guest_answer=lambda: None) -> dict:
    """How fast dom0's and the guest's clocks run against the host's over a
    window of CLOCK_WINDOW_S; InfraError if either is outside
    CLOCK_RATE_BAND.  The second samples also set the wall clocks to the
    host's (they stood still while the snapshot sat on disk): four round
    trips in all, the first of which proves the guest agent answers."""
    runs = {"dom0": lambda c: xen.run(c, timeout_s=30), "guest": lambda c: g.run(c, timeout_s=30)}
    first = {}
    for who, run in runs.items():
        first[who] = _sample(run)
        if who == "guest":
            on_guest_answer()
    time.sleep(max(0.0, CLOCK_WINDOW_S - (time.monotonic() - first["dom0"][0])))
    rates = {}
    for who, run in runs.items():
        t1, u1 = first[who]
        # Only digits reach the shells: the value is the host's own clock.
        t2, u2 = _sample(run, f"cat /proc/uptime; date -u -s @{int(time.time())} >/dev/null")
        rates[f"{who}_rate"] = round((u2 - u1) / (t2 - t1), 3)
    low, high = CLOCK_RATE_BAND
    bad = {k: v for k, v in rates.items() if not low <= v <= high}
    if bad:
        raise InfraError("after the restore a clock runs at the wrong rate against the host's: "
                         + ", ".join(f"{k.replace('_rate', '')} {v}x" for k, v in bad.items()),
                         hint="Timeouts and blkback's timers would be wrong; 'xenrig run --cold' boots instead")
    return rates


def _save(xen: XenHost, g: hvm.HvmGuest, built: Images, key: str, timeline: Timeline, out: dict) -> None:
    """Save the stack at this point for the next run, then run it on.  Only
    one process makes a given snapshot: if another holds its lock, this run
    goes on without saving.  A failed save costs the next run its warm
    start, not this run its verdict; a VM that will not resume does."""
    machine = xen.machine
    store = snapshot.store()
    lock = store.key_lock(snapshot.NAME, key, wait_s=0)
    try:
        lock.__enter__()
    except InfraError:
        timeline.note(f"another run is making snapshot stack-{key}; this one goes on without saving")
        return
    try:
        booted_s = sum(r.duration_s for r in timeline.records
                       if r.name in ("boot xen + dom0", "connect to dom0", "start HVM guest"))
        with timeline.stage("save snapshot"):
            started = time.monotonic()

            def fill(tmp: Path) -> dict:
                xml, ram = vm.save(machine, tmp / snapshot.STATE, tmp / snapshot.DISK)
                (tmp / snapshot.DOMAIN_XML).write_text(xml)
                return {"made_at": snapshot.now_iso(), "accel": machine.accel, "guest": g.name, "domid": g.domid,
                        "dom0_backing": str(built.dom0.file("rootfs.ext4")), "boot_s": round(booted_s, 1),
                        "save_s": round(time.monotonic() - started, 1), "ram": ram}

            try:
                art = store.build(snapshot.NAME, key, fill)
                out.update(made=True, name=art.path.name, make_s=round(booted_s + time.monotonic() - started, 1),
                           size_bytes=snapshot.Snapshot(key, art.path, art.meta).size_bytes())
                timeline.note(f"saved {art.path.name}: {out['size_bytes'] / 2**20:.0f} MiB in "
                              f"{time.monotonic() - started:.1f}s; the next run restores it")
            except InfraError as exc:
                out["save_error"] = exc.message
                timeline.note(f"snapshot not saved ({exc.message}); this run goes on")
            finally:
                vm.resume(machine)
    finally:
        lock.__exit__(None, None, None)
