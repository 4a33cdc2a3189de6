"""xenrig_trace's lines -> schema events (harness/capture/guest_trace.py).

The sample lines are shaped exactly as guest-kernel/xenrig_trace writes them
(field order, private fields, DOMID_SELF), for one blkfront ring: the ring
page granted by xenbus, a direct read and an indirect write queued, one
interrupt that consumed both responses, and a grant ended through
gnttab_end_foreign_access.  The result must replay through the model.
"""

import json
import re
from pathlib import Path

import msgspec
import pytest

from harness.capture.guest_trace import parse_guest_lines
from harness.check import replay
from harness.trace.schema import AnyEvent, Header

GUEST = 3
RING_NAMES = {8: "xvda/0"}
LIST_END = 4294967295
BATCH = 50  # the blkif_interrupt call's _c
UNLOCK = 65  # the _c taken where that interrupt released the ring lock


def line(c, kind, *, sub=0, t_end=False, task=412, batch=None, cpu=0, c_end=None, **fields):
    """One line as the module formats it (ev_open ... ev_close)."""
    ev = {"t_ns": 5_000_000 + 1000 * c + sub, "dom": 32752, "src": "guest", "kind": kind, **fields}
    if c_end is not None:
        ev["_c_end"] = c_end
    ev["_c"] = c
    if sub:
        ev["_s"] = sub
    if t_end:
        ev["_t_end"] = ev["t_ns"] + 700
    ev["_task"] = task
    ev["_cpu"] = cpu
    if batch is not None:
        ev["_batch"] = batch
    return json.dumps(ev, separators=(",", ":"))


def ring_setup_lines():
    return [
        '{"kind":"_config","t_ns":4990000,"_c":1,"version":1,"cb_fire":true,"blkfront":"registered"}',
        line(2, "gnt.alloc", t_end=True, count=1, head=8),
        line(3, "gnt.claim", t_end=True, head=8, ref=8),
        line(4, "gnt.grant", ref=8, to=0, frame=4100, ro=False, alloc=False),
    ]


INDIRECT_SEGS = [[ref, 0, 7] for ref in range(11, 23)]


def io_lines():
    """Two blkif_queue_rq calls and one blkif_interrupt, in the module's buffer order."""
    lines = [
        # read, id 0, one segment
        line(5, "gnt.alloc", t_end=True, count=1, head=9),
        line(6, "gnt.claim", t_end=True, head=9, ref=9),
        line(7, "gnt.grant", ref=9, to=0, frame=5000, ro=False, alloc=False),
        line(8, "gnt.free_chain", head=LIST_END),
        line(9, "blkif.req", ring="gref:8", idx=0, op=0, id=0, sector=2048, segs=[[9, 0, 7]]),
        line(10, "ring.push", ring="gref:8", old=0, new=1, notify=True, req_event=1,
             _rinfo="ffff888004a1c000"),
        # indirect write, id 1: the indirect page is claimed and granted first
        line(11, "gnt.alloc", t_end=True, count=13, head=10),
        line(12, "gnt.claim", t_end=True, head=10, ref=10),
        line(13, "gnt.grant", ref=10, to=0, frame=6000, ro=False, alloc=False),
    ]
    c = 14
    for ref in range(11, 23):
        lines.append(line(c, "gnt.claim", t_end=True, head=ref, ref=ref))
        lines.append(line(c + 1, "gnt.grant", ref=ref, to=0, frame=6000 + ref, ro=False, alloc=False))
        c += 2
    lines += [
        line(c, "gnt.free_chain", head=LIST_END),
        line(c + 1, "blkif.req", ring="gref:8", idx=1, op=6, id=1, sector=4096, indirect_op=1,
             nr_segments=12, indirect_grefs=[10], segs=INDIRECT_SEGS),
        line(c + 2, "ring.push", ring="gref:8", old=1, new=2, notify=False, req_event=1,
             _rinfo="ffff888004a1c000"),
    ]
    # blkif_interrupt (_c 50, hard irq: _task 0): blkif_completion ends each
    # request's grants (data pages, then the indirect page) while consuming
    # it; the module writes the responses only when the handler returns,
    # with the _c it took where the handler released the ring lock.
    ends = [9] + list(range(11, 23)) + [10]
    for i, ref in enumerate(ends):
        lines.append(line(BATCH + 1 + i, "gnt.end", t_end=True, task=0, batch=BATCH,
                          ref=ref, ok=True, mode="try"))
    lines += [
        line(UNLOCK, "blkif.rsp", sub=1, task=0, batch=BATCH, ring="gref:8", idx=0, id=0, op=0,
             status=0),
        line(UNLOCK, "blkif.rsp", sub=2, task=0, batch=BATCH, ring="gref:8", idx=1, id=1, op=1,
             status=0),
    ]
    return lines


