"""Trace schema version 1: one typed record per event kind.

The capture side writes these records and the checker reads them; both use
these classes, so the contract lives in one place (docs/trace-schema.md
explains every field).  A trace is JSON Lines: a header line first, then one
event per line.

Every event carries the same five fields: `seq` (strictly increasing), `t_ns`
(nanoseconds, monotonic within a trace), `dom` (the domain that acted), `src`
(who observed it: the guest, dom0, or Xen) and `kind` (the tag that selects
the record type).  The records are flat and small on purpose: the checker
decodes millions of them, and a capture tool written in any language can
produce them.

Numbers follow the C ABI they come from: grant refs, frames and ring indices
are unsigned; statuses are the signed GNTST_* / BLKIF_RSP_* values; a result
that a Linux function returns as `-errno` is recorded as that negative number.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

import msgspec
from msgspec import Meta

SCHEMA_VERSION = 1

# Unsigned ABI widths, checked while decoding: domid_t, grant_ref_t/RING_IDX,
# 64-bit ids and frames.  Fields that carry a C function's result keep plain
# int, since those may be -errno.
U16 = Annotated[int, Meta(ge=0, le=0xFFFF)]
U32 = Annotated[int, Meta(ge=0, le=0xFFFFFFFF)]
# (msgspec bounds must fit int64: 64-bit values are checked for sign only.)
U64 = Annotated[int, Meta(ge=0)]
I16 = Annotated[int, Meta(ge=-0x8000, le=0x7FFF)]

Source = Literal["guest", "dom0", "xen"]
Policy = Literal["seed", "linux-6.1"]
EndMode = Literal["ref", "try", "end"]

# Options shared by every record: keyword-only (fields are named in JSON
# anyway), no GC tracking (records hold no reference cycles, and millions of
# tracked objects make the collector crawl), unknown fields rejected (a typo
# in a capture tool must not silently drop a fact), defaults left out when
# written back.
_RECORD = dict(kw_only=True, gc=False, forbid_unknown_fields=True, omit_defaults=True)


class Event(msgspec.Struct, tag_field="kind", **_RECORD):
    seq: U64
    t_ns: U64
    dom: U16
    src: Source


# --- guest grant-table side (drivers/xen/grant-table.c and the seed's gnttab.c)


class GntSetup(Event, tag="gnt.setup", **_RECORD):
    """Guest grant table initialised: `nr_frames` mapped, `max_frames` limit."""

    nr_frames: U32
    max_frames: U32


class GntAlloc(Event, tag="gnt.alloc", **_RECORD):
    """gnttab_alloc_grant_references(count): `head` of the private chain, or -errno."""

    count: U16
    head: int


class GntClaim(Event, tag="gnt.claim", **_RECORD):
    """gnttab_claim_grant_reference(&head): `ref` taken from the chain at `head`, or -errno."""

    head: U32
    ref: int


class GntRelease(Event, tag="gnt.release", **_RECORD):
    """gnttab_release_grant_reference(&head, ref): `ref` pushed back on the chain at `head`."""

    head: U32
    ref: U32


class GntFree(Event, tag="gnt.free", **_RECORD):
    """gnttab_free_grant_reference(ref): one ref back on the free list."""

    ref: U32


class GntFreeChain(Event, tag="gnt.free_chain", **_RECORD):
    """gnttab_free_grant_references(head): the rest of a private chain back on the free list."""

    head: U32


class GntGrant(Event, tag="gnt.grant", **_RECORD):
    """The guest wrote a grant entry: `ref` permits domain `to` access to `frame`.

    alloc=False: gnttab_grant_foreign_access_ref (the caller owns `ref`).
    alloc=True: gnttab_grant_foreign_access (one ref taken from the free list;
    `ref` is what it returned, -errno on failure).
    """

    ref: int
    to: U16
    frame: U32
    ro: bool = False
    alloc: bool = False


class GntEnd(Event, tag="gnt.end", **_RECORD):
    """The guest tried to end access to `ref`; `ok` is the result.

    mode "ref": gnttab_end_foreign_access_ref (the ref stays with the caller);
    mode "try": gnttab_try_end_foreign_access (freed on success, kept on failure);
    mode "end": gnttab_end_foreign_access (freed on success; on failure the seed
    leaks the ref, Linux 6.1 defers it).
    """

    ref: U32
    ok: bool
    mode: EndMode = "try"


class GntDeferredEnd(Event, tag="gnt.deferred_end", **_RECORD):
    """Linux 6.1's deferred-end timer retried `ref`; `ok`: ended and freed."""

    ref: U32
    ok: bool


class GntExpand(Event, tag="gnt.expand", **_RECORD):
    """The guest grew its grant table from `old` to `new` frames."""

    old: U32
    new: U32


class GntCbRequest(Event, tag="gnt.cb_request", **_RECORD):
    """gnttab_request_free_callback: callback `cb` wants `count` free entries."""

    cb: U64
    count: U16


