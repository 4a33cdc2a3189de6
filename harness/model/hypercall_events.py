"""GNTTABOPs as the trace records them (from the guest's exerciser or dom0's
agent): each status Xen returned is held against Xen 4.17's answer in the
state replayed so far (harness/model/gnttab.py)."""

from __future__ import annotations

from harness.model.constants import DOMID_SELF, GNTST_okay
from harness.model.state import ModelState
from harness.trace import schema as s


class HypercallEvents:
    """Handlers of the gnttab.<op> events."""

    def __init__(self, state: ModelState):
        self.state = state
        self.hv = state.hv
        self.query_failed = state.query_failed

    def handlers(self) -> dict:
        return {
            s.OpQuerySize: self.on_query_size,
            s.OpSetupTable: self.on_setup_table,
            s.OpMap: self.on_map,
            s.OpUnmap: self.on_unmap,
            s.OpCopy: self.on_copy,
            s.OpTransfer: self.on_transfer,
            s.OpSetVersion: self.on_set_version,
            s.OpGetVersion: self.on_get_version,
        }

    def on_query_size(self, ev: s.OpQuerySize) -> None:
        self.hv.add_domain(ev.dom)
        self.hv.query_size(ev.dom, ev.rdom, ev.status, ev.nr_frames, ev.max_nr_frames, ev.rc)
        if ev.rdom in (ev.dom, DOMID_SELF):
            if ev.rc < 0 or ev.status != GNTST_okay:
                self.query_failed.add(ev.dom)
            else:
                self.query_failed.discard(ev.dom)

    def on_setup_table(self, ev: s.OpSetupTable) -> None:
        self.hv.add_domain(ev.dom)
        self.hv.setup_table(ev.dom, ev.rdom, ev.nr_frames, ev.status)

    def on_map(self, ev: s.OpMap) -> None:
        self.hv.add_domain(ev.dom)
        self.hv.map(ev.dom, ev.rdom, ev.ref, ev.flags, ev.status, ev.handle, ev.host_addr,
                    ev.dev_bus_addr)

    def on_unmap(self, ev: s.OpUnmap) -> None:
        self.hv.add_domain(ev.dom)
        self.hv.unmap(ev.dom, ev.handle, ev.status, ev.host_addr, ev.dev_bus_addr)

    def on_copy(self, ev: s.OpCopy) -> None:
        self.hv.add_domain(ev.dom)
        self.hv.copy(ev.dom, ev.src_dom, ev.src, ev.src_off, ev.dst_dom, ev.dst, ev.dst_off,
                     ev.len, ev.flags, ev.status)

    def on_transfer(self, ev: s.OpTransfer) -> None:
        self.hv.add_domain(ev.dom)
        self.hv.transfer(ev.dom, ev.rdom, ev.ref, ev.gfn, ev.status, ev.rc)

    def on_set_version(self, ev: s.OpSetVersion) -> None:
        self.hv.add_domain(ev.dom)
        self.hv.set_version(ev.dom, ev.version, ev.rc, ev.out_version)

    def on_get_version(self, ev: s.OpGetVersion) -> None:
        self.hv.add_domain(ev.dom)
        self.hv.get_version(ev.dom, ev.rdom, ev.rc, ev.version)