def teardown_lines():
    # gnttab_grant_foreign_access (with the _ref call it makes inside, in a
    # build that does not inline it), then gnttab_end_foreign_access, whose
    # result comes from the low-level end it runs.
    return [
        line(81, "gnt.grant", ref=23, to=0, frame=7000, ro=False, alloc=False, _nested=1),
        line(80, "gnt.grant", t_end=True, ref=23, to=0, frame=7000, ro=False, alloc=True),
        line(82, "gnt.end", t_end=True, ref=23, ok=True, mode="end"),
    ]


def all_lines():
    return ring_setup_lines() + io_lines() + teardown_lines()


def with_harness_events(guest_events):
    """Number the events and add what the harness synthesizes from xenstore."""
    setup = [
        {"t_ns": guest_events[2]["t_ns"], "dom": GUEST, "src": "guest", "kind": "ring.setup",
         "ring": "xvda/0", "grefs": [8], "backend": 0, "nr_ents": 32},
        {"t_ns": guest_events[2]["t_ns"], "dom": GUEST, "src": "guest", "kind": "blkif.connect",
         "ring": "xvda/0", "persistent": False, "max_indirect": 32},
    ]
    ordered = guest_events[:3] + setup + guest_events[3:]
    decoder = msgspec.json.Decoder(AnyEvent)
    return [decoder.decode(json.dumps({"seq": i, **ev})) for i, ev in enumerate(ordered, start=1)]


def header():
    return Header(v=1, policy="linux-6.1", backend="blkback", guest=GUEST, backend_dom=0)


def test_events_are_schema_shaped_and_replay():
    events = parse_guest_lines(all_lines(), GUEST, RING_NAMES)
    assert all(ev["dom"] == GUEST and ev["src"] == "guest" for ev in events)
    assert not any(k.startswith("_") for ev in events for k in ev)
    assert [ev["t_ns"] for ev in events] == sorted(ev["t_ns"] for ev in events)
    verdict = replay(with_harness_events(events), header=header())
    assert verdict.outcome == "PASS", verdict.summary()


def test_responses_go_before_the_ends_of_their_grants():
    events = parse_guest_lines(all_lines(), GUEST, RING_NAMES)
    tail = [(ev["kind"], ev.get("idx", ev.get("ref"))) for ev in events
            if ev["kind"] in ("blkif.rsp", "gnt.end")]
    assert tail[:3] == [("blkif.rsp", 0), ("gnt.end", 9), ("blkif.rsp", 1)]
    assert tail[3:] == [("gnt.end", ref) for ref in [*range(11, 23), 10, 23]]
    rsp1 = next(ev for ev in events if ev["kind"] == "blkif.rsp" and ev["idx"] == 1)
    assert rsp1 == {"t_ns": rsp1["t_ns"], "dom": GUEST, "src": "guest", "kind": "blkif.rsp",
                    "ring": "xvda/0", "idx": 1, "id": 1, "op": 1, "status": 0}


def test_both_responses_first_would_diverge():
    # What the raw order (all responses at the interrupt's entry) would mean
    # to the model: the next response before the first request's grants end.
    events = parse_guest_lines(all_lines(), GUEST, RING_NAMES)
    rsps = [ev for ev in events if ev["kind"] == "blkif.rsp"]
    rest = [ev for ev in events if ev["kind"] != "blkif.rsp"]
    first_end = next(i for i, ev in enumerate(rest) if ev["kind"] == "gnt.end")
    naive = rest[:first_end] + rsps + rest[first_end:]
    verdict = replay(with_harness_events(naive), header=header())
    assert verdict.outcome == "FAIL" and verdict.divergence.rule == "blkif.grant-not-ended"


