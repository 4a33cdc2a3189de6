"""Start, watch and always stop the L0 VM.

`boot()` is a context manager: whatever happens inside it (a failed check,
a timeout, Ctrl-C), the VM is destroyed on the way out unless the caller
asked to keep it (`xenrig up`).  QEMU started by the embedded driver outlives
the Python process that started it, so every boot first destroys what a
killed earlier run may have left behind.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import signal
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator
from xml.etree import ElementTree as ET

from harness import paths, proc
from harness.config import HostConfig
from harness.errors import InfraError
from harness.images import Images
from harness.machine import accel as accel_mod
from harness.machine import domxml, savestate, stackfile
from harness.machine._libvirt import libvirt
from harness.machine.libvirt_conn import close_connection, open_connection
from harness.machine.serial import SerialLog
from harness.stages import Timeline

log = logging.getLogger(__name__)

DOMAIN_PREFIX = "xenrig-"
DOM0_READY = "XENRIG-DOM0-READY"


def embed_root() -> Path:
    """The embedded libvirt driver's root.  A process that opened it keeps it
    locked until it exits (the driver does not shut down on close), so a
    long-lived process that boots stacks itself (the pytest plugin) uses a
    root of its own via XENRIG_EMBED_ROOT, leaving this one to the CLI."""
    override = os.environ.get("XENRIG_EMBED_ROOT")
    return Path(override) if override else paths.state_dir() / "libvirt"


@dataclass
class Machine:
    name: str
    conn: libvirt.virConnect
    domain: libvirt.virDomain
    accel: str
    ssh_port: int
    host_key: str
    serial: SerialLog
    run_dir: Path
    overlay: Path
    notes: dict = field(default_factory=dict)

    @property
    def ssh_endpoint(self) -> tuple[str, int]:
        return ("127.0.0.1", self.ssh_port)

    def alive(self) -> bool:
        try:
            return bool(self.domain.isActive())
        except libvirt.libvirtError:
            return False

    def qemu_pid(self) -> int | None:
        pidfile = embed_root() / "run" / "libvirt" / "qemu" / f"{self.name}.pid"
        try:
            return int(pidfile.read_text().strip())
        except (OSError, ValueError):
            return None

    def destroy(self) -> None:
        with contextlib.suppress(libvirt.libvirtError):
            if self.domain.isActive():
                self.domain.destroy()
        self.overlay.unlink(missing_ok=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _qemu_processes_of(root: Path, proc: Path = Path("/proc"), uid: int | None = None) -> list[int]:
    """QEMU processes of a xenrig L0 VM started from this libvirt root by
    this user (a fallback for a domain libvirt no longer knows about).  The
    stack lock covers this root only: another job's VMs, under another
    root or user, are not ours to kill."""
    uid = os.getuid() if uid is None else uid
    pids = []
    needle = f"guest={DOMAIN_PREFIX}".encode()
    # libvirt puts the domain's files (master key, monitor) under the root.
    ours = (str(root.resolve()).rstrip("/") + "/").encode()
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes()
            owner = entry.stat().st_uid
        except OSError:
            continue
        if b"qemu-system" in cmd and needle in cmd and ours in cmd and owner == uid:
            pids.append(int(entry.name))
    return pids


def destroy_stale(conn: libvirt.virConnect, root: Path) -> list[str]:
    """Destroy every xenrig VM this libvirt root still runs; return names."""
    gone = []
    for dom in conn.listAllDomains():
        if dom.name().startswith(DOMAIN_PREFIX) and dom.isActive():
            # A domain found at start-up is still being reconnected by
            # libvirt; destroy() kills QEMU but may then report the domain
            # as not found.  Either way it is gone.
            with contextlib.suppress(libvirt.libvirtError):
                dom.destroy()
            gone.append(dom.name())
    for pid in _qemu_processes_of(root):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
            gone.append(f"qemu pid {pid}")
    return gone


def _open_clean(host: HostConfig, timeline: Timeline):
    """The libvirt root and connection, with what a killed run left in it gone."""
    root = embed_root()
    conn = open_connection(host.libvirt_uri, root)
    with timeline.stage("clean up leftovers"):
        stale = destroy_stale(conn, root)
        if stale:
            timeline.note(f"destroyed leftovers of an earlier run: {', '.join(stale)}")
    return root, conn


@contextlib.contextmanager
def boot(host: HostConfig, images: Images, run_dir: Path, timeline: Timeline, *,
         keep: bool = False, console: bool = False) -> Iterator[Machine]:
    root, conn = _open_clean(host, timeline)

    chosen = accel_mod.choose(host.accel)
    run_dir.mkdir(parents=True, exist_ok=True)
    overlay = run_dir / "dom0-overlay.qcow2"
    serial_log = run_dir / "serial-l0.log"
    proc.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b",
              images.dom0.file("rootfs.ext4"), overlay], timeout_s=60, what="creating the dom0 disk overlay")
    port = free_port()
    name = f"{DOMAIN_PREFIX}{host.name}"
    spec = domxml.L0Spec(
        name=name, accel=chosen, machine=host.machine, memory_mib=host.memory_mib, vcpus=host.vcpus,
        xen=images.xen.file("xen.elf"),
        xen_cmdline=domxml.xen_cmdline(chosen, host.dom0_mem_mib, host.xen_cmdline_extra),
        dom0_kernel=images.dom0.file("vmlinuz"), dom0_cmdline=domxml.dom0_cmdline(host.dom0_cmdline_extra),
        dom0_initrd=images.dom0.file("initrd.img"), root_disk=overlay,
        guest_disk=images.guest.file("guest.ext4"), serial_log=serial_log, ssh_port=port,
        cpu_model=host.cpu_model, cpu_features=tuple(host.cpu_features),
    )
    xml = domxml.render(spec)
    (run_dir / "l0-domain.xml").write_text(xml)

    machine = None
    try:
        with timeline.stage("boot xen + dom0") as st:
            timeline.note(f"L0 VM {name}: {chosen.upper()}, {host.vcpus} vCPUs, {host.memory_mib} MiB; ssh on 127.0.0.1:{port}")
            try:
                domain = conn.createXML(xml, 0)
            except libvirt.libvirtError as exc:
                raise InfraError(f"libvirt could not start the L0 VM: {exc.get_error_message()}",
                                 log=str(run_dir / "l0-domain.xml"),
                                 hint="Run 'xenrig doctor' to check QEMU and libvirt") from None
            machine = Machine(name, conn, domain, chosen, port, images.dom0.meta["host_key"],
                              SerialLog(serial_log), run_dir, overlay)
            if console:
                machine.serial.echo()
            line = machine.serial.wait_for(DOM0_READY, timeout_s=host.timeouts.dom0_boot_s,
                                           stage=st.name, alive=machine.alive)
            machine.notes["dom0_ready_line"] = line
        yield machine
    finally:
        _teardown(machine, conn, root, overlay, timeline, keep)


def save(machine: Machine, state: Path, disk: Path) -> tuple[str, dict]:
    """Save the running L0 VM: its state to `state`, dom0's disk as it is at
    that instant to `disk`.  The VM is left paused; `resume()` runs it on.
    Returns the VM's definition (for restoring) and QEMU's figures."""
    xml = machine.domain.XMLDesc(libvirt.VIR_DOMAIN_XML_SECURE | libvirt.VIR_DOMAIN_XML_MIGRATABLE)
    ram = savestate.save(machine.domain, state)
    # QEMU flushed and released the disk when the migration completed, and
    # the VM is paused: the overlay is consistent with the saved state now.
    shutil.copyfile(machine.overlay, disk)
    return xml, ram


def resume(machine: Machine) -> None:
    savestate.resume(machine.domain)


def restore_xml(saved: str, overlay: Path, serial_log: Path, ssh_port: int) -> str:
    """The saved VM's definition for one restore: its own disk overlay,
    serial log and SSH port (host-side things the migration stream does not
    carry), started waiting for the stream (`-incoming defer`)."""
    ET.register_namespace("qemu", domxml.QEMU_NS)
    dom = ET.fromstring(saved)
    for disk in dom.iter("disk"):
        target = disk.find("target")
        if target is not None and target.get("dev") == "vda":
            disk.find("source").set("file", str(overlay))
    for tag in ("serial", "console"):
        for dev in dom.iter(tag):
            src = dev.find("source")
            if src is not None and src.get("path"):
                src.set("path", str(serial_log))
    cmd = dom.find(f"{{{domxml.QEMU_NS}}}commandline")
    if cmd is None:
        raise InfraError("the snapshot's domain definition has no QEMU network arguments",
                         hint="'xenrig snapshot prune' removes it; the next run makes a new one")
    for arg in cmd:
        arg.set("value", re.sub(r"hostfwd=tcp:127\.0\.0\.1:\d+-:22", f"hostfwd=tcp:127.0.0.1:{ssh_port}-:22",
                                arg.get("value", "")))
    for value in ("-incoming", "defer"):
        ET.SubElement(cmd, f"{{{domxml.QEMU_NS}}}arg", value=value)
    return ET.tostring(dom, encoding="unicode")


@contextlib.contextmanager
def restore(host: HostConfig, images: Images, snap, run_dir: Path, timeline: Timeline, *,
            keep: bool = False, console: bool = False) -> Iterator[Machine]:
    """Like boot(), but the L0 VM comes back from a snapshot (harness.snapshot)
    already running Xen, dom0 and the guest, on a disk overlay of its own."""
    root, conn = _open_clean(host, timeline)
    run_dir.mkdir(parents=True, exist_ok=True)
    overlay = run_dir / "dom0-overlay.qcow2"
    serial_log = run_dir / "serial-l0.log"
    port = free_port()
    machine = None
    try:
        with timeline.stage("restore snapshot") as st:
            proc.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", snap.disk, overlay],
                     timeout_s=60, what="creating the dom0 disk overlay over the snapshot")
            xml = restore_xml(snap.domain_xml, overlay, serial_log, port)
            (run_dir / "l0-domain.xml").write_text(xml)
            started = time.monotonic()
            try:
                domain = conn.createXML(xml, libvirt.VIR_DOMAIN_START_PAUSED)
            except libvirt.libvirtError as exc:
                raise InfraError(f"libvirt could not start the L0 VM to restore {snap.path.name}: "
                                 f"{exc.get_error_message()}", log=str(run_dir / "l0-domain.xml"),
                                 hint="'xenrig snapshot prune' removes the snapshot; 'xenrig run --cold' boots without it") from None
            machine = Machine(domain.name(), conn, domain, snap.meta.get("accel", "tcg"), port,
                              images.dom0.meta["host_key"], SerialLog(serial_log), run_dir, overlay)
            if console:
                machine.serial.echo()
            savestate.load(domain, snap.state, timeout_s=host.timeouts.dom0_boot_s)
            savestate.resume(domain)
            machine.notes["restore_s"] = round(time.monotonic() - started, 2)
            log.info("L0 VM %s restored from %s in %.1fs", machine.name, snap.path.name, machine.notes["restore_s"])
            timeline.note(f"L0 VM {machine.name} restored from {snap.path.name} in {machine.notes['restore_s']:.1f}s; "
                          f"ssh on 127.0.0.1:{port}")
            st.detail = snap.path.name
        yield machine
    finally:
        _teardown(machine, conn, root, overlay, timeline, keep)


def _teardown(machine: Machine | None, conn, root: Path, overlay: Path, timeline: Timeline, keep: bool) -> None:
    if machine is not None:
        machine.serial.stop_echo()
    if machine is not None and not keep:
        with timeline.stage("tear down L0 VM"):
            machine.destroy()
    elif machine is None:
        # createXML failed or we were interrupted before it returned.
        destroy_stale(conn, root)
        overlay.unlink(missing_ok=True)
    close_connection(conn)


def stop_kept(state: Path) -> list[str]:
    """Stop the stack `xenrig up` left running (and any leftovers)."""
    record = stackfile.load(state)
    conn = open_connection(record.libvirt_uri if record else "qemu:///embed", embed_root())
    try:
        gone = destroy_stale(conn, embed_root())
    finally:
        close_connection(conn)
    stackfile.clear(state)
    return gone
