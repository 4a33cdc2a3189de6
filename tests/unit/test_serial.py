"""Waiting on a console log QEMU is still writing, reading only what is new."""

import threading
import time

import pytest

from harness.errors import InfraError
from harness.machine.serial import SerialLog


def test_a_marker_split_across_writes_is_found_with_its_whole_line(tmp_path):
    path = tmp_path / "serial.log"
    path.write_bytes(b"(XEN) booting\nxenrig: XENRIG-DOM")

    def more():
        time.sleep(0.4)
        with open(path, "ab") as fh:
            fh.write(b"0-READY ssh up\nlater\n")

    threading.Thread(target=more).start()
    line = SerialLog(path).wait_for("XENRIG-DOM0-READY", timeout_s=10, stage="boot")
    assert line == "xenrig: XENRIG-DOM0-READY ssh up"


def test_a_panic_ends_the_wait_at_once(tmp_path):
    path = tmp_path / "serial.log"
    path.write_bytes(b"ok\n" * 1000 + b"(XEN) Panic on CPU 0:\n")
    started = time.monotonic()
    with pytest.raises(InfraError, match="Panic on CPU 0"):
        SerialLog(path).wait_for("never", timeout_s=30, stage="boot")
    assert time.monotonic() - started < 5
