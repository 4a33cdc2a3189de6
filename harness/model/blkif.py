"""blkif requests (xen/include/public/io/blkif.h) and the grants they use.

A request is legal when its operation exists, its segment count fits the
operation, every segment stays inside its page, indirect requests are
well formed and negotiated, and every gref it names is granted to the
backend with the right access (see `grant_direction_ok`).  What happens to
those grants afterwards (ended after the response, never before; kept
mapped only with persistent grants) is checked by the checker, which sees
both the ring and the grant table.
"""

from __future__ import annotations

from harness.model.allocator import HELD, UNKNOWN, GuestAllocator
from harness.model.constants import (
    BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST, BLKIF_MAX_SEGMENTS_PER_REQUEST,
    BLKIF_OP_DISCARD, BLKIF_OP_FLUSH_DISKCACHE, BLKIF_OP_INDIRECT, BLKIF_OP_READ,
    BLKIF_OP_WRITE, BLKIF_OP_WRITE_BARRIER, BLKIF_RSP_EOPNOTSUPP, BLKIF_RSP_ERROR,
    BLKIF_RSP_OKAY, GTF_permit_access, GTF_readonly, GTF_type_mask,
    SECTORS_PER_PAGE, SEGS_PER_INDIRECT_FRAME,
)
from harness.model.gnttab import GrantTable
from harness.model.ring import FrontRing, Request
from harness.model.rules import Divergence

VALID_OPS = frozenset({BLKIF_OP_READ, BLKIF_OP_WRITE, BLKIF_OP_WRITE_BARRIER,
                       BLKIF_OP_FLUSH_DISKCACHE, BLKIF_OP_DISCARD, BLKIF_OP_INDIRECT})
RSP_STATUSES = frozenset({BLKIF_RSP_OKAY, BLKIF_RSP_ERROR, BLKIF_RSP_EOPNOTSUPP})
# Allocator states in which a gref may be on the ring (UNKNOWN: the trace
# began after it was granted).
_USABLE = (HELD, UNKNOWN)
# Operations whose data the backend writes into the guest's pages.
_FILLS_PAGES = frozenset({BLKIF_OP_READ})


def segment_grefs(segs: list, ring: FrontRing, id: int) -> list[int]:
    """The segments' grefs, checking blkif.seg-bounds on the way: first_sect <=
    last_sect < 8 (blkback dispatch_rw_block_io, xen_blkbk_parse_indirect)."""
    grefs = []
    append = grefs.append
    for gref, first, last in segs:
        if not 0 <= first <= last < SECTORS_PER_PAGE:
            raise Divergence("blkif.seg-bounds", f"request {id}: segment of gref {gref} covers sectors "
                             f"{first}..{last}; a 4096-byte page holds sectors 0..7, first <= last",
                             actual=(first, last), state=ring.state(id))
        append(gref)
    return grefs


def parse_request(ring: FrontRing, id: int, op: int, segs: list, indirect_op: int | None,
                  nr_segments: int | None, indirect_grefs: list[int]) -> tuple[int, list[int], list[int]]:
    """Check the request's shape; returns (data op, data grefs, indirect-page grefs)."""
    if op not in VALID_OPS:
        raise Divergence("blkif.op", f"request {id} has operation {op}; blkif defines 0-3, 5, 6",
                         actual=op, state=ring.state(id))
    if op == BLKIF_OP_INDIRECT:
        if not ring.max_indirect:
            raise Divergence("blkif.indirect", f"indirect request {id}, but the backend offered no "
                             "feature-max-indirect-segments", state=ring.state(id))
        if indirect_op not in (BLKIF_OP_READ, BLKIF_OP_WRITE):
            raise Divergence("blkif.indirect", f"indirect request {id} wraps operation {indirect_op}; "
                             "only read and write may be indirect", actual=indirect_op,
                             state=ring.state(id))
        count = nr_segments if nr_segments is not None else len(segs)
        if not 1 <= count <= ring.max_indirect:
            raise Divergence("blkif.nr-segments", f"indirect request {id} has {count} segments; the "
                             f"backend allows 1..{ring.max_indirect}", actual=count,
                             state=ring.state(id))
        if segs and len(segs) != count:
            raise Divergence("blkif.nr-segments", f"indirect request {id} says {count} segments but its "
                             f"indirect pages hold {len(segs)}", actual=len(segs),
                             state=ring.state(id))
        pages = (count + SEGS_PER_INDIRECT_FRAME - 1) // SEGS_PER_INDIRECT_FRAME
        if len(indirect_grefs) != pages or pages > BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST:
            raise Divergence("blkif.indirect", f"indirect request {id} with {count} segments names "
                             f"{len(indirect_grefs)} indirect pages; it needs {pages} (at most "
                             f"{BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST})",
                             expected=pages, actual=len(indirect_grefs), state=ring.state(id))
        return indirect_op, segment_grefs(segs, ring, id), list(indirect_grefs)
    if indirect_grefs or indirect_op is not None:
        raise Divergence("blkif.indirect", f"request {id} (operation {op}) carries indirect fields",
                         state=ring.state(id))
    count = len(segs)
    if op == BLKIF_OP_DISCARD:
        if count:
            raise Divergence("blkif.nr-segments", f"discard request {id} carries {count} segments",
                             actual=count, state=ring.state(id))
    elif count > BLKIF_MAX_SEGMENTS_PER_REQUEST or (count == 0 and op in (BLKIF_OP_READ, BLKIF_OP_WRITE)):
        low = 1 if op in (BLKIF_OP_READ, BLKIF_OP_WRITE) else 0
        raise Divergence("blkif.nr-segments", f"request {id} (operation {op}) has {count} segments; "
                         f"allowed {low}..{BLKIF_MAX_SEGMENTS_PER_REQUEST}", actual=count,
                         state=ring.state(id))
    return op, segment_grefs(segs, ring, id), []