class GntCbFire(Event, tag="gnt.cb_fire", **_RECORD):
    """A free callback ran."""

    cb: U64


class GntCbCancel(Event, tag="gnt.cb_cancel", **_RECORD):
    """gnttab_cancel_free_callback."""

    cb: U64


class ToolstackGrant(Event, tag="toolstack.grant", **_RECORD):
    """The toolstack seeded reserved entry `ref` (0-7) of domain `rdom`."""

    rdom: U16
    ref: U32
    to: U16
    frame: U32


# --- GNTTABOP hypercalls (xen/include/public/grant_table.h), one record each.
# `status` is the GNTST_* value Xen wrote back, `rc` the hypercall's return.


class OpQuerySize(Event, tag="gnttab.query_size", **_RECORD):
    rdom: U16
    status: I16
    nr_frames: int | None = None
    max_nr_frames: int | None = None
    rc: int = 0


class OpSetupTable(Event, tag="gnttab.setup_table", **_RECORD):
    rdom: U16
    nr_frames: U32
    status: I16
    rc: int = 0


class OpMap(Event, tag="gnttab.map", **_RECORD):
    rdom: U16
    ref: U32
    flags: U32
    status: I16
    host_addr: int | None = None
    handle: int | None = None
    dev_bus_addr: int | None = None
    rc: int = 0


class OpUnmap(Event, tag="gnttab.unmap", **_RECORD):
    # host_addr/dev_bus_addr left out (None): not recorded; the model then
    # assumes the call named the addresses the map returned.  0 means 0.
    handle: U32
    status: I16
    host_addr: int | None = None
    dev_bus_addr: int | None = None
    rc: int = 0


class OpCopy(Event, tag="gnttab.copy", **_RECORD):
    src_dom: U16
    src: U64
    src_off: U16
    dst_dom: U16
    dst: U64
    dst_off: U16
    len: U16
    flags: U16
    status: I16
    rc: int = 0


class OpTransfer(Event, tag="gnttab.transfer", **_RECORD):
    rdom: U16
    ref: U32
    gfn: U64
    status: I16
    rc: int = 0


class OpSetVersion(Event, tag="gnttab.set_version", **_RECORD):
    version: int
    rc: int
    out_version: int | None = None


class OpGetVersion(Event, tag="gnttab.get_version", **_RECORD):
    rdom: int
    rc: int
    version: int | None = None


# --- shared rings and blkif (xen/include/public/io/ring.h, io/blkif.h)


class RingSetup(Event, tag="ring.setup", **_RECORD):
    """The frontend initialised ring `ring` on the pages granted as `grefs`.

    `start`: the free-running index both producers and consumers stand at
    (0 after SHARED_RING_INIT; a capture that attaches to a quiet, running
    ring gives the current index).
    """

    ring: str
    grefs: list[U32]
    backend: U16
    nr_ents: U32
    start: U32 = 0


class BlkifConnect(Event, tag="blkif.connect", **_RECORD):
    """The backend connected (xenstore state 4) with these negotiated features."""

    ring: str
    persistent: bool = False
    max_indirect: U32 = 0


class BlkifFeatures(Event, tag="blkif.features", **_RECORD):
    """What both ends of ring `ring`'s device wrote in xenstore when it
    connected (`front`, `back`: node name -> value, absent nodes left out),
    the frontend's module parameters in force (`asked`: name -> value, as
    the scenario set them, else as the loaded module reports them) and the
    guest's vCPUs.  Values are the raw strings the ends wrote."""

    ring: str
    front: dict[str, str] = {}
    back: dict[str, str] = {}
    asked: dict[str, int] = {}
    vcpus: int | None = None


class BlkifReq(Event, tag="blkif.req", **_RECORD):
    """A request as read from the shared ring at free-running index `idx`.

    `segs` holds [gref, first_sect, last_sect] triples: the request's own
    segments, or for BLKIF_OP_INDIRECT the segments read from its indirect
    pages (may be left empty when the capture cannot read them).
    """

    ring: str
    idx: U32
    id: U64
    op: U16
    sector: U64 = 0
    segs: list[tuple[U32, int, int]] = []
    indirect_op: int | None = None
    nr_segments: int | None = None
    indirect_grefs: list[U32] = []


class RingPush(Event, tag="ring.push", **_RECORD):
    """The frontend published requests: req_prod went from `old` to `new`."""

    ring: str
    old: U32
    new: U32
    notify: bool
    req_event: U32 | None = None


class BlkifRsp(Event, tag="blkif.rsp", **_RECORD):
    """The frontend consumed the response at free-running index `idx`."""

    ring: str
    idx: U32
    id: U64
    op: U16
    status: I16


class RingRspPush(Event, tag="ring.rsp_push", **_RECORD):
    """The backend published responses: rsp_prod went from `old` to `new`."""

    ring: str
    old: U32
    new: U32
    notify: bool
    rsp_event: U32 | None = None


