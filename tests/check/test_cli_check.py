"""`xenrig check` on bad input: one clear paragraph with the line, exit 4 (usage), no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import main

REPO = Path(__file__).resolve().parents[2]
HEADER = '{"v":1,"kind":"header","policy":"linux-6.1"}'
SETUP = '{"seq":1,"t_ns":1,"dom":1,"src":"guest","kind":"gnt.setup","nr_frames":1,"max_frames":64}'


def write(tmp_path, *lines: str) -> Path:
    path = tmp_path / "trace.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def xenrig(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("line,words", [
    ("{not json", "not valid JSON"),
    ('{"seq":2,"t_ns":2,"dom":1,"src":"guest","kind":"gnt.mystery"}', "unknown event kind 'gnt.mystery'"),
])
def test_bad_line_through_the_real_cli(tmp_path, line, words):
    path = write(tmp_path, HEADER, SETUP, line)
    result = xenrig("check", str(path))
    assert result.returncode == 4
    assert result.stdout == ""
    assert f"{path}:3: {words}" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("xenrig: ERROR (usage):")


def test_missing_file(tmp_path, capsys):
    assert main(["check", str(tmp_path / "nope.jsonl")]) == 4
    assert "cannot read trace" in capsys.readouterr().err


def test_seq_going_backwards_is_an_error_with_the_line(tmp_path, capsys):
    path = write(tmp_path, HEADER, SETUP,
                 '{"seq":1,"t_ns":2,"dom":1,"src":"guest","kind":"gnt.alloc","count":1,"head":8}')
    assert main(["check", str(path)]) == 2   # the checker's ERROR verdict on the trace, not a usage error
    out = capsys.readouterr().out
    assert "ERROR" in out and f"{path}:3: seq 1 after seq 1" in out


def test_pass_and_fail_exit_codes(tmp_path, capsys):
    good = write(tmp_path, HEADER, SETUP,
                 '{"seq":2,"t_ns":2,"dom":1,"src":"guest","kind":"gnt.alloc","count":1,"head":8}')
    assert main(["check", str(good)]) == 0
    assert "PASS (2 events, policy linux-6.1)" in capsys.readouterr().out
    bad = write(tmp_path, HEADER, SETUP,
                '{"seq":2,"t_ns":2,"dom":1,"src":"guest","kind":"gnt.alloc","count":1,"head":9}')
    assert main(["check", str(bad)]) == 1
    assert "rule gnt.alloc" in capsys.readouterr().out
