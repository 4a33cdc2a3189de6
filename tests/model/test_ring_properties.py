"""Random legal blkif traffic through the checker: no divergence, invariants hold.

The machine plays a Linux 6.1 blkfront (ids from a shadow free list, grants
claimed per segment, ends after each response) and a backend that consumes
published requests, answers them in any order and keeps or drops persistent
mappings.  Rings start anywhere in the 32-bit index space, so many runs
cross the wrap at 2**32.
"""

from __future__ import annotations

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from harness.check.checker import Checker
from harness.model.constants import BLKIF_OP_INDIRECT, BLKIF_OP_READ, BLKIF_OP_WRITE, GNTTAB_LIST_END
from harness.trace.schema import KINDS, DomainInfo, Header

GUEST, DOM0 = 1, 0
M = 0xFFFFFFFF
RING = "xvda/0"
NR_ENTS = 32


def notify_rule(old: int, new: int, event: int) -> bool:
    """RING_PUSH_*_AND_CHECK_NOTIFY, written out again from ring.h."""
    return (new - event) % 2**32 < (new - old) % 2**32


class BlkifMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.seq = 0

    def emit(self, kind: str, dom: int = GUEST, src: str = "guest", **fields) -> None:
        self.seq += 1
        event = KINDS[kind](seq=self.seq, t_ns=self.seq, dom=dom, src=src, **fields)
        self.checker.handlers[type(event)](event)

    @initialize(start=st.one_of(st.just(0), st.integers(M - 6, M), st.integers(0, M)),
                persistent=st.booleans())
    def connect(self, start, persistent):
        header = Header(v=1, policy="linux-6.1", guest=GUEST, backend_dom=DOM0, backend="blkback",
                        domains=[DomainInfo(domid=DOM0, type="pv", privileged=True),
                                 DomainInfo(domid=GUEST, max_grant_frames=8)])
        self.checker = Checker(header)
        self.persistent = persistent
        self.emit("gnt.setup", nr_frames=1, max_frames=8)
        self.emit("gnt.grant", ref=8, to=DOM0, frame=0x8000, alloc=True)
        self.emit("ring.setup", ring=RING, grefs=[8], backend=DOM0, nr_ents=NR_ENTS, start=start)
        self.emit("blkif.connect", ring=RING, persistent=persistent, max_indirect=32)
        self.next_ref = 9  # the 6.1 free list hands refs out in order here
        self.free_refs: list[int] = []  # refs back on the free list, head first
        self.kept: list[int] = []  # persistent grants still granted (blkfront's list)
        self.ids = list(range(NR_ENTS))  # blkfront's shadow free list
        self.req_prod_pvt = self.req_prod = self.rsp_cons = start
        self.req_event = (start + 1) & M  # SHARED_RING_INIT
        self.rsp_event = (start + 1) & M
        self.requests: dict[int, tuple[int, list[int]]] = {}  # id -> (op, grefs)
        self.peak = 0  # the most requests in flight at once (a scenario's fill_rings)
        self.backend_queue: list[int] = []  # consumed, not yet answered
        self.req_cons = start
        self.rsp_prod = start
        self.answers: list[tuple[int, int]] = []  # (id, op) in rsp_prod order
        self.backend_maps: set[int] = set()

    # --- frontend

    def take_ref(self) -> int:
        """get_grant: reuse a persistent grant, else claim a fresh ref."""
        if self.kept:
            return self.kept.pop(0)
        if self.free_refs:
            ref = self.free_refs.pop(0)
        else:
            ref = self.next_ref
            self.next_ref += 1
        self.emit("gnt.alloc", count=1, head=ref)
        self.emit("gnt.claim", head=ref, ref=ref)
        self.emit("gnt.free_chain", head=GNTTAB_LIST_END)
        self.emit("gnt.grant", ref=ref, to=DOM0, frame=0x100000 + ref)
        return ref

    @precondition(lambda self: self.ids and (self.req_prod_pvt - self.rsp_cons) & M < NR_ENTS)
    @rule(nseg=st.integers(1, 32), write=st.booleans())
    def queue(self, nseg, write):
        rid = self.ids.pop(0)
        refs = [self.take_ref() for _ in range(nseg)]
        segs = [[ref, 0, 7] for ref in refs]
        op = BLKIF_OP_WRITE if write else BLKIF_OP_READ
        if nseg > 11:
            indirect = self.take_ref()
            self.emit("blkif.req", ring=RING, idx=self.req_prod_pvt, id=rid, op=BLKIF_OP_INDIRECT,
                      indirect_op=op, nr_segments=nseg, indirect_grefs=[indirect], segs=segs)
            refs.append(indirect)
        else:
            self.emit("blkif.req", ring=RING, idx=self.req_prod_pvt, id=rid, op=op, segs=segs)
        self.requests[rid] = (op, refs)
        self.peak = max(self.peak, len(self.requests))
        self.req_prod_pvt = (self.req_prod_pvt + 1) & M

    @rule()
    def push(self):
        old, new = self.req_prod, self.req_prod_pvt
        self.emit("ring.push", ring=RING, old=old, new=new, req_event=self.req_event,
                  notify=notify_rule(old, new, self.req_event))
        self.req_prod = new

    @precondition(lambda self: self.rsp_prod != self.rsp_cons)
    @rule()
    def consume_response(self):
        rid, op = self.answers.pop(0)
        self.emit("blkif.rsp", ring=RING, idx=self.rsp_cons, id=rid, op=op, status=0)
        self.rsp_cons = (self.rsp_cons + 1) & M
        _, refs = self.requests.pop(rid)
        for ref in refs:
            mapped = ref in self.backend_maps
            self.emit("gnt.end", ref=ref, ok=not mapped, mode="try")
            if mapped:
                self.kept.insert(0, ref)
            else:
                self.free_refs.insert(0, ref)
        self.ids.insert(0, rid)
        if self.rsp_cons == self.rsp_prod:
            self.rsp_event = (self.rsp_cons + 1) & M  # RING_FINAL_CHECK_FOR_RESPONSES

    # --- backend

    @precondition(lambda self: self.req_cons != self.req_prod)
    @rule()
    def backend_consume(self):
        self.backend_queue.append(self.req_cons)
        self.req_cons = (self.req_cons + 1) & M
        if self.req_cons == self.req_prod:
            self.req_event = (self.req_cons + 1) & M  # RING_FINAL_CHECK_FOR_REQUESTS

    @precondition(lambda self: self.backend_queue)
    @rule(data=st.data(), keep=st.booleans())
    def backend_answer(self, data, keep):
        index = self.backend_queue.pop(data.draw(st.integers(0, len(self.backend_queue) - 1)))
        rid = self._id_at(index)
        op, refs = self.requests[rid]
        if self.persistent and keep:
            self.backend_maps.update(refs)
        elif not self.persistent:
            self.backend_maps.difference_update(refs)
        old = self.rsp_prod
        self.rsp_prod = (self.rsp_prod + 1) & M
        self.answers.append((rid, op))
        self.emit("ring.rsp_push", dom=DOM0, src="dom0", ring=RING, old=old, new=self.rsp_prod,
                  rsp_event=self.rsp_event, notify=notify_rule(old, self.rsp_prod, self.rsp_event))

    def _id_at(self, index: int) -> int:
        ring = self.checker.rings[RING]
        for request in ring.in_flight.values():
            if request.idx == index:
                return request.id
        raise AssertionError(f"no request at index {index}")

    @invariant()
    def model_invariants(self):
        if not hasattr(self, "checker"):
            return
        ring = self.checker.rings[RING]
        assert ring.invariants() == []
        assert self.checker.guests[GUEST].alloc.invariants() == []
        assert len(ring.in_flight) == (self.req_prod_pvt - self.rsp_cons) & M
        assert self.checker.state.fullest() == {RING: {"peak": self.peak, "slots": NR_ENTS}}


TestBlkifRing = BlkifMachine.TestCase
TestBlkifRing.settings = settings(max_examples=60, stateful_step_count=50, deadline=None,
                                  suppress_health_check=[HealthCheck.too_slow])
