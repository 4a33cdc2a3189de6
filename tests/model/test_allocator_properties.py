"""Random legal guest sequences, both allocator policies: the model never diverges.

A transliteration of the C allocators (reference_gnttab.py) plays the guest:
it decides every result, and the events it produces go through the checker
exactly as a captured trace would.  After every step the model's free list
must equal the C free list, order included, and the model's invariants hold.
"""

from __future__ import annotations

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from harness.check.checker import Checker
from harness.model.constants import GNTMAP_host_map, GNTMAP_readonly, GNTST_okay
from harness.trace.schema import KINDS, DomainInfo, Header
from tests.model.reference_gnttab import END, CAllocator

GUEST, DOM0 = 1, 0
MAX_FRAMES = 3


class AllocatorMachine(RuleBasedStateMachine):
    policy = "linux-6.1"

    def __init__(self):
        super().__init__()
        header = Header(v=1, policy=self.policy, guest=GUEST, backend_dom=DOM0, mappings="captured",
                        domains=[DomainInfo(domid=DOM0, type="pv", privileged=True),
                                 DomainInfo(domid=GUEST, max_grant_frames=MAX_FRAMES)])
        self.checker = Checker(header)
        self.seq = 0
        self.nested: list | None = None
        self.c = CAllocator(self.policy, MAX_FRAMES, self.emit_nested)
        self.emit("gnt.setup", nr_frames=1, max_frames=MAX_FRAMES)
        self.chains: list[int] = []
        self.held: set[int] = set()
        self.granted: dict[int, bool] = {}
        self.mapped: dict[int, int] = {}
        self.deferred: set[int] = set()
        self.next_handle = 1
        self.next_cb = 0x100

    # --- feeding the checker in capture order: a call's own event first,
    # then what happened inside it (growth, callbacks).

    def emit(self, kind: str, dom: int = GUEST, src: str = "guest", **fields) -> None:
        self.seq += 1
        event = KINDS[kind](seq=self.seq, t_ns=self.seq, dom=dom, src=src, **fields)
        self.checker.handlers[type(event)](event)

    def emit_nested(self, kind: str, **fields) -> None:
        assert self.nested is not None, f"{kind} outside a call"
        self.nested.append((kind, fields))

    def call(self, fn, *args):
        self.nested = []
        result = fn(*args)
        inner, self.nested = self.nested, None
        return result, inner

    def flush(self, inner) -> None:
        for kind, fields in inner:
            self.emit(kind, **fields)

    # --- rules: what a driver may legally do

    @rule(count=st.integers(1, 700))
    def alloc(self, count):
        head, inner = self.call(self.c.get_free_entries, count)
        self.emit("gnt.alloc", count=count, head=head)
        self.flush(inner)
        if head >= 0:
            self.chains.append(head)

    @precondition(lambda self: self.chains)
    @rule(data=st.data())
    def claim(self, data):
        i = data.draw(st.integers(0, len(self.chains) - 1))
        head = self.chains[i]
        ref, nxt = self.c.claim(head)
        self.emit("gnt.claim", head=head, ref=ref)
        if ref >= 0:
            self.held.add(ref)
            self.chains[i] = nxt

    @precondition(lambda self: self.chains)
    @rule(data=st.data())
    def free_chain(self, data):
        head = self.chains.pop(data.draw(st.integers(0, len(self.chains) - 1)))
        self.emit("gnt.free_chain", head=head)
        _, inner = self.call(self.c.free_grant_references, head)
        self.flush(inner)

    @precondition(lambda self: self.held)
    @rule(data=st.data(), ro=st.booleans())
    def grant(self, data, ro):
        ref = data.draw(st.sampled_from(sorted(self.held)))
        self.held.discard(ref)
        self.granted[ref] = ro
        self.emit("gnt.grant", ref=ref, to=DOM0, frame=0x10000 + ref, ro=ro)

    @rule(ro=st.booleans())
    def grant_with_alloc(self, ro):
        ref, inner = self.call(self.c.get_free_entries, 1)
        self.emit("gnt.grant", ref=ref, to=DOM0, frame=0x20000 + max(ref, 0), ro=ro, alloc=True)
        self.flush(inner)
        if ref >= 0:
            self.granted[ref] = ro

    @precondition(lambda self: self.held)
    @rule(data=st.data())
    def free_one(self, data):
        ref = data.draw(st.sampled_from(sorted(self.held)))
        self.held.discard(ref)
        self.emit("gnt.free", ref=ref)
        _, inner = self.call(self.c.put_free_entry, ref)
        self.flush(inner)

    @precondition(lambda self: [r for r in self.granted if r not in self.mapped])
    @rule(data=st.data())
    def backend_maps(self, data):
        ref = data.draw(st.sampled_from(sorted(r for r in self.granted if r not in self.mapped)))
        flags = GNTMAP_host_map | (GNTMAP_readonly if self.granted[ref] else 0)
        handle = self.next_handle
        self.next_handle += 1
        self.emit("gnttab.map", dom=DOM0, src="dom0", rdom=GUEST, ref=ref, flags=flags,
                  status=GNTST_okay, handle=handle)
        self.mapped[ref] = handle

    @precondition(lambda self: self.mapped)
    @rule(data=st.data())
    def backend_unmaps(self, data):
        ref = data.draw(st.sampled_from(sorted(self.mapped)))
        self.emit("gnttab.unmap", dom=DOM0, src="dom0", handle=self.mapped.pop(ref),
                  status=GNTST_okay)

    @precondition(lambda self: self.granted)
    @rule(data=st.data(), mode=st.sampled_from(["ref", "try", "end"]))
    def end_access(self, data, mode):
        ref = data.draw(st.sampled_from(sorted(self.granted)))
        ok = ref not in self.mapped
        self.emit("gnt.end", ref=ref, ok=ok, mode=mode)
        if ok:
            del self.granted[ref]
            if mode == "ref":
                self.held.add(ref)
            else:
                _, inner = self.call(self.c.put_free_entry, ref)
                self.flush(inner)
        elif mode == "end":
            del self.granted[ref]
            if self.policy != "seed":
                self.deferred.add(ref)  # seed: leaked for good

    @precondition(lambda self: self.deferred)
    @rule(data=st.data())
    def deferred_timer(self, data):
        ref = data.draw(st.sampled_from(sorted(self.deferred)))
        ok = ref not in self.mapped
        self.emit("gnt.deferred_end", ref=ref, ok=ok)
        if ok:
            self.deferred.discard(ref)
            _, inner = self.call(self.c.put_free_entry, ref)
            self.flush(inner)

    @rule(count=st.integers(1, 80))
    def request_callback(self, count):
        cb = self.next_cb
        self.next_cb += 1
        self.emit("gnt.cb_request", cb=cb, count=count)
        _, inner = self.call(self.c.request_free_callback, cb, count)
        self.flush(inner)

    # --- what must hold after every step

    @invariant()
    def model_matches_c(self):
        alloc = self.checker.guests[GUEST].alloc
        assert alloc.invariants() == []
        assert list(alloc.free) == self.c.free_list()
        assert alloc.nr_frames == self.c.nr_frames
        assert alloc.callbacks == self.c.callbacks
        for head in self.chains:
            if head != END:
                assert head in alloc.chain_heads


class SeedAllocatorMachine(AllocatorMachine):
    policy = "seed"


_settings = settings(max_examples=60, stateful_step_count=40, deadline=None,
                     suppress_health_check=[HealthCheck.too_slow])
TestLinux61Allocator = AllocatorMachine.TestCase
TestLinux61Allocator.settings = _settings
TestSeedAllocator = SeedAllocatorMachine.TestCase
TestSeedAllocator.settings = _settings
