"""Feature negotiation between blkfront and its backend (Linux 6.1).

At connect the capture records what both ends wrote in xenstore and the
frontend's module parameters (`blkif.features`).  From them the model works
out what Linux 6.1's blkfront must have advertised (talk_to_blkback,
negotiate_mq) and what it may then put on the ring
(blkfront_gather_backend_features), and holds both to it: the nodes at
once, each request as it comes.  Every value an end wrote is parsed the way
the kernel parses it (xenbus_read_unsigned: "%u", a default when absent or
unreadable), so a garbage node counts as the kernel would count it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from harness.model.constants import (
    BLKIF_MAX_SEGMENTS_PER_REQUEST, BLKIF_OP_DISCARD, BLKIF_OP_FLUSH_DISKCACHE, BLKIF_OP_INDIRECT,
    BLKIF_OP_WRITE_BARRIER,
)
from harness.model.ring import FrontRing
from harness.model.rules import Divergence
from harness.model.state import ModelState
from harness.trace import schema as s

# blkfront's module parameters and their defaults in Linux 6.1
# (drivers/block/xen-blkfront.c: xen_blkif_max_segments, xen_blkif_max_queues,
# xen_blkif_max_ring_order, feature_persistent, xen_blkif_trusted).
PARAM_DEFAULTS = {"feature_persistent": 1, "max_indirect_segments": 32, "max_queues": 4,
                  "max_ring_page_order": 0, "trusted": 1}

_UNSIGNED = re.compile(r"\s*(\d+)")


def read_unsigned(nodes: dict[str, str], name: str, default: int) -> int:
    """xenbus_read_unsigned: the node's "%u" value, or `default`."""
    m = _UNSIGNED.match(nodes.get(name, ""))
    return int(m.group(1)) if m else default


@dataclass(frozen=True, slots=True)
class Negotiated:
    """What a correct Linux 6.1 blkfront does on one device, given both ends' nodes."""

    persistent_asked: int
    queues: int
    ring_order: int
    indirect_segments: int   # 0: no indirect requests
    flush: bool
    barrier: bool
    discard: bool

    @classmethod
    def of(cls, ev: s.BlkifFeatures) -> Negotiated:
        asked = {**PARAM_DEFAULTS, **ev.asked}
        back = ev.back
        # xlblk_init caps max_queues at the online CPUs; negotiate_mq takes
        # the backend's maximum into account; at least one ring.
        max_queues = min(asked["max_queues"], ev.vcpus) if ev.vcpus else asked["max_queues"]
        queues = min(read_unsigned(back, "multi-queue-max-queues", 1), max_queues) or 1
        order = min(asked["max_ring_page_order"], read_unsigned(back, "max-ring-page-order", 0))
        indirect = min(read_unsigned(back, "feature-max-indirect-segments", 0), asked["max_indirect_segments"])
        if indirect <= BLKIF_MAX_SEGMENTS_PER_REQUEST:
            indirect = 0
        return cls(persistent_asked=1 if asked["feature_persistent"] else 0, queues=queues, ring_order=order,
                   indirect_segments=indirect,
                   flush=read_unsigned(back, "feature-flush-cache", 0) > 0,
                   # With both, 6.1 flushes (feature_fua = 0): barriers only without flush-cache.
                   barrier=read_unsigned(back, "feature-barrier", 0) > 0
                   and not read_unsigned(back, "feature-flush-cache", 0),
                   discard=read_unsigned(back, "feature-discard", 0) > 0)


def _queue_of(ring: str) -> int | None:
    """The queue number of a ring named 'xvda/N'."""
    tail = ring.rsplit("/", 1)[-1]
    return int(tail) if tail.isdigit() else None


