import copy
import shutil
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from harness.nightly import cells, load_matrix

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "configs" / "nightly.yaml"


@pytest.fixture(scope="session")
def _shipped_matrix():
    return load_matrix(SHIPPED)


@pytest.fixture
def matrix(_shipped_matrix):
    """The shipped matrix: real scenarios, real variants.  Read once (it reads
    every scenario it names); each test gets its own copy."""
    return copy.deepcopy(_shipped_matrix)


@pytest.fixture
def matrix_file(tmp_path):
    """Write a matrix file next to copies of the shipped scenarios."""
    scen = tmp_path / "scenarios"
    scen.mkdir()
    for name in ("smoke", "gnttab-conformance", "blkfront-io"):
        text = (REPO / "configs" / "scenarios" / f"{name}.yaml").read_text()
        (scen / f"{name}.yaml").write_text(text.replace("../hosts/local.yaml", str(REPO / "configs/hosts/local.yaml")))
    shutil.copy(REPO / "configs" / "smoke.yaml", scen / "plain-smoke.yaml")

    def write(text: str) -> Path:
        p = tmp_path / "nightly.yaml"
        p.write_text(text)
        return p
    return write


@pytest.fixture
def still_clock(monkeypatch):
    """The nightly's stopwatch stands still: every duration it records is 0 s,
    so two runs of the same cells write the same pages however long each cell
    took on this machine (a first report that imports matplotlib takes a
    second, the next ones a few milliseconds)."""
    monkeypatch.setattr(cells, "time", SimpleNamespace(time=time.time, strftime=time.strftime, gmtime=time.gmtime,
                                                       monotonic=lambda: 0.0))
