"""The scripted backend (harness/remote/xrback.py) on a ring in memory: what
it serves and what each lie puts on the ring.  The real backend runs on
the stack in tests/e2e/test_scripted_backend.py; here gntdev and evtchn
are stand-ins that hand out pages of a fake guest."""

import importlib.util
import json
import struct
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "harness" / "remote" / "xrback.py"
spec = importlib.util.spec_from_file_location("xrback", SCRIPT)
xrback = importlib.util.module_from_spec(spec)
spec.loader.exec_module(xrback)

PAGE = 4096
RING_REF = 9


class FakeMapping:
    """A copy of the guest's pages, written back when unmapped writable."""

    def __init__(self, pages, refs, writable):
        self.pages, self.refs, self.writable = pages, refs, writable
        self.buf = bytearray(b"".join(bytes(pages[r]) for r in refs))
        self.view = memoryview(self.buf)
        self.closed = False

    def __getitem__(self, key):
        return self.view[key]

    def __setitem__(self, key, value):
        if not self.writable:
            raise PermissionError("mapped read-only")
        self.view[key] = value

    def sync(self):
        for i, r in enumerate(self.refs):
            self.pages[r][:] = self.buf[i * PAGE:(i + 1) * PAGE]

    def close(self):
        self.closed = True
        if self.writable:
            self.sync()


class FakeGnt:
    def __init__(self, pages):
        self.pages, self.maps, self.next = pages, [], 0
        self.ended = set()           # refs the guest no longer grants: Xen refuses them

    def map(self, domid, refs, writable):
        if self.ended & set(refs):
            raise OSError(22, "mmap of granted pages failed")
        m = FakeMapping(self.pages, list(refs), writable)
        self.maps.append(m)
        self.next += 1
        return m, self.next

    def unmap(self, m, index, count):
        m.close()


class FakeEvt:
    def __init__(self):
        self.notified = 0

    def bind(self, domid, port):
        return 77

    def notify(self, port):
        self.notified += 1

    def unbind(self, port):
        pass


@pytest.fixture
def backend(tmp_path):
    image = tmp_path / "img"
    image.write_bytes(bytes(1 << 20))
    pages = {RING_REF: bytearray(PAGE)}
    back = xrback.Backend.__new__(xrback.Backend)
    back.domid, back.log = 3, xrback.Log(tmp_path / "log.jsonl")
    back.gnt, back.evt = FakeGnt(pages), FakeEvt()
    back.fd = __import__("os").open(image, __import__("os").O_RDWR)
    back.sectors, back.max_indirect = (1 << 20) // 512, 32
    back.persistent, back.held, back.use_persistent = {}, [], False
    back.covered, back.checks = {}, {"ring_pages": 0, "sectors_checked": 0, "unzeroed": 0,
                                     "other_maps_refused": 0, "other_maps_allowed": 0, "held_pages_reused": 0}
    back.device_lies, back.last_grefs, back.ending = {}, [], None
    back.taken, back.stop = 0, False
    back.script = xrback.Script([])
    back.pages, back.image, back.logfile = pages, image, tmp_path / "log.jsonl"
    ring = xrback.Ring(back, "q0", [RING_REF], 5)
    back.rings = {ring.port: ring}
    back.ring = ring
    return back


def produce(back, requests):
    """The frontend's side: requests into the shared ring page, then req_prod."""
    page = back.ring.mm.buf
    prod = struct.unpack_from("<I", page, 0)[0]
    for req in requests:
        page[64 + (prod % 32) * 112:64 + (prod % 32) * 112 + len(req)] = req
        prod += 1
    struct.pack_into("<I", page, 0, prod)
    # ...having consumed every response so far: it wants an event for the next.
    struct.pack_into("<I", page, 12, struct.unpack_from("<I", page, 8)[0] + 1)


def rw(op, rid, sector, segs):
    raw = struct.pack("<BBHIQQ", op, len(segs), 0, 0, rid, sector)
    raw += b"".join(struct.pack("<IBB2x", g, f, last) for g, f, last in segs)
    return raw.ljust(112, b"\0")


def responses(back):
    ring = back.ring.mm.buf
    prod = struct.unpack_from("<I", ring, 8)[0]
    return prod, [struct.unpack_from("<QBxh", ring, 64 + (i % 32) * 112) for i in range(back.ring.rsp_pvt)]


def events(back):
    return [json.loads(line) for line in back.logfile.read_text().splitlines()]


