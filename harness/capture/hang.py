"""Is the guest's block I/O stuck?  A hang is a verdict about the subject,
not a harness timeout, so when a guest operation that waits on blkfront
runs out of time the harness asks dom0 (which still works when the guest's
agent is blocked) what the rings look like:

- each vbd's frontend and backend state in xenstore;
- the shared ring's indices, read from the ring page itself (dom0 maps the
  guest's ring grant with gntdev): req_prod, req_event, rsp_prod, rsp_event;
- blkback's request counters (phy backends);
- blk-mq's hardware queues in the guest (its debugfs, through the guest's
  agent, which answers while the I/O waits): which are stopped and which
  requests wait in their dispatch lists;
- the guest's blocked tasks (sysrq w, printed on its console).

Two samples a few seconds apart: stuck means no index and no counter moved
while requests are outstanding or a device never reached Connected, or a
hardware queue stayed stopped with requests waiting while its ring stayed
empty (blkfront stops a queue whose ring is full and must restart it when
responses free a slot: nothing else will).
"""

from __future__ import annotations

import re
import shlex
import struct
import time
from dataclasses import dataclass, field

from harness.capture import dom0_agent
from harness.checks import parsers
from harness.errors import XenrigError
from harness.guest import HvmGuest
from harness.host import XenHost

XENBUS_STATES = {1: "Initialising", 2: "InitWait", 3: "Initialised", 4: "Connected", 5: "Closing", 6: "Closed",
                 7: "Reconfiguring", 8: "Reconfigured"}


@dataclass
class RingSample:
    vdev: str
    frontend_state: str = "?"
    backend_state: str = "?"
    ring_ref: int | None = None
    indices: dict = field(default_factory=dict)     # req_prod, req_event, rsp_prod, rsp_event
    counters: dict = field(default_factory=dict)    # blkback statistics

    def key(self) -> tuple:
        return (self.frontend_state, self.backend_state, tuple(sorted(self.indices.items())),
                tuple(sorted(self.counters.items())))


@dataclass
class QueueSample:
    """One blk-mq hardware queue of a vbd, as the guest's debugfs shows it.
    `ring` is the name its ring has in the trace (xvda, or xvda/N with
    several queues: blkfront serves hardware queue N with ring N)."""
    ring: str
    hctx: int
    stopped: bool
    waiting: tuple[str, ...]        # requests in its dispatch list: "WRITE tag 12"


# What the guest prints is the subject's: taken only in these shapes.
_HCTX = re.compile(r"== (xvd[a-z])/hctx([0-9]{1,3})")
_STATE = re.compile(r"state ?([A-Z0-9_|]{0,256})")      # blk_flags_show: NAME|NAME
_RQ = re.compile(r"rq [0-9a-fx]{1,18} \{\.op=([A-Z_]{1,32}),.*\.tag=(-?[0-9]{1,9}),")
MAX_WAITING = 64


def queues(guest: HvmGuest, vdevs: list[str]) -> list[QueueSample] | None:
    """Each vbd's blk-mq hardware queues (None: the guest did not answer)."""
    globs = " ".join(f"{shlex.quote(v)}/hctx*" for v in vdevs)
    cmd = (f"cd /sys/kernel/debug/block 2>/dev/null || exit 0; for d in {globs}; do [ -d \"$d\" ] || continue; "
           f"echo \"== $d\"; echo \"state $(cat $d/state)\"; head -n {MAX_WAITING} $d/dispatch | sed 's/^/rq /'; done")
    try:
        out = guest.run(cmd, timeout_s=20).stdout
    except XenrigError:
        return None
    found: list[tuple[str, int, bool, list[str]]] = []
    for line in out.splitlines():
        if m := _HCTX.fullmatch(line):
            found.append((m.group(1), int(m.group(2)), False, []))
        elif found and (m := _STATE.fullmatch(line)):
            vdev, n, _, waiting = found[-1]
            found[-1] = (vdev, n, "STOPPED" in m.group(1).split("|"), waiting)
        elif found and (m := _RQ.match(line)) and len(found[-1][3]) < MAX_WAITING:
            found[-1][3].append(f"{m.group(1)} tag {m.group(2)}")
    per_vdev: dict[str, int] = {}
    for vdev, *_ in found:
        per_vdev[vdev] = per_vdev.get(vdev, 0) + 1
    return [QueueSample(vdev if per_vdev[vdev] == 1 else f"{vdev}/{n}", n, stopped, tuple(waiting))
            for vdev, n, stopped, waiting in found]


