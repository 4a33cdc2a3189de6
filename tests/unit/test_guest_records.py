"""xenrig_trace's binary records (harness/capture/guest_records.py).

The tracer writes records, tests and golden inputs write the same raw
events as JSON lines: both must come out of guest_trace as the same schema
events, and a record the layout cannot explain is an error naming it.
"""

import json
import struct

import pytest

from harness.capture import guest_records
from harness.capture.guest_trace import parse_guest_lines, parse_guest_records
from tests.unit.test_guest_trace import GUEST, RING_NAMES, all_lines, line

RAW = [
    {"kind": "_config", "t_ns": 4990000, "_c": 1, "version": 2, "cb_fire": True, "blkfront": "registered"},
    json.loads(line(2, "gnt.alloc", t_end=True, c_end=4, count=13, head=-28)),
    json.loads(line(3, "gnt.claim", t_end=True, head=8, ref=-28)),
    json.loads(line(4, "gnt.grant", ref=8, to=0, frame=4100, ro=True, alloc=False, _nested=1)),
    json.loads(line(5, "gnt.grant", t_end=True, c_end=9, ref=-28, to=0, frame=2**40, ro=False, alloc=True)),
    json.loads(line(6, "gnt.end", t_end=True, task=0, batch=3, ref=9, ok=False, mode="ref")),
    json.loads(line(7, "gnt.deferred_end", t_end=True, ref=9, ok=True)),
    json.loads(line(8, "gnt.release", head=9, ref=10)),
    json.loads(line(9, "gnt.free", ref=4294967295)),
    json.loads(line(10, "gnt.free_chain", head=4294967295)),
    json.loads(line(11, "gnt.expand", t_end=True, old=32, new=64)),
    json.loads(line(12, "gnt.cb_request", cb=0xFFFF888004A1C000, count=11)),
    json.loads(line(13, "gnt.cb_fire", sub=2, t_end=True, cb=0xFFFF888004A1C000)),
    json.loads(line(14, "gnt.cb_cancel", cb=0xFFFF888004A1C000)),
    json.loads(line(15, "blkif.req", ring="gref:8", idx=0, op=0, id=0, sector=2048, segs=[[9, 0, 7]])),
    json.loads(line(16, "blkif.req", ring="gref:8", idx=1, op=1, id=1, sector=8, segs=[[9, 0, 7]] * 11,
                    _nr_segments=200)),
    json.loads(line(17, "blkif.req", ring="gref:8", idx=2, op=6, id=2, sector=4096, indirect_op=1,
                    nr_segments=12, indirect_grefs=[10], segs=[[r, 1, 6] for r in range(11, 23)])),
    json.loads(line(18, "blkif.req", ring="gref:8", idx=3, op=6, id=3, sector=0, indirect_op=0,
                    nr_segments=600, indirect_grefs=[10, 11], segs=[], _segs_unread=1)),
    json.loads(line(19, "blkif.req", ring="gref:8", idx=4, op=5, id=4, sector=64, segs=[], _nr_sectors=128)),
    json.loads(line(20, "blkif.req", ring="gref:8", idx=5, op=4, id=5, segs=[])),
    json.loads(line(21, "ring.push", ring="gref:8", old=0, new=6, notify=True, req_event=1,
                    _rinfo="ffff888004a1c000")),
    json.loads(line(22, "ring.push", ring="gref:8", old=6, new=7, notify=False,
                    _rinfo="ffff888004a1c000")),
    json.loads(line(23, "blkif.rsp", sub=1, task=0, batch=20, ring="gref:8", idx=0, id=0, op=0, status=-2)),
    json.loads(line(24, "ring.free", ring="gref:8", req_prod=7, rsp_cons=7)),
    {"t_ns": 1, "kind": "_missed", "count": 462, "probe": "gnttab_try_end_foreign_access"},
    {"t_ns": 2, "kind": "_dropped", "count": 3},
    json.loads(line(25, "_unsupported", call="gnttab_grant_foreign_access_ref_seq")),
    json.loads(line(26, "_lock", task=0, cpu=3)),
]


@pytest.mark.parametrize("ev", RAW, ids=[f"{i}-{ev['kind']}" for i, ev in enumerate(RAW)])
def test_every_kind_comes_back_as_written(ev):
    (back,) = guest_records.decode(guest_records.encode(ev))
    assert back == ev


def test_records_give_the_same_events_as_lines():
    lines = all_lines()
    data = b"".join(guest_records.encode(json.loads(text)) for text in lines)
    assert parse_guest_records(data, GUEST, RING_NAMES) == parse_guest_lines(lines, GUEST, RING_NAMES)


def test_a_record_is_eight_byte_aligned_and_one_word_per_field():
    rec = guest_records.encode(json.loads(line(9, "gnt.free", ref=7)))
    assert len(rec) == 56 + 8
    assert struct.unpack_from("<HBB", rec) == (64, guest_records.FREE, 0)


