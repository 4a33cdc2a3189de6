"""GNTTABOP statuses as xen/common/grant_table.c (Xen 4.17.7) gives them.

Each test names the Xen function and check it pins down; the same cases
run against real Xen in the conformance scenarios.
"""

import pytest

from harness.model.constants import (
    DOMID_SELF, EBUSY, EINVAL, ENOSYS, EPERM, ESRCH, GNTCOPY_dest_gref,
    GNTCOPY_source_gref, GNTMAP_device_map, GNTMAP_host_map, GNTMAP_readonly,
    GNTST_bad_copy_arg, GNTST_bad_dev_addr, GNTST_bad_domain, GNTST_bad_gntref,
    GNTST_bad_handle, GNTST_bad_page, GNTST_general_error, GNTST_okay,
    GNTST_permission_denied, GTF_accept_transfer, GTF_permit_access, GTF_readonly,
    GTF_reading, GTF_sub_page, GTF_writing,
)
from harness.model.gnttab import DomainFacts, Hypervisor, expected_status
from harness.model.rules import Divergence

GUEST, DOM0, OTHER = 1, 0, 2
HOST_RW = GNTMAP_host_map
HOST_RO = GNTMAP_host_map | GNTMAP_readonly


def make_hv(**kwargs) -> Hypervisor:
    facts = {
        DOM0: DomainFacts(DOM0, hvm=False, privileged=True),
        GUEST: DomainFacts(GUEST, hvm=True, max_grant_frames=4),
        OTHER: DomainFacts(OTHER, hvm=True),
    }
    hv = Hypervisor(facts, **kwargs)
    hv.table(GUEST).set_frames(1)
    hv.table(GUEST).mark_all_known()
    return hv


def grant(hv, ref, to=DOM0, frame=0x1000, readonly=False, flags=None):
    table = hv.table(GUEST)
    table.flags[ref] = flags if flags is not None else GTF_permit_access | (GTF_readonly if readonly else 0)
    table.gdom[ref] = to
    table.frame[ref] = frame


def status(hv, op, caller, **inputs):
    return expected_status(hv, op, caller, **inputs).value


