import pytest

from harness.capture import dom0_agent
from harness.capture.session import TraceAssembly
from harness.check import replay


def test_batches_keep_program_order_and_valid_schema():
    t = TraceAssembly(guest=1, backend="blkback", backend_dom=0, max_grant_frames=64)
    # dom0's clock is far ahead of the guest's: the guest batch still comes first.
    t.add([{"t_ns": 500, "dom": 1, "src": "guest", "kind": "gnt.grant", "ref": 9, "to": 0, "frame": 4096, "alloc": True}])
    t.add(dom0_agent.to_events([
        {"op": "query_size", "rdom": 1, "rc": 0, "status": 0, "nr_frames": 1, "max_nr_frames": 64, "t_ns": 10},
        {"op": "gntalloc", "to": 0, "gref": 8, "t_ns": 11},
        {"op": "map", "rdom": 1, "ref": 9, "flags": 1, "rc": 0, "status": 0, "handle": 1, "dev_bus_addr": 4096, "t_ns": 12},
        {"op": "unmap", "handle": 1, "rc": 0, "status": 0, "dev_bus_addr": 4096, "t_ns": 13},
    ]))
    header, events = t.parsed()
    assert [e.seq for e in events] == [1, 2, 3, 4]
    assert [type(e).__name__ for e in events] == ["GntGrant", "OpQuerySize", "OpMap", "OpUnmap"]
    assert all(a.t_ns < b.t_ns for a, b in zip(events, events[1:]))
    assert header.guest == 1
    verdict = replay(events, header=header)
    assert verdict.outcome == "PASS", verdict


def test_a_wrong_status_is_a_divergence_naming_the_rule():
    t = TraceAssembly(guest=1, backend="blkback", backend_dom=0)
    # The guest holds ref 12 but has not granted it: the model knows its entry
    # is empty, and Xen answers a map of it with GNTST_general_error, not okay.
    t.add([{"t_ns": 1, "dom": 1, "src": "guest", "kind": "gnt.alloc", "count": 1, "head": 12},
           {"t_ns": 2, "dom": 1, "src": "guest", "kind": "gnt.claim", "head": 12, "ref": 12}])
    t.add(dom0_agent.to_events([{"op": "map", "rdom": 1, "ref": 12, "flags": 1, "rc": 0, "status": 0, "handle": 7,
                                 "dev_bus_addr": 0, "t_ns": 5}]))
    header, events = t.parsed()
    verdict = replay(events, header=header)
    assert verdict.outcome == "FAIL"
    assert verdict.divergence.rule == "gnttab.map.status"


def test_agent_errors_become_infra_errors():
    from harness.errors import InfraError

    class FakeSsh:
        def run(self, *a, **kw):
            from harness.host.ssh import Result
            return Result("x", 0, '{"op": "open", "error": "/dev/xen/privcmd: No such file"}\n', "", 0.1)

    class FakeHost:
        ssh = FakeSsh()

    with pytest.raises(InfraError, match="privcmd"):
        dom0_agent.run(FakeHost(), [{"op": "query_size", "rdom": 1}])


def test_chain_after_boot_takes_the_known_front_of_the_free_list():
    """Regression from a real Linux 6.1 capture (the trace began after boot):
    two ends free 295 then 296; an allocation of 11 returns 296, and its
    second claim is 295, the next ref on the free list."""
    t = TraceAssembly(guest=1, backend="blkback", backend_dom=0)
    ev = lambda **kw: {"t_ns": len(t.events) + 1, "dom": 1, "src": "guest", **kw}  # noqa: E731
    t.add([ev(kind="gnt.alloc", count=2, head=295), ev(kind="gnt.claim", head=295, ref=295)])
    t.add([ev(kind="gnt.claim", head=296, ref=296)])
    t.add([ev(kind="gnt.grant", ref=295, to=0, frame=33019), ev(kind="gnt.grant", ref=296, to=0, frame=33020)])
    t.add([ev(kind="gnt.end", ref=295, ok=True, mode="try"), ev(kind="gnt.end", ref=296, ok=True, mode="try")])
    t.add([ev(kind="gnt.alloc", count=11, head=296), ev(kind="gnt.claim", head=296, ref=296),
           ev(kind="gnt.claim", head=295, ref=295), ev(kind="gnt.claim", head=4000, ref=4000)])
    header, events = t.parsed()
    verdict = replay(events, header=header)
    assert verdict.outcome == "PASS", verdict.summary()
    # ...but a claim of 296 again, still held, is a real error.
    t.add([ev(kind="gnt.claim", head=296, ref=296)])
    header, events = t.parsed()
    assert replay(events, header=header).outcome == "FAIL"


def test_negotiation_nodes_parse_as_two_lines_each_whatever_the_guest_wrote():
    from harness.capture.live import _node_values, _param_value

    # present, absent, a value the guest filled with '@' and '=' (cut to
    # printable characters in dom0), and a truncated output
    out = "@\n=1\n@\n\n@\n=@=x?y\n@\n"
    assert _node_values(out, 4) == ["1", None, "@=x?y", None]
    assert [_param_value(v) for v in ("Y", "N", "16", "", None, "x")] == [1, 0, 16, None, None, None]
    assert [_param_value(v) for v in ("on", "off", "true", "False", "-1")] == [1, 0, 1, 0, -1]
