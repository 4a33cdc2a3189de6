"""Loading the modules the harness built into the running guest, and
proving they are the ones it built (build id from /sys/module/*/notes)."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

from harness.build import BuiltModule, elfinfo
from harness.errors import CorruptionError, InfraError, StageTimeout
from harness.guest.hvm import HvmGuest

# Where the modules the harness built go in the guest.  They are copied in
# through the agent once the guest is up, never baked into its boot: the
# guest at that point is the same for every scenario (it can be restored
# from a snapshot), and only what is copied differs.
GUEST_MODULE_DIR = "/lib/modules/xenrig"


@dataclass
class LoadedModule:
    module: BuiltModule
    load_s: float
    loaded_build_id: str


def _loaded_build_id(guest: HvmGuest, name: str) -> str | None:
    res = guest.run(f"od -An -v -tx1 /sys/module/{name}/notes/.note.gnu.build-id", timeout_s=30)
    if not res.ok:
        return None
    blob = bytes(int(b, 16) for b in res.stdout.split())
    return elfinfo.parse_note_blob(blob)


def push(guest: HvmGuest, modules: list[BuiltModule]) -> None:
    """Copy the built modules into the guest; each arrives hash-checked."""
    for m in modules:
        got = guest.put(m.ko, f"{GUEST_MODULE_DIR}/{m.ko.name}")
        want = hashlib.sha256(m.ko.read_bytes()).hexdigest()
        if got != want:
            # guestctl compared with the copy in dom0: this is the hop before.
            raise CorruptionError(f"{m.ko.name} reached the guest with sha256 {got}, not {want}",
                                  hint="The stack corrupts memory: see docs/dom0-corruption.md")


def insmod(guest: HvmGuest, module: BuiltModule, timeout_s: float) -> LoadedModule:
    if _loaded_build_id(guest, module.name) is not None:
        raise InfraError(f"a module named {module.name} is already loaded in the guest before ours",
                         hint="The guest image must not carry the stock driver")
    started = time.monotonic()
    res = guest.run(f"insmod {GUEST_MODULE_DIR}/{module.ko.name} {module.insmod_args()}", timeout_s=timeout_s)
    load_s = time.monotonic() - started
    if not res.ok:
        raise InfraError(f"insmod {module.ko.name} {module.insmod_args()} failed in the guest (status {res.exit_status}): "
                         f"{res.stdout.strip()[-400:]}", hint="dmesg in the guest says more; a bad module parameter is a common cause")
    loaded = _loaded_build_id(guest, module.name)
    if loaded != module.build_id:
        raise InfraError(f"the {module.name} loaded in the guest has build id {loaded}, not {module.build_id} "
                         f"which the harness built from {module.source}; refusing to test an unknown driver")
    return LoadedModule(module, load_s, loaded)


def wait_disks(guest: HvmGuest, vdevs: list[str], timeout_s: float, stage: str) -> float:
    """Wait until blkfront has connected every vdev (its block device exists
    and reports a size); return the seconds it took."""
    started = time.monotonic()
    deadline = started + timeout_s
    script = " ; ".join(f"cat /sys/block/{v}/size 2>/dev/null || echo missing" for v in vdevs)
    while True:
        res = guest.run(script, timeout_s=30)
        sizes = res.stdout.split()
        if len(sizes) == len(vdevs) and all(s.isdigit() and int(s) > 0 for s in sizes):
            return time.monotonic() - started
        if time.monotonic() >= deadline:
            dm = guest.run("dmesg | grep -i -E 'blkfront|vbd|xen' | tail -n 15", timeout_s=30).stdout
            raise StageTimeout(f"stage '{stage}': blkfront did not connect {', '.join(vdevs)} within {timeout_s:.0f}s; "
                               f"guest log:\n{dm}\n")
        time.sleep(0.5)


def read_params(guest: HvmGuest, name: str) -> dict[str, str]:
    """The module's parameters as the running kernel holds them."""
    res = guest.run(f"cd /sys/module/{name}/parameters 2>/dev/null && for p in *; do echo \"$p=$(cat $p)\"; done",
                    timeout_s=30)
    return dict(line.split("=", 1) for line in res.stdout.splitlines() if "=" in line)

