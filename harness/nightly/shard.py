"""`--shard I/N`: which cells one CI job runs.

Round-robin over the cells sorted by id: the same matrix always splits the
same way, whatever order the file lists things in, and a scenario's cells
(which take about as long as each other) are spread over the shards rather
than piled on one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence, TypeVar

from harness.errors import UsageError

T = TypeVar("T")


@dataclass(frozen=True)
class Shard:
    index: int   # 1-based, as CI_NODE_INDEX counts
    total: int

    @property
    def name(self) -> str:
        return f"shard-{self.index}-of-{self.total}"

    def __str__(self) -> str:
        return f"{self.index}/{self.total}"

    def pick(self, cells: Sequence[T], key=lambda c: c.id) -> list[T]:
        return [c for i, c in enumerate(sorted(cells, key=key)) if i % self.total == self.index - 1]


def shard_of(cell_id: str, all_ids: Sequence[str], total: int) -> int:
    """The shard (1-based) that runs `cell_id` when the matrix is split in `total`."""
    return sorted(all_ids).index(cell_id) % total + 1


WHOLE = Shard(1, 1)


def parse(text: str) -> Shard:
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if not m:
        raise UsageError(f"--shard {text!r}: expected I/N, e.g. 1/4 (shard I of N, counted from 1)")
    index, total = int(m.group(1)), int(m.group(2))
    if total < 1 or not 1 <= index <= total:
        raise UsageError(f"--shard {text}: I must be between 1 and N, and N at least 1")
    return Shard(index, total)
