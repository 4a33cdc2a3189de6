"""The model's state while a trace replays: Xen's grant tables, each guest's
allocator and the grants its requests hold, the rings.  The event handlers
(guest_grants, hypercall_events, ring_events, and harness/check/xen_view)
each hold this one state and change it in place; they alias its dicts and
lists for speed, so those are never rebound.
"""

from __future__ import annotations

from harness.model.allocator import HELD, UNKNOWN, GuestAllocator
from harness.model.constants import DEFAULT_MAX_GRANT_FRAMES
from harness.model.gnttab import DomainFacts, GrantTable, Hypervisor
from harness.model.ring import FrontRing
from harness.model.rules import Divergence
from harness.trace.schema import Header

DEFAULT_POLICY = "linux-6.1"

# Soft (inferred) mappings the model insists on at a quiet point; the others
# may have gone without an event (blkback purges persistent grants).
REQUIRED_SOFT = {"ring", "reserved"}
# Allocator states in which the guest may end a grant it made.
ENDABLE = (HELD, UNKNOWN)


class Guest:
    """Per guest domain: its table, its allocator, the grants requests hold."""

    __slots__ = ("dom", "table", "alloc", "uses", "pending", "granted", "flags", "gdom", "frame",
                 "pin", "st", "owner", "owed", "wiped")

    def __init__(self, dom: int, table: GrantTable, alloc: GuestAllocator):
        self.dom = dom
        self.table = table
        self.alloc = alloc
        # The per-ref arrays the hottest handlers touch, one hop closer (the
        # table and the allocator only ever change them in place).
        self.flags = table.flags
        self.gdom = table.gdom
        self.frame = table.frame
        self.pin = table.pin
        self.st = alloc.st
        # Indexed by gref (lists grow with the table; faster than dicts here):
        self.uses: list[int] = table.side_array(0)  # in-flight requests using it
        self.pending: list[FrontRing | None] = table.side_array(None)  # ring awaiting its end
        self.owner: list[FrontRing | None] = table.side_array(None)  # ring whose request last used it
        # gref -> the torn-down ring whose grant it is and that has not ended
        # it yet (ring.free): at the next quiet point each one left is a leak.
        self.owed: dict[int, FrontRing] = {}
        self.granted = 0  # entries granted and not ended
        # Refs Linux held granted when the guest resumed in a new domain
        # (guest.resume): Xen's entry is zero, Linux still owes their end.
        self.wiped: set[int] = set()

    def reset_requests(self) -> None:
        self.uses[:] = [0] * len(self.uses)
        self.pending[:] = [None] * len(self.pending)
        self.owner[:] = [None] * len(self.owner)


class ModelState:
    """What the handlers share, built from the trace's header."""

    def __init__(self, header: Header | None = None, policy: str | None = None):
        header = header or Header(v=1)
        self.header = header
        self.policy = policy or header.policy or DEFAULT_POLICY
        self.seed = self.policy == "seed"
        self.captured = header.mappings == "captured"
        self.exact_pins = header.backend in (None, "blkback")
        facts = {}
        for info in header.domains:
            facts[info.domid] = DomainFacts(info.domid, hvm=info.type == "hvm",
                                            privileged=info.privileged,
                                            max_grant_frames=info.max_grant_frames,
                                            max_version=info.max_version)
        self.hv = Hypervisor(facts, {int(d): set(g) for d, g in header.bad_gfns.items()},
                             header.max_grant_frames or DEFAULT_MAX_GRANT_FRAMES)
        for dom in (header.guest, header.backend_dom):
            if dom is not None:
                self.hv.add_domain(dom)
        self.guests: dict[int, Guest] = {}
        self.rings: dict[str, FrontRing] = {}
        # Every ring ever set up, also those torn down or set up again under
        # the same name: the fullest each name got is the run's reach.
        self.all_rings: list[FrontRing] = []
        # Reads and writes in flight at a resume, not yet issued again
        # (harness/model/resume_events.py).
        self.reissue_owed: list = []
        self.notes: list[str] = []
        self.query_failed: set[int] = set()  # guests whose own query_size failed

    def guest(self, dom: int) -> Guest:
        guest = self.guests.get(dom)
        if guest is None:
            table = self.hv.table(dom)
            guest = self.guests[dom] = Guest(dom, table, GuestAllocator(self.policy, table))
        return guest

    def fullest(self) -> dict[str, dict[str, int]]:
        """Per ring name: the most requests in flight at once and the ring's
        slots (of its fullest life, when it was set up more than once)."""
        out: dict[str, dict[str, int]] = {}
        for ring in self.all_rings:
            seen = out.get(ring.name)
            if seen is None or ring.peak > seen["peak"]:
                out[ring.name] = {"peak": ring.peak, "slots": ring.nr_ents}
        return out

    def ring(self, name: str) -> FrontRing:
        ring = self.rings.get(name)
        if ring is None:
            raise Divergence("ring.not-connected", f"ring {name!r} was never set up",
                             state={"rings": sorted(self.rings)})
        return ring

    def ring_using(self, guest: Guest, gref: int) -> FrontRing:
        for ring in self.rings.values():
            if ring.dom == guest.dom and any(gref in r.grefs for r in ring.in_flight.values()):
                return ring
        raise AssertionError("busy gref without a ring")
