"""A device's and a driver's life on a running, captured guest: a vbd
attached (also one whose backend can never connect) and detached, blkfront
unloaded and loaded again.  Each operation waits until both ends have
finished what it started, says what it saw, and leaves the capture knowing
which rings exist now; the step then takes a quiet point, where the model
holds every torn-down ring to the end of all its grants.

Every value that reaches a shell here comes from the scenario (checked by
its schema) or from the guest's xenstore through parsers.backend_path and
digit checks, and is quoted: the guest is the subject under test.
"""

from __future__ import annotations

import contextlib
import shlex
import time

from harness.checks import parsers
from harness.config import DiskConfig, ModuleStep, VbdStep
from harness.errors import InfraError, XenrigError
from harness.guest import hvm
from harness.guest import modules as guest_modules
from harness.guest.xlcfg import disk_spec
from harness.host import scripted_backend, slow_disk
from harness.host.xen_host import AGENT_DIR

STALL_SCRIPT = "stallhotplug.py"      # harness/remote/stallhotplug.py, uploaded on connect
SLOW_SCRIPT = "slowhotplug.py"        # harness/remote/slowhotplug.py: block's work without its sharing check

XENBUS_STATES = {1: "Initialising", 2: "InitWait", 3: "Initialised", 4: "Connected", 5: "Closing", 6: "Closed"}
CONNECTED = 4
CLOSED = 6


def _slow_spec(disk: DiskConfig, device: str) -> str:
    """A slow disk goes through our hotplug script, not the stock `block`
    (harness/remote/slowhotplug.py says why); with a script libxl takes the
    target as a phy device, and `target=` comes last in xl's disk syntax."""
    return (f"format=raw,vdev={disk.vdev},access=rw,backendtype=phy,"
            f"script={AGENT_DIR}/{SLOW_SCRIPT},target={device}")


def _state_name(value: int | None) -> str:
    return "gone" if value is None else XENBUS_STATES.get(value, str(value))


# Counters the scripted backend's last summary carries, reported as they are.
_BACKEND_COUNTS = ("sectors_checked", "other_maps_refused", "other_maps_allowed", "held_pages_reused")