class TestMap:
    def test_okay_sets_reading_and_writing(self):
        hv = make_hv()
        grant(hv, 9)
        assert status(hv, "map", DOM0, rdom=GUEST, ref=9, flags=HOST_RW) == GNTST_okay
        hv.map(DOM0, GUEST, 9, HOST_RW, GNTST_okay, handle=5, host_addr=0x1000, dev_bus_addr=None)
        table = hv.table(GUEST)
        assert table.pin[9] == 0x1
        assert table.flags[9] == GTF_permit_access | GTF_reading | GTF_writing

    def test_no_host_or_device_flag_is_bad_gntref(self):
        # map_grant_ref: "Bad flags in grant map op" answers GNTST_bad_gntref.
        hv = make_hv()
        grant(hv, 9)
        assert status(hv, "map", DOM0, rdom=GUEST, ref=9, flags=GNTMAP_readonly) == GNTST_bad_gntref

    def test_hvm_caller_device_map_is_general_error(self):
        hv = make_hv()
        grant(hv, 9, to=OTHER)
        assert status(hv, "map", OTHER, rdom=GUEST, ref=9,
                      flags=GNTMAP_device_map | GNTMAP_host_map) == GNTST_general_error

    def test_unknown_domain_and_domid_self_are_bad_domain(self):
        hv = make_hv()
        assert status(hv, "map", DOM0, rdom=77, ref=9, flags=HOST_RW) == GNTST_bad_domain
        # rcu_lock_domain_by_id does not resolve DOMID_SELF.
        assert status(hv, "map", DOM0, rdom=DOMID_SELF, ref=9, flags=HOST_RW) == GNTST_bad_domain

    def test_ref_beyond_table_is_bad_gntref(self):
        hv = make_hv()
        assert status(hv, "map", DOM0, rdom=GUEST, ref=512, flags=HOST_RW) == GNTST_bad_gntref

    def test_write_map_of_readonly_grant_is_general_error_not_permission_denied(self):
        # _set_status_v1: "Attempt to write-pin a r/o grant entry".
        hv = make_hv()
        grant(hv, 9, readonly=True)
        assert status(hv, "map", DOM0, rdom=GUEST, ref=9, flags=HOST_RW) == GNTST_general_error
        assert status(hv, "map", DOM0, rdom=GUEST, ref=9, flags=HOST_RO) == GNTST_okay

    def test_map_by_domain_the_entry_does_not_name_is_general_error(self):
        hv = make_hv()
        grant(hv, 9, to=OTHER)
        assert status(hv, "map", DOM0, rdom=GUEST, ref=9, flags=HOST_RW) == GNTST_general_error

    def test_invalid_and_sub_page_entries_are_general_error(self):
        hv = make_hv()
        assert status(hv, "map", DOM0, rdom=GUEST, ref=9, flags=HOST_RW) == GNTST_general_error
        grant(hv, 10, flags=GTF_permit_access | GTF_sub_page)
        assert status(hv, "map", DOM0, rdom=GUEST, ref=10, flags=HOST_RW) == GNTST_general_error

    def test_second_domain_cannot_map_a_pinned_entry(self):
        hv = make_hv()
        grant(hv, 9)
        hv.map(DOM0, GUEST, 9, HOST_RW, GNTST_okay, 1, None, None)
        hv.facts[OTHER].privileged = True
        assert status(hv, "map", OTHER, rdom=GUEST, ref=9, flags=HOST_RO) == GNTST_general_error

    def test_pin_counter_overflow_is_general_error(self):
        # GNTPIN_incr2oflow_mask: refused once the counter's top bit (128) is set.
        hv = make_hv()
        grant(hv, 9)
        for handle in range(128):
            hv.map(DOM0, GUEST, 9, HOST_RW, GNTST_okay, handle, None, None)
        assert status(hv, "map", DOM0, rdom=GUEST, ref=9, flags=HOST_RW) == GNTST_general_error
        assert status(hv, "map", DOM0, rdom=GUEST, ref=9, flags=HOST_RO) == GNTST_okay

    def test_declared_bad_frame_is_bad_page(self):
        hv = make_hv(bad_gfns={GUEST: {0xdead}})
        grant(hv, 9, frame=0xdead)
        assert status(hv, "map", DOM0, rdom=GUEST, ref=9, flags=HOST_RW) == GNTST_bad_page

    def test_wrong_status_is_a_divergence_with_both_values(self):
        hv = make_hv()
        grant(hv, 9, readonly=True)
        with pytest.raises(Divergence) as err:
            hv.map(DOM0, GUEST, 9, HOST_RW, GNTST_permission_denied, None, None, None)
        assert err.value.rule == "gnttab.map.status"
        assert err.value.expected == GNTST_general_error
        assert err.value.actual == GNTST_permission_denied

    def test_live_handle_returned_again_is_map_output(self):
        hv = make_hv()
        grant(hv, 9)
        grant(hv, 10)
        hv.map(DOM0, GUEST, 9, HOST_RW, GNTST_okay, 3, None, None)
        with pytest.raises(Divergence) as err:
            hv.map(DOM0, GUEST, 10, HOST_RW, GNTST_okay, 3, None, None)
        assert err.value.rule == "gnttab.map.output"


