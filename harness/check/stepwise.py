"""Replay a captured trace one event at a time, asking the model before
each chosen GNTTABOP what Xen should answer: the per-case expectation of a
conformance run, from the same model that judges the whole trace."""

from __future__ import annotations

from harness.check.checker import Checker
from harness.check.replay import _Run
from harness.check.verdict import PASS, Verdict
from harness.model.gnttab import Expect
from harness.trace import schema as s

# event class -> (GNTTABOP name, the model's expect_* keyword inputs)
_INPUTS = {
    s.OpQuerySize: ("query_size", lambda e: {"rdom": e.rdom}),
    s.OpSetupTable: ("setup_table", lambda e: {"rdom": e.rdom, "nr_frames": e.nr_frames}),
    s.OpMap: ("map", lambda e: {"rdom": e.rdom, "ref": e.ref, "flags": e.flags}),
    s.OpUnmap: ("unmap", lambda e: {"handle": e.handle, "host_addr": e.host_addr, "dev_bus_addr": e.dev_bus_addr}),
    s.OpCopy: ("copy", lambda e: {"src_dom": e.src_dom, "src": e.src, "src_off": e.src_off, "dst_dom": e.dst_dom,
                                  "dst": e.dst, "dst_off": e.dst_off, "length": e.len, "flags": e.flags}),
    s.OpTransfer: ("transfer", lambda e: {"rdom": e.rdom, "ref": e.ref, "gfn": e.gfn}),
    s.OpSetVersion: ("set_version", lambda e: {"version": e.version}),
    s.OpGetVersion: ("get_version", lambda e: {"rdom": e.rdom}),
}


def judge(header: s.Header, events: list[s.Event], name: str = "trace.jsonl",
          series: bool = True) -> tuple[Verdict, dict[int, Expect]]:
    """(the verdict on the whole trace, {seq: the model's expectation} for
    every GNTTABOP event up to the first divergence)."""
    checker = Checker(header, None, series)
    run = _Run(checker, name)
    expectations: dict[int, Expect] = {}
    for index, ev in enumerate(events):
        spec = _INPUTS.get(type(ev))
        if spec is not None:
            op, inputs = spec
            try:
                expectations[ev.seq] = checker.expected_status(op, ev.dom, **inputs(ev))
            except Exception as exc:  # the replay below reports the same problem with context
                expectations[ev.seq] = Expect(None, f"the model could not predict this: {exc}")
        verdict = run.run_block([ev], lambda _i, line=index + 2: line)
        if verdict is not None:
            return verdict, expectations
    return run.verdict(PASS), expectations