class BlkifDisconnect(Event, tag="blkif.disconnect", **_RECORD):
    """The backend left the Connected state: it will unmap the ring and its grants."""

    ring: str


class RingFree(Event, tag="ring.free", **_RECORD):
    """The frontend began tearing ring `ring` down (blkif_free_ring: device
    removed, module unloaded, or ring re-made on resume).  It then ends
    every grant of the ring, the ring pages last.  `req_prod`/`rsp_cons`:
    its private producer and its consumer index at that moment."""

    ring: str
    req_prod: U32 | None = None
    rsp_cons: U32 | None = None


# --- Xen's own view at a quiet point and domain lifetime


class DumpEntry(msgspec.Struct, kw_only=True, gc=False, forbid_unknown_fields=True):
    """One line of `xl debug-keys g` (xen/common/grant_table.c gnttab_usage_print)."""

    ref: U32
    mapdom: U16
    pin: U32
    gdom: U16
    frame: U64
    flags: U16


class XenGnttab(Event, tag="xen.gnttab", **_RECORD):
    """Xen's grant table of domain `rdom` at a quiet point: size and active entries."""

    rdom: U16
    nr_frames: U32
    max_frames: U32
    entries: list[DumpEntry] = []


class SharedEntry(msgspec.Struct, kw_only=True, gc=False, forbid_unknown_fields=True):
    """One grant_entry_v1 of a guest's table as Xen holds it (flags, domid, frame)."""

    ref: U32
    flags: U16
    dom: U16
    frame: U64


class XenTableBegin(Event, tag="xen.table.begin", **_RECORD):
    """dom0 is about to read domain `rdom`'s whole table.  The guest runs on
    meanwhile (blkfront's purge work may end grants): the guest events
    between this record and the next `xen.table` of `rdom` were drained after
    the read and may have happened before or after it."""

    rdom: U16


class XenTable(Event, tag="xen.table", **_RECORD):
    """Domain `rdom`'s whole grant table (its first `nr_frames` frames), read by
    dom0 from Xen through XENMEM_resource_grant_table at a quiet point: every
    entry whose flags are not 0 (a granted entry, or one still being read)."""

    rdom: U16
    nr_frames: U32
    entries: list[SharedEntry] = []


class DomainDestroy(Event, tag="domain.destroy", **_RECORD):
    rdom: U16


class GuestResume(Event, tag="guest.resume", **_RECORD):
    """The guest came back from a suspend (xen_arch_post_suspend, before
    gnttab_resume).  Unless `cancelled` (a checkpoint: the same domain runs
    on), it runs in a new domain: Xen's grant table for it is new, every
    entry zero, and nothing another domain mapped of the old one is mapped
    any more.  What Linux holds (its free list, its rings' requests) is in
    the guest's memory and unchanged.  The trace keeps the guest's first
    domain id throughout (the harness maps the new one back)."""

    cancelled: bool = False


EVENT_TYPES: tuple[type[Event], ...] = (
    GntSetup, GntAlloc, GntClaim, GntRelease, GntFree, GntFreeChain, GntGrant,
    GntEnd, GntDeferredEnd, GntExpand, GntCbRequest, GntCbFire, GntCbCancel,
    ToolstackGrant,
    OpQuerySize, OpSetupTable, OpMap, OpUnmap, OpCopy, OpTransfer,
    OpSetVersion, OpGetVersion,
    RingSetup, BlkifConnect, BlkifFeatures, BlkifReq, RingPush, BlkifRsp, RingRspPush,
    BlkifDisconnect, RingFree,
    XenGnttab, XenTableBegin, XenTable, DomainDestroy, GuestResume,
)

AnyEvent = Union[EVENT_TYPES]  # type: ignore[valid-type]

KINDS: dict[str, type[Event]] = {t.__struct_config__.tag: t for t in EVENT_TYPES}


# --- header


class DomainInfo(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """What Xen knows about a domain and the model cannot observe."""

    domid: int
    type: Literal["hvm", "pv"] = "hvm"
    privileged: bool = False
    max_grant_frames: int | None = None
    max_version: int = 2


class Header(msgspec.Struct, tag_field="kind", tag="header", kw_only=True,
             forbid_unknown_fields=True, omit_defaults=True):
    """First line of a trace: how it was recorded.  Every field but `v` is optional."""

    v: int
    policy: Policy | None = None
    backend: Literal["blkback", "qdisk", "none"] | None = None
    guest: int | None = None
    backend_dom: int | None = None
    max_grant_frames: int | None = None
    # "captured": every foreign mapping of the guest's grants appears as a
    # gnttab.map/unmap event; "inferred": the model infers blkback's mappings.
    mappings: Literal["inferred", "captured"] = "inferred"
    domains: list[DomainInfo] = []
    # Guest frames Xen would refuse (GNTST_bad_page), per domain: a fact the
    # model cannot observe, declared by conformance cases that provoke it.
    bad_gfns: dict[int, list[int]] = {}
    xen: str | None = None
    note: str | None = None
