#!/usr/bin/env python3
"""xenrig's block hotplug script for a slow disk (harness/host/slow_disk.py).

It does for the kernel's blkback what the stock `block` script does for a
block device, `physical-device` (major:minor, which blkback opens) and
`physical-device-path`, and leaves out the stock script's sharing check.
That check refuses a device another domain has open for writing unless
both domains are the same VM by their xenstore `vm` path, and a local
`xl migrate` gives the receiving domain a path of its own: the receiving
domain could never open the slow disk the sending one still holds.  Only
slow disks pass (`/dev/xrslow-<domid>-<vdev>`, `/dev/nullbN` before 6.0), so the script
cannot be pointed at another device.

libxl runs it as `slowhotplug.py add|remove` with XENBUS_PATH set to the
backend's xenstore directory; a non-zero exit fails the attach with the
message written to `hotplug-error`.
"""

import os
import re
import stat
import subprocess
import sys

# Linux 6.0 on names a null_blk disk after its configfs directory, before
# nullb<index> (slow_disk.create).
DEVICE = re.compile(r"/dev/xrslow-[1-9][0-9]{0,4}-xvd[a-z]|/dev/nullb[0-9]{1,3}")


def xenstore(*args: str) -> str:
    return subprocess.run(["xenstore-" + args[0], *args[1:]], check=True, capture_output=True, text=True,
                          timeout=30).stdout.strip()


def add(base: str) -> None:
    path = xenstore("read", f"{base}/params")
    if not DEVICE.fullmatch(path):
        raise ValueError(f"{path!r} is not a slow disk of xenrig's (/dev/xrslow-<domid>-<vdev>)")
    st = os.stat(path)
    if not stat.S_ISBLK(st.st_mode):
        raise ValueError(f"{path} is not a block device")
    xenstore("write", f"{base}/physical-device", f"{os.major(st.st_rdev):x}:{os.minor(st.st_rdev):x}",
             f"{base}/physical-device-path", path)
    xenstore("write", f"{base}/hotplug-status", "connected")


def main(argv: list[str]) -> int:
    base = os.environ.get("XENBUS_PATH", "")
    if not re.fullmatch(r"backend/vbd/[0-9]+/[0-9]+|/local/domain/0/backend/vbd/[0-9]+/[0-9]+", base):
        print(f"slowhotplug: XENBUS_PATH {base!r} is not a vbd backend", file=sys.stderr)
        return 1
    if argv[1:2] != ["add"]:
        return 0            # remove: the slow disk is the harness's to remove
    try:
        add(base)
    except (OSError, ValueError, subprocess.SubprocessError) as exc:
        print(f"slowhotplug: {exc}", file=sys.stderr)
        subprocess.run(["xenstore-write", f"{base}/hotplug-error", str(exc)[:200], f"{base}/hotplug-status", "error"],
                       check=False, timeout=30)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
