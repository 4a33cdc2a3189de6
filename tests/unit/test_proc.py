"""Host commands: a timeout kills the command's whole process group."""

import time
from pathlib import Path

import pytest

from harness import proc
from harness.errors import InfraError


def test_a_timeout_kills_the_children_too(tmp_path):
    pidfile = tmp_path / "child.pid"
    with pytest.raises(InfraError, match="did not finish within 1s"):
        proc.run(["sh", "-c", f"sleep 60 & echo $! > {pidfile}; wait"], timeout_s=1, what="a stuck build")
    child = int(pidfile.read_text())
    for _ in range(50):
        if not _running(child):
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"the grandchild {child} outlived the timeout")


def _running(pid: int) -> bool:
    """Alive, and not a zombie: a killed orphan stays one until PID 1 reaps
    it, which in a container can take seconds after it died."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"      # the state follows the command name in parentheses


def test_output_and_status_as_before():
    res = proc.run(["sh", "-c", "echo hi; echo err >&2; exit 0"], timeout_s=10, what="x")
    assert res.returncode == 0 and b"hi" in res.stdout and b"err" in res.stdout
    res = proc.run(["sh", "-c", "printf bin; echo diag >&2"], timeout_s=10, what="x", binary_stdout=True)
    assert res.stdout == b"bin" and res.stderr == b"diag\n"
    with pytest.raises(InfraError, match="exited with status 3"):
        proc.run(["sh", "-c", "exit 3"], timeout_s=10, what="x")
