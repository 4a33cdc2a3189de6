"""The stack lock: one stack per state directory.  A second taker gets a
usage error naming the holder; a holder that is SIGKILLed frees it (the
kernel drops its flock), so a killed run never wedges the next one."""

import subprocess
import sys
import time

import pytest

from harness.errors import UsageError
from harness.machine.stackfile import StackLock

HOLD = ("import sys, time; sys.path.insert(0, '.'); from pathlib import Path; "
        "from harness.machine.stackfile import StackLock; l = StackLock(Path(sys.argv[1])); l.acquire(); "
        "print('held', flush=True); time.sleep(60)")


def test_a_second_taker_is_refused_naming_the_holder_and_a_killed_holder_frees_it(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(UsageError) as exc:
            StackLock(tmp_path).acquire()
        assert f"pid {holder.pid}" in exc.value.paragraph()
    finally:
        holder.kill()
        holder.wait()
    deadline = time.monotonic() + 10
    while True:     # the kernel drops the dead holder's flock at once; allow for scheduling
        try:
            with StackLock(tmp_path):
                break
        except UsageError:
            assert time.monotonic() < deadline, "the lock of a SIGKILLed holder was never freed"
            time.sleep(0.05)
    with StackLock(tmp_path):                  # and released on exit: taken again
        pass


def test_other_state_directories_do_not_share_the_lock(tmp_path):
    with StackLock(tmp_path / "a"), StackLock(tmp_path / "b"):
        pass
