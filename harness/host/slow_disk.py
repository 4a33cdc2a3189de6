"""A slow block device in dom0: null_blk, memory-backed, each request
completed by a timer `latency_ms` after it arrived.

blkfront's queue stop and restart run only when a ring is full, and a ring
fills only while the backend holds its requests longer than the guest takes
to issue a ring's worth.  On a loop device over tmpfs blkback answers at
once, so whether a ring fills depends on how the host's threads happen to
be scheduled; behind a device that takes a fixed time per request it fills
on every run.  null_blk is in the stock kernel, configured through configfs
with writes to files: dom0 needs no extra tool.

Devices are named xrslow-<domid>-<vdev> after the guest they were made
for, so a device left by a killed run is found by the next one: it is
removed when no domain of that id exists any more and nothing holds the
device open (blkback claims it exclusively), so a device a live guest uses
(another job's, or this guest's after a restore gave it a new domain id)
is never touched.  The names are built from numbers and a checked vdev
only.
"""

from __future__ import annotations

import contextlib
import re
import shlex

from harness.errors import InfraError

CONFIGFS = "/sys/kernel/config"
NULLB = f"{CONFIGFS}/nullb"
PREFIX = "xrslow-"
_VDEV = re.compile(r"xvd[a-z]")

# null_blk's configfs knobs: irqmode 2 completes each request from a timer
# after completion_nsec; memory_backed keeps what is written (reads return
# it), so a slow disk is still a disk.
_TIMER = 2


def name_for(domid: int, vdev: str) -> str:
    if not isinstance(domid, int) or domid <= 0 or not _VDEV.fullmatch(vdev):
        raise ValueError(f"slow disk for domain {domid!r} and vdev {vdev!r}")
    return f"{PREFIX}{domid}-{vdev}"


def _sweep_script() -> str:
    """Remove the slow disks whose domain no longer exists and that nothing
    holds open.  A run that ends without detaching its slow vbd (a hang
    proven, a run that broke) leaves its disk to this sweep: on a nested
    stack the L0 VM goes with it anyway, on a real host the next run that
    makes a slow disk removes it."""
    return (f'for d in {NULLB}/{PREFIX}*; do [ -d "$d" ] || continue; '
            f'id=${{d##*/{PREFIX}}}; id=${{id%%-*}}; '
            'case "$id" in ""|*[!0-9]*) continue;; esac; '
            'xl list "$id" >/dev/null 2>&1 && continue; '
            # Open exclusively: fails while blkback (or anyone) holds it.
            'for n in "${d##*/}" "nullb$(cat "$d/index")"; do [ -b "/dev/$n" ] || continue; '
            'python3 -c "import os,sys; os.close(os.open(sys.argv[1], os.O_RDONLY | os.O_EXCL))" "/dev/$n" '
            '2>/dev/null || continue 2; done; '
            'echo 0 > "$d/power"; rmdir "$d"; done')


def create(xen, domid: int, vdev: str, size_mib: int, latency_ms: int, timeout_s: float = 60) -> tuple[str, str]:
    """Make the slow disk for `vdev` of guest `domid`: (its name, its /dev path)."""
    name = name_for(domid, vdev)
    if not (1 <= size_mib <= 4096 and 1 <= latency_ms <= 10_000):
        raise ValueError(f"slow disk of {size_mib} MiB and {latency_ms} ms")
    d = shlex.quote(f"{NULLB}/{name}")
    settings = [("size", size_mib), ("memory_backed", 1), ("irqmode", _TIMER),
                ("completion_nsec", latency_ms * 1_000_000), ("power", 1)]
    script = " && ".join([
        # nr_devices=0: loading the module must not make a device of its own.
        "modprobe null_blk nr_devices=0",
        f"(grep -qs ' {CONFIGFS} configfs ' /proc/mounts || mount -t configfs configfs {CONFIGFS})",
        "{ " + _sweep_script() + "; }",
        f"mkdir {d}",
        *[f"echo {value} > {d}/{key}" for key, value in settings],
        # Linux 6.0 on names the disk after its configfs directory; before,
        # nullb<index>.  Wait for whichever node appears.
        f"idx=$(cat {d}/index)",
        f"for i in $(seq 50); do for n in {shlex.quote(name)} nullb$idx; do "
        '[ -b "/dev/$n" ] && { echo "/dev/$n"; exit 0; }; done; sleep 0.2; done; exit 3',
    ])
    res = xen.run(script, timeout_s=timeout_s, what=f"creating the slow disk {name} (null_blk) in dom0")
    path = res.stdout.strip().splitlines()[-1] if res.stdout.strip() else ""
    if not res.ok or not re.fullmatch(r"/dev/[A-Za-z0-9-]{1,31}", path):
        # Nothing half-made stays; a removal that fails too must not hide why.
        with contextlib.suppress(InfraError):
            remove(xen, name)
        raise InfraError(f"dom0 could not make the slow disk {name} for {vdev} (exit {res.exit_status}): "
                         + (res.stderr or res.stdout).strip()[-300:],
                         hint="It needs null_blk (CONFIG_BLK_DEV_NULL_BLK) and configfs in dom0's kernel")
    return name, path


def remove(xen, name: str, timeout_s: float = 30) -> None:
    """Remove the slow disk `name` (nothing if there is none).  Only once
    its vbd is detached or its guest destroyed: blkback must have let go."""
    if not re.fullmatch(re.escape(PREFIX) + r"[0-9]{1,5}-xvd[a-z]", name):
        raise ValueError(f"not a slow disk's name: {name!r}")
    d = shlex.quote(f"{NULLB}/{name}")
    res = xen.run(f"[ -d {d} ] || exit 0; echo 0 > {d}/power && rmdir {d}", timeout_s=timeout_s)
    if not res.ok:
        raise InfraError(f"dom0 could not remove the slow disk {name}: " + (res.stderr or res.stdout).strip()[-300:])
