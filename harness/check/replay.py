"""Replay a trace through the model: the first divergence, or PASS.

`Checker` holds the model (Xen's grant tables, each guest's allocator, the
rings) and one handler per event kind, found through a dict keyed by the
record's class; `replay` runs events held in memory, `check_file` streams a
JSONL file block by block.  The handlers are written for throughput: a
handler does its checks inline and raises `Divergence` (no cost when nothing
is raised) on the first broken rule.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable
from pathlib import Path

import msgspec

from harness.model.allocator import DEFERRED, FREE, HELD, LEAKED, UNKNOWN, GuestAllocator
from harness.model.blkif import check_grants, check_response, parse_request
from harness.model.constants import (
    DEFAULT_MAX_GRANT_FRAMES, DOMID_SELF, GNTPIN_writable_mask, GNTST_okay, GNTTAB_LIST_END,
    GNTTAB_NR_RESERVED_ENTRIES, GTF_permit_access, GTF_readonly, GTF_type_mask,
    INITIAL_NR_GRANT_FRAMES, LEGACY_MAX_GRANT_FRAMES, RING_IDX_MASK,
)
from harness.model.gnttab import DomainFacts, Expect, GrantTable, Hypervisor, expected_status
from harness.model.ring import FrontRing, Request, blkif_ring_entries
from harness.model.rules import RULES, Divergence, Unsupported
from harness.trace import schema as s
from harness.trace.io import BLOCK_BYTES, TraceFormatError, TraceReader, gc_paused
from harness.trace.schema import Event, Header
from harness.check.verdict import ERROR, FAIL, PASS, Divergent, Verdict

DEFAULT_POLICY = "linux-6.1"
CONTEXT_EVENTS = 5

# Soft (inferred) mappings the model insists on at a quiet point; the others
# may have gone without an event (blkback purges persistent grants).
_REQUIRED_SOFT = {"ring", "reserved"}
# Allocator states in which the guest may end a grant it made.
_ENDABLE = (HELD, UNKNOWN)


class Guest:
    """Per guest domain: its table, its allocator, the grants requests hold."""

    __slots__ = ("dom", "table", "alloc", "uses", "pending", "granted", "flags", "gdom", "frame",
                 "pin", "st")

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
        self.granted = 0  # entries granted and not ended

    def reset_requests(self) -> None:
        self.uses[:] = [0] * len(self.uses)
        self.pending[:] = [None] * len(self.pending)


class TraceOrderError(Exception):
    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class Checker:
    """The model plus a handler per event kind."""

    def __init__(self, header: Header | None = None, policy: str | None = None,
                 series: bool = False):
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
        self.notes: list[str] = []
        self.purged = 0
        self.query_failed: set[int] = set()  # guests whose own query_size failed
        self.series = ({"ring_occupancy": {}, "granted": {}, "mapped": {}, "table_frames": {}}
                       if series else None)
        self.handlers = {
            s.GntSetup: self.on_setup, s.GntAlloc: self.on_alloc, s.GntClaim: self.on_claim,
            s.GntRelease: self.on_release, s.GntFree: self.on_free,
            s.GntFreeChain: self.on_free_chain, s.GntGrant: self.on_grant, s.GntEnd: self.on_end,
            s.GntDeferredEnd: self.on_deferred_end, s.GntExpand: self.on_expand,
            s.GntCbRequest: self.on_cb_request, s.GntCbFire: self.on_cb_fire,
            s.GntCbCancel: self.on_cb_cancel, s.ToolstackGrant: self.on_toolstack_grant,
            s.OpQuerySize: self.on_query_size, s.OpSetupTable: self.on_setup_table,
            s.OpMap: self.on_map, s.OpUnmap: self.on_unmap, s.OpCopy: self.on_copy,
            s.OpTransfer: self.on_transfer, s.OpSetVersion: self.on_set_version,
            s.OpGetVersion: self.on_get_version,
            s.RingSetup: self.on_ring_setup, s.BlkifConnect: self.on_connect,
            s.BlkifReq: self.on_req, s.RingPush: self.on_push, s.BlkifRsp: self.on_rsp,
            s.RingRspPush: self.on_rsp_push, s.BlkifDisconnect: self.on_disconnect,
            s.XenGnttab: self.on_dump, s.DomainDestroy: self.on_destroy,
        }
        missing = set(s.EVENT_TYPES) - set(self.handlers)
        assert not missing, missing

    # --- helpers

    def guest(self, dom: int) -> Guest:
        guest = self.guests.get(dom)
        if guest is None:
            table = self.hv.table(dom)
            guest = self.guests[dom] = Guest(dom, table, GuestAllocator(self.policy, table))
        return guest

    def ring(self, name: str) -> FrontRing:
        ring = self.rings.get(name)
        if ring is None:
            raise Divergence("ring.not-connected", f"ring {name!r} was never set up",
                             state={"rings": sorted(self.rings)})
        return ring

    # --- guest grant-table side

    def on_setup(self, ev: s.GntSetup) -> None:
        guest = self.guest(ev.dom)
        xen_max = guest.table.max_frames
        if ev.dom in self.query_failed:
            # __max_nr_grant_frames: "Legacy max supported number of frames"
            xen_max = LEGACY_MAX_GRANT_FRAMES
        if ev.nr_frames != INITIAL_NR_GRANT_FRAMES:
            raise Divergence("gnt.setup", f"the guest table starts with {ev.nr_frames} frames; both "
                             "policies start with 1", expected=INITIAL_NR_GRANT_FRAMES,
                             actual=ev.nr_frames, state={"dom": ev.dom})
        if xen_max is not None and ev.max_frames != xen_max:
            raise Divergence("gnt.setup", f"the guest assumes at most {ev.max_frames} frames; Xen "
                             f"gives d{ev.dom} {xen_max}", expected=xen_max, actual=ev.max_frames,
                             state={"dom": ev.dom})
        guest.alloc.setup(ev.nr_frames, ev.max_frames)
        guest.reset_requests()
        guest.granted = 0

    def on_alloc(self, ev: s.GntAlloc) -> None:
        self.guest(ev.dom).alloc.alloc(ev.count, ev.head)

    def on_claim(self, ev: s.GntClaim) -> None:
        try:
            alloc = self.guests[ev.dom].alloc
        except KeyError:
            alloc = self.guest(ev.dom).alloc
        # GuestAllocator.claim's common case, inlined: a third of all events
        # in block I/O are claims.
        head = ev.head
        heads = alloc.chain_heads
        if ev.ref == head and head in heads and not alloc.due:
            heads.remove(head)
            nxt = alloc.chain_next.pop(head, GNTTAB_LIST_END)
            if nxt != GNTTAB_LIST_END:
                heads.add(nxt)
            alloc.st[head] = HELD
        else:
            alloc.claim(head, ev.ref)
        if ev.ref >= 0:
            # A ref handed out by the allocator has an empty entry (its last
            # grant was ended before it was freed): even in a trace that began
            # after boot, Xen's answers about it are now predictable.
            table = self.hv.table(ev.dom)
            if ev.ref < table.capacity and not table.known[ev.ref]:
                table.known[ev.ref] = 1

    def on_release(self, ev: s.GntRelease) -> None:
        self.guest(ev.dom).alloc.release(ev.head, ev.ref)

    def on_free(self, ev: s.GntFree) -> None:
        self.guest(ev.dom).alloc.free_ref(ev.ref)

    def on_free_chain(self, ev: s.GntFreeChain) -> None:
        self.guest(ev.dom).alloc.free_chain(ev.head)

    def on_grant(self, ev: s.GntGrant) -> None:
        try:
            guest = self.guests[ev.dom]
        except KeyError:
            guest = self.guest(ev.dom)
        alloc = guest.alloc
        ref = ev.ref
        if ev.alloc:
            alloc.alloc_one(ref)
            if ref < 0:
                return
        elif ref < GNTTAB_NR_RESERVED_ENTRIES or alloc.due or guest.st[ref] != HELD:
            alloc.check_grantable(ref)  # every other case, with its rules
        flags = guest.flags
        if flags[ref] & GTF_type_mask:
            raise Divergence("gnt.regrant-active", f"ref {ref} granted to d{ev.to} while its grant to "
                             f"d{guest.gdom[ref]} was never ended", state=guest.table.entry_state(ref))
        flags[ref] = GTF_permit_access | GTF_readonly if ev.ro else GTF_permit_access
        guest.gdom[ref] = ev.to
        guest.frame[ref] = ev.frame
        if not alloc.exact:
            guest.table.known[ref] = 1  # (an exact allocator's entries are all known)
        guest.granted += 1

    def on_end(self, ev: s.GntEnd) -> None:
        try:
            guest = self.guests[ev.dom]
        except KeyError:
            guest = self.guest(ev.dom)
        alloc = guest.alloc
        if alloc.due:
            alloc.begin("gnt.end")
        ref = ev.ref  # unsigned: checked when decoded
        flags_list = guest.flags
        try:
            flags = flags_list[ref]
        except IndexError:
            raise Divergence("gnt.end-not-granted", f"end of access to ref {ref}, outside the table",
                             actual=ref, state={"ref": ref}) from None
        st = guest.st
        table = guest.table
        if not flags & GTF_type_mask or st[ref] not in _ENDABLE:
            if table.known[ref]:
                raise Divergence("gnt.end-not-granted", f"end of access to ref {ref}, which is not "
                                 f"granted ({alloc._describe(ref)})", state=table.entry_state(ref))
            table.known[ref] = 1  # granted before the trace began: learn from here
        if guest.uses[ref]:
            ring = self._ring_using(guest, ref)
            raise Divergence("blkif.grant-ended-early", f"end of access to gref {ref} while a request "
                             "using it is in flight", state={**ring.state(), "gref": table.entry_state(ref)})
        pending = guest.pending
        ring = pending[ref]
        if ring is not None:
            pending[ref] = None
            ring.pending_n -= 1
        if ev.ok:
            if guest.pin[ref]:
                self._ended(table, ref, "end of access")
            flags_list[ref] = 0
            if flags & GTF_type_mask:
                guest.granted -= 1
            if ev.mode != "ref":  # GuestAllocator.ended, inlined
                st[ref] = FREE
                alloc.free.appendleft(ref)
                if alloc.callbacks:
                    alloc._check_callbacks()
            return
        # Still in use: some domain has it mapped.
        if ring is not None and (self.seed or not ring.persistent):
            raise Divergence("blkif.kept-mapped", f"gref {ref} is still mapped after the response to its "
                             f"request; without persistent grants the backend unmaps before responding",
                             state={**ring.state(), "gref": table.entry_state(ref)})
        if not table.pin[ref]:
            if self.captured:
                raise Divergence("gnt.end-busy-unmapped", f"end of access to ref {ref} reported 'still in "
                                 "use', but no domain has it mapped", state=table.entry_state(ref))
            if ring is not None:
                table.pin_soft(ref, ring.backend, "persistent")
            else:
                table.pin_soft(ref, table.gdom[ref], "observed", bool(flags & GTF_readonly))
        alloc.end_failed(ref, ev.mode)

    def on_deferred_end(self, ev: s.GntDeferredEnd) -> None:
        guest = self.guest(ev.dom)
        table = guest.table
        ref = ev.ref
        guest.alloc.deferred_end(ref, ev.ok)
        if ev.ok:
            self._ended(table, ref, "deferred end")
            guest.granted -= 1
        elif not table.pin[ref] and self.captured:
            raise Divergence("gnt.end-busy-unmapped", f"deferred end of ref {ref} failed, but no domain "
                             "has it mapped", state=table.entry_state(ref))

    @staticmethod
    def _ended(table: GrantTable, ref: int, what: str) -> None:
        """The guest's cmpxchg of the flags to 0 succeeded: nothing may map it."""
        if table.pin[ref]:
            why = table.soft.get(ref)
            if why is None or why in _REQUIRED_SOFT:
                raise Divergence("gnt.end-while-mapped", f"{what} of ref {ref} succeeded while "
                                 f"d{table.mapdom[ref]} has it mapped", state=table.entry_state(ref))
            table.unpin_soft(ref)  # blkback dropped a mapping the model only inferred
        table.flags[ref] = 0

    def on_expand(self, ev: s.GntExpand) -> None:
        self.guest(ev.dom).alloc.note_expand(ev.old, ev.new)

    def on_cb_request(self, ev: s.GntCbRequest) -> None:
        self.guest(ev.dom).alloc.request_callback(ev.cb, ev.count)

    def on_cb_fire(self, ev: s.GntCbFire) -> None:
        self.guest(ev.dom).alloc.callback_fired(ev.cb)

    def on_cb_cancel(self, ev: s.GntCbCancel) -> None:
        self.guest(ev.dom).alloc.cancel_callback(ev.cb)

    def on_toolstack_grant(self, ev: s.ToolstackGrant) -> None:
        self.hv.add_domain(ev.dom)
        if ev.ref >= GNTTAB_NR_RESERVED_ENTRIES:
            raise Unsupported(f"toolstack grant of ref {ev.ref}; the model knows only the reserved 0-7")
        table = self.hv.table(ev.rdom)
        table.flags[ev.ref] = GTF_permit_access
        table.gdom[ev.ref] = ev.to
        table.frame[ev.ref] = ev.frame
        table.known[ev.ref] = 1

    # --- hypercalls

    def on_query_size(self, ev: s.OpQuerySize) -> None:
        self.hv.add_domain(ev.dom)
        self.hv.query_size(ev.dom, ev.rdom, ev.status, ev.nr_frames, ev.max_nr_frames, ev.rc)
        if ev.rdom in (ev.dom, DOMID_SELF):
            if ev.rc < 0 or ev.status != GNTST_okay:
                self.query_failed.add(ev.dom)
            else:
                self.query_failed.discard(ev.dom)

    def on_setup_table(self, ev: s.OpSetupTable) -> None:
        self.hv.add_domain(ev.dom)
        self.hv.setup_table(ev.dom, ev.rdom, ev.nr_frames, ev.status)

    def on_map(self, ev: s.OpMap) -> None:
        self.hv.add_domain(ev.dom)
        self.hv.map(ev.dom, ev.rdom, ev.ref, ev.flags, ev.status, ev.handle, ev.host_addr,
                    ev.dev_bus_addr)

    def on_unmap(self, ev: s.OpUnmap) -> None:
        self.hv.add_domain(ev.dom)
        self.hv.unmap(ev.dom, ev.handle, ev.status, ev.host_addr, ev.dev_bus_addr)

    def on_copy(self, ev: s.OpCopy) -> None:
        self.hv.add_domain(ev.dom)
        self.hv.copy(ev.dom, ev.src_dom, ev.src, ev.src_off, ev.dst_dom, ev.dst, ev.dst_off,
                     ev.len, ev.flags, ev.status)

    def on_transfer(self, ev: s.OpTransfer) -> None:
        self.hv.add_domain(ev.dom)
        self.hv.transfer(ev.dom, ev.rdom, ev.ref, ev.gfn, ev.status, ev.rc)

    def on_set_version(self, ev: s.OpSetVersion) -> None:
        self.hv.add_domain(ev.dom)
        self.hv.set_version(ev.dom, ev.version, ev.rc, ev.out_version)

    def on_get_version(self, ev: s.OpGetVersion) -> None:
        self.hv.add_domain(ev.dom)
        self.hv.get_version(ev.dom, ev.rdom, ev.rc, ev.version)

    # --- rings and blkif

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
        self.rings[ev.ring] = FrontRing(ev.ring, ev.dom, ev.backend, ev.grefs, ev.nr_ents,
                                          ev.start & RING_IDX_MASK)

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
        guest = self.guests[ring.dom]
        check_grants(guest.table, guest.alloc, ring, id, op, data, indirect, self.seed)
        grefs = data + indirect
        uses = guest.uses
        for gref in grefs:
            uses[gref] += 1
        ring.add_request(Request(id, ev.idx, op, grefs))

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
        ring = self.ring(ev.ring)
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

    def _ring_using(self, guest: Guest, gref: int) -> FrontRing:
        for ring in self.rings.values():
            if ring.dom == guest.dom and any(gref in r.grefs for r in ring.in_flight.values()):
                return ring
        raise AssertionError("busy gref without a ring")

    # --- Xen's view at a quiet point

    def on_dump(self, ev: s.XenGnttab) -> None:
        self.hv.add_domain(ev.rdom)
        table = self.hv.table(ev.rdom)
        if table.nr_frames is not None and ev.nr_frames != table.nr_frames:
            raise Divergence("xen.dump.frames", f"Xen's table of d{ev.rdom} has {ev.nr_frames} frames; "
                             f"the model has {table.nr_frames}", expected=table.nr_frames,
                             actual=ev.nr_frames, state={"rdom": ev.rdom})
        if table.max_frames is not None and ev.max_frames != table.max_frames:
            raise Divergence("xen.dump.frames", f"Xen's table of d{ev.rdom} may grow to {ev.max_frames} "
                             f"frames; the model has {table.max_frames}", expected=table.max_frames,
                             actual=ev.max_frames, state={"rdom": ev.rdom})
        table.set_frames(ev.nr_frames)
        table.max_frames = ev.max_frames
        table.grow_capacity(ev.max_frames)
        guest = self.guests.get(ev.rdom)
        maybe = set()
        if guest is not None:
            maybe = {gref for gref, n in enumerate(guest.uses) if n}
            maybe.update(gref for gref, ring in enumerate(guest.pending) if ring is not None)
        listed = {}
        for entry in ev.entries:
            listed[entry.ref] = entry
            self._dump_entry(table, entry, maybe)
        for ref in [r for r, p in enumerate(table.pin) if p and r not in listed]:
            why = table.soft.get(ref)
            if why is None or why in _REQUIRED_SOFT:
                raise Divergence("xen.dump.missing", f"Xen lists no mapping of d{ev.rdom}'s ref {ref}; "
                                 f"the model knows d{table.mapdom[ref]} maps it"
                                 + (f" ({why})" if why else ""), state=table.entry_state(ref))
            table.unpin_soft(ref)
            self.purged += 1

    def _dump_entry(self, table: GrantTable, e: s.DumpEntry, maybe: set[int]) -> None:
        ref = e.ref
        if ref >= table.capacity:
            raise Divergence("xen.dump.unexpected", f"Xen lists ref {ref}, outside the model's table",
                             state={"ref": ref})
        if ref < GNTTAB_NR_RESERVED_ENTRIES and not table.pin[ref]:
            # The toolstack's entries: learned at first sight, exact afterwards.
            table.learn_mapping(ref, e.mapdom, e.pin, e.flags, e.gdom, e.frame, "reserved")
            return
        if not table.pin[ref]:
            if not table.known[ref]:  # granted before the trace began
                table.learn_mapping(ref, e.mapdom, e.pin, e.flags, e.gdom, e.frame, "observed")
                return
            if ref not in maybe:
                raise Divergence("xen.dump.unexpected", f"Xen lists ref {ref} of d{table.domid} mapped by "
                                 f"d{e.mapdom} (pin {e.pin:#x}); the model says no domain has it mapped",
                                 state={**table.entry_state(ref), "xen": _entry_dict(e)})
            self._same_grant(table, e)
            return
        self._same_grant(table, e)
        soft = table.soft.get(ref)
        if e.mapdom != table.mapdom[ref]:
            raise Divergence("xen.dump.mismatch", f"Xen says d{e.mapdom} maps ref {ref}; the model says "
                             f"d{table.mapdom[ref]}", expected=table.mapdom[ref], actual=e.mapdom,
                             state={**table.entry_state(ref), "xen": _entry_dict(e)})
        exact = soft is None or soft == "reserved" or (self.exact_pins and soft != "observed")
        if exact and e.pin != table.pin[ref]:
            raise Divergence("xen.dump.mismatch", f"Xen's pin of ref {ref} is {e.pin:#x}; the model "
                             f"expects {table.pin[ref]:#x}", expected=table.pin[ref], actual=e.pin,
                             state={**table.entry_state(ref), "xen": _entry_dict(e)})
        if not exact and bool(e.pin & GNTPIN_writable_mask) != bool(table.pin[ref] & GNTPIN_writable_mask):
            raise Divergence("xen.dump.mismatch", f"Xen's pin of ref {ref} is {e.pin:#x}; the model "
                             f"expects a {'writable' if table.pin[ref] & GNTPIN_writable_mask else 'read-only'} map",
                             state={**table.entry_state(ref), "xen": _entry_dict(e)})
        if e.flags != table.flags[ref]:
            raise Divergence("xen.dump.mismatch", f"Xen's flags of ref {ref} are {e.flags:#x}; the model "
                             f"has {table.flags[ref]:#x}", expected=table.flags[ref], actual=e.flags,
                             state={**table.entry_state(ref), "xen": _entry_dict(e)})
        if soft in ("observed", "persistent") and not exact:
            table.pin[ref] = e.pin  # now we have seen it

    def _same_grant(self, table: GrantTable, e: s.DumpEntry) -> None:
        ref = e.ref
        base = table.flags[ref] & (GTF_type_mask | GTF_readonly)
        if (e.flags & (GTF_type_mask | GTF_readonly)) != base or e.gdom != table.gdom[ref] \
                or e.frame != table.frame[ref] or e.mapdom != table.gdom[ref]:
            raise Divergence("xen.dump.mismatch", f"Xen lists ref {ref} as granted to d{e.gdom}, frame "
                             f"{e.frame:#x}, mapped by d{e.mapdom}; the model has it granted to "
                             f"d{table.gdom[ref]}, frame {table.frame[ref]:#x}",
                             state={**table.entry_state(ref), "xen": _entry_dict(e)})
        if table.flags[ref] & GTF_readonly and e.pin & GNTPIN_writable_mask:
            raise Divergence("xen.dump.mismatch", f"Xen has a writable map of read-only ref {ref}",
                             state={**table.entry_state(ref), "xen": _entry_dict(e)})

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


