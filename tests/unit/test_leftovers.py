import pytest
"""The leftover sweep kills only QEMUs of this libvirt root and this user:
another job's stack on the same machine is not ours to touch."""

import os
from pathlib import Path

from harness.machine import vm


def _proc(tmp_path: Path, pid: int, cmd: list[str]) -> None:
    d = tmp_path / "proc" / str(pid)
    d.mkdir(parents=True)
    (d / "cmdline").write_bytes(b"\0".join(c.encode() for c in cmd) + b"\0")


def test_only_our_roots_qemus_are_leftovers(tmp_path):
    ours, theirs = tmp_path / "state" / "libvirt", tmp_path / "other" / "libvirt"
    qemu = lambda root, name: ["/usr/bin/qemu-system-x86_64", "-name", f"guest={name},debug-threads=on",  # noqa: E731
                                "-object", f'{{"file":"{root}/lib/qemu/domain-1-{name}/master-key.aes"}}']
    _proc(tmp_path, 101, qemu(ours, "xenrig-local"))
    _proc(tmp_path, 102, qemu(theirs, "xenrig-local"))            # another job's stack
    _proc(tmp_path, 103, qemu(ours, "somebody-else"))             # not a xenrig VM
    _proc(tmp_path, 104, ["/usr/bin/python3", f"{ours}/guest=xenrig-x"])
    (tmp_path / "proc" / "self").mkdir()
    assert vm._qemu_processes_of(ours, proc=tmp_path / "proc", uid=os.getuid()) == [101]
    assert vm._qemu_processes_of(ours, proc=tmp_path / "proc", uid=os.getuid() + 1) == []


def test_a_libvirt_root_too_long_for_unix_sockets_is_a_clear_usage_error(tmp_path):
    from harness.errors import UsageError
    from harness.machine import libvirt_conn

    with pytest.raises(UsageError, match="108-byte limit") as info:
        libvirt_conn.open_connection("qemu:///embed", tmp_path / ("x" * 80) / "libvirt")
    assert "XENRIG_STATE" in info.value.hint
