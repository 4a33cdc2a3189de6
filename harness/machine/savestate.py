"""Save a running L0 VM's memory and device state to a file, and load it
into a freshly started QEMU: the machine half of a snapshot.

libvirt's own save/restore needs libvirt_iohelper (a daemon package the
embedded driver does without), and QEMU's `exec:` migration forks, which
libvirt's seccomp sandbox forbids (it killed QEMU when tried).  So the
harness drives QEMU's migration itself through libvirt's monitor
passthrough, handing QEMU an open file descriptor (`getfd`, then
`migrate fd:NAME` / `migrate-incoming fd:NAME`).  The sandbox stays on.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from harness.errors import InfraError
from harness.machine._libvirt import libvirt

try:
    import libvirt_qemu
except ImportError:  # pragma: no cover - shipped with libvirt-python
    libvirt_qemu = None

FD_NAME = "xenrig-state"


def qmp(dom, command: str, files: list[int] | None = None, **arguments) -> dict:
    """One QMP command; its `return`, or InfraError naming QEMU's complaint."""
    msg = json.dumps({"execute": command, "arguments": arguments} if arguments else {"execute": command})
    try:
        if files:
            out = libvirt_qemu.qemuMonitorCommandWithFiles(dom, msg, files, 0)[0]
        else:
            out = libvirt_qemu.qemuMonitorCommand(dom, msg, 0)
    except libvirt.libvirtError as exc:
        raise InfraError(f"QEMU's monitor failed on '{command}': {exc.get_error_message()}") from None
    reply = json.loads(out)
    if "error" in reply:
        raise InfraError(f"QEMU refused '{command}': {reply['error'].get('desc', reply['error'])}")
    return reply.get("return", {})


def _wait_migration(dom, timeout_s: float, what: str) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        info = qmp(dom, "query-migrate")
        status = info.get("status")
        if status == "completed":
            return info
        if status in ("failed", "cancelled"):
            raise InfraError(f"{what} failed in QEMU: {info.get('error-desc', status)}")
        if time.monotonic() > deadline:
            raise InfraError(f"{what} did not finish within {timeout_s:.0f}s (QEMU says {status})")
        time.sleep(0.2)


def save(dom, path: Path, timeout_s: float = 600) -> dict:
    """Pause the VM and write its state to `path`.  The VM stays paused
    afterwards with its disks flushed and released, so they can be copied
    before it is resumed or destroyed.  Returns QEMU's figures."""
    qmp(dom, "stop")
    tmp = path.with_name(path.name + ".part")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        qmp(dom, "getfd", files=[fd], fdname=FD_NAME)
    finally:
        os.close(fd)        # QEMU holds its own copy now
    qmp(dom, "migrate", uri=f"fd:{FD_NAME}")
    info = _wait_migration(dom, timeout_s, "saving the L0 VM's state")
    os.replace(tmp, path)
    return info.get("ram", {})


def resume(dom) -> None:
    """Run a VM paused by `save` again (QEMU re-takes its disks)."""
    qmp(dom, "cont")


def load(dom, path: Path, timeout_s: float = 300) -> None:
    """Load a state file into a VM started paused with `-incoming defer`;
    it stays paused until the caller resumes it."""
    fd = os.open(path, os.O_RDONLY)
    try:
        qmp(dom, "getfd", files=[fd], fdname=FD_NAME)
    finally:
        os.close(fd)
    qmp(dom, "migrate-incoming", uri=f"fd:{FD_NAME}")
    deadline = time.monotonic() + timeout_s
    while qmp(dom, "query-status").get("status") == "inmigrate":
        if time.monotonic() > deadline:
            raise InfraError(f"loading the L0 VM's state from {path} did not finish within {timeout_s:.0f}s")
        time.sleep(0.1)
    status = qmp(dom, "query-migrate").get("status")
    if status != "completed":
        raise InfraError(f"QEMU could not load the L0 VM's state from {path} (migration status: {status})",
                         hint="The snapshot may be from another QEMU; 'xenrig snapshot prune' removes it")