@dataclass
class HangReport:
    stuck: bool
    summary: str
    samples: list[RingSample]
    blocked_tasks: str = ""
    queues: list[QueueSample] = field(default_factory=list)
    # The rule the hang breaks: requests on a ring the backend never
    # answered, or a queue blkfront stopped and never restarted.
    rule: str = "blkif.hang"

    def evidence(self) -> str:
        lines = [self.summary]
        for s in self.samples:
            lines.append(f"{s.vdev}: frontend {s.frontend_state}, backend {s.backend_state}, ring-ref {s.ring_ref}, "
                         f"shared indices {s.indices or '(unreadable)'}, blkback counters {s.counters or '(none)'}")
        for q in self.queues:
            lines.append(f"{q.ring}: blk-mq hardware queue {q.hctx} {'STOPPED' if q.stopped else 'running'}, "
                         f"{len(q.waiting)} request(s) in its dispatch list {list(q.waiting[:8])}")
        if self.blocked_tasks:
            lines.append("guest blocked tasks (sysrq w):\n" + self.blocked_tasks)
        return "\n".join(lines)


def _state(xen: XenHost, path: str) -> str:
    res = xen.run(f"xenstore-read {shlex.quote(path + '/state')}", timeout_s=20)
    value = res.stdout.strip()
    return XENBUS_STATES.get(int(value), value) if value.isdigit() else "absent"


def _rings(xen: XenHost, fe: str) -> list[tuple[str, int | None]]:
    """(name suffix, first ring-ref) of each of the vbd's rings.

    One ring: `ring-ref` (one page) or `ring-ref0` (several) in the
    frontend's directory; several queues: the same under `queue-N/`.  All
    of it is written by the guest: counts and refs are taken only as
    bounded decimal numbers."""
    nq = xen.run(f"xenstore-read {shlex.quote(fe + '/multi-queue-num-queues')}", timeout_s=20).stdout.strip()
    count = parsers.bounded_decimal(nq, 1, parsers.MAX_QUEUES)
    if count is not None:
        dirs = [(f"/{q}", f"{fe}/queue-{q}") for q in range(count)]
    else:
        dirs = [("", fe)]
    rings = []
    for suffix, path in dirs:
        ref = xen.run(f"xenstore-read {shlex.quote(path + '/ring-ref')} 2>/dev/null || "
                      f"xenstore-read {shlex.quote(path + '/ring-ref0')}", timeout_s=20).stdout.strip()
        rings.append((suffix, parsers.bounded_decimal(ref, 0, 0xFFFFFFFF)))
    return rings


def _indices(xen: XenHost, guest: HvmGuest, ref: int) -> dict:
    """req_prod, req_event, rsp_prod, rsp_event from the ring's first page."""
    try:
        res = dom0_agent.run(xen, [{"op": "read_grant", "rdom": guest.domid, "ref": ref, "n": 16}], timeout_s=30)
    except XenrigError:
        return {}
    if not (res and res[0].get("ok")):
        return {}
    return dict(zip(("req_prod", "req_event", "rsp_prod", "rsp_event"),
                    struct.unpack("<4I", bytes.fromhex(res[0]["hex"]))))


def sample(xen: XenHost, guest: HvmGuest, vdevs: list[str]) -> list[RingSample]:
    """One sample per ring: `xvda` for a vbd with one ring, `xvda/0`,
    `xvda/1`, ... for one with several queues (blkback's counters are the
    vbd's, repeated on each of its rings)."""
    out = []
    for vdev in vdevs:
        devid = parsers.vdev_number(vdev)
        fe = f"/local/domain/{guest.domid}/device/vbd/{devid}"
        frontend_state = _state(xen, fe)
        # The guest can write its frontend's `backend` node: validate it.
        backend = parsers.backend_path(xen.run(f"xenstore-read {fe}/backend", timeout_s=20).stdout)
        backend_state = _state(xen, backend) if backend else "?"
        counters = {}
        stats = xen.run(f"cd /sys/bus/xen-backend/devices/vbd-{guest.domid}-{devid}/statistics 2>/dev/null && "
                        "grep -H . rd_req wr_req f_req oo_req 2>/dev/null", timeout_s=20).stdout
        for line in stats.splitlines():
            name, _, value = line.partition(":")
            if value.strip().isdigit():
                counters[name] = int(value)
        for suffix, ref in _rings(xen, fe):
            s = RingSample(vdev + suffix, frontend_state=frontend_state, backend_state=backend_state,
                           ring_ref=ref, counters=dict(counters))
            if ref is not None:
                s.indices = _indices(xen, guest, ref)
            out.append(s)
    return out