def test_indirect_request_fields():
    events = parse_guest_lines(all_lines(), GUEST, RING_NAMES)
    req = next(ev for ev in events if ev["kind"] == "blkif.req" and ev["op"] == 6)
    assert req == {"t_ns": req["t_ns"], "dom": GUEST, "src": "guest", "kind": "blkif.req",
                   "ring": "xvda/0", "idx": 1, "op": 6, "id": 1, "sector": 4096, "indirect_op": 1,
                   "nr_segments": 12, "indirect_grefs": [10], "segs": INDIRECT_SEGS}
    push = next(ev for ev in events if ev["kind"] == "ring.push" and ev["new"] == 2)
    assert push["notify"] is False and "_rinfo" not in push


def test_nested_call_dropped_and_outer_kept():
    events = parse_guest_lines(all_lines(), GUEST, RING_NAMES)
    grants = [ev for ev in events if ev["kind"] == "gnt.grant" and ev["ref"] == 23]
    assert len(grants) == 1 and grants[0]["alloc"] is True
    end = next(ev for ev in events if ev["kind"] == "gnt.end" and ev["ref"] == 23)
    assert (end["mode"], end["ok"]) == ("end", True)


def test_unread_indirect_segments_are_allowed():
    lines = ring_setup_lines() + [
        line(9, "blkif.req", ring="gref:8", idx=0, op=6, id=0, sector=0, indirect_op=0,
             nr_segments=600, indirect_grefs=[30, 31], segs=[], _segs_unread=1),
    ]
    (req,) = [ev for ev in parse_guest_lines(lines, GUEST, RING_NAMES) if ev["kind"] == "blkif.req"]
    assert req["segs"] == [] and req["nr_segments"] == 600 and "_segs_unread" not in req


@pytest.mark.parametrize("marker, words", [
    ('{"kind":"_dropped","t_ns":5100000,"count":17}', "buffer was full and 17 events"),
    ('{"kind":"_missed","t_ns":5100000,"probe":"xen_blkfront:blkif_interrupt","count":2}',
     "missed 2 event(s) at 'xen_blkfront:blkif_interrupt'"),
    ('{"t_ns":5100000,"dom":32752,"src":"guest","kind":"_unsupported",'
     '"call":"gnttab_alloc_grant_reference_seq","_c":90,"_task":1,"_cpu":0}',
     "gnttab_alloc_grant_reference_seq"),
])
def test_incomplete_capture_is_an_error(marker, words):
    lines = all_lines()
    lines.insert(20, marker)
    with pytest.raises(ValueError, match="guest trace line 21") as info:
        parse_guest_lines(lines, GUEST, RING_NAMES)
    assert words in str(info.value)


def test_callbacks_need_the_list_address():
    lines = [
        '{"kind":"_config","t_ns":1,"_c":1,"version":1,"cb_fire":false,"blkfront":"registered"}',
        line(2, "gnt.cb_request", cb=18446612682148020416, count=33),
    ]
    with pytest.raises(ValueError, match="line 2: .*sym_free_callback_list"):
        parse_guest_lines(lines, GUEST, RING_NAMES)


def test_callback_addresses_fit_the_schema():
    cb = 18446612682148020416  # a kernel address, above 2**63
    lines = [line(2, "gnt.cb_request", cb=cb, count=33), line(3, "gnt.cb_fire", cb=cb, sub=1)]
    assert [ev["cb"] for ev in parse_guest_lines(lines, GUEST, {})] == [cb, cb]


@pytest.mark.parametrize("bad, words", [
    ('{"t_ns":1,"kind":"gnt.free"', "not valid JSON"),
    ('[1,2]', "not a JSON object"),
    (line(5, "gnt.bogus", ref=1), "unknown guest event kind 'gnt.bogus'"),
    ('{"t_ns":1,"dom":32752,"src":"guest","kind":"gnt.free","ref":9}', "'_c' must be an integer"),
    (line(5, "gnt.free", ref=-1), "does not fit trace schema v1"),
    (line(5, "blkif.rsp", ring="gref:99", idx=0, id=0, op=0, status=0), "no ring name for 'gref:99'"),
])
def test_malformed_lines_name_the_line(bad, words):
    lines = ring_setup_lines() + ["", bad]
    with pytest.raises(ValueError, match=r"guest trace line 6") as info:
        parse_guest_lines(lines, GUEST, RING_NAMES)
    assert words in str(info.value)


