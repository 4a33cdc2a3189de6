"""Shared rings (xen/include/public/io/ring.h) as the frontend drives them.

Indices are free-running 32-bit unsigned counters (RING_IDX); the slot of
index i is i & (nr_ents - 1).  All arithmetic below is modulo 2**32, so a
ring that wraps behaves exactly like one that does not.

State kept per ring: the private producer req_prod_pvt, the published
req_prod, the consumer rsp_cons, and the requests in flight by id.
Invariants after every step: 0 <= req_prod_pvt - rsp_cons <= nr_ents;
req_prod lies in [rsp_cons, req_prod_pvt]; the number of requests in flight
equals req_prod_pvt - rsp_cons; no two in flight share an id.
"""

from __future__ import annotations

from harness.model.constants import (
    BLKIF_REQUEST_SIZE, PAGE_SIZE, RING_IDX_MASK, ring_size,
)
from harness.model.rules import Divergence

M = RING_IDX_MASK


def push_notify(old: int, new: int, event: int) -> bool:
    """RING_PUSH_{REQUESTS,RESPONSES}_AND_CHECK_NOTIFY's decision.

    Notify iff the other end asked (via req_event/rsp_event) to hear about an
    index in (old, new]: (RING_IDX)(new - event) < (RING_IDX)(new - old).
    """
    return ((new - event) & M) < ((new - old) & M)


def blkif_ring_entries(pages: int) -> int:
    """__CONST_RING_SIZE(blkif, pages * PAGE_SIZE): 32 for one page."""
    return ring_size(BLKIF_REQUEST_SIZE, pages * PAGE_SIZE)


class Request:
    """A request in flight: what the response and the completion are checked against."""

    __slots__ = ("id", "idx", "op", "grefs", "published", "ev")

    def __init__(self, id: int, idx: int, op: int, grefs: list[int], ev=None):
        self.id = id
        self.idx = idx
        self.op = op          # the operation a response must echo
        self.grefs = grefs    # data and indirect-page grefs
        self.published = False
        self.ev = ev          # the blkif.req it came from (its sectors, at a resume)