def blocked_tasks(xen: XenHost, guest: HvmGuest) -> str:
    """sysrq w in the guest (printed on its console whatever its log level)."""
    before = len(guest.console())
    xen.run(f"xl sysrq {guest.domid} w", timeout_s=20)
    time.sleep(3)
    return guest.console()[before:].strip()[-4000:]


def _unrestarted(second: list[RingSample], moved: list[str], before: list[QueueSample] | None,
                 after: list[QueueSample] | None) -> list[str]:
    """Queues stopped with requests waiting in both samples while their
    ring stayed empty: blkfront stopped them on a full ring and no restart
    came.  Other rings may still be busy: this one is stuck all the same."""
    if not before or not after:
        return []
    idle = {s.vdev: s.indices["req_prod"] for s in second
            if s.indices and s.indices["req_prod"] == s.indices["rsp_prod"] and s.vdev not in moved}
    earlier = {(q.ring, q.hctx): q for q in before}
    found = []
    for q in after:
        old = earlier.get((q.ring, q.hctx))
        if q.stopped and q.waiting and old is not None and old.stopped and old.waiting and q.ring in idle:
            found.append(f"{q.ring}: blk-mq hardware queue {q.hctx} stayed stopped with {len(q.waiting)} "
                         f"request(s) waiting ({q.waiting[0]} first) while its ring was empty "
                         f"(req_prod = rsp_prod = {idle[q.ring]}): blkfront never restarted the queue")
    return found


def examine(xen: XenHost, guest: HvmGuest, vdevs: list[str], interval_s: float = 5.0) -> HangReport:
    first = sample(xen, guest, vdevs)
    queues_first = queues(guest, vdevs)
    time.sleep(interval_s)
    second = sample(xen, guest, vdevs)
    # A guest whose agent did not answer once is not asked again (each ask waits out its timeout).
    queues_second = queues(guest, vdevs) if queues_first is not None else None
    moved = [a.vdev for a, b in zip(first, second) if a.key() != b.key()]
    unrestarted = _unrestarted(second, moved, queues_first, queues_second)
    waiting = list(unrestarted)
    for s in second:
        idx = s.indices
        if s.frontend_state == "absent":
            # No frontend directory at all: the toolstack removed the device
            # or the domain is gone; blkfront has nothing left to be stuck on.
            continue
        if s.frontend_state != "Connected" or s.backend_state != "Connected":
            waiting.append(f"{s.vdev} never connected (frontend {s.frontend_state}, backend {s.backend_state})")
        if idx and idx["req_prod"] != idx["rsp_prod"]:
            note = f"{s.vdev}: {idx['req_prod'] - idx['rsp_prod']} request(s) pushed and not answered"
            # RING_PUSH_REQUESTS_AND_CHECK_NOTIFY: the backend asked to be told
            # once req_prod reaches req_event.
            if (idx["req_prod"] - idx["req_event"]) & 0xFFFFFFFF < 0x80000000:
                note += (f"; the backend asked to be notified at req_event {idx['req_event']} "
                         f"and req_prod is {idx['req_prod']}: a notify was due")
            waiting.append(note)
    stuck = bool(unrestarted) or (not moved and bool(waiting))
    if unrestarted:
        summary = f"hang: over the {interval_s:.0f}s watch, " + "; ".join(unrestarted)
    elif stuck:
        summary = "hang: nothing moved in " + f"{interval_s:.0f}s; " + "; ".join(waiting)
    elif moved:
        summary = f"not stuck: {', '.join(moved)} made progress during the {interval_s:.0f}s watch"
    else:
        summary = "not stuck: no request outstanding and every device connected"
    report = HangReport(stuck, summary, second, queues=queues_second or [],
                        rule="blkif.queue-not-restarted" if unrestarted else "blkif.hang")
    if stuck:
        report.blocked_tasks = blocked_tasks(xen, guest)
    return report