def test_capture_doc_example_lines():
    doc = (Path(__file__).resolve().parents[2] / "docs" / "capture.md").read_text()
    block = re.search(r"Example raw events as JSON lines.*?```json\n(.*?)```", doc, re.S).group(1)
    events = parse_guest_lines(block.splitlines(), GUEST, RING_NAMES)
    assert [ev["kind"] for ev in events] == ["blkif.req", "ring.push", "blkif.rsp", "gnt.end"]


# -- several vCPUs --------------------------------------------------------


def push_inside_interrupt_lines(rsp_c):
    """A blkif_interrupt begins on CPU 0 (_c 5); before it takes the ring
    lock, CPU 1 queues and pushes a request, which the backend answers at
    once; the interrupt consumes that response and ends its grant."""
    cpu1 = {"cpu": 1, "task": 500}
    return ring_setup_lines() + [
        line(6, "gnt.alloc", t_end=True, c_end=7, count=1, head=9, **cpu1),
        line(8, "gnt.claim", t_end=True, head=9, ref=9, **cpu1),
        line(9, "gnt.grant", ref=9, to=0, frame=5000, ro=False, alloc=False, **cpu1),
        line(10, "gnt.free_chain", head=LIST_END, **cpu1),
        line(11, "blkif.req", ring="gref:8", idx=0, op=0, id=0, sector=2048, segs=[[9, 0, 7]], **cpu1),
        line(12, "ring.push", ring="gref:8", old=0, new=1, notify=True, req_event=1,
             _rinfo="ffff888004a1c000", **cpu1),
        line(13, "gnt.end", t_end=True, task=0, batch=5, ref=9, ok=True, mode="try"),
        line(rsp_c, "blkif.rsp", sub=1, task=0, batch=5, ring="gref:8", idx=0, id=0, op=0, status=0),
    ]


def test_a_push_on_another_cpu_inside_an_interrupt_goes_before_its_response():
    # The response carries the _c taken where the interrupt released the
    # ring lock (14): after the push, as the lock ordered them.
    events = parse_guest_lines(push_inside_interrupt_lines(14), GUEST, RING_NAMES)
    kinds = [ev["kind"] for ev in events[6:]]
    assert kinds == ["gnt.free_chain", "blkif.req", "ring.push", "blkif.rsp", "gnt.end"]
    verdict = replay(with_harness_events(events), header=header())
    assert verdict.outcome == "PASS", verdict.summary()
    # At the interrupt's entry (5), the response would come before its own
    # request: the order a one-CPU tracer gave.
    events = parse_guest_lines(push_inside_interrupt_lines(5), GUEST, RING_NAMES)
    assert replay(with_harness_events(events), header=header()).outcome == "FAIL"


def free_inside_allocation_lines(free_c, c_end=10):
    """CPU 1 holds ref 30 (gnttab_grant_foreign_access) and ends it; CPU 0
    allocates one ref and gets 30, the free list's new head."""
    cpu1 = {"cpu": 1, "task": 500}
    return ring_setup_lines() + [
        line(5, "gnt.grant", t_end=True, c_end=6, ref=30, to=0, frame=7000, ro=False, alloc=True, **cpu1),
        line(7, "gnt.alloc", t_end=True, c_end=c_end, count=1, head=30),
        line(free_c, "gnt.end", t_end=True, ref=30, ok=True, mode="end", **cpu1),
        line(11, "gnt.claim", t_end=True, head=30, ref=30),
        line(12, "gnt.grant", ref=30, to=0, frame=7100, ro=False, alloc=False),
        line(13, "gnt.free_chain", head=LIST_END),
    ]


