"""The two allocator policies, case by case: where they agree and where they differ."""

import pytest

from harness.model.allocator import CHAIN, DEFERRED, FREE, HELD, LEAKED, GuestAllocator
from harness.model.constants import ENOSPC, GNTTAB_LIST_END, GTF_permit_access
from harness.model.gnttab import GrantTable
from harness.model.rules import Divergence


def allocator(policy, max_frames=2):
    alloc = GuestAllocator(policy, GrantTable(1, max_frames))
    alloc.setup(1, max_frames)
    return alloc


@pytest.mark.parametrize("policy", ["seed", "linux-6.1"])
def test_setup_frees_8_to_511_in_order(policy):
    alloc = allocator(policy)
    assert list(alloc.free)[:3] == [8, 9, 10]
    assert len(alloc.free) == 504
    assert alloc.invariants() == []


@pytest.mark.parametrize("policy", ["seed", "linux-6.1"])
def test_alloc_claims_in_list_order_and_predicts_head(policy):
    alloc = allocator(policy)
    alloc.alloc(3, 8)
    alloc.claim(8, 8)
    alloc.claim(9, 9)
    assert alloc.st[8] == HELD and alloc.st[10] == CHAIN
    with pytest.raises(Divergence) as err:
        alloc.alloc(1, 20)
    assert err.value.rule == "gnt.alloc" and err.value.expected == 11


def test_growth_goes_in_front_for_seed_and_behind_for_linux():
    seed, linux = allocator("seed"), allocator("linux-6.1")
    for alloc in (seed, linux):
        alloc.alloc(500, 8)  # 4 left free: 508..511
        alloc.alloc(10, 512 if alloc is seed else 508)
    # seed: the new frame's entries head the list; 6.1: after the old tail.
    assert list(seed.free)[:2] == [522, 523]
    assert list(linux.free)[:2] == [518, 519]


def test_freed_chain_order_differs():
    seed, linux = allocator("seed"), allocator("linux-6.1")
    for alloc in (seed, linux):
        alloc.alloc(3, 8)
        alloc.free_chain(8)
    assert list(seed.free)[:3] == [8, 9, 10]   # spliced back in order
    assert list(linux.free)[:3] == [10, 9, 8]  # pushed one by one


def test_enospc_past_the_maximum_changes_nothing():
    alloc = allocator("linux-6.1", max_frames=1)
    alloc.alloc(504, 8)
    alloc.alloc(1, -ENOSPC)
    assert alloc.nr_frames == 1
    with pytest.raises(Divergence) as err:
        alloc.alloc(1, 600)
    assert err.value.rule == "gnt.alloc" and err.value.expected == -ENOSPC


def test_expand_event_must_report_the_growth():
    alloc = allocator("seed")
    alloc.alloc(505, 512)
    alloc.note_expand(1, 2)
    with pytest.raises(Divergence) as err:
        alloc.note_expand(2, 3)
    assert err.value.rule == "gnt.expand"


def test_free_of_reserved_ref():
    allocator("linux-6.1").free_ref(3)  # put_free_entry_locked ignores it
    with pytest.raises(Divergence) as err:
        allocator("seed").free_ref(3)
    assert err.value.rule == "gnt.free-reserved"


def test_busy_end_leaks_in_seed_and_defers_in_linux():
    for policy, state in (("seed", LEAKED), ("linux-6.1", DEFERRED)):
        alloc = allocator(policy)
        alloc.alloc_one(8)
        alloc.table.flags[8] = GTF_permit_access
        alloc.end_failed(8, "end")
        assert alloc.st[8] == state
    seed = allocator("seed")
    with pytest.raises(Divergence) as err:
        seed.deferred_end(8, True)
    assert err.value.rule == "gnt.deferred"


def test_double_free_and_free_while_granted():
    alloc = allocator("linux-6.1")
    alloc.alloc_one(8)
    alloc.free_ref(8)
    assert alloc.st[8] == FREE
    with pytest.raises(Divergence) as err:
        alloc.free_ref(8)
    assert err.value.rule == "gnt.double-free"
    alloc.alloc_one(8)
    alloc.table.flags[8] = GTF_permit_access
    with pytest.raises(Divergence) as err:
        alloc.free_ref(8)
    assert err.value.rule == "gnt.free-while-granted"


def test_callbacks_run_when_enough_is_free_and_in_list_order():
    alloc = allocator("linux-6.1", max_frames=1)
    alloc.alloc(504, 8)
    alloc.request_callback(0xA, 1)
    alloc.request_callback(0xB, 2)
    alloc.claim(8, 8)
    alloc.free_ref(8)          # one free: 0xA is due
    alloc.callback_fired(0xA)
    with pytest.raises(Divergence) as err:
        alloc.callback_fired(0xB)  # wants 2, only 1 free
    assert err.value.rule == "gnt.callback-early"
    alloc.claim(9, 9)
    alloc.free_ref(9)          # two free: 0xB is due
    with pytest.raises(Divergence) as err:
        alloc.alloc(1, 9)      # ...and must run before anything else
    assert err.value.rule == "gnt.callback-missed"


def test_claim_from_empty_chain_is_enospc():
    alloc = allocator("seed")
    alloc.claim(GNTTAB_LIST_END, -ENOSPC)
    with pytest.raises(Divergence) as err:
        alloc.claim(GNTTAB_LIST_END, 8)
    assert err.value.rule == "gnt.claim"


def test_partial_allocator_learns_instead_of_predicting():
    # The trace began after boot: no gnt.setup, so no free-list order.
    alloc = GuestAllocator("linux-6.1", GrantTable(1, 4))
    alloc.alloc(2, 300)
    alloc.claim(300, 300)
    alloc.claim(301, 301)
    with pytest.raises(Divergence) as err:
        alloc.alloc(1, 300)  # still held: cannot be handed out again
    assert err.value.rule == "gnt.alloc"