def test_split_walks_records_not_bytes():
    # A name holding the marker itself must not end the records.
    tricky = {"t_ns": 1, "kind": "_missed", "count": 1, "probe": "x=====xr\n"}
    data = guest_records.encode(tricky) + guest_records.encode(RAW[1])
    records, n, rest = guest_records.split(data + b"=====xr\nlog line\n", b"=====xr\n")
    assert records == data and n == 2 and rest == b"log line\n"
    assert guest_records.split(b"=====xr\n", b"=====xr\n") == (b"", 0, b"")


def test_split_refuses_output_without_its_marker():
    with pytest.raises(ValueError, match="without its end marker"):
        guest_records.split(guest_records.encode(RAW[1]), b"=====xr\n")


@pytest.mark.parametrize("damage, message", [
    (lambda rec: rec[:-8], "length 72 does not fit"),
    (lambda rec: struct.pack("<H", 60) + rec[2:], "length 60 does not fit"),
    (lambda rec: rec[:2] + bytes([99]) + rec[3:], "unknown kind 99"),
    (lambda rec: rec[:40], "less than a record header"),
])
def test_a_damaged_record_is_named(damage, message):
    good = guest_records.encode(RAW[2])
    with pytest.raises(guest_records.RecordError, match=f"record 2.*{message}|record 2: {message}"):
        guest_records.decode(guest_records.encode(RAW[1]) + damage(good))


def test_a_record_too_short_for_its_kind_is_refused():
    rec = guest_records.encode(json.loads(line(9, "blkif.rsp", ring="gref:8", idx=0, id=0, op=0, status=0)))
    short = struct.pack("<H", len(rec) - 16) + rec[2:-16]
    with pytest.raises(guest_records.RecordError, match="has 3 words, needs 5"):
        guest_records.decode(short)


def test_errors_in_records_name_the_record_through_the_parser():
    data = b"".join(guest_records.encode(json.loads(text)) for text in all_lines()[:3])
    data += guest_records.encode({"t_ns": 9, "kind": "_dropped", "count": 5})
    with pytest.raises(ValueError, match=r"guest trace record 4: the capture buffer was full and 5 events"):
        parse_guest_records(data, GUEST, RING_NAMES)


def test_the_layout_is_the_one_the_module_writes():
    """The C side's enums, flags and header, read from xenrig_trace.c, are
    the ones this decoder holds (a change on one side only fails here, not
    in a guest)."""
    import re
    from pathlib import Path

    src = (Path(__file__).resolve().parents[2] / "guest-kernel" / "xenrig_trace" / "xenrig_trace.c").read_text()

    def enum(pattern):
        body = re.search(pattern, src, re.S).group(1)
        values, nxt = {}, 0
        for item in re.sub(r"/\*.*?\*/", "", body, flags=re.S).split(","):
            item = item.strip()
            if not item:
                continue
            name, _, value = (part.strip() for part in item.partition("="))
            nxt = int(value) if value else nxt
            values[name] = nxt
            nxt += 1
        return values

    kinds = enum(r"enum xr_kind \{(.*?)\};")
    assert {k[3:]: v for k, v in kinds.items()} == {
        "GRANT": guest_records.GRANT, "END": guest_records.END, "DEFERRED_END": guest_records.DEFERRED_END,
        "ALLOC": guest_records.ALLOC, "CLAIM": guest_records.CLAIM, "RELEASE": guest_records.RELEASE,
        "FREE": guest_records.FREE, "FREE_CHAIN": guest_records.FREE_CHAIN, "EXPAND": guest_records.EXPAND,
        "CB_REQUEST": guest_records.CB_REQUEST, "CB_FIRE": guest_records.CB_FIRE,
        "CB_CANCEL": guest_records.CB_CANCEL, "REQ": guest_records.REQ, "PUSH": guest_records.PUSH,
        "RSP": guest_records.RSP, "RING_FREE": guest_records.RING_FREE, "LOCK": guest_records.LOCK,
        "RESUME": guest_records.RESUME,
        "DROPPED": guest_records.DROPPED,
        "MISSED": guest_records.MISSED, "UNSUPPORTED": guest_records.UNSUPPORTED, "CONFIG": guest_records.CONFIG}
    assert list(enum(r"enum \{ (END_REF, END_TRY, END_END) \};")) == [f"END_{m.upper()}" for m in guest_records.END_MODES]
    assert enum(r"enum \{ (RQ_RING.*?RQ_WORDS) \};")["RQ_WORDS"] == guest_records._RQ_WORDS
    flags = dict(re.findall(r"#define (XRF_\w+)\s+(0x[0-9a-f]+)", src))
    assert {k: int(v, 16) for k, v in flags.items()} == {
        "XRF_NESTED": guest_records.F_NESTED, "XRF_SEGS_UNREAD": guest_records.F_SEGS_UNREAD,
        "XRF_REQ_EVENT": guest_records.F_REQ_EVENT}
    head = re.search(r"struct xr_head \{(.*?)\};", src, re.S).group(1)
    fields = re.findall(r"^\s*(u8|u16|u32|s32|u64) ([\w, ]+);", head, re.M)
    assert [(t, n) for t, names in fields for n in names.split(", ")] == [
        ("u16", "len"), ("u8", "kind"), ("u8", "flags"), ("u32", "cpu"), ("s32", "task"), ("u32", "sub"),
        ("u64", "t"), ("u64", "c"), ("u64", "t_end"), ("u64", "c_end"), ("u64", "batch")]
    assert guest_records.HEAD.format == "<HBBIiIQQQQQ"