def test_a_free_on_another_cpu_inside_an_allocation_goes_first():
    events = parse_guest_lines(free_inside_allocation_lines(8), GUEST, RING_NAMES)
    assert [(ev["kind"], ev.get("ref", ev.get("head"))) for ev in events[3:6]] == [
        ("gnt.grant", 30), ("gnt.end", 30), ("gnt.alloc", 30)]
    verdict = replay(with_harness_events(events), header=header())
    assert verdict.outcome == "PASS", verdict.summary()


@pytest.mark.parametrize("free_c, c_end", [(8, None), (10, 9)], ids=["no-c-end", "free-after-return"])
def test_an_allocation_moves_only_past_frees_that_began_inside_it(free_c, c_end):
    # Without the allocation's return bound, or with a free that began only
    # after it returned, the ref really was handed out while in use.
    lines = free_inside_allocation_lines(free_c, c_end or 10)
    if c_end is None:
        lines = [ln.replace(',"_c_end":10', "") for ln in lines]
    events = parse_guest_lines(lines, GUEST, RING_NAMES)
    assert [ev["kind"] for ev in events[3:5]] == ["gnt.grant", "gnt.alloc"]
    assert replay(with_harness_events(events), header=header()).outcome == "FAIL"


def three_grants_on_cpu1(first_ref):
    """CPU 1 holds three refs from gnttab_grant_foreign_access (_c 5..10)."""
    return ring_setup_lines() + [
        line(5 + 2 * i, "gnt.grant", t_end=True, c_end=6 + 2 * i, ref=first_ref + i, to=0, frame=7000 + i,
             ro=False, alloc=True, cpu=1, task=500) for i in range(3)]


def settled(lines):
    events = parse_guest_lines(lines, GUEST, RING_NAMES)
    return events, [(ev["kind"], ev.get("ref", ev.get("head"))) for ev in events[6:]]


def test_an_allocation_goes_right_after_the_free_of_its_first_ref_not_after_later_ones():
    # The shape a 4-vCPU capture showed: an interrupt on CPU 1 ends 40 then
    # 41 (each put back on the free list's head); an allocation of 2 on
    # CPU 0 spans both ends and got 40 first, then 39 (freed before): it took
    # the lock between the two ends.  After the second end, the model's list
    # would start at 41 and leave 39 free, so the claim of 39 would diverge.
    cpu1 = {"cpu": 1, "task": 500}
    events, order = settled(three_grants_on_cpu1(39) + [
        line(11, "gnt.end", t_end=True, ref=39, ok=True, mode="end", **cpu1),
        line(12, "gnt.alloc", t_end=True, c_end=16, count=2, head=40),
        line(13, "gnt.end", t_end=True, ref=40, ok=True, mode="end", **cpu1),
        line(14, "gnt.end", t_end=True, ref=41, ok=True, mode="end", **cpu1),
        line(17, "gnt.claim", t_end=True, head=40, ref=40),
        line(18, "gnt.claim", t_end=True, head=39, ref=39),
    ])
    assert order[1:4] == [("gnt.end", 40), ("gnt.alloc", 40), ("gnt.end", 41)], order
    verdict = replay(with_harness_events(events), header=header())
    assert verdict.outcome == "PASS", verdict.summary()


def test_a_free_that_began_before_the_allocation_but_locked_after_goes_after_it():
    # Also seen on 4 vCPUs: CPU 1 ends 44, 45, 46; the allocation on CPU 0
    # began after all three began, yet got 45 first (46 was put back after
    # it took the lock).
    cpu1 = {"cpu": 1, "task": 500}
    events, order = settled(three_grants_on_cpu1(44) + [
        line(11 + i, "gnt.end", t_end=True, ref=44 + i, ok=True, mode="end", **cpu1) for i in range(3)] + [
        line(14, "gnt.alloc", t_end=True, c_end=16, count=2, head=45),
        line(17, "gnt.claim", t_end=True, head=45, ref=45),
        line(18, "gnt.claim", t_end=True, head=44, ref=44),
    ])
    assert order[1:4] == [("gnt.end", 45), ("gnt.alloc", 45), ("gnt.end", 46)], order
    assert replay(with_harness_events(events), header=header()).outcome == "PASS"


