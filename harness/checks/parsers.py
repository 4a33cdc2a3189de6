"""Parsers for what Xen and the guest print, kept apart from the checks so
they are unit-tested on captured text."""

from __future__ import annotations

import re
from dataclasses import dataclass

_HVM_RE = re.compile(r"HVM: (SVM|VMX) enabled")
_HAP_RE = re.compile(r"HVM: Hardware Assisted Paging \(HAP\) detected")


@dataclass
class XenHvmStatus:
    technology: str | None   # "SVM" | "VMX" | None
    hap: bool
    line: str | None


def xen_hvm_status(xl_dmesg: str) -> XenHvmStatus:
    m = _HVM_RE.search(xl_dmesg)
    line = None
    if m:
        start = xl_dmesg.rfind("\n", 0, m.start()) + 1
        end = xl_dmesg.find("\n", m.end())
        line = xl_dmesg[start:end if end >= 0 else None].strip()
    return XenHvmStatus(m.group(1) if m else None, bool(_HAP_RE.search(xl_dmesg)), line)


def pci_ids(listing: str) -> list[tuple[str, str, str]]:
    """Parse lines 'SLOT VENDOR DEVICE' (from sysfs, see checks.smoke) into
    (slot, vendor, device) with ids as lower-case hex without 0x."""
    out = []
    for line in listing.splitlines():
        parts = line.split()
        if len(parts) == 3:
            slot, ven, dev = parts
            out.append((slot, ven.lower().removeprefix("0x"), dev.lower().removeprefix("0x")))
    return out


def grant_table_version(dmesg: str) -> int | None:
    m = re.search(r"Grant tables using version (\d+) layout", dmesg)
    return int(m.group(1)) if m else None


def blkfront_features(dmesg: str) -> dict[str, dict[str, str]]:
    """'blkfront: xvda: flush diskcache: enabled; persistent grants: enabled; ...'
    -> {'xvda': {'flush diskcache': 'enabled', 'persistent grants': 'enabled', ...}}"""
    out: dict[str, dict[str, str]] = {}
    for m in re.finditer(r"blkfront: (xvd[a-z]+): (.*)", dmesg):
        feats = {}
        for item in m.group(2).split(";"):
            if ":" in item:
                k, v = item.split(":", 1)
                feats[k.strip()] = v.strip()
        out[m.group(1)] = feats
    return out


def vdev_number(vdev: str) -> int:
    """xvdX -> the Xen virtual device number as libxl writes it: major 202
    with 16 minors per disk for the first 16 disks (xvda..xvdp), the
    extended form (1 << 28 | disk << 8) from xvdq on, where 202's minors
    run out (blkfront refuses a 203 major: "your disk configuration is
    incorrect")."""
    index = 0
    for ch in vdev[3:]:
        index = index * 26 + (ord(ch) - ord("a") + 1)
    disk = index - 1
    return 202 * 256 + disk * 16 if disk < 16 else (1 << 28) | (disk << 8)


# A vbd's backend path as the toolstack writes it.  The guest can rewrite
# the `backend` node in its own frontend directory, so whatever it holds is
# checked against this shape before it goes near a shell in dom0.
BACKEND_PATH = re.compile(r"/local/domain/[0-9]{1,5}/backend/(vbd|qdisk|vbd3|xrvbd)/[0-9]{1,5}/[0-9]{1,9}")


def backend_path(value: str) -> str | None:
    """`value` if it is a well-formed vbd backend path, else None."""
    value = value.strip()
    return value if BACKEND_PATH.fullmatch(value) else None


# A vbd's queue count as blkfront writes it in xenstore: more than any
# frontend negotiates is the guest's noise.
MAX_QUEUES = 64


def bounded_decimal(text: str | None, lo: int, hi: int) -> int | None:
    """A decimal a guest wrote (xenstore), if it is one within lo..hi."""
    text = (text or "").strip()
    return int(text) if text.isdigit() and len(text) <= 10 and lo <= int(text) <= hi else None
