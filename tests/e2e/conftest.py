import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def qemu_processes() -> list[str]:
    out = subprocess.run(["pgrep", "-a", "-f", "qemu-system-x86_64 -name guest=xenrig-"],
                         stdout=subprocess.PIPE, text=True).stdout
    return [line for line in out.splitlines() if line.strip()]


def xenrig(*args, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "harness", *map(str, args)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def wait_for_file_text(path: Path, text: str, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text(errors="replace"):
            return True
        time.sleep(0.5)
    return False


def wait_for_stack(run_dir: Path, timeout_s: float) -> bool:
    """True once the run's L0 VM is up: booted (dom0's ready line on the
    serial console) or restored from a snapshot (its stage finished)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        serial = run_dir / "serial-l0.log"
        log = run_dir / "xenrig.log"
        if serial.exists() and "XENRIG-DOM0-READY" in serial.read_text(errors="replace"):
            return True
        if log.exists() and "restored from stack-" in log.read_text(errors="replace") and qemu_processes():
            return True
        time.sleep(0.5)
    return False


@pytest.fixture
def no_stack_left():
    """Every e2e test must leave no QEMU behind; say so if one does."""
    yield
    left = qemu_processes()
    if left:
        subprocess.run([sys.executable, "-m", "harness", "down"], cwd=REPO, timeout=120)
    assert not left, f"QEMU left running after the test: {left}"


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/e2e" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


os.environ.setdefault("PYTHONUNBUFFERED", "1")
