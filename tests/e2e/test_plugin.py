"""The pytest plugin's fixtures, used the way a user writes a conformance
test: a real stack, a real guest, the model judging the capture."""

import pytest


@pytest.mark.timeout(900)
def test_readonly_grant_refuses_a_writable_map(trace, hvm_guest):
    granted = trace.guest("handoff plugin_ro 0 ro")
    assert granted["ret"] >= 0, granted
    ref = granted["ref"]
    assert trace.expected("map", rdom=hvm_guest.domid, ref=ref, flags=1).value == -1
    res = trace.dom0({"op": "map", "ref": ref, "flags": 1})
    assert res["status"] == -1   # GNTST_general_error, as Xen 4.17's _set_status_v1 says
    ok = trace.dom0({"op": "map", "ref": ref, "flags": 5})
    assert ok["status"] == 0
    assert trace.dom0({"op": "unmap", "handle": ok["handle"]})["status"] == 0
    dump = trace.dump()
    assert dump["rdom"] == hvm_guest.domid and dump["nr_frames"] >= 1


@pytest.mark.timeout(900)
def test_table_size_from_the_guest_and_from_dom0_agree(trace, xen_host, hvm_guest):
    mine = trace.guest("query_size")
    theirs = trace.dom0({"op": "query_size"})
    assert mine["status"] == theirs["status"] == 0
    assert (mine["nr_frames"], mine["max_nr_frames"]) == (theirs["nr_frames"], theirs["max_nr_frames"])
    assert xen_host.domid(hvm_guest.name) == hvm_guest.domid