# -- gnttab_list_lock order (`_lock` records) -----------------------------


def locked_ring_setup_lines():
    """ring_setup_lines with the lock the allocation took (_c 3)."""
    return [
        ring_setup_lines()[0],
        line(2, "gnt.alloc", t_end=True, c_end=4, count=1, head=8),
        line(3, "_lock"),
        line(5, "gnt.claim", t_end=True, head=8, ref=8),
        line(6, "gnt.grant", ref=8, to=0, frame=4100, ro=False, alloc=False),
    ]


def frees_racing_an_allocation(with_locks):
    """CPU 1 frees 40 while CPU 0 frees 41 and 42: the calls began 40, 41,
    42 (`_c` 15, 16, 18) but took gnttab_list_lock 41, 40, 42, so the free
    list's front is 42, 40, 41, and CPU 0's allocation of two gets 42 and
    40 (its claims say so)."""
    cpu1 = {"cpu": 1, "task": 500}
    lines = locked_ring_setup_lines() + [
        line(15, "gnt.free", ref=40, **cpu1),
        line(16, "gnt.free", ref=41),
        line(18, "gnt.free", ref=42),
        line(21, "gnt.alloc", t_end=True, c_end=23, count=2, head=42),
        line(24, "gnt.claim", t_end=True, head=42, ref=42),
        line(25, "gnt.claim", t_end=True, head=40, ref=40),
        line(26, "gnt.free_chain", head=LIST_END),
    ]
    if with_locks:
        lines += [line(17, "_lock"), line(19, "_lock", **cpu1), line(20, "_lock"), line(22, "_lock"),
                  line(27, "_lock")]
    else:
        lines = [ln for ln in lines if '"_lock"' not in ln]
    return lines


def test_the_free_list_follows_the_lock_not_the_order_calls_began():
    events = parse_guest_lines(frees_racing_an_allocation(True), GUEST, RING_NAMES)
    assert [ev.get("ref") for ev in events if ev["kind"] == "gnt.free"] == [41, 40, 42]
    assert replay(with_harness_events(events), header=header()).outcome == "PASS"
    # Without the lock's records the order the calls began is all there is:
    # the model's chain is 42, 41 and the claim of 40 diverges (what 4-vCPU
    # runs showed before the module recorded the lock).
    events = parse_guest_lines(frees_racing_an_allocation(False), GUEST, RING_NAMES)
    verdict = replay(with_harness_events(events), header=header())
    assert verdict.outcome == "FAIL" and "claim names chain head 40, which is free" in verdict.divergence.message


def test_a_lock_belongs_to_the_innermost_open_call_on_its_cpu():
    # CPU 0 begins freeing 50 (_c 15); before it takes the lock an interrupt
    # allocates one ref (_c 16 .. 18, lock 17), then the free takes its lock (19).
    lines = locked_ring_setup_lines() + [
        line(15, "gnt.free", ref=50),
        line(16, "gnt.grant", t_end=True, c_end=18, task=0, ref=51, to=0, frame=7000, ro=False, alloc=True),
        line(17, "_lock", task=0),
        line(19, "_lock"),
    ]
    events = parse_guest_lines(lines, GUEST, RING_NAMES)
    assert [(ev["kind"], ev.get("ref")) for ev in events[3:]] == [("gnt.grant", 51), ("gnt.free", 50)]


@pytest.mark.parametrize("extra", [
    [line(30, "_lock")],                                       # a lock no traced call explains
    [line(30, "gnt.free", ref=60)],                            # a free whose lock was not recorded
    [line(30, "gnt.grant", t_end=True, c_end=32, ref=61, to=0, frame=1, ro=False, alloc=True),
     line(33, "_lock")],                                       # an allocation that returned before it
], ids=["orphan-lock", "free-without-lock", "lock-after-return"])
def test_records_that_do_not_pair_up_order_nothing_by_the_lock(extra):
    lines = frees_racing_an_allocation(True) + extra
    events = parse_guest_lines(lines, GUEST, RING_NAMES)
    assert [ev.get("ref") for ev in events if ev["kind"] == "gnt.free"][:3] == [40, 41, 42]