class NegotiationEvents:
    """The blkif.features handler (linux-6.1 policy only: the seed's
    frontend negotiates nothing but the ring)."""

    def __init__(self, state: ModelState):
        self.state = state
        self.judged: list[str] = []   # the rings whose negotiation was judged

    def handlers(self) -> dict:
        return {s.BlkifFeatures: self.on_features}

    def on_features(self, ev: s.BlkifFeatures) -> None:
        if self.state.seed:
            return
        ring = self.state.ring(ev.ring)
        want = Negotiated.of(ev)
        facts = {"ring": ev.ring, "frontend": dict(ev.front), "backend": dict(ev.back),
                 "asked": dict(ev.asked), "vcpus": ev.vcpus}
        front = ev.front
        said = front.get("feature-persistent")
        if said != str(want.persistent_asked):
            raise Divergence("negotiate.persistent", f"{ev.ring}: the frontend wrote feature-persistent "
                             f"{said!r}; its parameter feature_persistent asks {want.persistent_asked}",
                             expected=str(want.persistent_asked), actual=said, state=facts)
        # One ring: blkfront writes no multi-queue-num-queues (talk_to_blkback).
        queues = front.get("multi-queue-num-queues")
        if (queues is None and want.queues != 1) or (queues is not None and queues != str(want.queues)):
            raise Divergence("negotiate.queues", f"{ev.ring}: the frontend wrote multi-queue-num-queues "
                             f"{queues!r}; min(backend's multi-queue-max-queues, max_queues, vCPUs) is "
                             f"{want.queues}" + (" (no node for one ring)" if want.queues == 1 else ""),
                             expected=want.queues, actual=queues, state=facts)
        queue = _queue_of(ev.ring)
        if queue is not None and queue >= want.queues:
            raise Divergence("negotiate.queues", f"ring {ev.ring} carries traffic, but the device "
                             f"negotiated {want.queues} queue(s)", expected=want.queues, actual=queue + 1,
                             state=facts)
        order = front.get("ring-page-order")
        if (order is None and want.ring_order) or (order is not None and order != str(want.ring_order)):
            raise Divergence("negotiate.ring-order", f"{ev.ring}: the frontend wrote ring-page-order "
                             f"{order!r}; min(max_ring_page_order, backend's max-ring-page-order) is "
                             f"{want.ring_order}" + (" (no node for one page)" if not want.ring_order else ""),
                             expected=want.ring_order, actual=order, state=facts)
        if len(ring.grefs) != 1 << want.ring_order:
            raise Divergence("negotiate.ring-order", f"ring {ev.ring} is set up on {len(ring.grefs)} page(s); "
                             f"ring-page-order {want.ring_order} means {1 << want.ring_order}",
                             expected=1 << want.ring_order, actual=len(ring.grefs), state=facts)
        ring.negotiated = want
        self.judged.append(ev.ring)


def check_request(ring: FrontRing, want: Negotiated, request_id: int, op: int, count: int) -> None:
    """A request against what its device negotiated (blkfront_gather_backend_features)."""
    if op == BLKIF_OP_INDIRECT:
        if count > want.indirect_segments:
            limit = (f"at most {want.indirect_segments}" if want.indirect_segments else
                     "none: min(max_indirect_segments, backend's feature-max-indirect-segments) is not above 11")
            raise Divergence("negotiate.indirect", f"ring {ring.name}: indirect request {request_id} carries "
                             f"{count} segments; the device negotiated {limit}",
                             expected=want.indirect_segments, actual=count, state=ring.state(request_id))
        return
    if op == BLKIF_OP_FLUSH_DISKCACHE and not want.flush:
        raise Divergence("negotiate.flush", f"ring {ring.name}: request {request_id} is a cache flush; the "
                         "backend did not offer feature-flush-cache", state=ring.state(request_id))
    if op == BLKIF_OP_WRITE_BARRIER and not want.barrier:
        raise Divergence("negotiate.flush", f"ring {ring.name}: request {request_id} is a write barrier; the "
                         "backend offered no feature-barrier, or offered feature-flush-cache too (then "
                         "6.1 flushes)", state=ring.state(request_id))
    if op == BLKIF_OP_DISCARD and not want.discard:
        raise Divergence("negotiate.discard", f"ring {ring.name}: request {request_id} is a discard; the "
                         "backend did not offer feature-discard", state=ring.state(request_id))