class TestUnmap:
    def test_unmap_clears_pin_and_flags(self):
        hv = make_hv()
        grant(hv, 9)
        hv.map(DOM0, GUEST, 9, HOST_RW, GNTST_okay, 4, 0x5000, None)
        assert status(hv, "unmap", DOM0, handle=4, host_addr=0x5000, dev_bus_addr=None) == GNTST_okay
        hv.unmap(DOM0, 4, GNTST_okay, 0x5000, None)
        table = hv.table(GUEST)
        assert table.pin[9] == 0 and table.flags[9] == GTF_permit_access

    def test_unknown_or_stale_handle_is_bad_handle(self):
        hv = make_hv()
        assert status(hv, "unmap", DOM0, handle=4, host_addr=None, dev_bus_addr=None) == GNTST_bad_handle
        grant(hv, 9)
        hv.map(DOM0, GUEST, 9, HOST_RW, GNTST_okay, 4, None, None)
        hv.unmap(DOM0, 4, GNTST_okay, None, None)
        assert status(hv, "unmap", DOM0, handle=4, host_addr=None, dev_bus_addr=None) == GNTST_bad_handle

    def test_handles_belong_to_the_mapping_domain(self):
        hv = make_hv()
        grant(hv, 9)
        hv.map(DOM0, GUEST, 9, HOST_RW, GNTST_okay, 4, None, None)
        assert status(hv, "unmap", OTHER, handle=4, host_addr=None, dev_bus_addr=None) == GNTST_bad_handle

    def test_wrong_device_address_is_bad_dev_addr(self):
        hv = make_hv()
        grant(hv, 9)
        hv.map(DOM0, GUEST, 9, GNTMAP_device_map | GNTMAP_host_map, GNTST_okay, 4, 0x5000, 0x77000)
        assert status(hv, "unmap", DOM0, handle=4, host_addr=0x5000, dev_bus_addr=0x78000) == GNTST_bad_dev_addr

    def test_zero_addresses_unmap_nothing_and_keep_the_handle(self):
        # unmap_common tears down only the parts whose address is given.
        hv = make_hv()
        grant(hv, 9)
        hv.map(DOM0, GUEST, 9, HOST_RW, GNTST_okay, 4, 0x5000, None)
        hv.unmap(DOM0, 4, GNTST_okay, 0, 0)
        assert hv.table(GUEST).pin[9] == 1
        assert 4 in hv.maptrack[DOM0]

    def test_readonly_and_writable_maps_reduce_flags_separately(self):
        hv = make_hv()
        grant(hv, 9)
        hv.map(DOM0, GUEST, 9, HOST_RW, GNTST_okay, 1, None, None)
        hv.map(DOM0, GUEST, 9, HOST_RO, GNTST_okay, 2, None, None)
        hv.unmap(DOM0, 1, GNTST_okay, None, None)
        table = hv.table(GUEST)
        assert table.flags[9] == GTF_permit_access | GTF_reading  # writing cleared
        hv.unmap(DOM0, 2, GNTST_okay, None, None)
        assert table.flags[9] == GTF_permit_access


class TestCopy:
    def copy(self, hv, caller=DOM0, src_dom=GUEST, src=9, src_off=0, dst_dom=DOMID_SELF,
             dst=0x4000, dst_off=0, length=512, flags=GNTCOPY_source_gref):
        return status(hv, "copy", caller, src_dom=src_dom, src=src, src_off=src_off, dst_dom=dst_dom,
                      dst=dst, dst_off=dst_off, length=length, flags=flags)

    def test_gref_to_own_frame_okay(self):
        hv = make_hv()
        grant(hv, 9, readonly=True)
        assert self.copy(hv) == GNTST_okay

    def test_foreign_frame_without_gref_is_permission_denied(self):
        hv = make_hv()
        assert self.copy(hv, src=0x1000, flags=0) == GNTST_permission_denied

    def test_unknown_domain_is_bad_domain(self):
        hv = make_hv()
        assert self.copy(hv, src_dom=55) == GNTST_bad_domain

    def test_bad_source_ref_checked_before_page_bounds(self):
        hv = make_hv()
        assert self.copy(hv, src=600, src_off=4000) == GNTST_bad_gntref

    def test_crossing_the_page_is_bad_copy_arg(self):
        hv = make_hv()
        grant(hv, 9)
        assert self.copy(hv, src_off=4000, length=200) == GNTST_bad_copy_arg
        assert self.copy(hv, dst_off=3900, length=200) == GNTST_bad_copy_arg

    def test_copy_into_readonly_grant_is_general_error(self):
        hv = make_hv()
        grant(hv, 9, readonly=True)
        assert self.copy(hv, src_dom=DOMID_SELF, src=0x4000, dst_dom=GUEST, dst=9,
                         flags=GNTCOPY_dest_gref) == GNTST_general_error

    def test_copy_of_entry_granted_elsewhere_is_general_error(self):
        hv = make_hv()
        grant(hv, 9, to=OTHER)
        assert self.copy(hv) == GNTST_general_error

    def test_source_checked_before_destination(self):
        hv = make_hv()
        assert self.copy(hv, src=700, dst_dom=GUEST, dst=800,
                         flags=GNTCOPY_source_gref | GNTCOPY_dest_gref) == GNTST_bad_gntref


