"""The model with one handler per event kind: the state of harness/model/state.py
and the handler sets that change it (the guest's grants, GNTTABOPs, the rings,
Xen's view at quiet points), merged into one dict keyed by the record's class.
The handlers are written for throughput: each does its checks inline and
raises `Divergence` (no cost when nothing is raised) on the first broken rule.
"""

from __future__ import annotations

from harness.check.xen_view import XenView
from harness.model.allocator import DEFERRED, HELD, LEAKED, UNKNOWN
from harness.model.constants import GNTTAB_NR_RESERVED_ENTRIES, GTF_readonly, GTF_type_mask
from harness.model.gnttab import Expect, expected_status
from harness.model.guest_grants import GuestGrantEvents
from harness.model.hypercall_events import HypercallEvents
from harness.model.negotiation import NegotiationEvents
from harness.model.resume_events import ResumeEvents
from harness.model.ring_events import RingEvents
from harness.model.state import DEFAULT_POLICY, ModelState
from harness.trace import schema as s
from harness.trace.schema import Event, Header

__all__ = ["Checker", "DEFAULT_POLICY"]


class Checker:
    """The model plus a handler per event kind."""

    def __init__(self, header: Header | None = None, policy: str | None = None,
                 series: bool = False):
        self.state = state = ModelState(header, policy)
        self.header, self.policy = state.header, state.policy
        self.hv, self.guests, self.rings, self.notes = state.hv, state.guests, state.rings, state.notes
        self.xen_view = XenView(state)
        self.series = ({"ring_occupancy": {}, "granted": {}, "mapped": {}, "table_frames": {}}
                       if series else None)
        self.handlers = {s.DomainDestroy: self.on_destroy}
        self.negotiation = NegotiationEvents(state)
        for part in (GuestGrantEvents(state), HypercallEvents(state), RingEvents(state),
                     self.negotiation, self.xen_view, ResumeEvents(state, self.xen_view.baseline)):
            self.handlers.update(part.handlers())
        self.xen_view.attach(self.handlers)
        missing = set(s.EVENT_TYPES) - set(self.handlers)
        assert not missing, missing

    @property
    def purged(self) -> int:
        """Inferred mappings a Xen dump showed gone (and the model forgot)."""
        return self.xen_view.purged

    def on_destroy(self, ev: s.DomainDestroy) -> None:
        self.hv.destroy(ev.rdom)
        self.guests.pop(ev.rdom, None)
        for name in [n for n, r in self.rings.items() if r.dom == ev.rdom]:
            del self.rings[name]

    # --- results

    def expected_status(self, op: str, caller: int, **inputs: int) -> Expect:
        """What Xen 4.17 answers this GNTTABOP now, in the state replayed so far."""
        return expected_status(self.hv, op, caller, **inputs)

    def ledger(self) -> dict:
        """Per guest: every entry granted and not ended, and who maps it."""
        out = {}
        for dom, guest in sorted(self.guests.items()):
            table, alloc = guest.table, guest.alloc
            rows = []
            for ref in range(table.capacity):
                if not table.flags[ref] & GTF_type_mask or ref < GNTTAB_NR_RESERVED_ENTRIES:
                    continue
                state = alloc.st[ref] if ref < len(alloc.st) else UNKNOWN
                rows.append({
                    "ref": ref, "to": table.gdom[ref], "frame": table.frame[ref],
                    "ro": bool(table.flags[ref] & GTF_readonly),
                    "state": {HELD: "granted", LEAKED: "leaked", DEFERRED: "deferred"}.get(state, "granted"),
                    "mapped_by": table.mapdom[ref] if table.pin[ref] else None,
                    "pin": table.pin[ref],
                    "inferred": table.soft.get(ref),
                })
            out[str(dom)] = {
                "nr_frames": alloc.nr_frames, "free_count": alloc.free_count(),
                "leaked": alloc.leaked_count, "deferred": alloc.deferred_count,
                "granted": rows,
            }
        return out

    def sample(self, ev: Event) -> None:
        """Time series for the report: ring occupancy and, per guest, entries granted,
        entries mapped (Xen's active entries) and table frames.  A point is added
        only when a value changes."""
        series = self.series
        assert series is not None
        t = ev.t_ns
        ring_name = getattr(ev, "ring", None)
        if ring_name is not None and ring_name in self.rings:
            _point(series["ring_occupancy"], ring_name, t, len(self.rings[ring_name].in_flight))
        doms = (ev.dom, getattr(ev, "rdom", ev.dom))
        for dom in doms if doms[0] != doms[1] else doms[:1]:
            guest = self.guests.get(dom)
            if guest is None:
                continue
            key = str(dom)
            _point(series["granted"], key, t, guest.granted)
            _point(series["mapped"], key, t, guest.table.mapped)
            if guest.table.nr_frames is not None:
                _point(series["table_frames"], key, t, guest.table.nr_frames)


def _point(series: dict, key: str, t: int, value: int) -> None:
    points = series.setdefault(key, [])
    if not points or points[-1][1] != value:
        points.append((t, value))
