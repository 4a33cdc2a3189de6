"""blkif request shapes and grant access, per policy.

Regression cases from real drivers: Linux 6.1 blkfront grants every data
page writable, whatever the direction (get_grant passes readonly 0); the
seed's blkfront granted a write request's pages read-only.  Both are legal,
each under its own policy.
"""

import pytest

from harness.model.blkif import grant_direction_ok, parse_request
from harness.model.constants import (
    BLKIF_OP_DISCARD, BLKIF_OP_FLUSH_DISKCACHE, BLKIF_OP_INDIRECT, BLKIF_OP_READ, BLKIF_OP_WRITE,
)
from harness.model.ring import FrontRing
from harness.model.rules import Divergence


@pytest.mark.parametrize("policy_seed,persistent,op,readonly,legal", [
    (False, False, BLKIF_OP_WRITE, False, True),   # Linux 6.1 blkfront: write pages writable
    (False, False, BLKIF_OP_WRITE, True, True),    # also legal without persistent grants
    (True, False, BLKIF_OP_WRITE, True, True),     # the seed's blkfront: write pages read-only
    (True, False, BLKIF_OP_WRITE, False, False),   # not what the seed does
    (False, False, BLKIF_OP_READ, True, False),    # the backend must write a read's pages
    (True, False, BLKIF_OP_READ, False, True),
    (False, True, BLKIF_OP_WRITE, True, False),    # persistent: blkback maps all writable
])
def test_grant_direction(policy_seed, persistent, op, readonly, legal):
    why = grant_direction_ok(policy_seed, persistent, op, readonly, indirect_page=False)
    assert (why is None) is legal, why


def ring(max_indirect=0):
    r = FrontRing("xvda/0", 1, 0, [8], 32)
    r.connected = True
    r.max_indirect = max_indirect
    return r


def shape(r, op, segs=(), indirect_op=None, nr_segments=None, indirect_grefs=()):
    return parse_request(r, 1, op, list(segs), indirect_op, nr_segments, list(indirect_grefs))


def rule_of(fn, *args, **kwargs):
    with pytest.raises(Divergence) as err:
        fn(*args, **kwargs)
    return err.value.rule


def test_segment_counts():
    r = ring()
    assert shape(r, BLKIF_OP_READ, [[9, 0, 7]] * 11)[0] == BLKIF_OP_READ
    assert rule_of(shape, r, BLKIF_OP_READ, [[9, 0, 7]] * 12) == "blkif.nr-segments"
    assert rule_of(shape, r, BLKIF_OP_WRITE, []) == "blkif.nr-segments"
    shape(r, BLKIF_OP_FLUSH_DISKCACHE, [])  # a flush may carry no data
    assert rule_of(shape, r, BLKIF_OP_DISCARD, [[9, 0, 7]]) == "blkif.nr-segments"
    assert rule_of(shape, r, 4) == "blkif.op"


def test_segment_bounds():
    r = ring()
    shape(r, BLKIF_OP_READ, [[9, 3, 3]])
    assert rule_of(shape, r, BLKIF_OP_READ, [[9, 4, 3]]) == "blkif.seg-bounds"
    assert rule_of(shape, r, BLKIF_OP_READ, [[9, 0, 8]]) == "blkif.seg-bounds"


def test_indirect_requests():
    assert rule_of(shape, ring(), BLKIF_OP_INDIRECT, indirect_op=0, nr_segments=32,
                   indirect_grefs=[40]) == "blkif.indirect"
    r = ring(max_indirect=32)
    op, data, pages = shape(r, BLKIF_OP_INDIRECT, [[9, 0, 7]] * 32, indirect_op=BLKIF_OP_WRITE,
                            nr_segments=32, indirect_grefs=[40])
    assert (op, len(data), pages) == (BLKIF_OP_WRITE, 32, [40])
    assert rule_of(shape, r, BLKIF_OP_INDIRECT, indirect_op=BLKIF_OP_FLUSH_DISKCACHE, nr_segments=1,
                   indirect_grefs=[40]) == "blkif.indirect"
    assert rule_of(shape, r, BLKIF_OP_INDIRECT, indirect_op=0, nr_segments=33,
                   indirect_grefs=[40]) == "blkif.nr-segments"
    assert rule_of(shape, r, BLKIF_OP_INDIRECT, indirect_op=0, nr_segments=32,
                   indirect_grefs=[40, 41]) == "blkif.indirect"
