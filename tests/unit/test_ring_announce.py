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
    cap._ring_paths = {"xvdb/0": ("/local/domain/1/device/vbd/51728", "/local/domain/0/backend/vbd/1/51728", [11])}
    # blkif.features only while the device is Connected (here: not for a ring seen first at its teardown)
    cap._ring_nodes = lambda ring: ({"state": "6" if cap.gone else "4", "feature-persistent": "1"},
                                    {"feature-persistent": "1", "feature-max-indirect-segments": "32"})
    cap._asked_params = lambda: {}
    cap.guest = type("G", (), {"domid": 1})()
    cap.trace_dom = 1
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
    cap._ring_paths["xvdb/0"] = (*cap._ring_paths["xvdb/0"][:2], [40])
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


def test_a_ring_freed_and_made_anew_in_one_drain_is_announced_after_it():
    """After a restore blkfront frees its ring and connects a new one whose
    page it grants after the free; the quiet point's read must find the
    model knowing the new ring, though it carried nothing yet."""
    cap = _session()
    cap.rings_announced = {"xvdb/0"}
    cap._fresh_rings = {"xvdb/0"}
    out = cap._synthesize_rings([_ev("ring.free", 5), {"t_ns": 6, "dom": 1, "src": "guest", "kind": "gnt.end",
                                                       "ref": 11, "ok": True, "mode": "end"},
                                 {"t_ns": 7, "dom": 1, "src": "guest", "kind": "gnt.grant", "ref": 11}])
    assert [e["kind"] for e in out] == ["ring.free", "gnt.end", "gnt.grant", "ring.setup", "blkif.connect",
                                        "blkif.features"]
    assert out[3]["grefs"] == [11]


def test_a_ring_freed_whose_page_was_not_granted_again_is_not_announced():
    cap = _session()
    cap.rings_announced = {"xvdb/0"}
    cap._fresh_rings = {"xvdb/0"}
    out = cap._synthesize_rings([_ev("ring.free", 5)])
    assert [e["kind"] for e in out] == ["ring.free"]


def test_a_closed_frontend_still_showing_a_ring_ref_is_not_announced():
    cap = _session()
    cap._fresh_rings = {"xvdb/0"}
    cap._ring_nodes = lambda ring: ({"state": "6"}, {})     # unbound: the ring was freed long ago
    assert cap._synthesize_rings([]) == [] and "xvdb/0" not in cap.rings_announced


class _Xen:
    """dom0's xenstore-read over a dict (what the guest's frontend wrote)."""

    def __init__(self, nodes):
        self.nodes = nodes

    def run(self, script, timeout_s=None):
        import re
        import shlex

        from harness.host.ssh import Result
        out = ""
        for quoted in re.findall(r"xenstore-read (\S+) 2>", script):
            value = self.nodes.get(shlex.split(quoted)[0])
            out += "@\n" + (f"={value}" if value is not None else "") + "\n"
        return Result(script, 0, out, "", 0.0, out.encode())


def _learner(nodes):
    cap = CaptureSession.__new__(CaptureSession)
    cap.xen = _Xen(nodes)
    cap.guest = type("G", (), {"domid": 1})()
    cap.trace_dom = 1
    cap.vdevs, cap.stalled = ["xvda"], []
    cap.ring_names, cap._ring_paths, cap._fresh_rings = {}, {}, set()
    return cap


FE = "/local/domain/1/device/vbd/51712"
BE = "/local/domain/0/backend/vbd/1/51712"


def test_rings_are_learned_per_queue_with_all_their_pages():
    cap = _learner({f"{FE}/backend": BE, f"{FE}/multi-queue-num-queues": "2", f"{FE}/ring-page-order": "1",
                    f"{FE}/queue-0/ring-ref0": "8", f"{FE}/queue-0/ring-ref1": "9",
                    f"{FE}/queue-1/ring-ref0": "300", f"{FE}/queue-1/ring-ref1": "301"})
    cap._learn_rings()
    assert cap.ring_names == {8: "xvda/0", 300: "xvda/1"}
    assert cap._ring_paths["xvda/1"] == (FE, BE, [300, 301])
    ann = CaptureSession._announce.__get__(cap)
    cap.rings_announced = set()
    cap._ring_nodes = lambda ring: ({"state": "3"}, {})
    setup = ann("xvda/1", 5)[0]
    assert setup["grefs"] == [300, 301] and setup["nr_ents"] == 64   # two pages: __RING_SIZE gives 64


def test_one_ring_on_one_page_as_before():
    cap = _learner({f"{FE}/backend": BE, f"{FE}/ring-ref": "8"})
    cap._learn_rings()
    assert cap.ring_names == {8: "xvda/0"} and cap._ring_paths["xvda/0"][2] == [8]


def test_what_the_guest_wrote_out_of_bounds_learns_nothing():
    for bad in ({f"{FE}/multi-queue-num-queues": "100000"}, {f"{FE}/ring-page-order": "9"},
                {f"{FE}/ring-ref": "8;reboot"}, {f"{FE}/backend": "/local/domain/0/backend/vbd/2/51712"}):
        cap = _learner({f"{FE}/backend": BE, f"{FE}/ring-ref": "8", **bad})
        cap._learn_rings()
        assert cap.ring_names == {}, bad
