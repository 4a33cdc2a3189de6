"""The blkif rings: set-up, connect, requests, pushes, responses, disconnect;
the requests' grants are checked against the guest's table and held until
the frontend ends them (harness/model/ring.py and blkif.py hold the rules)."""

from __future__ import annotations

from harness.model.blkif import check_grants, check_response, parse_request
from harness.model.constants import GTF_permit_access, GTF_readonly, GTF_type_mask, RING_IDX_MASK
from harness.model.negotiation import check_request
from harness.model.resume_events import reissued
from harness.model.ring import FrontRing, Request, blkif_ring_entries
from harness.model.rules import Divergence
from harness.model.state import Guest, ModelState
from harness.trace import schema as s


class RingEvents:
    """Handlers of the ring.* and blkif.* events."""

    def __init__(self, state: ModelState):
        self.state = state
        self.hv = state.hv
        self.guests = state.guests
        self.rings = state.rings
        self.all_rings = state.all_rings
        self.guest = state.guest
        self.ring = state.ring
        self.seed = state.seed
        self.captured = state.captured

    def handlers(self) -> dict:
        return {
            s.RingSetup: self.on_ring_setup,
            s.BlkifConnect: self.on_connect,
            s.BlkifReq: self.on_req,
            s.RingPush: self.on_push,
            s.BlkifRsp: self.on_rsp,
            s.RingRspPush: self.on_rsp_push,
            s.BlkifDisconnect: self.on_disconnect,
            s.RingFree: self.on_ring_free,
        }

    def on_ring_setup(self, ev: s.RingSetup) -> None:
        guest = self.guest(ev.dom)
        self.hv.add_domain(ev.backend)
        table = guest.table
        old = self.rings.get(ev.ring)
        if old is not None and old.connected:
            raise Divergence("ring.setup", f"ring {ev.ring} set up again while connected", state=old.state())
        want = blkif_ring_entries(len(ev.grefs))
        if ev.nr_ents != want:
            raise Divergence("ring.setup", f"ring {ev.ring} on {len(ev.grefs)} page(s) with nr_ents "
                             f"{ev.nr_ents}; __RING_SIZE gives {want}", expected=want,
                             actual=ev.nr_ents, state={"ring": ev.ring})
        for gref in ev.grefs:
            if gref >= table.capacity:
                raise Divergence("ring.setup", f"ring page gref {gref} is outside the table",
                                 state={"ring": ev.ring})
            flags = table.flags[gref]
            if not table.known[gref] and not flags:
                continue
            if (flags & GTF_type_mask) != GTF_permit_access or table.gdom[gref] != ev.backend \
                    or flags & GTF_readonly:
                raise Divergence("ring.setup", f"ring page gref {gref} is not granted writable to the "
                                 f"backend d{ev.backend} (xenbus_grant_ring)",
                                 state={"ring": ev.ring, "gref": table.entry_state(gref)})
        ring = self.rings[ev.ring] = FrontRing(ev.ring, ev.dom, ev.backend, ev.grefs, ev.nr_ents,
                                                 ev.start & RING_IDX_MASK)
        self.all_rings.append(ring)

    def on_connect(self, ev: s.BlkifConnect) -> None:
        ring = self.ring(ev.ring)
        ring.connected = True
        ring.persistent = ev.persistent
        ring.max_indirect = ev.max_indirect
        if not self.captured:
            table = self.guests[ring.dom].table
            for gref in ring.grefs:
                table.pin_soft(gref, ring.backend, "ring")
                table.soft[gref] = "ring"

    def on_req(self, ev: s.BlkifReq) -> None:
        ring = self.rings.get(ev.ring)
        if ring is None:
            ring = self.ring(ev.ring)
        if ring.pending_n:
            self._not_ended(ring)
        id = ev.id
        ring.check_request_slot(ev.idx, id)
        op, data, indirect = parse_request(ring, id, ev.op, ev.segs, ev.indirect_op,
                                           ev.nr_segments, ev.indirect_grefs)
        if ring.negotiated is not None:
            check_request(ring, ring.negotiated, id, ev.op,
                          ev.nr_segments if ev.nr_segments is not None else len(ev.segs))
        guest = self.guests[ring.dom]
        check_grants(guest.table, guest.alloc, ring, id, op, data, indirect, self.seed)
        grefs = data + indirect
        uses = guest.uses
        owner = guest.owner
        for gref in grefs:
            uses[gref] += 1
            owner[gref] = ring
        ring.add_request(Request(id, ev.idx, op, grefs, ev))
        if self.state.reissue_owed:
            reissued(self.state, ev)

    def on_push(self, ev: s.RingPush) -> None:
        ring = self.ring(ev.ring)
        if ring.pending_n:
            self._not_ended(ring)
        ring.push(ev.old, ev.new, ev.notify, ev.req_event)

    def on_rsp(self, ev: s.BlkifRsp) -> None:
        ring = self.rings.get(ev.ring)
        if ring is None:
            ring = self.ring(ev.ring)
        if ring.pending_n:
            self._not_ended(ring)
        request = ring.take_response(ev.idx, ev.id)
        check_response(ring, request, ev.op, ev.status)
        guest = self.guests[ring.dom]
        uses = guest.uses
        pending = guest.pending
        grefs = request.grefs
        for gref in grefs:
            uses[gref] -= 1
            pending[gref] = ring
        # (nothing was pending on this ring: checked above)
        ring.pending_n = len(set(grefs)) if grefs else 0
        ring.last_answered = request.id

    def on_rsp_push(self, ev: s.RingRspPush) -> None:
        self.ring(ev.ring).response_push(ev.old, ev.new, ev.notify, ev.rsp_event)

    def on_disconnect(self, ev: s.BlkifDisconnect) -> None:
        self._let_go(self.ring(ev.ring))

    def _let_go(self, ring: FrontRing) -> None:
        guest = self.guests[ring.dom]
        ring.connected = False
        # Requests in flight are abandoned; blkfront ends their grants itself.
        for request in ring.in_flight.values():
            for gref in request.grefs:
                guest.uses[gref] -= 1
        ring.in_flight.clear()
        ring.unpublished.clear()
        self._clear_pending(guest, ring)
        if not self.captured:
            # The backend is letting go of the ring and its persistent grants
            # (blkback unmaps them in xen_blkif_disconnect, once the frontend
            # reaches Closed): from now on they may or may not still be mapped.
            table = guest.table
            for gref, why in table.soft.items():
                if why in ("ring", "persistent") and table.mapdom[gref] == ring.backend:
                    table.soft[gref] = "disconnecting"

    def on_ring_free(self, ev: s.RingFree) -> None:
        """blkif_free_ring: the frontend tears the ring down (device removed,
        module unloaded, ring re-made).  From here it must end every grant
        the ring holds: its ring pages, its persistent grants, and the grants
        of requests still in flight (blkfront ends those too).  What it has
        not ended by the next quiet point is a leak (harness/check/xen_view)."""
        ring = self.ring(ev.ring)
        if ring.freed:
            raise Divergence("ring.free", f"ring {ev.ring} torn down twice", state=ring.state())
        guest = self.guests[ring.dom]
        if ring.connected:
            self._let_go(ring)
        else:
            self._clear_pending(guest, ring)
        ring.freed = True
        flags, owed, owner, wiped = guest.flags, guest.owed, guest.owner, guest.wiped
        for gref in ring.grefs:
            if gref < len(flags) and (flags[gref] & GTF_type_mask or gref in wiped):
                owed[gref] = ring
        for gref, who in enumerate(owner):
            if who is ring:
                owner[gref] = None
                if flags[gref] & GTF_type_mask or gref in wiped:
                    owed[gref] = ring

    @staticmethod
    def _clear_pending(guest: Guest, ring: FrontRing) -> None:
        pending = guest.pending
        for gref, owner in enumerate(pending):
            if owner is ring:
                pending[gref] = None
        ring.pending_n = 0

    def _not_ended(self, ring: FrontRing) -> None:
        pending = self.guests[ring.dom].pending
        grefs = [gref for gref, owner in enumerate(pending) if owner is ring]
        raise Divergence("blkif.grant-not-ended", f"the frontend went on without trying to end gref "
                         f"{grefs[0]} of answered request {ring.last_answered}",
                         state={**ring.state(), "grefs_not_ended": grefs})
