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


@contextlib.contextmanager
def xen_host(cfg: HostConfig, timeline: Timeline, run_dir: Path, *, built: images.Images | None = None,
             keep: bool = False, console: bool = False, info: dict | None = None,
             replace_kept: bool = False) -> Iterator[hostmod.XenHost]:
    """`built`: images already ensured by the caller (else ensured here).
    `replace_kept`: stop a stack left up by `xenrig up` instead of refusing."""
    info = info if info is not None else {}
    with contextlib.ExitStack() as stack:
        if cfg.kind == "remote":
            endpoint = hostmod.Endpoint(cfg.address, cfg.port, cfg.user, cfg.key, cfg.host_key)
            info["host"] = {"kind": "remote", "address": cfg.address, "port": cfg.port}
            with timeline.stage("connect to dom0"):
                xen = stack.enter_context(hostmod.connect(endpoint, cfg, cfg.timeouts.dom0_boot_s))
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
        machine = stack.enter_context(vm.boot(cfg, built, run_dir, timeline, keep=keep, console=console))
        info["host"] = {"kind": "nested", "accel": machine.accel, "ssh_port": machine.ssh_port, "domain": machine.name}
        endpoint = hostmod.Endpoint("127.0.0.1", machine.ssh_port, "root", key_file, machine.host_key)
        with timeline.stage("connect to dom0"):
            xen = stack.enter_context(hostmod.connect(endpoint, cfg, 60))
        xen.machine = machine
        yield xen
