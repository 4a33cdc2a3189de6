"""Loading the modules the harness built into the running guest, and
proving they are the ones it built (build id from /sys/module/*/notes)."""

from __future__ import annotations

import hashlib
import shlex
import time
from pathlib import Path
from dataclasses import dataclass

from harness import proc
from harness.build import BuiltModule, elfinfo
from harness.checks import guest_death
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


def push(guest: HvmGuest, modules: list[BuiltModule], scratch: Path) -> None:
    """Copy the built modules into the guest, without their DWARF (a tenth
    of the bytes through the agent; code, symbols, notes and the build id
    are untouched, and insmod checks the build id).  Each copy arrives
    hash-checked end to end."""
    files = []
    for m in modules:
        lean = scratch / m.ko.name
        proc.run(["objcopy", "--strip-debug", m.ko, lean], timeout_s=60, what=f"stripping {m.ko.name}'s debug info")
        files.append((lean, f"{GUEST_MODULE_DIR}/{m.ko.name}"))
    if not files:
        return
    got = guest.put(files)
    for (lean, _), digest in zip(files, got):
        want = hashlib.sha256(lean.read_bytes()).hexdigest()
        if digest != want:
            # guestctl compared with the copy in dom0: this is the hop before.
            raise CorruptionError(f"{lean.name} reached the guest with sha256 {digest}, not {want}",
                                  hint="The stack corrupts memory: see docs/dom0-corruption.md")


def insmod(guest: HvmGuest, module: BuiltModule, timeout_s: float) -> LoadedModule:
    """Load the module and read back the build id the kernel holds for it,
    in one exchange with the guest (each costs about a second under TCG)."""
    notes = f"/sys/module/{module.name}/notes/.note.gnu.build-id"
    script = (f"if [ -e /sys/module/{module.name} ]; then echo XR-ALREADY; exit 0; fi; "
              f"insmod {GUEST_MODULE_DIR}/{module.ko.name} {module.insmod_args()}; rc=$?; echo; echo XR-INSMOD $rc; "
              f"[ $rc = 0 ] && od -An -v -tx1 {notes}")
    started = time.monotonic()
    res = guest.run(script, timeout_s=timeout_s)
    load_s = time.monotonic() - started
    if "XR-ALREADY" in res.stdout.splitlines()[:1]:
        raise InfraError(f"a module named {module.name} is already loaded in the guest before ours",
                         hint="The guest image must not carry the stock driver")
    before, _, after = res.stdout.partition("\nXR-INSMOD ")
    status, _, dump = after.partition("\n")
    if status.strip() != "0":
        raise InfraError(f"insmod {module.ko.name} {module.insmod_args()} failed in the guest "
                         f"(status {status.strip() or res.exit_status}): {before.strip()[-400:]}",
                         hint="dmesg in the guest says more; a bad module parameter is a common cause")
    try:
        loaded = elfinfo.parse_note_blob(bytes(int(b, 16) for b in dump.split()))
    except ValueError:
        loaded = None
    if loaded != module.build_id:
        raise InfraError(f"the {module.name} loaded in the guest has build id {loaded}, not {module.build_id} "
                         f"which the harness built from {module.source}; refusing to test an unknown driver")
    return LoadedModule(module, load_s, loaded)


def wait_disks(guest: HvmGuest, vdevs: list[str], timeout_s: float, stage: str, empty_ok: bool = False) -> float:
    """Wait until blkfront has connected every vdev (its block device exists
    and reports a size, 0 too if `empty_ok`: a backend that says the disk
    has no sectors); return the seconds it took."""
    started = time.monotonic()
    deadline = started + timeout_s
    # The guest polls itself, every 0.1 s for up to 5 s per exchange: an
    # exchange with the guest costs about a second under TCG, and a
    # hostile-backend run attaches dozens of disks.
    names = " ".join(shlex.quote(v) for v in vdevs)
    zero = ";;" if empty_ok else "ok=0;;"
    # Shell builtins only in the loop (a fork costs the guest more).
    script = (f"i=0; while [ $i -lt 50 ]; do ok=1; for v in {names}; do s=; "
              "[ -r /sys/block/$v/size ] && read -r s < /sys/block/$v/size; "
              f"case \"$s\" in ''|*[!0-9]*) ok=0;; 0) {zero} esac; done; [ $ok = 1 ] && break; "
              "sleep 0.1; i=$((i + 1)); done; "
              + " ; ".join(f"cat /sys/block/{shlex.quote(v)}/size 2>/dev/null || echo missing" for v in vdevs))
    while True:
        res = guest.run(script, timeout_s=30)
        sizes = res.stdout.split()
        if len(sizes) == len(vdevs) and all(s.isdigit() and (empty_ok or int(s) > 0) for s in sizes):
            return time.monotonic() - started
        if time.monotonic() >= deadline:
            dm = guest.run("dmesg | grep -i -E 'blkfront|vbd|xen' | tail -n 15", timeout_s=30).stdout
            raise StageTimeout(f"stage '{stage}': blkfront did not connect {', '.join(vdevs)} within {timeout_s:.0f}s; "
                               f"guest log:\n{dm}\n")
        time.sleep(0.5)


def read_params(guest: HvmGuest, names: list[str]) -> dict[str, dict[str, str]]:
    """Each module's parameters as the running kernel holds them, for all of
    them in one exchange."""
    if not names:
        return {}
    script = " ; ".join(f"echo XR-MODULE {n} ; ( cd /sys/module/{n}/parameters 2>/dev/null && "
                        f"for p in *; do [ -f \"$p\" ] && echo \"$p=$(cat $p)\"; done )" for n in names)
    res = guest.run(script, timeout_s=30)
    out: dict[str, dict[str, str]] = {n: {} for n in names}
    current = None
    for line in res.stdout.splitlines():
        if line.startswith("XR-MODULE "):
            current = line.split(" ", 1)[1]
        elif current in out and "=" in line:
            k, v = line.split("=", 1)
            out[current][k] = v
    return out


def text_ranges(guest: HvmGuest, names: list[str]) -> dict[str, tuple[int, int]]:
    """Where each of `names` sits in the guest kernel (from /proc/modules):
    a guest that dies later is placed inside one of them, or outside."""
    res = guest.run("cat /proc/modules", timeout_s=30)
    return {n: r for n, r in guest_death.parse_proc_modules(res.stdout).items() if n in names}
