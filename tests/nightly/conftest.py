import shutil
from pathlib import Path

import pytest

from harness.nightly import load_matrix

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "configs" / "nightly.yaml"


@pytest.fixture
def matrix():
    """The shipped matrix: real scenarios, real variants."""
    return load_matrix(SHIPPED)


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
