"""The nightly job: the scenario matrix (configs/nightly.yaml), run as
shards a CI system spreads over machines, merged into one report.

    matrix    the matrix file -> cells (scenario x backend x parameter set)
    shard     --shard I/N: which cells one job runs
    cells     running a cell (`xenrig run` in a subprocess), retries
    classify  a failure's class: product or infrastructure
    merge     shards -> nightly.json, junit.xml, summary.md; history
    index     index.html: the grid, the failures, the trend

docs/nightly.md describes the file, the rules and the outputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from harness.nightly.cells import CellRunner, SubprocessCellRunner, run_shard
from harness.nightly.matrix import Cell, Matrix, load_matrix
from harness.nightly.merge import EXIT_CODES, load_history, merge_folders
from harness.nightly.shard import WHOLE, Shard

__all__ = ["Cell", "CellRunner", "EXIT_CODES", "Matrix", "Shard", "SubprocessCellRunner", "WHOLE", "load_history",
           "load_matrix", "merge_folders", "run", "run_shard"]


def run(matrix: Matrix, shard: Shard, out: Path, runner: CellRunner, *, retries: int | None = None,
        history: list[dict] | None = None, progress: Callable[[str], None] = lambda s: None) -> tuple[Path, dict | None]:
    """Run one shard into `out`; return its summary's path and, for the whole
    matrix in one go (1/1), the night, merged there at once (index.html,
    junit.xml, nightly.json).  `history`: earlier nights (load_history)."""
    summary = run_shard(matrix, shard, out, runner, retries=retries, progress=progress)
    if shard.total != 1:
        return summary, None
    return summary, merge_folders([out], out, history)
