"""The checker as a library: replay() on records, and expected statuses after a replay."""

from harness.check import Checker, replay
from harness.model.constants import (
    DOMID_SELF, GNTMAP_host_map, GNTMAP_readonly, GNTST_bad_handle, GNTST_general_error,
    GNTST_okay,
)
from harness.trace.schema import GntEnd, GntGrant, GntSetup, Header, OpMap

HEADER = Header(v=1, policy="linux-6.1", guest=1, backend_dom=0, mappings="captured")


def events():
    return [
        GntSetup(seq=1, t_ns=1, dom=1, src="guest", nr_frames=1, max_frames=64),
        GntGrant(seq=2, t_ns=2, dom=1, src="guest", ref=8, to=0, frame=0x1000, ro=True, alloc=True),
        OpMap(seq=3, t_ns=3, dom=0, src="dom0", rdom=1, ref=8, flags=GNTMAP_host_map | GNTMAP_readonly,
              status=GNTST_okay, handle=7),
    ]


def test_replay_in_memory_pass_and_fail():
    assert replay(events(), header=HEADER).outcome == "PASS"
    bad = events() + [GntEnd(seq=4, t_ns=4, dom=1, src="guest", ref=8, ok=True)]
    verdict = replay(bad, header=HEADER)
    assert verdict.outcome == "FAIL"
    d = verdict.divergence
    assert (d.rule, d.seq, d.line) == ("gnt.end-while-mapped", 4, 5)
    assert [item["event"]["seq"] for item in d.before] == [1, 2, 3]
    assert d.state["pin"] == "0x100" and d.state["mapped_by"] == 0


def test_expected_status_after_a_replay():
    # A conformance run replays what it did, then asks what Xen must answer next.
    checker = Checker(HEADER)
    for event in events():
        checker.handlers[type(event)](event)
    assert checker.expected_status("map", 0, rdom=1, ref=8, flags=GNTMAP_host_map).value == GNTST_general_error
    assert checker.expected_status("map", 0, rdom=1, ref=8,
                                   flags=GNTMAP_host_map | GNTMAP_readonly).value == GNTST_okay
    assert checker.expected_status("unmap", 0, handle=8, host_addr=None,
                                   dev_bus_addr=None).value == GNTST_bad_handle
    assert checker.expected_status("query_size", 1, rdom=DOMID_SELF).value == GNTST_okay


def test_a_table_read_window_wraps_the_handlers_only_until_its_read():
    # The window a concurrent read opens costs nothing once the read is judged:
    # the checker's handlers are the plain ones again.
    from harness.trace.schema import SharedEntry, XenTable, XenTableBegin

    checker = Checker(HEADER)
    plain = dict(checker.handlers)
    for event in events():
        checker.handlers[type(event)](event)
    checker.handlers[XenTableBegin](XenTableBegin(seq=4, t_ns=4, dom=0, src="xen", rdom=1))
    assert checker.handlers[GntEnd] is not plain[GntEnd]
    # blkback unmaps, then the guest ends ref 8 after the read: the read still saw it granted and mapped
    checker.hv.table(1).unpin(8, checker.hv.table(1).pin[8], True)
    checker.handlers[GntEnd](GntEnd(seq=5, t_ns=5, dom=1, src="guest", ref=8, ok=True))
    checker.handlers[XenTable](XenTable(seq=6, t_ns=6, dom=0, src="xen", rdom=1, nr_frames=1,
                                        entries=[SharedEntry(ref=8, flags=0x5, dom=0, frame=0x1000)]))
    assert checker.handlers == plain
    assert checker.xen_view.concurrent_readings == 1
