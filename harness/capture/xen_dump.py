"""Xen's own view of grant tables: `xl debug-keys g` output in `xl dmesg`,
parsed into `xen.gnttab` trace events (one per domain).

The dump lists, per domain, its table size and each entry another domain
has mapped right now (active entries), not every granted entry.  A line:

    (XEN) [0x009]      0 0xbcec9 0x00000001          0 0x002ec9 0x19
           ref  mapping dom  mfn  pin        entry's dom  gfn    flags
"""

from __future__ import annotations

import re

_START = "gnttab_usage_print_all [ key 'g' pressed"
_END = "gnttab_usage_print_all ] done"
_DOMAIN = re.compile(r"grant-table for remote d(\d+) \(v(\d+)\)")
_SIZE = re.compile(r"(\d+) frames \((\d+) max\)")
_ENTRY = re.compile(r"\[0x([0-9a-f]+)\]\s+(\d+)\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)\s+(\d+)\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)")


class DumpParseError(ValueError):
    pass


def complete(text: str) -> bool:
    """`text` holds a whole dump: a start marker and an end marker after it."""
    start = text.rfind(_START)
    return start >= 0 and text.find(_END, start) > start


def last_dump(dmesg: str) -> str:
    """The text of the newest complete dump in `dmesg`."""
    end = dmesg.rfind(_END)
    start = dmesg.rfind(_START, 0, end if end >= 0 else None)
    if start < 0 or end < 0:
        raise DumpParseError("xl dmesg holds no complete 'xl debug-keys g' dump")
    return dmesg[start:end]


def parse(dump: str) -> dict[int, dict]:
    """{domid: {rdom, version, nr_frames, max_frames, entries: [...]}}"""
    out: dict[int, dict] = {}
    current = None
    for line in dump.splitlines():
        m = _DOMAIN.search(line)
        if m:
            current = {"rdom": int(m.group(1)), "version": int(m.group(2)), "nr_frames": None,
                       "max_frames": None, "entries": []}
            out[current["rdom"]] = current
            continue
        if current is None:
            continue
        m = _SIZE.search(line)
        if m and current["nr_frames"] is None:
            current["nr_frames"], current["max_frames"] = int(m.group(1)), int(m.group(2))
            continue
        m = _ENTRY.search(line)
        if m:
            ref, mapdom, _mfn, pin, gdom, frame, flags = m.groups()
            current["entries"].append({"ref": int(ref, 16), "mapdom": int(mapdom), "pin": int(pin, 16),
                                       "gdom": int(gdom), "frame": int(frame, 16), "flags": int(flags, 16)})
    for dom in out.values():
        if dom["nr_frames"] is None:
            raise DumpParseError(f"the dump of d{dom['rdom']} has no 'N frames (M max)' line")
    return out


def events(dump: str, domains: list[int], t_ns: int) -> list[dict]:
    """xen.gnttab events (without seq) for the given domains."""
    parsed = parse(dump)
    out = []
    for domid in domains:
        if domid not in parsed:
            raise DumpParseError(f"the dump has no grant table for d{domid}")
        d = parsed[domid]
        out.append({"t_ns": t_ns, "dom": 0, "src": "xen", "kind": "xen.gnttab", "rdom": domid,
                    "nr_frames": d["nr_frames"], "max_frames": d["max_frames"], "entries": d["entries"]})
    return out