def grant_direction_ok(policy_seed: bool, persistent: bool, op: int, readonly: bool,
                       indirect_page: bool) -> str | None:
    """blkif.grant-direction; returns why the access is wrong, or None.

    - the backend writes a read request's pages: they must be writable
      (a read-only grant makes its writable map fail: _set_status_v1);
    - the seed's blkif_queue_request grants a write request's pages
      read-only (rq_data_dir(req) as the readonly argument);
    - Linux 6.1 grants every page writable (get_grant passes 0) and that is
      legal; with persistent grants blkback maps every grant writable
      (xen_blkbk_map: GNTMAP_readonly only when !use_persistent_gnts), so
      a read-only grant would fail there.
    """
    if persistent and readonly:
        return "with persistent grants blkback maps every grant writable"
    if indirect_page:
        return None
    if op in _FILLS_PAGES and readonly:
        return "the backend writes a read request's pages"
    if policy_seed and op in (BLKIF_OP_WRITE, BLKIF_OP_WRITE_BARRIER) and not readonly:
        return "the seed grants a write request's pages read-only"
    return None


def check_grants(table: GrantTable, alloc: GuestAllocator | None, ring: FrontRing, request_id: int,
                 op: int, data: list[int], indirect: list[int], policy_seed: bool) -> None:
    """blkif.seg-grant and blkif.grant-direction for every gref of a request."""
    flags = table.flags
    gdom = table.gdom
    capacity = table.capacity
    backend = ring.backend
    st = alloc.st if alloc is not None else None
    # Access that needs a closer look: read-only grants always (never right for
    # a read, nor with persistent grants); writable ones only where the seed
    # wants read-only.
    check_writable = policy_seed and op in (BLKIF_OP_WRITE, BLKIF_OP_WRITE_BARRIER)
    for is_indirect, grefs in ((False, data), (True, indirect)):
        for gref in grefs:
            if gref >= capacity:
                raise Divergence("blkif.seg-grant", f"request {request_id} uses gref {gref}, outside "
                                 "the grant table", actual=gref, state=ring.state(request_id))
            f = flags[gref]
            if (f & GTF_type_mask) != GTF_permit_access or gdom[gref] != backend or (
                    st is not None and st[gref] not in _USABLE):
                if not f and not table.known[gref]:
                    continue  # granted before the trace began
                raise Divergence("blkif.seg-grant", f"request {request_id} uses gref {gref}, which is "
                                 f"not granted to the backend d{backend}",
                                 actual=gref, state={**ring.state(request_id),
                                                     "gref": table.entry_state(gref)})
            if f & GTF_readonly or (check_writable and not is_indirect):
                why = grant_direction_ok(policy_seed, ring.persistent, op, bool(f & GTF_readonly),
                                         is_indirect)
                if why is not None:
                    access = "read-only" if f & GTF_readonly else "writable"
                    raise Divergence("blkif.grant-direction", f"request {request_id} (operation {op}) "
                                     f"uses gref {gref} granted {access}: {why}",
                                     state={**ring.state(request_id), "gref": table.entry_state(gref)})


def check_response(ring: FrontRing, request: Request, op: int, status: int) -> None:
    if op != request.op:
        raise Divergence("blkif.rsp-op", f"response to request {request.id} has operation {op}; the "
                         f"request's is {request.op}", expected=request.op, actual=op,
                         state=ring.state(request.id))
    if status not in RSP_STATUSES:
        raise Divergence("blkif.rsp-status", f"response to request {request.id} has status {status}; "
                         "blkif defines 0, -1, -2", actual=status, state=ring.state(request.id))


