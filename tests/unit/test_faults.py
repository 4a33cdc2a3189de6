"""Failpoints (harness.faults) parse strictly, and the death watch (harness.
deathwatch) sees dom0's or Xen's end on the serial line and a vanished QEMU."""

import os
import subprocess

import pytest

from harness import deathwatch, faults
from harness.errors import UsageError


def test_fault_points_parse():
    assert faults.parse("dom0-panic@step:2") == faults.Fault("dom0-panic", step=2)
    assert faults.parse("sigkill@stage:restore snapshot") == faults.Fault("sigkill", stage="restore snapshot")


@pytest.mark.parametrize("text", ["dom0-panic", "boom@step:1", "kill-qemu@stage:steps", "sigkill@step:0",
                                  "sigkill@step:x", "sigkill@somewhere"])
def test_a_bad_fault_is_a_usage_error_naming_the_variable(text):
    with pytest.raises(UsageError) as exc:
        faults.parse(text)
    assert "XENRIG_FAULT" in exc.value.paragraph()


def test_unset_means_no_fault(monkeypatch):
    monkeypatch.delenv("XENRIG_FAULT", raising=False)
    assert faults.configured() is None
    faults.before_step(None, 1, None, None)     # nothing to do, nothing touched


def test_the_watch_reads_only_what_came_after_it_began(tmp_path):
    serial = tmp_path / "serial-l0.log"
    serial.write_text("[ 1.0] Kernel panic - not syncing: an old one, before the watch\n")
    watch = deathwatch.DeathWatch(serial, os.getpid(), every_s=0)
    assert watch() is None
    with open(serial, "a") as fh:
        fh.write("(d1) SeaBIOS: Kernel panic - not syncing: the guest's own words\n(XEN) Hardware Dom0 cra")
    assert watch() is None                      # a guest line, and half a line
    with open(serial, "a") as fh:
        fh.write("shed: 'noreboot' set - not rebooting.\n")
    assert "Hardware Dom0 crashed" in watch()
    assert "Hardware Dom0 crashed" in watch()   # stays dead


def test_the_watch_sees_qemu_gone(tmp_path):
    serial = tmp_path / "serial-l0.log"
    serial.write_text("")
    child = subprocess.Popen(["sleep", "30"])
    watch = deathwatch.DeathWatch(serial, child.pid, every_s=0)
    assert watch() is None
    child.kill()
    child.wait()
    assert watch() == "the L0 VM's QEMU is gone"
    assert deathwatch.DeathWatch(serial, None, every_s=0)() is None   # no pid known: the console only


def test_disk_full_refuses_anything_but_a_small_tmpfs(tmp_path, monkeypatch):
    mount, fstype = faults._mount_of(tmp_path)
    assert tmp_path.resolve().as_posix().startswith(mount)
    # Whatever /tmp is on this machine, the fill must never be tried here.
    monkeypatch.setattr(faults, "_mount_of", lambda path: ("/", "ext4"))
    with pytest.raises(UsageError) as exc:
        faults._fill(tmp_path)
    assert "only a tmpfs" in exc.value.paragraph()
    assert not (tmp_path / ".xr-fault-fill").exists()


def test_no_space_is_the_machines_trouble_not_a_harness_bug(tmp_path):
    import errno

    from harness import runner

    err = runner._disk_full(OSError(errno.ENOSPC, "No space left on device"), tmp_path)
    assert err is not None and err.kind == "disk-full" and str(tmp_path) in err.paragraph()
    assert runner._disk_full(OSError(errno.EACCES, "Permission denied"), tmp_path) is None


def test_a_vm_stopped_on_an_io_error_is_the_l0s_end_not_the_stacks(tmp_path):
    serial = tmp_path / "serial-l0.log"
    serial.write_text("")
    why = []
    watch = deathwatch.DeathWatch(serial, os.getpid(), every_s=0, stopped=lambda: why[0] if why else None)
    assert watch() is None and watch.cause is None
    why.append("QEMU stopped the L0 VM on a disk I/O error")
    assert watch() == why[0] and watch.cause == "l0"
    serial.write_text("(XEN) Hardware Dom0 crashed: rebooting machine in 5 seconds.\n")
    crashed = deathwatch.DeathWatch(serial, os.getpid(), every_s=0)
    assert crashed() is None            # it was there before the watch began
    with open(serial, "a") as fh:
        fh.write("(XEN) Panic on CPU 0:\n")
    assert crashed() and crashed.cause == "stack"


def test_what_a_guest_writes_through_xens_debug_port_kills_nothing(tmp_path):
    serial = tmp_path / "serial-l0.log"
    serial.write_text("")
    watch = deathwatch.DeathWatch(serial, os.getpid(), every_s=0)
    with open(serial, "a") as fh:
        fh.write("(d1) Hardware Dom0 crashed: a hostile guest says so\n(d1) Panic on CPU 0:\n"
                 "(d1) Kernel panic - not syncing: and this\n")
    assert watch() is None and watch.cause is None
