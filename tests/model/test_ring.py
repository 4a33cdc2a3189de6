"""Shared-ring rules (xen/include/public/io/ring.h): sizes, notify, wrap, order."""

import pytest

from harness.model.constants import BLKIF_REQUEST_SIZE, BLKIF_RING_SIZE_1PAGE, ring_size
from harness.model.ring import FrontRing, Request, blkif_ring_entries, push_notify
from harness.model.rules import Divergence

M = 2**32


def test_blkif_ring_sizes():
    # (4096 - 64) / 112 = 36, rounded down to a power of two.
    assert BLKIF_RING_SIZE_1PAGE == 32
    assert blkif_ring_entries(1) == 32
    assert blkif_ring_entries(2) == 64  # (8192 - 64) / 112 = 72 -> 64
    assert blkif_ring_entries(4) == 128
    assert ring_size(BLKIF_REQUEST_SIZE, 64) == 0


@pytest.mark.parametrize("old,new,event,notify", [
    (0, 1, 1, True),        # SHARED_RING_INIT: req_event 1, first push notifies
    (1, 2, 1, False),       # the backend did not ask again
    (1, 3, 3, True),        # event inside (old, new]
    (1, 3, 4, False),       # event beyond new
    (M - 1, 1, 0, True),    # across the wrap: event 0 lies in (2**32-1, 1]
    (M - 1, 1, M - 1, False),
    (5, 5, 6, False),       # nothing pushed
])
def test_push_notify(old, new, event, notify):
    assert push_notify(old, new % M, event % M) is notify


def connected_ring(start=0, nr_ents=4):
    ring = FrontRing("r", 1, 0, [8], nr_ents, start)
    ring.connected = True
    return ring


def put(ring, id):
    ring.check_request_slot(ring.req_prod_pvt, id)
    ring.add_request(Request(id, ring.req_prod_pvt, 0, ()))


def test_indices_wrap_at_2_32():
    ring = connected_ring(start=M - 2)
    for id in range(4):
        put(ring, id)
    assert ring.req_prod_pvt == 2
    ring.push(M - 2, 2, notify=True, req_event=M - 1)
    for id, idx in zip(range(4), [M - 2, M - 1, 0, 1]):
        ring.take_response(idx, id)
    assert ring.rsp_cons == 2 and ring.invariants() == []


def test_full_ring_refuses_another_request():
    ring = connected_ring()
    for id in range(4):
        put(ring, id)
    with pytest.raises(Divergence) as err:
        put(ring, 9)
    assert err.value.rule == "ring.overflow"


def test_id_reuse_while_in_flight():
    ring = connected_ring()
    put(ring, 1)
    with pytest.raises(Divergence) as err:
        put(ring, 1)
    assert err.value.rule == "ring.id-reuse"


def test_response_order_and_unknown_ids():
    ring = connected_ring()
    put(ring, 1)
    with pytest.raises(Divergence) as err:
        ring.take_response(0, 1)  # nothing published yet
    assert err.value.rule == "ring.rsp-overflow"
    ring.push(0, 1, notify=True, req_event=1)
    put(ring, 2)
    with pytest.raises(Divergence) as err:
        ring.take_response(0, 2)  # written but not yet published
    assert err.value.rule == "ring.rsp-unknown-id"
    with pytest.raises(Divergence) as err:
        ring.take_response(0, 7)
    assert err.value.rule == "ring.rsp-unknown-id"
    ring.push(1, 2, notify=False, req_event=1)
    with pytest.raises(Divergence) as err:
        ring.take_response(1, 2)
    assert err.value.rule == "ring.rsp-index"
    ring.take_response(0, 2)  # answers may come in any order of ids
    ring.take_response(1, 1)
    with pytest.raises(Divergence) as err:
        ring.take_response(2, 1)
    assert err.value.rule == "ring.rsp-overflow"


def test_push_must_publish_the_private_producer():
    ring = connected_ring()
    put(ring, 1)
    with pytest.raises(Divergence) as err:
        ring.push(0, 2, notify=True, req_event=1)
    assert err.value.rule == "ring.push"
    with pytest.raises(Divergence) as err:
        ring.push(0, 1, notify=False, req_event=1)
    assert err.value.rule == "ring.notify"


def test_responses_beyond_the_backends_rsp_prod():
    ring = connected_ring()
    put(ring, 1)
    put(ring, 2)
    ring.push(0, 2, notify=True, req_event=1)
    ring.response_push(0, 1, notify=True, rsp_event=1)
    ring.take_response(0, 2)
    with pytest.raises(Divergence) as err:
        ring.take_response(1, 1)  # the backend published only one response
    assert err.value.rule == "ring.rsp-overflow"