@pytest.mark.parametrize("shape", ["push-inside-interrupt", "free-inside-allocation"])
def test_a_trace_read_one_cpu_buffer_after_another_replays_as_the_kernel_order(shape):
    """The module keeps a buffer per CPU and the reader hands them out one
    after the other; the kernel's order (these shapes come from real
    several-vCPU captures, see test_guest_trace) must come back from `_c`
    alone, and replay the same."""
    from harness.check import replay
    from tests.unit.test_guest_trace import (free_inside_allocation_lines, header,
                                             push_inside_interrupt_lines, with_harness_events)

    lines = push_inside_interrupt_lines(14) if shape == "push-inside-interrupt" else free_inside_allocation_lines(8)
    raws = [json.loads(text) for text in lines]
    by_cpu = sorted(raws, key=lambda ev: -ev.get("_cpu", 0))     # CPU 1's buffer read first
    assert by_cpu != raws
    data = b"".join(guest_records.encode(ev) for ev in by_cpu)
    events = parse_guest_records(data, GUEST, RING_NAMES)
    assert events == parse_guest_lines(lines, GUEST, RING_NAMES)
    assert replay(with_harness_events(events), header=header()).outcome == "PASS"


def test_a_name_the_guest_wrote_keeps_only_printable_characters():
    ev = {"t_ns": 1, "kind": "_missed", "count": 1, "probe": "push\n\x1b[2Jsite"}
    (back,) = guest_records.decode(guest_records.encode(ev))
    assert back["probe"] == "push??[2Jsite"


def test_rings_made_anew_on_resume_take_their_names_from_before_and_after_the_resume_record():
    """After a restore blkfront frees every ring and grants the new ones from
    the head of its free list: ring-ref 8, xvda/0's before, may be xvda/1's
    after.  The events before guest.resume, and the frees of the old rings
    after it, keep the old names."""
    raws = [json.loads(line(1, "blkif.req", ring="gref:8", idx=0, op=1, id=0, sector=0, segs=[[9, 0, 7]])),
            json.loads(line(2, "guest.resume", cancelled=False)),
            json.loads(line(3, "ring.free", ring="gref:8", req_prod=1, rsp_cons=0)),
            json.loads(line(4, "ring.free", ring="gref:12", req_prod=1, rsp_cons=1)),
            json.loads(line(5, "blkif.req", ring="gref:8", idx=0, op=1, id=0, sector=0, segs=[[9, 0, 7]]))]
    data = b"".join(guest_records.encode(ev) for ev in raws)
    before = {8: "xvda/0", 12: "xvda/1"}
    events = parse_guest_records(data, GUEST, {8: "xvda/1", 12: "xvda/0"}, 1, names_before_resume=before)
    assert [(ev["kind"], ev.get("ring")) for ev in events] == [
        ("blkif.req", "xvda/0"), ("guest.resume", None), ("ring.free", "xvda/0"), ("ring.free", "xvda/1"),
        ("blkif.req", "xvda/1")]


def test_a_restore_whose_records_hold_no_resume_cannot_name_its_rings():
    data = guest_records.encode(json.loads(line(1, "ring.free", ring="gref:8", req_prod=1, rsp_cons=1)))
    with pytest.raises(ValueError, match="no guest.resume"):
        parse_guest_records(data, GUEST, {8: "xvda/0"}, 1, names_before_resume={8: "xvda/0"})


def test_a_response_drained_after_its_request_still_goes_before_its_grant_ends():
    """A slow backend answers a request issued before the last drain: the
    interrupt's ends come before its responses in the records (responses
    are read at the unlock), and the request is only in the map kept from
    the earlier drain."""
    unanswered = {}
    req = guest_records.encode(json.loads(line(1, "blkif.req", ring="gref:8", idx=0, op=1, id=0, sector=0,
                                                segs=[[9, 0, 7]])))
    parse_guest_records(req, GUEST, RING_NAMES, 1, inflight=unanswered)
    irq = b"".join(guest_records.encode(json.loads(text)) for text in (
        line(3, "gnt.end", t_end=True, task=0, batch=2, ref=9, ok=True, mode="try"),
        line(4, "blkif.rsp", sub=1, task=0, batch=2, ring="gref:8", idx=0, id=0, op=1, status=0)))
    events = parse_guest_records(irq, GUEST, RING_NAMES, 2, inflight=unanswered)
    assert [ev["kind"] for ev in events] == ["blkif.rsp", "gnt.end"]
    assert unanswered == {}
    # Without the map the response would be left after the ends.
    events = parse_guest_records(irq, GUEST, RING_NAMES, 2, inflight={})
    assert [ev["kind"] for ev in events] == ["gnt.end", "blkif.rsp"]
