"""The guest's side of its grant table, from the events its tracer records:
the allocator's chains and free list, grants and their ends (plain and
deferred), the table's growth, free callbacks, the toolstack's reserved
entries."""

from __future__ import annotations

from harness.model.allocator import FREE, HELD
from harness.model.constants import (
    GNTTAB_LIST_END, GNTTAB_NR_RESERVED_ENTRIES, GTF_permit_access, GTF_readonly, GTF_type_mask,
    INITIAL_NR_GRANT_FRAMES, LEGACY_MAX_GRANT_FRAMES,
)
from harness.model.gnttab import GrantTable
from harness.model.rules import Divergence, Unsupported
from harness.model.state import ENDABLE, REQUIRED_SOFT, ModelState
from harness.trace import schema as s


class GuestGrantEvents:
    """Handlers of the gnttab.* events a guest records."""

    def __init__(self, state: ModelState):
        self.state = state
        self.hv = state.hv
        self.guests = state.guests
        self.guest = state.guest
        self.seed = state.seed
        self.captured = state.captured
        self.query_failed = state.query_failed

    def handlers(self) -> dict:
        return {
            s.GntSetup: self.on_setup,
            s.GntAlloc: self.on_alloc,
            s.GntClaim: self.on_claim,
            s.GntRelease: self.on_release,
            s.GntFree: self.on_free,
            s.GntFreeChain: self.on_free_chain,
            s.GntGrant: self.on_grant,
            s.GntEnd: self.on_end,
            s.GntDeferredEnd: self.on_deferred_end,
            s.GntExpand: self.on_expand,
            s.GntCbRequest: self.on_cb_request,
            s.GntCbFire: self.on_cb_fire,
            s.GntCbCancel: self.on_cb_cancel,
            s.ToolstackGrant: self.on_toolstack_grant,
        }

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
        if guest.wiped and ref in guest.wiped:
            raise Divergence("gnt.regrant-active", f"ref {ref} granted to d{ev.to} after the resume while "
                             "its grant from before the resume was never ended", state=guest.table.entry_state(ref))
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
        if not flags & GTF_type_mask or st[ref] not in ENDABLE:
            if guest.wiped:
                guest.wiped.discard(ref)   # its entry went with the old domain (guest.resume)
            if table.known[ref]:
                raise Divergence("gnt.end-not-granted", f"end of access to ref {ref}, which is not "
                                 f"granted ({alloc._describe(ref)})", state=table.entry_state(ref))
            table.known[ref] = 1  # granted before the trace began: learn from here
        if guest.uses[ref]:
            ring = self.state.ring_using(guest, ref)
            raise Divergence("blkif.grant-ended-early", f"end of access to gref {ref} while a request "
                             "using it is in flight", state={**ring.state(), "gref": table.entry_state(ref)})
        pending = guest.pending
        ring = pending[ref]
        if ring is not None:
            pending[ref] = None
            ring.pending_n -= 1
        if guest.owed:
            guest.owed.pop(ref, None)   # the torn-down ring's driver did its part
        if ev.ok:
            guest.owner[ref] = None
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
            guest.owner[ref] = None
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
            if why is None or why in REQUIRED_SOFT:
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