def _entry_dict(e: s.DumpEntry) -> dict:
    return {"ref": e.ref, "mapdom": e.mapdom, "pin": f"{e.pin:#x}", "gdom": e.gdom,
            "frame": f"{e.frame:#x}", "flags": f"{e.flags:#x}"}


# --- running a whole trace


def _divergent(exc: Divergence | Unsupported, ev: Event, line: int | None,
               before: list[tuple[int | None, Event]]) -> Divergent:
    rule = RULES.get(exc.rule)
    return Divergent(
        rule=exc.rule,
        meaning=rule.meaning if rule else "the model does not cover this",
        source=rule.source if rule else "harness/model",
        message=exc.message,
        seq=ev.seq,
        line=line,
        event=msgspec.to_builtins(ev),
        state=getattr(exc, "state", {}),
        expected=getattr(exc, "expected", None),
        actual=getattr(exc, "actual", None),
        before=[{"line": ln, "event": msgspec.to_builtins(e)} for ln, e in before],
    )


class _Run:
    """Drives a Checker over blocks of events, keeping what a verdict needs."""

    def __init__(self, checker: Checker, name: str | None):
        self.checker = checker
        self.name = name
        self.count = 0
        self.last_seq = -1
        self.kinds: Counter = Counter()
        self.tail: deque[tuple[int | None, Event]] = deque(maxlen=CONTEXT_EVENTS)

    def run_block(self, events: list[Event], line_of) -> Verdict | None:
        handlers = self.checker.handlers
        sample = self.checker.sample if self.checker.series is not None else None
        last_seq = self.last_seq
        ev = None
        try:
            if sample is None:
                for ev in events:
                    seq = ev.seq
                    if seq <= last_seq:
                        raise TraceOrderError(f"seq {seq} after seq {last_seq}: seq must increase")
                    last_seq = seq
                    handlers[ev.__class__](ev)
            else:
                for ev in events:
                    seq = ev.seq
                    if seq <= last_seq:
                        raise TraceOrderError(f"seq {seq} after seq {last_seq}: seq must increase")
                    last_seq = seq
                    handlers[ev.__class__](ev)
                    sample(ev)
        except (Divergence, Unsupported, TraceOrderError) as exc:
            index = next(i for i, e in enumerate(events) if e is ev)
            self.count += index
            if sample is not None:
                self.kinds.update(map(type, events[:index]))
            before = list(self.tail) + [(line_of(i), events[i])
                                        for i in range(max(0, index - CONTEXT_EVENTS), index)]
            before = before[-CONTEXT_EVENTS:]
            line = line_of(index)
            if isinstance(exc, TraceOrderError):
                return self.verdict(ERROR, error=f"{self.name or '<trace>'}:{line}: {exc.message}")
            outcome = ERROR if isinstance(exc, Unsupported) else FAIL
            verdict = self.verdict(outcome, divergence=_divergent(exc, ev, line, before))
            if outcome == ERROR:
                verdict.error = f"the model cannot judge this trace: {exc.message}"
            return verdict
        self.last_seq = last_seq
        self.count += len(events)
        if sample is not None:  # the kinds histogram is report data, like the series
            self.kinds.update(map(type, events))
        start = max(0, len(events) - CONTEXT_EVENTS)
        self.tail.extend((line_of(i), events[i]) for i in range(start, len(events)))
        return None

    def verdict(self, outcome: str, **extra) -> Verdict:
        checker = self.checker
        notes = list(checker.notes)
        if checker.purged:
            notes.append(f"{checker.purged} mapping(s) the model had only inferred were absent from "
                         "Xen's dump and are forgotten (blkback purges persistent grants: "
                         "blkback.c purge_persistent_gnt)")
        verdict = Verdict(
            outcome=outcome, policy=checker.policy, events=self.count, trace=self.name,
            kinds={t.__struct_config__.tag: n for t, n in self.kinds.items()},
            notes=notes, **extra,
        )
        if checker.series is not None:
            verdict.series = checker.series
            verdict.ledger = checker.ledger()
        return verdict


def replay(events: Iterable[Event], policy: str | None = None, header: Header | None = None,
           series: bool = False, name: str | None = None) -> Verdict:
    """Check events held in memory (line numbers are 2 + index: the header is line 1)."""
    checker = Checker(header, policy, series)
    run = _Run(checker, name)
    events = list(events)
    verdict = run.run_block(events, lambda i: i + 2)
    return verdict or run.verdict(PASS)


def check_file(path: str | Path, policy: str | None = None, series: bool = False,
               block_bytes: int = BLOCK_BYTES) -> Verdict:
    """Stream a JSONL trace through the model; bad input raises TraceFormatError."""
    path = str(path)
    with TraceReader(path, block_bytes) as reader:
        checker = Checker(reader.header, policy, series)
        run = _Run(checker, path)
        with gc_paused():
            for block in reader.blocks():
                verdict = run.run_block(block.events, block.line_of)
                if verdict is not None:
                    return verdict
        return run.verdict(PASS)


__all__ = ["Checker", "TraceFormatError", "check_file", "replay"]