def test_a_write_lands_in_the_image_and_a_read_in_the_guests_page(backend):
    backend.pages[100] = bytearray(b"\xab" * PAGE)
    backend.pages[101] = bytearray(PAGE)
    produce(backend, [rw(xrback.OP_WRITE, 4, 8, [(100, 0, 7)])])
    backend.process(backend.ring)
    produce(backend, [rw(xrback.OP_READ, 5, 8, [(101, 2, 3)])])
    backend.process(backend.ring)
    assert backend.image.read_bytes()[8 * 512:16 * 512] == b"\xab" * PAGE
    assert backend.pages[101][1024:2048] == b"\xab" * 1024 and backend.pages[101][:1024] == bytes(1024)
    prod, rsps = responses(backend)
    assert prod == 2 and rsps == [(4, 1, 0), (5, 0, 0)]
    assert backend.evt.notified == 2 and all(m.closed for m in backend.gnt.maps[1:])
    # A write's page is mapped read-only, a read's writable.
    assert [m.writable for m in backend.gnt.maps[1:]] == [False, True]


def test_a_request_that_breaks_the_protocol_is_answered_error_and_not_served(backend):
    produce(backend, [rw(xrback.OP_WRITE, 6, 8, []), rw(xrback.OP_READ, 7, (1 << 20) // 512, [(1, 0, 7)])])
    backend.pages[1] = bytearray(PAGE)
    backend.process(backend.ring)
    _, rsps = responses(backend)
    assert rsps == [(6, 1, -1), (7, 0, -1)]
    assert [e["why"] for e in events(backend) if e["ev"] == "bad-request"] == [
        "request: operation 1, 0 segments", "sectors 2048..2055 beyond the disk's 2048"]


@pytest.mark.parametrize("lie, want", [
    ("duplicate", [(3, 0, 0), (3, 0, 0)]),
    ("unknown-id", [(0, 0, 0)]),           # 0: the lowest id not pending
    ("id-out-of-range", [((1 << 20) + 3, 0, 0)]),
    ("wrong-op", [(3, 1, 0)]),
    ("bad-status", [(3, 0, 7)]),
    ("unsolicited", [(0, 0, 0), (3, 0, 0)]),
])
def test_each_lie_puts_what_it_says_on_the_ring(backend, lie, want):
    backend.pages[1] = bytearray(PAGE)
    backend.script = xrback.Script([{"do": lie, "nth": 0}])
    produce(backend, [rw(xrback.OP_READ, 3, 0, [(1, 0, 7)])])
    backend.process(backend.ring)
    prod, rsps = responses(backend)
    assert rsps == want and prod == len(want)
    assert [e["did"] for e in events(backend) if e["ev"] == "lie"] == [lie]


def test_rsp_prod_ahead_publishes_more_than_was_produced_and_storm_notifies_for_nothing(backend):
    backend.pages[1] = bytearray(PAGE)
    backend.script = xrback.Script([{"do": "rsp-prod-ahead", "nth": 0}, {"do": "storm", "nth": 1, "value": 50}])
    produce(backend, [rw(xrback.OP_READ, 3, 0, [(1, 0, 7)])])
    backend.process(backend.ring)
    assert responses(backend)[0] == 1 + 32 + 1
    struct.pack_into("<I", backend.ring.mm.buf, 8, 1)          # (reset for the next part)
    produce(backend, [rw(xrback.OP_READ, 4, 0, [(1, 0, 7)])])
    before = backend.evt.notified
    backend.process(backend.ring)
    assert backend.evt.notified - before == 1 + 50


def test_rules_match_by_position_direction_and_count():
    script = xrback.Script([{"do": "delay", "op": "write", "after": 2, "count": 2}])
    got = [bool(script.rule_for(n, op)) for n, op in enumerate(["write", "write", "read", "write", "write", "write"])]
    assert got == [False, False, False, True, True, False]


def test_keep_mapped_holds_the_grants_past_the_response(backend):
    backend.pages[1] = bytearray(PAGE)
    backend.script = xrback.Script([{"do": "keep-mapped", "nth": 0, "ms": 60000}])
    produce(backend, [rw(xrback.OP_READ, 3, 0, [(1, 0, 7)])])
    backend.process(backend.ring)
    assert responses(backend)[1] == [(3, 0, 0)]
    assert not backend.gnt.maps[-1].closed and len(backend.held) == 1
    backend.release_held(0, everything=True)
    assert backend.gnt.maps[-1].closed and backend.held == []


def test_layouts_match_blkif_h_on_x86_64():
    assert xrback.RW.size == 24 and xrback.INDIRECT.size == 64 and xrback.RSP.size == 16
    assert xrback.RW.size + 11 * xrback.SEG.size == xrback.REQ_SIZE


def test_a_persistent_page_s_sectors_no_request_covered_must_be_zero(backend):
    backend.use_persistent = True
    backend.pages[40] = bytearray(PAGE)
    backend.pages[41] = bytearray(PAGE)
    backend.pages[41][3 * 512 + 7] = 0x5a            # a byte of sector 3, which no request covers
    produce(backend, [rw(xrback.OP_WRITE, 1, 8, [(40, 0, 0)]), rw(xrback.OP_WRITE, 2, 16, [(41, 0, 0)])])
    backend.process(backend.ring)
    assert backend.checks["sectors_checked"] == 14 and backend.checks["unzeroed"] == 1
    bad = [e for e in events(backend) if e["ev"] == "unzeroed"]
    assert bad == [{"ev": "unzeroed", "kind": "persistent data page", "gref": 41, "sector": 3,
                    "nonzero_bytes": 1, "t": bad[0]["t"]}]
    # Sectors a request covered are its data from then on: not checked again.
    produce(backend, [rw(xrback.OP_READ, 3, 8, [(40, 1, 7)])])
    backend.process(backend.ring)
    assert backend.checks["sectors_checked"] == 14


def test_a_ring_page_with_bytes_beyond_its_indexes_is_reported(backend):
    backend.ring.mm.buf[200] = 1
    backend.check_ring_zero(backend.ring)
    assert (backend.checks["ring_pages"], backend.checks["unzeroed"]) == (1, 1)


class FakeStore:
    def __init__(self):
        self.written, self.removed = {}, []

    def write(self, path, value, tx=0):
        self.written[path] = value

    def rm(self, path, tx=0):
        self.removed.append(path)


def test_a_feature_given_empty_is_removed_and_the_others_override_the_defaults(backend):
    backend.xs, backend.backp = FakeStore(), "/b"
    backend.features = {"feature-persistent": "", "max-ring-page-order": "99"}
    backend.advertise()
    assert "/b/feature-persistent" in backend.xs.removed and "/b/feature-persistent" not in backend.xs.written
    assert backend.xs.written["/b/max-ring-page-order"] == "99" and backend.xs.written["/b/state"] == 2


def test_reorder_answers_a_later_request_first(backend):
    backend.pages[1], backend.pages[2] = bytearray(PAGE), bytearray(PAGE)
    backend.script = xrback.Script([{"do": "reorder", "nth": 0}])
    produce(backend, [rw(xrback.OP_READ, 3, 0, [(1, 0, 7)]), rw(xrback.OP_READ, 4, 8, [(2, 0, 7)])])
    backend.process(backend.ring)
    assert responses(backend) == (2, [(4, 0, 0), (3, 0, 0)])
    # Alone in its batch, the held one waits for the next batch's answer.
    backend.script = xrback.Script([{"do": "reorder", "nth": 2}])
    produce(backend, [rw(xrback.OP_READ, 5, 0, [(1, 0, 7)])])
    backend.process(backend.ring)
    assert responses(backend)[0] == 2 and backend.ring.reordered
    produce(backend, [rw(xrback.OP_READ, 6, 0, [(1, 0, 7)])])
    backend.process(backend.ring)
    assert responses(backend)[1][2:] == [(6, 0, 0), (5, 0, 0)]


def test_map_other_maps_the_answered_requests_grants_again_and_counts_what_xen_said(backend):
    backend.pages[1], backend.pages[2] = bytearray(PAGE), bytearray(PAGE)
    backend.script = xrback.Script([{"do": "map-other", "nth": 0}])
    backend.gnt.ended = {1}          # blkfront ended grant 1 with the response; 2 it forgot
    produce(backend, [rw(xrback.OP_READ, 3, 0, [(1, 0, 7), (2, 0, 7)])])
    struct.pack_into("<I", backend.ring.mm.buf, 12, 2)     # it has consumed the response
    backend.gnt.ended = set()
    orig = backend.gnt.map

    def map_after_response(domid, refs, writable):       # the request's own map succeeds
        if len(backend.gnt.maps) >= 2 and refs == [1]:
            raise OSError(22, "refused")
        return orig(domid, refs, writable)
    backend.gnt.map = map_after_response
    backend.process(backend.ring)
    assert responses(backend) == (1, [(3, 0, 0)])
    assert (backend.checks["other_maps_refused"], backend.checks["other_maps_allowed"]) == (1, 1)
    lie = [e for e in events(backend) if e["ev"] == "lie"][0]
    assert (lie["did"], lie["grefs"], lie["allowed"]) == ("map-other", [1, 2], [2])


def test_scribble_write_serves_the_write_then_overwrites_the_guests_page(backend):
    backend.pages[100] = bytearray(b"\xab" * PAGE)
    backend.script = xrback.Script([{"do": "scribble-write", "op": "write"}])
    produce(backend, [rw(xrback.OP_WRITE, 4, 8, [(100, 0, 3)])])
    backend.process(backend.ring)
    assert backend.image.read_bytes()[8 * 512:12 * 512] == b"\xab" * 2048
    assert backend.pages[100][:2048] == b"\x5a" * 2048 and backend.pages[100][2048:] == b"\xab" * 2048
    assert backend.gnt.maps[-1].writable
    assert [e["writable_map"] for e in events(backend) if e.get("did") == "scribble-write"] == ["allowed"]


def test_close_with_io_leaves_the_request_unanswered_and_ends_the_loop(backend):
    backend.pages[1] = bytearray(PAGE)
    backend.script = xrback.Script([{"do": "close-with-io", "nth": 1}])
    produce(backend, [rw(xrback.OP_READ, 3, 0, [(1, 0, 7)]), rw(xrback.OP_READ, 4, 0, [(1, 0, 7)])])
    backend.process(backend.ring)
    assert responses(backend) == (1, [(3, 0, 0)])
    assert backend.stop and backend.ending == "close-with-io" and 4 in backend.ring.outstanding


def test_state_jump_goes_through_every_early_state_and_back_to_connected(backend):
    backend.xs, backend.backp = FakeStore(), "/b"
    seen = []
    backend.xs.write = lambda path, value, tx=0: seen.append(value)
    backend.state_jump()
    assert seen == [1, 2, 3, 4]


def test_hold_persistent_keeps_the_pages_and_sees_a_guest_reusing_one(backend):
    import threading
    backend.device_lies = {"hold-persistent": {"do": "hold-persistent", "ms": 600}}
    backend.pages[7], backend.pages[8] = bytearray(PAGE), bytearray(PAGE)
    backend.persistent = {7: backend.gnt.map(3, [7], True), 8: backend.gnt.map(3, [8], True)}
    reused = backend.persistent[8][0]
    threading.Timer(0.2, lambda: reused.buf.__setitem__(slice(0, 16), bytes(16))).start()
    backend.hold_persistent()
    assert backend.checks["held_pages_reused"] == 1 and backend.persistent == {}
    assert [e["gref"] for e in events(backend) if e["ev"] == "held-page-reused"] == [8]
    assert all(m.closed for m in backend.gnt.maps[1:])     # [0]: the ring


def test_the_log_says_where_each_response_went_and_how_far_the_frontend_read(backend):
    """What the model (harness/model/backend_lies.py) reads: every response
    with its ring index and lie, and rsp_event each time it moves."""
    from harness.model import backend_lies

    backend.pages[1] = bytearray(PAGE)
    backend.script = xrback.Script([{"do": "duplicate", "nth": 1}])
    produce(backend, [rw(xrback.OP_READ, 3, 0, [(1, 0, 7)])])
    backend.process(backend.ring)
    backend.ring.watch_front()
    produce(backend, [rw(xrback.OP_READ, 4, 8, [(1, 0, 7)])])   # the frontend read slot 0: rsp_event 2
    backend.process(backend.ring)
    backend.ring.watch_front()
    log = events(backend)
    assert [(e["at"], e["id"], e.get("lie")) for e in log if e["ev"] == "rsp"] == [
        (0, 3, None), (1, 4, None), (2, 4, "duplicate")]
    assert [e["at"] for e in log if e["ev"] == "request"] == [0, 1]
    assert [e["rsp_event"] for e in log if e["ev"] == "seen"] == [1, 2]
    assert backend_lies.judge(log) is None
    # A frontend that went on past the duplicate breaks lie.disable.
    struct.pack_into("<I", backend.ring.mm.buf, 12, 4)
    backend.ring.watch_front()
    found = backend_lies.judge(events(backend))
    assert found is not None and found[1].rule == "lie.disable"
