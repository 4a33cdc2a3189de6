"""The capture announces a ring (ring.setup, blkif.connect from xenstore)
before its first request, and also before its teardown when it never
carried one; after a teardown the same name is a new ring.  A ring just
learned that carried nothing (a backend that never connects) is announced
at the end of the drain, unless its frontend is no longer live."""

from harness.capture.live import CaptureSession


def _session():
    cap = CaptureSession.__new__(CaptureSession)
    cap.rings_announced = set()
    cap._fresh_rings = set()
    cap._ring_paths = {"xvdb/0": ("/local/domain/1/device/vbd/51728", "/local/domain/0/backend/vbd/1/51728", 11)}
    # blkif.features only while the device is Connected (here: not for a ring seen first at its teardown)
    cap._ring_nodes = lambda ring: ({"state": "6" if cap.gone else "4", "feature-persistent": "1"},
                                    {"feature-persistent": "1", "feature-max-indirect-segments": "32"})
    cap._asked_params = lambda: {}
    cap.guest = type("G", (), {"domid": 1})()
    cap.scenario = type("S", (), {"guest": type("GC", (), {"vcpus": 1})()})()
    cap.gone = False
    return cap


def _ev(kind, t, **kw):
    return {"t_ns": t, "dom": 1, "src": "guest", "kind": kind, "ring": "xvdb/0", **kw}


def test_a_ring_torn_down_before_any_request_is_announced_first():
    cap = _session()
    cap.gone = True
    out = cap._synthesize_rings([_ev("ring.free", 5)])
    assert [e["kind"] for e in out] == ["ring.setup", "blkif.connect", "ring.free"]
    assert out[0]["grefs"] == [11]


def test_after_a_teardown_the_next_request_announces_a_new_ring():
    cap = _session()
    out = cap._synthesize_rings([_ev("blkif.req", 1, idx=0, id=0), _ev("blkif.req", 2, idx=1, id=1),
                                 _ev("ring.free", 3)])
    assert [e["kind"] for e in out] == ["ring.setup", "blkif.connect", "blkif.features", "blkif.req", "blkif.req",
                                        "ring.free"]
    cap._ring_paths["xvdb/0"] = (*cap._ring_paths["xvdb/0"][:2], 40)
    out = cap._synthesize_rings([_ev("blkif.req", 4, idx=0, id=0)])
    assert [e["kind"] for e in out] == ["ring.setup", "blkif.connect", "blkif.features", "blkif.req"]
    assert out[0]["grefs"] == [40]


def test_connect_facts_come_from_the_same_read_as_the_negotiation():
    from harness.capture.live import _connect_facts

    cap = _session()
    out = cap._synthesize_rings([_ev("blkif.req", 1, idx=0, id=0)])
    assert {k: out[1][k] for k in ("persistent", "max_indirect")} == {"persistent": True, "max_indirect": 32}
    assert out[2]["front"]["feature-persistent"] == "1"
    # persistent grants need both ends; a garbage indirect maximum counts as none
    assert _connect_facts({"feature-persistent": "1"}, {"feature-persistent": "0"})["persistent"] is False
    assert _connect_facts({}, {"feature-max-indirect-segments": "x1"}) == {"persistent": False, "max_indirect": 0}


def test_a_ring_learned_that_carried_nothing_is_announced_at_the_end_of_the_drain():
    """blkback maps a stalled vbd's ring (InitWait for ever): the quiet
    point's table read must find the model knowing that ring."""
    cap = _session()
    cap._fresh_rings = {"xvdb/0"}
    cap._ring_nodes = lambda ring: ({"state": "3"}, {})
    out = cap._synthesize_rings([{"t_ns": 7, "dom": 1, "src": "guest", "kind": "gnt.grant", "ref": 11}])
    assert [e["kind"] for e in out] == ["gnt.grant", "ring.setup", "blkif.connect"]
    assert out[1]["t_ns"] == 7 and out[1]["grefs"] == [11] and not cap._fresh_rings
    assert cap._synthesize_rings([]) == []          # announced once


def test_a_closed_frontend_still_showing_a_ring_ref_is_not_announced():
    cap = _session()
    cap._fresh_rings = {"xvdb/0"}
    cap._ring_nodes = lambda ring: ({"state": "6"}, {})     # unbound: the ring was freed long ago
    assert cap._synthesize_rings([]) == [] and "xvdb/0" not in cap.rings_announced
