import random

import pytest

from harness.errors import UsageError
from harness.nightly.shard import Shard, parse, shard_of


@pytest.mark.parametrize("text,shard", [("1/2", Shard(1, 2)), (" 3 / 3 ", Shard(3, 3)), ("1/1", Shard(1, 1))])
def test_parse(text, shard):
    assert parse(text) == shard


@pytest.mark.parametrize("text", ["0/2", "3/2", "1/0", "2", "a/b", "", "1/2/3", "-1/2"])
def test_parse_refuses(text):
    with pytest.raises(UsageError):
        parse(text)


def test_shards_partition_the_cells_evenly_and_deterministically(matrix):
    ids = [c.id for c in matrix.cells]
    for total in range(1, len(ids) + 2):
        picks = [[c.id for c in Shard(i, total).pick(matrix.cells)] for i in range(1, total + 1)]
        flat = [cid for p in picks for cid in p]
        assert sorted(flat) == sorted(ids) and len(flat) == len(set(flat))     # every cell exactly once
        assert max(map(len, picks)) - min(map(len, picks)) <= 1                 # round-robin: balanced
        shuffled = list(matrix.cells)
        random.Random(total).shuffle(shuffled)
        assert picks == [[c.id for c in Shard(i, total).pick(shuffled)] for i in range(1, total + 1)]
        for i, p in enumerate(picks, start=1):
            assert all(shard_of(cid, ids, total) == i for cid in p)


def test_a_scenarios_cells_are_spread_over_the_shards(matrix):
    firsts = [c.id for c in Shard(1, 2).pick(matrix.cells)]
    seconds = [c.id for c in Shard(2, 2).pick(matrix.cells)]
    for scenario in ("smoke", "blkfront-io"):
        assert any(c.startswith(scenario) for c in firsts) and any(c.startswith(scenario) for c in seconds)