class Lifecycle:
    """The lifecycle steps of one capture session (harness.capture.live)."""

    def __init__(self, capture):
        self.capture = capture
        self.xen, self.guest = capture.xen, capture.guest

    # -- xenstore ------------------------------------------------------------
    def states(self, vdev: str) -> tuple[int | None, int | None]:
        """(frontend state, backend state) of `vdev` as xenstore holds them;
        None where the node is gone."""
        base = f"/local/domain/{self.guest.domid}/device/vbd/{parsers.vdev_number(vdev)}"
        res = self.xen.run(f"xenstore-read {shlex.quote(base + '/state')} 2>/dev/null || echo none; "
                           f"xenstore-read {shlex.quote(base + '/backend')} 2>/dev/null || echo none",
                           timeout_s=30)
        lines = res.stdout.split()
        front = int(lines[0]) if lines and lines[0].isdigit() else None
        backend = parsers.backend_path(lines[1]) if len(lines) > 1 else None
        back = None
        if backend:
            res = self.xen.run(f"xenstore-read {shlex.quote(backend + '/state')} 2>/dev/null", timeout_s=30)
            back = int(res.stdout.strip()) if res.stdout.strip().isdigit() else None
        return front, back

    def _guest_has_device(self, vdev: str) -> bool:
        devid = parsers.vdev_number(vdev)
        return self.guest.run(f"test -e /sys/bus/xen/devices/vbd-{devid}", timeout_s=30).exit_status == 0

    # -- vbd -------------------------------------------------------------------
    def vbd(self, step: VbdStep, timeout_s: float) -> dict:
        return self.attach(step, timeout_s) if step.op == "attach" else self.detach(step.vdev, timeout_s)

    def attach(self, step: VbdStep, timeout_s: float) -> dict:
        cap = self.capture
        if step.vdev in cap.vdevs:
            raise InfraError(f"vbd step: the guest already has {step.vdev}",
                             hint="Detach it first, or attach another vdev")
        if step.backend == "scripted":
            return self._attach_scripted(step, timeout_s)
        disks = cap.scenario.guest.disks
        backend = "phy" if step.target in ("stalled", "slow") else step.backend or (disks[0].backend if disks else "phy")
        disk = DiskConfig(step.vdev, backend, step.size_mib)
        image = self.guest.paths.vbd_image(disk)
        spec = disk_spec(disk, image)
        if step.target == "slow":
            name, image = slow_disk.create(self.xen, self.guest.domid, step.vdev, step.size_mib, step.latency_ms)
            cap.slow[step.vdev] = (name, image)
            spec = _slow_spec(disk, image)
        elif step.target == "missing":
            image += ".missing"
            spec = disk_spec(disk, image)
            self.xen.run(f"rm -f {shlex.quote(image)}", timeout_s=30)
        elif step.target == "stalled":
            # With a script libxl assumes phy and stats nothing; `target=`
            # comes last in xl's disk syntax (it takes the rest of the line).
            spec = (f"format=raw,vdev={disk.vdev},access=rw,backendtype=phy,"
                    f"script={AGENT_DIR}/{STALL_SCRIPT},target=xr-stalled")
        else:
            self.xen.run(f"truncate -s {step.size_mib}M {shlex.quote(image)}", check=True, timeout_s=30,
                         what=f"creating the image of {step.vdev}")
        started = time.monotonic()
        res = self.xen.xl(f"block-attach {shlex.quote(self.guest.name)} {shlex.quote(spec)}",
                          check=False, timeout_s=timeout_s)
        out = {"xl_exit": res.exit_status, "xl_output": (res.stderr or res.stdout).strip()[-400:]}
        if step.target in ("file", "slow"):
            if not res.ok:
                if step.target == "slow":
                    slow_disk.remove(self.xen, cap.slow.pop(step.vdev)[0])
                raise InfraError(f"'xl block-attach' of {step.vdev} failed: {out['xl_output']}")
            cap.vdevs.append(step.vdev)
            cap.attached[step.vdev] = disk
            guest_modules.wait_disks(self.guest, [step.vdev], timeout_s, f"attach {step.vdev}")
        else:
            # The frontend may see the device appear; it never connects, so
            # it is not one a later load waits for.  A stalled vbd's ring is
            # set up all the same: the capture learns it, and its detach must
            # end its grant like any other.
            time.sleep(step.settle_s)
            out["guest_device"] = self._guest_has_device(step.vdev)
            if step.target == "stalled" and res.ok:
                cap.stalled.append(step.vdev)
        front, back = self.states(step.vdev)
        cap.rings_stale = True
        out.update(frontend_state=_state_name(front), backend_state=_state_name(back),
                   connected=front == CONNECTED and back == CONNECTED,
                   seconds=round(time.monotonic() - started, 2))
        return out

    def _attach_scripted(self, step: VbdStep, timeout_s: float) -> dict:
        """Our own backend in dom0 (harness/host/scripted_backend.py): it
        makes the vbd's nodes, so no xl is involved."""
        cap = self.capture
        disk = DiskConfig(step.vdev, "phy", step.size_mib)
        image = self.guest.paths.vbd_image(disk)
        self.xen.run(f"rm -f {shlex.quote(image)} && truncate -s {step.size_mib}M {shlex.quote(image)}", check=True,
                     timeout_s=30, what=f"creating the image of {step.vdev}")
        started = time.monotonic()
        vbd = scripted_backend.start(self.xen, domid=self.guest.domid, vdev=step.vdev, image=image,
                                     script=scripted_backend.script_payload(step.script), run_dir=cap.run_dir,
                                     trusted=step.trusted)
        cap.scripted[step.vdev] = vbd
        cap.vdevs.append(step.vdev)
        try:
            # A script that sets the disk's size may set it to 0 sectors.
            empty_ok = step.script is not None and "sectors" in (step.script.features or {})
            guest_modules.wait_disks(self.guest, [step.vdev], timeout_s, f"attach {step.vdev} (scripted backend)",
                                     empty_ok=empty_ok)
        except XenrigError:
            cap.vdevs.remove(step.vdev)
            vbd = cap.scripted.pop(step.vdev)
            scripted_backend.stop(self.xen, vbd)
            # What the backend saw of a device that never appeared is the
            # evidence: keep its log in the run folder.
            try:
                scripted_backend.fetch_log(self.xen, vbd, cap.run_dir)
            except XenrigError:
                pass
            raise
        cap.rings_stale = True
        front, back = self.states(step.vdev)
        return {"frontend_state": _state_name(front), "backend_state": _state_name(back),
                "connected": front == CONNECTED and back == CONNECTED, "backend": "scripted",
                "seconds": round(time.monotonic() - started, 2)}

    def _detach_scripted(self, vdev: str, timeout_s: float) -> dict:
        cap = self.capture
        vbd = cap.scripted[vdev]
        out = scripted_backend.stop(self.xen, vbd, timeout_s=min(timeout_s, 60))
        events = scripted_backend.fetch_log(self.xen, vbd, cap.run_dir)
        del cap.scripted[vdev]
        # What the backend checked (the XSA-403 pages, re-maps of ended
        # grants, held pages), for a step to expect, e.g. unzeroed: 0.  The
        # last count wins: a backend holding pages past its disconnect
        # (hold-persistent) says "released" after it.
        done = next((e for e in reversed(events) if e.get("ev") in ("released", "disconnected")), None)
        if done is not None:
            out.update({key: done.get(key, 0) for key in _BACKEND_COUNTS},
                       unzeroed=sum(1 for e in events if e.get("ev") == "unzeroed"),
                       ring_pages_checked=done.get("ring_pages", 0))
        return out

    def detach(self, vdev: str, timeout_s: float) -> dict:
        """xl block-detach, then wait until the guest's xenbus device is
        gone: blkfront_remove (and with it blkif_free) has returned."""
        cap = self.capture
        started = time.monotonic()
        if vdev in cap.scripted:
            out = self._detach_scripted(vdev, timeout_s)
        else:
            res = self.xen.xl(f"block-detach {shlex.quote(self.guest.name)} {shlex.quote(vdev)}", check=False,
                              timeout_s=timeout_s)
            out = {"xl_exit": res.exit_status, "xl_output": (res.stderr or res.stdout).strip()[-400:]}
        deadline = time.monotonic() + timeout_s
        while self._guest_has_device(vdev):
            if time.monotonic() > deadline:
                front, back = self.states(vdev)
                said = f"; xl said (exit {out['xl_exit']}): {out['xl_output']}" if out.get("xl_output") else ""
                raise InfraError(f"after 'xl block-detach' {vdev} is still a device in the guest after "
                                 f"{timeout_s:.0f} s (frontend {_state_name(front)}, backend {_state_name(back)})"
                                 + said, hint="The guest's dmesg and the xenstore states are in the run folder")
            time.sleep(0.5)
        for kept in (cap.vdevs, cap.stalled):
            if vdev in kept:
                kept.remove(vdev)
        if vdev in cap.slow:
            # blkback let go of it when the device left the guest.
            slow_disk.remove(self.xen, cap.slow.pop(vdev)[0])
        cap.attached.pop(vdev, None)
        front, back = self.states(vdev)
        out.update(gone=True, frontend_state=_state_name(front), backend_state=_state_name(back),
                   seconds=round(time.monotonic() - started, 2))
        return out

    # -- the domain ------------------------------------------------------------
    def save_restore(self, timeout_s: float) -> dict:
        """xl save, then xl restore: the same guest in a new domain.  The
        restored QEMU starts the console file again, so what it held is
        kept first."""
        guest, xen = self.guest, self.xen
        image = f"{guest.paths.run_dir}/save.img"
        old, started = self._before_resume(), time.monotonic()
        try:
            self._xl(f"save {shlex.quote(guest.name)} {shlex.quote(image)}", "xl save", timeout_s)
            saved_s = time.monotonic() - started
            self._suspended()
            self._keep_console()
            self._xl(f"restore {shlex.quote(image)}", "xl restore", timeout_s,
                     hint="The guest is gone: the run cannot go on")
        finally:
            xen.run(f"rm -f {shlex.quote(image)}", timeout_s=30)
        restored_s = time.monotonic() - started - saved_s
        return {**self._after_resume(old, timeout_s, started), "save_s": round(saved_s, 2),
                "restore_s": round(restored_s, 2)}

    def migrate(self, timeout_s: float) -> dict:
        """xl migrate to this same host: a new domain receives the guest's
        memory while it runs, then the guest is suspended for the last
        pages and resumes there.

        Both domains' QEMUs run at once, so the receiving one is given its
        own agent socket (`-C`, the guest's config with that path changed):
        the sending QEMU unlinks the path it bound when it exits, which
        would take the receiving one's name with it.  The new socket is
        renamed to the guest's usual path once the old QEMU is gone; its
        name is new at every migration, since the QEMU that bound it
        unlinks that name when it exits in turn.  `-s ''` makes xl run the
        receiving side here instead of over ssh."""
        guest, xen = self.guest, self.xen
        paths = guest.paths
        incoming = f"{paths.run_dir}/agent-from-d{int(guest.domid)}.sock"
        moved = f"{paths.run_dir}/guest-incoming.xl"
        config = xen.run(f"cat {shlex.quote(paths.config)}", timeout_s=30)
        if not config.ok or paths.agent_socket not in config.stdout:
            raise InfraError(f"cannot migrate {guest.name}: its xl config {paths.config} in dom0 does not name "
                             f"the agent socket {paths.agent_socket}")
        local = self.capture.run_dir / "guest-incoming.xl"     # kept with the run's evidence
        local.write_text(self._incoming_config(config.stdout, incoming))
        xen.ssh.put(local, moved)
        old, started = self._before_resume(), time.monotonic()
        self._keep_console()
        try:
            self._xl(f"migrate -s '' -C {shlex.quote(moved)} {shlex.quote(guest.name)} 'xl migrate-receive'",
                     "xl migrate", timeout_s, hint="The guest may be gone: the run cannot go on")
            self._suspended()
        finally:
            # Renamed only once the old QEMU is gone (xl destroyed the sent
            # domain before it returned; its QEMU may take a moment to exit
            # and unlink its path); if the migration failed the new path is
            # left alone and the old one still holds.  `[ ]` keeps pgrep
            # from finding this shell's own command line.
            xen.run(f"rm -f {shlex.quote(moved)}; if [ -S {shlex.quote(incoming)} ] && "
                    f"[ \"$(xl domid {shlex.quote(guest.name)} 2>/dev/null)\" != {int(old)} ]; then "
                    f"for i in $(seq 100); do pgrep -f -- 'xen-domid[ ]{int(old)}[ ]' > /dev/null || break; "
                    f"sleep 0.1; done; mv -f {shlex.quote(incoming)} {shlex.quote(paths.agent_socket)}; fi",
                    timeout_s=30)
        migrated_s = time.monotonic() - started
        return {**self._after_resume(old, timeout_s, started), "migrate_s": round(migrated_s, 2)}

    def _incoming_config(self, config: str, socket: str) -> str:
        """The guest's xl config for the receiving domain: its own agent
        socket, and the vbds the guest has now.  A config given with -C
        replaces the one libxl kept, which knew of the vbds attached since;
        one whose backend never connected cannot be carried over."""
        cap = self.capture
        if cap.stalled:
            raise InfraError(f"cannot migrate {self.guest.name} with {', '.join(cap.stalled)} attached: its backend "
                             "never connects", hint="Detach it in an earlier step")
        specs = [self._spec(vdev, "migrate") for vdev in cap.vdevs]
        lines = [line for line in config.replace(self.guest.paths.agent_socket, socket).splitlines()
                 if not line.lstrip().startswith("disk")]
        lines.append("disk = [ " + ", ".join(f'"{spec}"' for spec in specs) + " ]")
        return "\n".join(lines) + "\n"

    def _spec(self, vdev: str, doing: str) -> str:
        """xl's disk spec of a vbd the guest has, as it was attached."""
        cap = self.capture
        disk = cap.attached.get(vdev) or next((d for d in cap.scenario.guest.disks if d.vdev == vdev), None)
        if disk is None:
            raise InfraError(f"{doing}: the harness does not know the disk of {vdev}")
        if vdev in cap.slow:
            return _slow_spec(disk, cap.slow[vdev][1])
        return disk_spec(disk, self.guest.paths.vbd_image(disk))

    def _before_resume(self) -> int:
        """What the guest recorded so far leaves it first."""
        if self.capture.scripted:
            raise InfraError(f"cannot save or migrate {self.guest.name} with {', '.join(self.capture.scripted)} "
                             "attached: xl does not know a vbd our scripted backend serves",
                             hint="Detach it in an earlier step")
        self.capture.drain()
        return self.guest.domid

    def _suspended(self) -> None:
        """The guest was suspended, its rings still named as they are:
        blkfront makes them anew on resume, and a ring-ref may then name
        another ring (the drain after the resume names the events before
        the guest.resume record with the map kept here)."""
        self.capture.names_before_resume = dict(self.capture.ring_names)

    def _keep_console(self) -> None:
        """The console this domain's QEMU wrote: the next QEMU starts the
        file again.  Named by the domain, so a second resume keeps both."""
        with contextlib.suppress(XenrigError):
            before = self.xen.run(f"cat {shlex.quote(self.guest.paths.console_log)}", timeout_s=30)
            (self.capture.run_dir / f"guest-console-d{int(self.guest.domid)}.log").write_text(before.stdout)

    def _xl(self, args: str, what: str, timeout_s: float, hint: str = "") -> None:
        """Run xl; a failure names xl's first error lines (a migration's
        cause comes long before its last words), and all it said is kept."""
        res = self.xen.xl(args, check=False, timeout_s=timeout_s)
        if res.ok:
            return
        said = (res.stderr or "") + (res.stdout or "")
        log = self.capture.run_dir / f"{what.replace(' ', '-')}.log"
        with contextlib.suppress(OSError):
            log.write_text(said)
        errors = [line.strip() for line in said.splitlines() if "error" in line.lower()][:4]
        raise InfraError(f"'{what}' of {self.guest.name} failed (exit {res.exit_status}): "
                         + (" / ".join(errors)[:600] if errors else said.strip()[-400:])
                         + f" (all xl said: {log.name} in the run folder)", hint=hint)

    def _after_resume(self, old: int, timeout_s: float, started: float) -> dict:
        """Follow the guest to its new domain and wait until it answers and
        every vbd is connected again."""
        cap, xen, guest = self.capture, self.xen, self.guest
        new = xen.domid(guest.name)
        if new is None:
            raise InfraError(f"after the resume no domain is named {guest.name}")
        guest.domid = new
        hvm.wait_ready(guest, timeout_s, "resume")
        # The block devices outlive the suspend, so their size says nothing
        # here: blkfront has reconnected when both ends say Connected.
        deadline = time.monotonic() + timeout_s
        for vdev in cap.vdevs:
            while (states := self.states(vdev)) != (CONNECTED, CONNECTED):
                if time.monotonic() > deadline:
                    raise InfraError(f"after the resume {vdev} did not connect again within {timeout_s:.0f} s "
                                     f"(frontend {_state_name(states[0])}, backend {_state_name(states[1])})")
                time.sleep(0.5)
        guest_modules.wait_disks(guest, list(cap.vdevs), timeout_s, "resume")
        cap.rings_stale = True
        return {"old_domid": old, "new_domid": new, "connected": True,
                "seconds": round(time.monotonic() - started, 2)}

    # -- time ------------------------------------------------------------------
    def idle(self, seconds: int) -> dict:
        """Leave the guest alone for `seconds`: blkfront's purge work (every
        10 s) and blkback's persistent-grant timeout (60 s unused) run.
        The guest must still answer afterwards."""
        started = time.monotonic()
        time.sleep(seconds)
        res = self.guest.run("cat /proc/uptime", timeout_s=30)
        if not res.ok:
            raise InfraError(f"the guest did not answer after {seconds} s idle (status {res.exit_status})")
        return {"idle_s": seconds, "seconds": round(time.monotonic() - started, 2)}

    # -- blkfront ----------------------------------------------------------------
    def module(self, step: ModuleStep, timeout_s: float) -> dict:
        return self.unload(timeout_s) if step.op == "unload" else self.load(timeout_s)

    def unload(self, timeout_s: float) -> dict:
        """Unbind every vbd from blkfront, then rmmod it.

        xenbus_dev_probe holds a reference on the driver's module for each
        device it bound (drivers/xen/xenbus/xenbus_probe.c), so a plain
        rmmod is refused (EWOULDBLOCK) while any vbd is bound.  Unbinding
        runs xenbus_dev_remove: blkfront_remove and blkif_free (every ring
        torn down, its grants ended or their ends deferred), the frontend
        to Closed (blkfront does not allow rebind), the reference dropped.
        The devices stay on the xen bus, Closed: see load."""
        mod = self._blkfront()
        started = time.monotonic()
        unbound = []
        for vdev in self.capture.vdevs:
            device = f"vbd-{parsers.vdev_number(vdev)}"
            res = self.guest.run(f"if [ -e /sys/bus/xen/drivers/vbd/{device} ]; then "
                                 f"echo {device} > /sys/bus/xen/drivers/vbd/unbind; fi 2>&1", timeout_s=timeout_s)
            if res.exit_status != 0:
                raise InfraError(f"unbinding {vdev} ({device}) from blkfront failed in the guest "
                                 f"(status {res.exit_status}): {res.stdout.strip()[-300:]}")
            unbound.append(vdev)
        res = self.guest.run(f"rmmod {shlex.quote(mod.name)} 2>&1", timeout_s=timeout_s)
        if res.exit_status != 0:
            holders = self.guest.run(f"cat /sys/module/{shlex.quote(mod.name)}/refcnt; "
                                     f"ls /sys/module/{shlex.quote(mod.name)}/holders", timeout_s=30).stdout
            raise InfraError(f"rmmod {mod.name} failed in the guest (status {res.exit_status}): "
                             f"{res.stdout.strip()[-300:]}; after unbinding {', '.join(unbound) or 'no vbd'} "
                             f"its refcount and holders are: {' '.join(holders.split())[:200]}")
        still = self.guest.run(f"test -e /sys/module/{shlex.quote(mod.name)}", timeout_s=30).exit_status == 0
        self.capture.rings_stale = True
        return {"exit": res.exit_status, "unbound": unbound, "unloaded": not still,
                "seconds": round(time.monotonic() - started, 2)}

    def load(self, timeout_s: float) -> dict:
        """insmod of the very build the run loaded first, then every vbd
        the guest has must connect again.

        A vbd an unload unbound stays Closed: blkfront does not allow
        rebind, so xenbus_dev_remove left it Closed, and binding it again
        sets nothing back to Initialising (only a new xenbus device starts
        there); blkback waits for that to "prepare for reconnect".  Such a
        vbd is made anew by the toolstack, as a guest's owner would: xl
        block-detach, then block-attach of the same disk."""
        mod = self._blkfront()
        started = time.monotonic()
        loaded = guest_modules.insmod(self.guest, mod, timeout_s)
        vdevs = list(self.capture.vdevs)
        remade = []
        for vdev in vdevs:
            front, _back = self.states(vdev)
            if front == CLOSED:
                self._remake(vdev, timeout_s)
                remade.append(vdev)
        if vdevs:
            guest_modules.wait_disks(self.guest, vdevs, timeout_s, "load blkfront")
        self.capture.rings_stale = True
        return {"loaded": True, "build_id": loaded.loaded_build_id[:12], "connected": vdevs, "remade": remade,
                "seconds": round(time.monotonic() - started, 2)}

    def _remake(self, vdev: str, timeout_s: float) -> None:
        spec = self._spec(vdev, f"load blkfront: {vdev} is Closed, and to attach it again")
        name = shlex.quote(self.guest.name)
        for what, command in (("block-detach", f"block-detach {name} {shlex.quote(vdev)}"),
                              ("block-attach", f"block-attach {name} {shlex.quote(spec)}")):
            res = self.xen.xl(command, check=False, timeout_s=timeout_s)
            if not res.ok:
                raise InfraError(f"load blkfront: 'xl {what}' of the Closed {vdev} failed: "
                                 f"{(res.stderr or res.stdout).strip()[-300:]}")

    def _blkfront(self):
        if self.capture.blkfront is None:
            raise InfraError("a module step needs the blkfront the run built and loaded; none was loaded")
        return self.capture.blkfront
