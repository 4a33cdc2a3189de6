"""One libvirt connection per process, with the event loop libvirt needs.

The embedded QEMU driver (`qemu:///embed?root=DIR`) runs inside this process:
no daemon.  It needs an event loop registered before opening, a qemu.conf in
its root that lets QEMU run as root without virtlogd, namespaces, cgroups or
a security driver, and the system user libvirt-qemu to exist (FIELD-NOTES).
"""

from __future__ import annotations

import threading
from pathlib import Path

from harness.machine._libvirt import libvirt

from harness.errors import HostSetupError, InfraError, UsageError

_QEMU_CONF = """\
# Written by xenrig for its embedded libvirt QEMU driver.
stdio_handler = "file"
user = "root"
group = "root"
namespaces = []
cgroup_controllers = []
security_driver = "none"
# Do not chown/label files: we run as root, and libvirt cannot stat the
# multiboot "initrd" string (kernel, args and initramfs in one).
dynamic_ownership = 0
remember_owner = 0
"""

_lock = threading.Lock()
_loop_started = False
_conns: dict[str, libvirt.virConnect] = {}


def _start_event_loop() -> None:
    global _loop_started
    if _loop_started:
        return
    libvirt.virEventRegisterDefaultImpl()

    def run() -> None:
        while True:
            libvirt.virEventRunDefaultImpl()

    threading.Thread(target=run, name="libvirt-events", daemon=True).start()
    _loop_started = True


def _quiet_errors(_ctx, _err) -> None:
    # libvirt prints every error to stderr by default; we report them ourselves.
    return None


# libvirt puts QEMU's monitor sockets under the root, e.g.
# <root>/lib/qemu/domain-1-xenrig-local/monitor.sock, and a unix socket's
# path must be under 108 bytes.
MAX_ROOT_LEN = 60


def _check_root_length(root: Path) -> None:
    if len(str(root)) > MAX_ROOT_LEN:
        raise UsageError(f"the state directory's libvirt root {root} is {len(str(root))} characters long; "
                         f"libvirt's QEMU sockets under it would pass the 108-byte limit of a unix socket path",
                         hint=f"Point XENRIG_STATE (or XENRIG_EMBED_ROOT) at a folder whose path is at most "
                              f"{MAX_ROOT_LEN - len('/libvirt')} characters, e.g. under /tmp or /var/tmp")


def open_connection(uri: str, embed_root: Path) -> libvirt.virConnect:
    with _lock:
        _start_event_loop()
        libvirt.registerErrorHandler(_quiet_errors, None)
        if uri.startswith("qemu:///embed"):
            _check_root_length(embed_root)
            (embed_root / "etc").mkdir(parents=True, exist_ok=True)
            conf = embed_root / "etc" / "qemu.conf"
            if not conf.exists() or conf.read_text() != _QEMU_CONF:
                conf.write_text(_QEMU_CONF)
            uri = f"qemu:///embed?root={embed_root}"
        if uri in _conns:
            return _conns[uri]
        try:
            conn = libvirt.open(uri)
        except libvirt.libvirtError as exc:
            msg = exc.get_error_message() or str(exc)
            if "libvirt-qemu" in msg or "user" in msg.lower() and "not found" in msg.lower():
                raise HostSetupError(f"libvirt cannot open {uri}: {msg}",
                                     hint="Run 'xenrig doctor --fix' (it creates the libvirt-qemu system user)") from None
            raise InfraError(f"libvirt cannot open {uri}: {msg}",
                             hint="Run 'xenrig doctor' to check libvirt's QEMU driver") from None
        _conns[uri] = conn
        return conn


def close_connection(conn: libvirt.virConnect) -> None:
    """Close an embedded connection: the embedded driver then shuts down and
    releases its root, so another process (a later `xenrig` command, or a
    test's subprocess) can open it.  QEMU itself keeps running if kept."""
    with _lock:
        for uri, c in list(_conns.items()):
            if c is conn:
                del _conns[uri]
        try:
            conn.close()
        except libvirt.libvirtError:
            pass
