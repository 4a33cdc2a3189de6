"""docs/nightly.md keeps up with the code: every matrix key, status and
command-line option is described there."""

import dataclasses

from harness.cli import build_parser
from harness.nightly import cells
from harness.nightly.matrix import Exclude, NightlyMatrix

from .conftest import REPO

DOC = (REPO / "docs" / "nightly.md").read_text()


def test_every_matrix_key_is_documented():
    for f in dataclasses.fields(NightlyMatrix):
        assert f"| `{f.name}` |" in DOC, f.name
    for f in dataclasses.fields(Exclude):
        assert f"`{f.name}`" in DOC, f.name


def test_every_status_is_documented():
    for status in (cells.PASS, cells.FLAKY, cells.FAIL, cells.INFRA, cells.SKIP, cells.MISSING):
        assert f"| {status} |" in DOC, status


def test_every_option_is_documented():
    sub = build_parser()._subparsers._group_actions[0].choices["nightly"]
    actions = sub._subparsers._group_actions[0].choices
    assert set(actions) == {"run", "merge", "list"}
    for name, parser in actions.items():
        assert f"nightly {name}" in DOC or f"`{name}`" in DOC, name
        for action in parser._actions:
            for opt in action.option_strings:
                if opt.startswith("--") and opt != "--help":
                    assert opt in DOC, f"{name} {opt}"