class TestTableOps:
    def test_query_size(self):
        hv = make_hv()
        assert status(hv, "query_size", GUEST, rdom=DOMID_SELF) == GNTST_okay
        assert status(hv, "query_size", GUEST, rdom=99) == GNTST_bad_domain
        assert status(hv, "query_size", GUEST, rdom=OTHER) == GNTST_permission_denied
        assert status(hv, "query_size", DOM0, rdom=GUEST) == GNTST_okay
        hv.query_size(GUEST, DOMID_SELF, GNTST_okay, 1, 4)
        with pytest.raises(Divergence) as err:
            hv.query_size(GUEST, DOMID_SELF, GNTST_okay, 2, 4)
        assert err.value.rule == "gnttab.query_size.output"

    def test_setup_table_limits(self):
        hv = make_hv()
        assert status(hv, "setup_table", GUEST, rdom=DOMID_SELF, nr_frames=4) == GNTST_okay
        assert status(hv, "setup_table", GUEST, rdom=DOMID_SELF, nr_frames=5) == GNTST_general_error
        assert status(hv, "setup_table", GUEST, rdom=OTHER, nr_frames=1) == GNTST_permission_denied
        hv.setup_table(GUEST, DOMID_SELF, 3, GNTST_okay)
        assert hv.table(GUEST).nr_frames == 3

    def test_set_and_get_version(self):
        hv = make_hv()
        assert status(hv, "set_version", GUEST, version=3) == -EINVAL
        assert status(hv, "set_version", GUEST, version=1) == 0
        hv.facts[GUEST].max_version = 1
        assert status(hv, "set_version", GUEST, version=2) == -ENOSYS
        hv.facts[GUEST].max_version = 2
        grant(hv, 9)
        hv.map(DOM0, GUEST, 9, HOST_RW, GNTST_okay, 1, None, None)
        assert status(hv, "set_version", GUEST, version=2) == -EBUSY
        assert status(hv, "get_version", GUEST, rdom=DOMID_SELF) == 0
        assert status(hv, "get_version", GUEST, rdom=99) == -ESRCH
        assert status(hv, "get_version", GUEST, rdom=OTHER) == -EPERM


class TestTransfer:
    def test_hvm_caller_gets_enosys(self):
        hv = make_hv()
        assert status(hv, "transfer", GUEST, rdom=DOM0, ref=9, gfn=0x10) == -ENOSYS

    def test_transfer_statuses(self):
        hv = make_hv()
        table = hv.table(GUEST)
        assert status(hv, "transfer", DOM0, rdom=88, ref=9, gfn=0x10) == GNTST_bad_domain
        # A ref beyond the table is general_error here, not bad_gntref.
        assert status(hv, "transfer", DOM0, rdom=GUEST, ref=600, gfn=0x10) == GNTST_general_error
        assert status(hv, "transfer", DOM0, rdom=GUEST, ref=9, gfn=0x10) == GNTST_general_error
        table.flags[9] = GTF_accept_transfer
        table.gdom[9] = DOM0
        assert status(hv, "transfer", DOM0, rdom=GUEST, ref=9, gfn=0x10) == GNTST_okay
        hv.bad_gfns[DOM0] = {0x10}
        assert status(hv, "transfer", DOM0, rdom=GUEST, ref=9, gfn=0x10) == GNTST_bad_page


def test_unknown_op_name_is_rejected():
    with pytest.raises(ValueError):
        expected_status(make_hv(), "swap_grant_ref", DOM0)
