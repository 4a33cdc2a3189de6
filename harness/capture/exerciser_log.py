"""The exerciser's log lines (docs/exerciser.md) that report hypercalls,
as `gnttab.*` trace events of the guest.

The exerciser's grant-API calls (alloc, grant, end, ...) are not taken from
its log: the tracer module records those for every caller alike.  Only the
GNTTABOPs it issues itself come from here.
"""

from __future__ import annotations

import json

DOMID_SELF = 0x7FF0


def _query(line: dict, rdom: int, guest: int, t_ns: int, rc_key="rc", status_key="status") -> dict:
    ev = {"t_ns": t_ns, "dom": guest, "src": "guest", "kind": "gnttab.query_size", "rdom": rdom,
          "status": line[status_key], "rc": line[rc_key]}
    if line[rc_key] == 0 and line[status_key] == 0:
        ev.update(nr_frames=line["nr_frames"], max_nr_frames=line["max_nr_frames"])
    return ev


def to_events(line: dict, guest: int) -> list[dict]:
    op, t = line.get("op"), line.get("t_ns", 0)
    if line.get("reason") or "rc" not in line and op not in ("frames",):
        return []   # refused by the module before any hypercall, or no hypercall
    dom = line.get("dom", DOMID_SELF)
    if op == "query_size":
        return [_query(line, dom, guest, t)]
    if op in ("exhaust_grow", "exhaust"):
        return [_query(line, DOMID_SELF, guest, t)] if "status" in line else []
    if op == "setup_table":
        return [{"t_ns": t, "dom": guest, "src": "guest", "kind": "gnttab.setup_table", "rdom": dom,
                 "nr_frames": line["nr_frames"], "status": line["status"], "rc": line["rc"]}]
    if op == "get_version":
        ev = {"t_ns": t, "dom": guest, "src": "guest", "kind": "gnttab.get_version", "rdom": dom, "rc": line["rc"]}
        if line["rc"] == 0:
            ev["version"] = line["version"]
        return [ev]
    if op == "set_version":
        ev = {"t_ns": t, "dom": guest, "src": "guest", "kind": "gnttab.set_version",
              "version": line["version_requested"], "rc": line["rc"]}
        if line["rc"] == 0:
            ev["out_version"] = line["version"]
        return [ev]
    if op == "frames" and "status" in line:
        out = [_query(line, DOMID_SELF, guest, t)]
        if "setup_status" in line and line.get("nr_frames") is not None:
            out.append({"t_ns": t, "dom": guest, "src": "guest", "kind": "gnttab.setup_table", "rdom": DOMID_SELF,
                        "nr_frames": line["nr_frames"], "status": line["setup_status"], "rc": line["setup_rc"]})
        return out
    return []


def parse(text: str) -> list[dict]:
    out = []
    for raw in text.splitlines():
        raw = raw.strip()
        if raw:
            try:
                out.append(json.loads(raw))
            except ValueError:
                raise ValueError(f"the exerciser log has a line that is not JSON: {raw[:200]!r}") from None
    return out
