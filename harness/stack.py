"""A Xen host ready to use: the nested one (images -> L0 VM -> dom0 over
SSH) or a real one (straight to SSH).  Callers above this point cannot tell
the two apart; that is what makes conformance runs against real Xen the
same code as nightly runs in QEMU."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

from harness import host as hostmod
from harness import images, paths, sshkeys
from harness.config import HostConfig
from harness.errors import UsageError
from harness.machine import stackfile, vm
from harness.stages import Timeline


def sync_guest_image(xen: hostmod.XenHost, guest_image) -> bool:
    """Put the guest's kernel and initramfs in dom0 of a real host, unless
    files with the same hashes are there already; True when it copied."""
    from harness.guest.hvm import GUEST_IMAGE_DIR

    names = ["vmlinuz", "initrd.img"]
    res = xen.run(f"cd {GUEST_IMAGE_DIR} 2>/dev/null && sha256sum {' '.join(names)}", timeout_s=60)
    remote = {line.split()[1]: line.split()[0] for line in res.stdout.splitlines() if len(line.split()) == 2}
    if all(remote.get(n) == guest_image.files.get(n) for n in names):
        return False
    xen.run(f"mkdir -p {GUEST_IMAGE_DIR}", check=True, timeout_s=30)
    for n in names:
        xen.ssh.put(guest_image.file(n), f"{GUEST_IMAGE_DIR}/{n}")
    return True


@contextlib.contextmanager
def xen_host(cfg: HostConfig, timeline: Timeline, run_dir: Path, *, built: images.Images | None = None,
             keep: bool = False, console: bool = False, info: dict | None = None,
             replace_kept: bool = False, restore=None) -> Iterator[hostmod.XenHost]:
    """`built`: images already ensured by the caller (else ensured here).
    `replace_kept`: stop a stack left up by `xenrig up` instead of refusing.
    `restore`: a harness.snapshot.Snapshot to restore instead of booting
    (nested hosts only; harness.booted decides)."""
    info = info if info is not None else {}
    with contextlib.ExitStack() as stack:
        if cfg.kind == "remote":
            built = built or images.ensure(timeline, run_dir, guest_only=True)
            endpoint = hostmod.Endpoint(cfg.address, cfg.port, cfg.user, cfg.key, cfg.host_key)
            info["host"] = {"kind": "remote", "address": cfg.address, "port": cfg.port}
            with timeline.stage("connect to dom0"):
                xen = stack.enter_context(hostmod.connect(endpoint, cfg, cfg.timeouts.dom0_boot_s))
            with timeline.stage("guest image to dom0"):
                sent = sync_guest_image(xen, built.guest)
                timeline.note("guest image " + ("copied" if sent else "already in place (hashes match)"))
            yield xen
            return

        state = paths.state_dir()
        stack.enter_context(stackfile.StackLock(state))
        if stackfile.load(state):
            if not replace_kept:
                raise UsageError("a stack started by 'xenrig up' is still running",
                                 hint="Stop it with 'xenrig down' first (a run boots its own stack)")
            vm.stop_kept(state)
        built = built or images.ensure(timeline, run_dir)
        info["images"] = {a.name: {"key": a.key, "reused": a.reused,
                                   **{k: v for k, v in a.meta.items() if k not in ("versions", "host_key")}}
                          for a in built.all()}
        key_file, _ = sshkeys.client_key(paths.state_dir())
        if restore is not None:
            machine = stack.enter_context(vm.restore(cfg, built, restore, run_dir, timeline, keep=keep, console=console))
        else:
            machine = stack.enter_context(vm.boot(cfg, built, run_dir, timeline, keep=keep, console=console))
        info["host"] = {"kind": "nested", "accel": machine.accel, "ssh_port": machine.ssh_port, "domain": machine.name}
        endpoint = hostmod.Endpoint("127.0.0.1", machine.ssh_port, "root", key_file, machine.host_key)
        with timeline.stage("connect to dom0"):
            xen = stack.enter_context(hostmod.connect(endpoint, cfg, 60))
        xen.machine = machine
        yield xen