class FrontRing:
    """One frontend ring: indices, in-flight requests, and the backend it talks to."""

    __slots__ = (
        "name", "dom", "backend", "grefs", "nr_ents", "connected", "persistent",
        "max_indirect", "req_prod_pvt", "req_prod", "rsp_cons", "rsp_prod",
        "in_flight", "unpublished", "pending_n", "last_answered", "freed", "negotiated", "peak",
    )

    def __init__(self, name: str, dom: int, backend: int, grefs: list[int], nr_ents: int,
                 start: int = 0):
        self.name = name
        self.dom = dom
        self.backend = backend
        self.grefs = list(grefs)
        self.nr_ents = nr_ents
        self.connected = False
        self.persistent = False
        self.max_indirect = 0
        # What the device negotiated (harness/model/negotiation.Negotiated),
        # once a blkif.features event said; None: not judged.
        self.negotiated = None
        # FRONT_RING_INIT / SHARED_RING_INIT: everything starts at 0; `start`
        # lets tests begin near 2**32 to exercise the wrap.
        self.req_prod_pvt = start
        self.req_prod = start
        self.rsp_cons = start
        # The backend's rsp_prod, known only from ring.rsp_push events.
        self.rsp_prod: int | None = None
        self.in_flight: dict[int, Request] = {}
        # The most requests ever in flight at once: whether a run reached a
        # full ring (the queue stop and restart run only there).
        self.peak = 0
        self.unpublished: list[Request] = []
        # grefs of the last answered request whose end was not tried yet
        self.pending_n = 0
        self.last_answered: int | None = None
        self.freed = False  # blkif_free_ring ran: the frontend owes the end of its grants

    def slots_in_flight(self) -> int:
        return (self.req_prod_pvt - self.rsp_cons) & M

    # --- requests

    def check_request_slot(self, idx: int, id: int) -> None:
        if not self.connected:
            raise Divergence("ring.not-connected", f"request on ring {self.name}, which is not connected",
                             state=self.state())
        if idx != self.req_prod_pvt:
            raise Divergence("ring.req-index", f"request written on ring {self.name} at index {idx}; the private producer "
                             f"req_prod_pvt is {self.req_prod_pvt}",
                             expected=self.req_prod_pvt, actual=idx, state=self.state())
        if (self.req_prod_pvt - self.rsp_cons) & M >= self.nr_ents:
            raise Divergence("ring.overflow", f"request {id} on ring {self.name}, which is full: {self.nr_ents} requests "
                             "outstanding (RING_FULL)", state=self.state())
        if id in self.in_flight:
            raise Divergence("ring.id-reuse", f"request id {id} on ring {self.name} reused while request {id} (index "
                             f"{self.in_flight[id].idx}) is in flight",
                             actual=id, state=self.state(id))

    def add_request(self, request: Request) -> None:
        self.req_prod_pvt = (request.idx + 1) & M
        self.in_flight[request.id] = request
        if len(self.in_flight) > self.peak:
            self.peak = len(self.in_flight)
        self.unpublished.append(request)

    def push(self, old: int, new: int, notify: bool, req_event: int | None) -> None:
        """RING_PUSH_REQUESTS_AND_CHECK_NOTIFY."""
        if old != self.req_prod or new != self.req_prod_pvt:
            raise Divergence("ring.push", f"ring {self.name}: req_prod moved {old}->{new}; the model has it at "
                             f"{self.req_prod} with the private producer at {self.req_prod_pvt}",
                             expected=(self.req_prod, self.req_prod_pvt), actual=(old, new),
                             state=self.state())
        if req_event is not None:
            want = push_notify(old, new, req_event)
            if notify != want:
                raise Divergence("ring.notify", f"ring {self.name}: notify={notify} after pushing {old}->{new} with "
                                 f"req_event {req_event}; the rule gives {want}",
                                 expected=want, actual=notify, state=self.state())
        self.req_prod = new
        for request in self.unpublished:
            request.published = True
        self.unpublished.clear()

    # --- responses

    def take_response(self, idx: int, id: int) -> Request:
        if idx != self.rsp_cons:
            raise Divergence("ring.rsp-index", f"ring {self.name}: response consumed at index {idx}; rsp_cons is "
                             f"{self.rsp_cons}", expected=self.rsp_cons, actual=idx,
                             state=self.state())
        if not (self.req_prod - self.rsp_cons) & M:
            raise Divergence("ring.rsp-overflow", f"ring {self.name}: response at index {idx}, but every published "
                             "request is answered (RING_RESPONSE_PROD_OVERFLOW)", state=self.state())
        if self.rsp_prod is not None and not (self.rsp_prod - self.rsp_cons) & M:
            raise Divergence("ring.rsp-overflow", f"ring {self.name}: response consumed at index {idx}, but the backend "
                             f"published responses only up to {self.rsp_prod}", state=self.state())
        request = self.in_flight.get(id)
        if request is None or not request.published:
            why = "not yet published" if request is not None else "not in flight"
            raise Divergence("ring.rsp-unknown-id", f"ring {self.name}: response for id {id}, which is {why}",
                             actual=id, state=self.state(id))
        self.rsp_cons = (idx + 1) & M
        del self.in_flight[id]
        return request

    def response_push(self, old: int, new: int, notify: bool, rsp_event: int | None) -> None:
        """RING_PUSH_RESPONSES_AND_CHECK_NOTIFY, seen from the backend's side."""
        if rsp_event is not None:
            want = push_notify(old, new, rsp_event)
            if notify != want:
                raise Divergence("ring.rsp-notify", f"ring {self.name}: backend notify={notify} after pushing responses "
                                 f"{old}->{new} with rsp_event {rsp_event}; the rule gives {want}",
                                 expected=want, actual=notify, state=self.state())
        if ((new - self.rsp_cons) & M) > self.nr_ents:
            raise Divergence("ring.rsp-overflow", f"ring {self.name}: rsp_prod {new} is more than {self.nr_ents} ahead of "
                             f"rsp_cons {self.rsp_cons} (RING_RESPONSE_PROD_OVERFLOW)", state=self.state())
        self.rsp_prod = new

    # --- reporting

    def state(self, *ids: int) -> dict:
        slots = {}
        for request in sorted(self.in_flight.values(), key=lambda r: (r.idx - self.rsp_cons) & M):
            slots[str(request.idx & (self.nr_ents - 1))] = {
                "index": request.idx, "id": request.id, "op": request.op,
                "published": request.published, "grefs": list(request.grefs),
            }
        state = {
            "ring": self.name, "backend": self.backend, "connected": self.connected,
            "persistent": self.persistent, "nr_ents": self.nr_ents,
            "req_prod_pvt": self.req_prod_pvt, "req_prod": self.req_prod, "rsp_cons": self.rsp_cons,
            "in_flight": len(self.in_flight), "slots": slots,
        }
        for id in ids:
            state[f"request id {id}"] = "in flight" if id in self.in_flight else "not in flight"
        return state

    def invariants(self) -> list[str]:
        problems = []
        outstanding = (self.req_prod_pvt - self.rsp_cons) & M
        if outstanding > self.nr_ents:
            problems.append(f"{outstanding} requests outstanding on {self.nr_ents} slots")
        if (self.req_prod - self.rsp_cons) & M > outstanding:
            problems.append("req_prod outside [rsp_cons, req_prod_pvt]")
        if len(self.in_flight) != outstanding:
            problems.append(f"{len(self.in_flight)} in flight but {outstanding} outstanding")
        return problems
