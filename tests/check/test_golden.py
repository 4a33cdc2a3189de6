"""Every golden trace through `xenrig check`, the same code path a user runs.

tests/golden/<rule>[__<variant>].<pass|fail|error>.jsonl: a pass file must
PASS; a fail file must FAIL with <rule> on its last line (each is written so
the breaking event comes last); an error file must be an ERROR.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.cli import main
from harness.model.rules import RULES

GOLDEN = Path(__file__).resolve().parent.parent / "golden"
FILES = sorted(GOLDEN.glob("*.jsonl"))


def parse_name(path: Path) -> tuple[str, str]:
    stem, expect, _ = path.name.rsplit(".", 2)
    return stem.split("__")[0], expect


def run_check(path: Path, capsys, *extra: str) -> tuple[int, dict]:
    code = main(["check", str(path), "--json", *extra])
    return code, json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_golden(path, capsys):
    rule, expect = parse_name(path)
    code, verdict = run_check(path, capsys)
    if expect == "pass":
        assert (code, verdict["outcome"]) == (0, "PASS"), verdict["divergence"]
    elif expect == "error":
        assert (code, verdict["outcome"]) == (2, "ERROR")
    else:
        last_line = len(path.read_text().splitlines())
        divergence = verdict["divergence"]
        assert (code, verdict["outcome"]) == (1, "FAIL")
        assert divergence["rule"] == rule
        assert divergence["line"] == last_line
        assert divergence["message"] and divergence["source"]


def test_every_rule_has_a_passing_and_a_failing_golden_trace():
    have: dict[str, set[str]] = {}
    for path in FILES:
        rule, expect = parse_name(path)
        have.setdefault(rule, set()).add(expect)
    missing = {rule: {"pass", "fail"} - have.get(rule, set()) for rule in RULES}
    assert {rule: gap for rule, gap in missing.items() if gap} == {}
    assert set(have) - set(RULES) <= {"regression", "model.unsupported"}


def test_human_summary_names_rule_line_and_context(capsys):
    code = main(["check", str(GOLDEN / "ring.id-reuse.fail.jsonl")])
    out = capsys.readouterr().out
    assert code == 1
    assert "FAIL" in out and "rule ring.id-reuse" in out and "at line 9, seq 8" in out
    assert "events before it:" in out and "model state:" in out


def test_policy_flag_overrides_the_header(capsys):
    # Writable pages for a write request: legal for Linux 6.1, not for the seed.
    path = GOLDEN / "blkif.grant-direction__linux61-writable-write.pass.jsonl"
    assert run_check(path, capsys)[0] == 0
    code, verdict = run_check(path, capsys, "--policy", "seed")
    assert code == 1 and verdict["divergence"]["rule"] == "blkif.grant-direction"
    assert verdict["policy"] == "seed"


def test_series_and_ledger_on_request(capsys):
    path = GOLDEN / "regression__linux61-blkback-persistent-indirect.pass.jsonl"
    code, verdict = run_check(path, capsys, "--series")
    assert code == 0
    occupancy = verdict["series"]["ring_occupancy"]["xvda/0"]
    assert max(value for _, value in occupancy) == 1
    assert verdict["series"]["table_frames"]["1"][-1][1] == 1
    assert verdict["kinds"]["gnt.end"] == 66
    mapped = [value for _, value in verdict["series"]["mapped"]["1"]]
    assert max(mapped) == 35 and mapped[-1] == 1  # entry 0 + ring + 33, then entry 0 only
    granted = verdict["ledger"]["1"]["granted"]
    assert len(granted) == 34  # ring + 33 persistent grants, still granted
    assert all(row["mapped_by"] is None for row in granted)  # disconnected: unmapped
