"""Every rule the model enforces: a stable id, one line of meaning, its source.

The checker reports these ids, the golden traces are named after them and
docs/model.md lists the same table (a unit test keeps the two in step).
Citations name the file and function of the version under test:
Xen RELEASE-4.17.7, Linux 6.1 (Debian 6.1.192), the seed's gnttab.c.
"""

from __future__ import annotations

from dataclasses import dataclass

BOTH = ("seed", "linux-6.1")
SEED = ("seed",)
LINUX61 = ("linux-6.1",)

XENC = "xen/common/grant_table.c (Xen 4.17.7)"
SEEDC = "seed platform-pci/gnttab.c"
LNXG = "drivers/xen/grant-table.c (Linux 6.1)"
LNXB = "drivers/block/xen-blkfront.c (Linux 6.1)"
RINGH = "xen/include/public/io/ring.h (Xen 4.17.7)"
BLKIFH = "xen/include/public/io/blkif.h (Xen 4.17.7)"
BACK = "drivers/block/xen-blkback/blkback.c (Linux 6.1)"


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    meaning: str
    source: str
    policies: tuple[str, ...] = BOTH


_RULES = [
    # guest grant-table side
    Rule("gnt.setup", "the guest table starts with 1 frame and the maximum Xen gives the domain",
         f"{SEEDC} gnttab_init, __max_nr_grant_frames; {LNXG} gnttab_init"),
    Rule("gnt.alloc", "an allocation returns the head the policy's free list yields, or -ENOSPC exactly when growing would pass the maximum",
         f"{SEEDC} get_free_entries; {LNXG} get_free_entries"),
    Rule("gnt.expand", "the table grows by ceil(shortfall / 512) frames exactly when an allocation finds too few free entries",
         f"{SEEDC} gnttab_expand, grow_gnttab_list; {LNXG} gnttab_expand, grow_gnttab_list"),
    Rule("gnt.claim", "a claim returns the head of an existing private chain, -ENOSPC only at its end",
         f"{SEEDC} gnttab_claim_grant_reference; {LNXG} gnttab_claim_grant_reference"),
    Rule("gnt.double-free", "a ref goes back to the free list only if the caller holds it",
         f"{SEEDC} put_free_entry; {LNXG} put_free_entry_locked"),
    Rule("gnt.free-while-granted", "a ref goes back to the free list only after its grant was ended",
         f"{SEEDC} gnttab_end_foreign_access; {LNXG} gnttab_end_foreign_access"),
    Rule("gnt.free-reserved", "the seed's free list never takes entries 0-7 (Linux 6.1 ignores such a free)",
         f"{SEEDC} gnttab_init (NR_RESERVED_ENTRIES); {LNXG} put_free_entry_locked", SEED),
    Rule("gnt.grant-unowned", "the guest grants only refs the allocator handed out",
         f"{SEEDC} gnttab_grant_foreign_access_ref; {LNXG} gnttab_grant_foreign_access_ref"),
    Rule("gnt.grant-reserved", "entries 0-7 belong to the toolstack; the guest never grants them",
         "xen/include/public/grant_table.h GNTTAB_NR_RESERVED_ENTRIES"),
    Rule("gnt.regrant-active", "a ref is granted again only after its previous grant was ended",
         f"{SEEDC} gnttab_grant_foreign_access_ref (flags written last)"),
    Rule("gnt.end-not-granted", "the guest ends access only to refs it has granted",
         f"{SEEDC} gnttab_end_foreign_access_ref; {LNXG} gnttab_end_foreign_access_ref_v1"),
    Rule("gnt.end-while-mapped", "ending access fails while another domain has the entry mapped (GTF_reading/GTF_writing set)",
         f"{SEEDC} gnttab_end_foreign_access_ref; {XENC} _set_status_v1"),
    Rule("gnt.end-busy-unmapped", "ending access succeeds when no domain has the entry mapped (captured mappings only)",
         f"{LNXG} gnttab_end_foreign_access_ref_v1; {XENC} reduce_status_for_pin"),
    Rule("gnt.deferred", "deferred ends exist only in Linux 6.1 and only for refs whose end was deferred",
         f"{LNXG} gnttab_add_deferred, gnttab_handle_deferred"),
    Rule("gnt.callback-early", "a free callback runs only once the free count reaches what it asked for",
         f"{SEEDC} do_free_callbacks; {LNXG} do_free_callbacks"),
    Rule("gnt.callback-missed", "a pending free callback runs as soon as a free or growth brings the count to what it asked for",
         f"{SEEDC} check_free_callbacks; {LNXG} check_free_callbacks"),
    # hypervisor operations
    Rule("gnttab.query_size.status", "GNTTABOP_query_size answers with the status Xen's source gives those inputs",
         f"{XENC} gnttab_query_size"),
    Rule("gnttab.query_size.output", "GNTTABOP_query_size reports the table's current and maximum frames",
         f"{XENC} gnttab_query_size"),
    Rule("gnttab.setup_table.status", "GNTTABOP_setup_table answers with the status Xen's source gives those inputs",
         f"{XENC} gnttab_setup_table"),
    Rule("gnttab.map.status", "GNTTABOP_map_grant_ref answers with the status Xen's source gives those inputs and that entry",
         f"{XENC} map_grant_ref, _set_status_v1"),
    Rule("gnttab.map.output", "a successful map returns a handle not already live and the frame the entry already maps",
         f"{XENC} map_grant_ref, get_maptrack_handle"),
    Rule("gnttab.unmap.status", "GNTTABOP_unmap_grant_ref answers with the status Xen's source gives that handle",
         f"{XENC} unmap_common"),
    Rule("gnttab.copy.status", "GNTTABOP_copy answers with the status Xen's source gives those inputs",
         f"{XENC} gnttab_copy_one, gnttab_copy_lock_domain, acquire_grant_for_copy, gnttab_copy_buf"),
    Rule("gnttab.transfer.status", "GNTTABOP_transfer answers with the status (or -ENOSYS for HVM callers) Xen's source gives",
         f"{XENC} gnttab_transfer, gnttab_prepare_for_transfer; xen/arch/x86/hvm/hypercall.c hvm_grant_table_op"),
    Rule("gnttab.set_version.result", "GNTTABOP_set_version returns what Xen's source gives that version and table",
         f"{XENC} gnttab_set_version"),
    Rule("gnttab.get_version.result", "GNTTABOP_get_version returns what Xen's source gives, and the table's version",
         f"{XENC} gnttab_get_version"),
    # Xen's view at a quiet point
    Rule("xen.dump.frames", "Xen's table size (frames, maximum) equals the model's",
         f"{XENC} gnttab_usage_print, gnttab_grow_table"),
    Rule("xen.dump.unexpected", "Xen lists no mapped entry the model says no domain can have mapped",
         f"{XENC} gnttab_usage_print"),
    Rule("xen.dump.missing", "Xen lists every mapping the model knows to be in place",
         f"{XENC} gnttab_usage_print"),
    Rule("xen.dump.mismatch", "a listed entry has the mapping domain, frame, pin and flags the model expects",
         f"{XENC} gnttab_usage_print, map_grant_ref"),
    # the whole table, read by dom0 from Xen (XENMEM_resource_grant_table)
    Rule("xen.table.unexpected", "an entry Xen holds as granted is one the model says the guest does not grant",
         f"{XENC} gnttab_acquire_resource; {LNXG} gnttab_update_entry_v1, gnttab_end_foreign_access_ref_v1"),
    Rule("xen.table.missing", "every entry the model says is granted is granted in Xen's table",
         f"{XENC} gnttab_acquire_resource; {LNXG} gnttab_update_entry_v1"),
    Rule("xen.table.mismatch", "a granted entry has the domain, frame and flags the model expects",
         f"{XENC} gnttab_acquire_resource, _set_status_v1; {LNXG} gnttab_update_entry_v1"),
    Rule("xen.table.untraced", "an entry the trace never touched stays as dom0 first read it",
         f"{XENC} gnttab_acquire_resource; harness/capture (the tracer's probes)"),
    Rule("lifecycle.grant-leak", "a ring torn down (blkif_free_ring) has ended every grant it held by the next quiet point: ring pages, persistent grants, grants of requests in flight",
         f"{LNXB} blkif_free_ring, blkif_free, blkfront_remove; {LNXG} gnttab_end_foreign_access"),
    Rule("blkif.resume-lost-request", "every read or write in flight when the guest was suspended is issued again after the resume (its sectors, with the same operation) before the second quiet point after it",
         f"{LNXB} blkfront_resume, blkif_recover", LINUX61),
    # shared rings
    Rule("ring.free", "a ring is torn down once per set-up",
         f"{LNXB} blkif_free_ring (info->rinfo freed and set to NULL after)"),
    Rule("ring.setup", "ring pages are granted writable to the backend and nr_ents is the ring size for that area",
         f"{RINGH} __CONST_RING_SIZE, FRONT_RING_INIT; {LNXB} setup_blkring"),
    Rule("ring.not-connected", "requests go only on a ring that is set up and connected",
         f"{LNXB} blkif_queue_request (BLKIF_STATE_CONNECTED)"),
    Rule("ring.req-index", "each request is written at the private producer index req_prod_pvt",
         f"{RINGH} RING_GET_REQUEST; {LNXB} blkif_ring_get_request"),
    Rule("ring.overflow", "no more requests are outstanding than the ring has slots",
         f"{RINGH} RING_FULL, RING_REQUEST_PROD_OVERFLOW"),
    Rule("ring.push", "req_prod moves from its last published value to the private producer index",
         f"{RINGH} RING_PUSH_REQUESTS_AND_CHECK_NOTIFY"),
    Rule("ring.notify", "the frontend notifies exactly when (new - req_event) < (new - old) in 32-bit arithmetic",
         f"{RINGH} RING_PUSH_REQUESTS_AND_CHECK_NOTIFY"),
    Rule("ring.id-reuse", "no request id is reused while a request with that id is in flight",
         f"{BLKIFH} struct blkif_response (id echoed); {LNXB} get_id_from_freelist"),
    Rule("ring.rsp-index", "responses are consumed in order at rsp_cons",
         f"{RINGH} RING_GET_RESPONSE; {LNXB} blkif_interrupt"),
    Rule("ring.rsp-overflow", "no response is consumed beyond the requests published",
         f"{RINGH} RING_RESPONSE_PROD_OVERFLOW; {LNXB} blkif_interrupt"),
    Rule("ring.rsp-unknown-id", "every response answers a request in flight",
         f"{LNXB} blkif_interrupt (\"response references no pending request\")"),
    Rule("ring.rsp-notify", "the backend notifies exactly when (new - rsp_event) < (new - old) in 32-bit arithmetic",
         f"{RINGH} RING_PUSH_RESPONSES_AND_CHECK_NOTIFY"),
    # blkif
    Rule("blkif.op", "a request's operation is read, write, write_barrier, flush_diskcache, discard or indirect",
         f"{BLKIFH} BLKIF_OP_*"),
    Rule("blkif.nr-segments", "read/write carry 1-11 segments, flush/barrier 0-11, discard none, indirect 1..max negotiated",
         f"{BLKIFH} BLKIF_MAX_SEGMENTS_PER_REQUEST; {BACK} dispatch_rw_block_io"),
    Rule("blkif.seg-bounds", "every segment has first_sect <= last_sect <= 7 (within its 4096-byte page)",
         f"{BLKIFH} struct blkif_request_segment; {BACK} dispatch_rw_block_io, xen_blkbk_parse_indirect"),
    Rule("blkif.indirect", "indirect requests only when negotiated, read/write only, ceil(nr_segments / 512) indirect pages (<= 8)",
         f"{BLKIFH} BLKIF_OP_INDIRECT; {BACK} xen_blkbk_parse_indirect"),
    Rule("blkif.seg-grant", "every gref a request uses is granted, and not ended, to the backend domain",
         f"{BLKIFH} struct blkif_request_segment; {BACK} xen_blkbk_map"),
    Rule("blkif.grant-direction", "read pages are granted writable; the seed grants write pages read-only; with persistent grants every page is writable",
         f"{SEEDC} blkif_queue_request; {LNXB} get_grant; {BACK} xen_blkbk_map"),
    Rule("blkif.grant-ended-early", "no grant of a request is ended while the request is in flight",
         f"{LNXB} blkif_completion; {SEEDC} blkif_completion"),
    Rule("blkif.grant-not-ended", "after a response the frontend tries to end every grant of that request before going on",
         f"{LNXB} blkif_completion; {SEEDC} blkif_completion"),
    Rule("blkif.kept-mapped", "without persistent grants the backend has unmapped a request's grants when its response arrives",
         f"{LNXB} blkif_completion (\"backed has not unmapped grant\"); {BACK} xen_blkbk_unmap"),
    Rule("blkif.rsp-op", "a response carries its request's operation (the indirect_op for indirect requests)",
         f"{LNXB} blkif_interrupt (\"response has wrong operation\")"),
    # feature negotiation (xenstore at connect, then the ring)
    Rule("negotiate.persistent", "the frontend's feature-persistent node is what its feature_persistent parameter asks",
         f"{LNXB} talk_to_blkback (feature_persistent_parm)", LINUX61),
    Rule("negotiate.queues", "multi-queue-num-queues is min(backend's multi-queue-max-queues, max_queues, vCPUs), absent for one ring; no ring past it carries requests",
         f"{LNXB} negotiate_mq, talk_to_blkback, xlblk_init", LINUX61),
    Rule("negotiate.ring-order", "ring-page-order is min(max_ring_page_order, backend's max-ring-page-order), absent for one page; the ring has 2^order pages",
         f"{LNXB} talk_to_blkback, setup_blkring", LINUX61),
    Rule("negotiate.indirect", "indirect requests only when min(max_indirect_segments, backend's feature-max-indirect-segments) > 11, with at most that many segments",
         f"{LNXB} blkfront_gather_backend_features, blkif_queue_rw_req", LINUX61),
    Rule("negotiate.flush", "cache flushes only after feature-flush-cache; write barriers only after feature-barrier without feature-flush-cache",
         f"{LNXB} blkfront_gather_backend_features, blkif_queue_rw_req", LINUX61),
    Rule("negotiate.discard", "discard requests only after feature-discard",
         f"{LNXB} blkfront_gather_backend_features, blkif_queue_discard_req", LINUX61),
    Rule("blkif.rsp-status", "a response status is BLKIF_RSP_OKAY, _ERROR or _EOPNOTSUPP",
         f"{BLKIFH} BLKIF_RSP_*"),
    # a backend that lies, judged from its own log (harness/model/backend_lies.py)
    Rule("lie.disable", "after a response the protocol forbids (a duplicate, an id not pending or beyond the ring, the wrong operation, rsp_prod past what was produced, a grant still mapped without persistent grants) the frontend consumes nothing past it: rsp_event stays at or before it",
         f"{LNXB} blkif_interrupt (err: BLKIF_STATE_ERROR, \"disabled for further use\"), blkif_completion", LINUX61),
    Rule("lie.tolerate", "after a lie the hardened frontend takes as harmless (an error status, a late, reordered or unannounced response, an event storm, a response rewritten once read, grants mapped again or overwritten) it consumes the responses past it",
         f"{LNXB} blkif_interrupt (RING_COPY_RESPONSE, blkif_rsp_to_req_status)", LINUX61),
    Rule("lie.id-reuse", "the frontend never pushes a request whose id the backend has taken and not answered",
         f"{LNXB} get_id_from_freelist, add_id_to_freelist", LINUX61),
    Rule("lie.grant-ended", "once the frontend has consumed a response it no longer grants that request's pages: Xen refuses the backend's map of them",
         f"{LNXB} blkif_completion (gnttab_try_end_foreign_access); {XENC} map_grant_ref", LINUX61),
    Rule("lie.zeroed", "on an untrusted disk every byte of a shared page that no request covered is zero (XSA-403)",
         f"{LNXB} blkfront_setup_indirect, get_free_grant (bounce pages from __GFP_ZERO), the trusted node", LINUX61),
    Rule("lie.held-page", "a page whose grant the frontend ended while the backend still maps it is not reused by the guest until the backend lets go (XSA-396)",
         f"{LNXG} gnttab_end_foreign_access, gnttab_add_deferred", LINUX61),
]

RULES: dict[str, Rule] = {rule.id: rule for rule in _RULES}
assert len(RULES) == len(_RULES), "duplicate rule id"

# Not a rule of the subject: the model cannot judge this trace (a feature it
# does not cover).  The verdict is ERROR, never PASS or FAIL.
UNSUPPORTED = "model.unsupported"


class Divergence(Exception):
    """The subject did something a rule forbids.

    `state` names the grant refs, ring slots or request ids involved and
    what the model believes about them; `expected`/`actual` are set when the
    rule compares a value.
    """

    def __init__(self, rule: str, message: str, *, state: dict | None = None,
                 expected: object = None, actual: object = None):
        super().__init__(message)
        assert rule in RULES, rule
        self.rule = rule
        self.message = message
        self.state = state or {}
        self.expected = expected
        self.actual = actual


class Unsupported(Exception):
    """The trace uses something the model does not cover (e.g. grant table v2)."""

    def __init__(self, message: str):
        super().__init__(message)
        self.rule = UNSUPPORTED
        self.message = message
