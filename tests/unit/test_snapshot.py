"""Snapshots of the booted stack: what a restore changes in the saved VM's
definition, what the key covers, how the store lists and prunes, the clock
check after a restore, and guestctl's file copy into the guest."""

from __future__ import annotations

import dataclasses
import os
import hashlib
import socket
import subprocess
import sys
import threading
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest

from harness import booted, snapshot
from harness.config import GuestConfig, HostConfig
from harness.config.schema import DiskConfig
from harness.errors import InfraError
from harness.images import Images
from harness.images.cache import Artifact
from harness.machine import domxml, vm

from tests.unit.test_domxml import spec


def _saved_xml(tmp_path: Path) -> str:
    return domxml.render(dataclasses.replace(spec(), root_disk=tmp_path / "old" / "dom0-overlay.qcow2",
                                             serial_log=tmp_path / "old" / "serial-l0.log", ssh_port=40000))


def test_a_restore_gets_its_own_overlay_serial_log_and_port_and_waits_for_the_stream(tmp_path):
    xml = vm.restore_xml(_saved_xml(tmp_path), tmp_path / "new.qcow2", tmp_path / "new-serial.log", 41234)
    dom = ET.fromstring(xml)
    disks = {d.find("target").get("dev"): d.find("source").get("file") for d in dom.iter("disk")}
    assert disks["vda"] == str(tmp_path / "new.qcow2")
    assert disks["vdb"].endswith("guest.ext4")          # the read-only guest image is the same file
    assert {s.get("path") for s in dom.iter("source") if s.get("path")} == {str(tmp_path / "new-serial.log")}
    args = [a.get("value") for a in dom.find(f"{{{domxml.QEMU_NS}}}commandline")]
    assert any("hostfwd=tcp:127.0.0.1:41234-:22" in a for a in args)
    assert not any("40000" in a for a in args)
    assert args[-2:] == ["-incoming", "defer"]


def test_a_saved_definition_without_the_network_arguments_is_refused(tmp_path):
    dom = ET.fromstring(_saved_xml(tmp_path))
    dom.remove(dom.find(f"{{{domxml.QEMU_NS}}}commandline"))
    with pytest.raises(InfraError, match="no QEMU network arguments"):
        vm.restore_xml(ET.tostring(dom, encoding="unicode"), tmp_path / "n.qcow2", tmp_path / "s.log", 1)


def _images(tmp_path: Path, dom0_hash: str = "aa") -> Images:
    arts = [Artifact(n, f"{n}key", tmp_path / n, {"f": dom0_hash if n == "dom0" else "bb"}) for n in ("xen", "dom0", "guest")]
    return Images(*arts)


def test_the_key_covers_guest_host_images_and_accel_but_not_timeouts(tmp_path, monkeypatch):
    monkeypatch.setattr(snapshot.host_tools, "versions", lambda: {"qemu": "7.2"})
    host, guest = HostConfig(), GuestConfig()
    base = snapshot.key_for(_images(tmp_path), host, guest, "tcg")
    assert base == snapshot.key_for(_images(tmp_path), host, guest, "tcg")
    slower = dataclasses.replace(host, timeouts=dataclasses.replace(host.timeouts, guest_boot_s=999))
    assert snapshot.key_for(_images(tmp_path), slower, guest, "tcg") == base
    changed = [
        snapshot.key_for(_images(tmp_path), host, dataclasses.replace(guest, vcpus=2), "tcg"),
        snapshot.key_for(_images(tmp_path), host, dataclasses.replace(guest, max_grant_frames=8), "tcg"),
        snapshot.key_for(_images(tmp_path), host, dataclasses.replace(guest, disks=[DiskConfig(backend="qdisk")]), "tcg"),
        snapshot.key_for(_images(tmp_path), dataclasses.replace(host, memory_mib=4096), guest, "tcg"),
        snapshot.key_for(_images(tmp_path), host, guest, "kvm"),
        snapshot.key_for(_images(tmp_path, dom0_hash="cc"), host, guest, "tcg"),   # image rebuilt, same key
    ]
    assert base not in changed and len(set(changed)) == len(changed)
    monkeypatch.setattr(snapshot.host_tools, "versions", lambda: {"qemu": "8.0"})
    assert snapshot.key_for(_images(tmp_path), host, guest, "tcg") != base


def _make(root: Path, key: str, backing: Path, state: bytes = b"state") -> Path:
    store = snapshot.store()

    def fill(tmp: Path) -> dict:
        (tmp / snapshot.STATE).write_bytes(state)
        (tmp / snapshot.DISK).write_bytes(b"disk")
        (tmp / snapshot.DOMAIN_XML).write_text("<domain/>")
        return {"made_at": "now", "accel": "tcg", "guest": "g", "dom0_backing": str(backing), "make_s": 1.0}

    return store.build(snapshot.NAME, key, fill).path


def test_lookup_verifies_files_and_the_dom0_image_it_stands_on(tmp_path, monkeypatch):
    monkeypatch.setenv("XENRIG_CACHE", str(tmp_path / "cache"))
    backing = tmp_path / "rootfs.ext4"
    backing.write_bytes(b"x")
    path = _make(tmp_path, "k1", backing)
    snap = snapshot.lookup("k1")
    assert snap is not None and snap.state == path / "state.bin" and snap.domain_xml == "<domain/>"
    assert snap.brief()["size_bytes"] > 0
    (path / snapshot.STATE).write_bytes(b"damaged")
    assert snapshot.lookup("k1") is None                 # a damaged file: not restored
    _make(tmp_path, "k2", backing)
    backing.unlink()
    assert snapshot.lookup("k2") is None                 # its dom0 image is gone
    assert snapshot.lookup("nope") is None


def test_list_and_prune(tmp_path, monkeypatch):
    monkeypatch.setenv("XENRIG_CACHE", str(tmp_path / "cache"))
    backing = tmp_path / "rootfs.ext4"
    backing.write_bytes(b"x")
    _make(tmp_path, "k1", backing)
    _make(tmp_path, "k2", backing)
    (snapshot.store().root / ".stack-k3.abc.building").mkdir()
    assert sorted(s.key for s in snapshot.list_all()) == ["k1", "k2"]
    removed = snapshot.prune({"k1"})
    assert sorted(p.name for p in removed) == [".stack-k3.abc.building", "stack-k2"]
    assert [s.key for s in snapshot.list_all()] == ["k1"]


class _Res:
    def __init__(self, out):
        self.stdout = out


class _Clocked:
    """dom0 or guest whose /proc/uptime runs at `rate` times a fake host clock."""

    def __init__(self, clock, rate):
        self.clock, self.rate, self.commands = clock, rate, []

    def run(self, command, timeout_s=None, **kw):
        self.commands.append(command)
        return _Res(f"{100 + self.clock.now * self.rate:.2f} 1.00\n")


class _Clock:
    now = 0.0

    def monotonic(self):
        return self.now

    def sleep(self, s):
        self.now += s

    def time(self):
        return 1_800_000_000.0


@pytest.mark.parametrize("dom0_rate,guest_rate,ok", [(1.0, 1.0, True), (1.0, 0.000001, False), (50.0, 1.0, False)])
def test_clocks_after_a_restore_must_run_at_the_hosts_rate(monkeypatch, dom0_rate, guest_rate, ok):
    clock = _Clock()
    monkeypatch.setattr(booted.time, "monotonic", clock.monotonic)
    monkeypatch.setattr(booted.time, "sleep", clock.sleep)
    monkeypatch.setattr(booted.time, "time", clock.time)
    xen, g = _Clocked(clock, dom0_rate), _Clocked(clock, guest_rate)
    if ok:
        answered = []
        rates = booted.check_clocks(xen, g, on_guest_answer=lambda: answered.append(clock.now))
        assert rates == {"dom0_rate": 1.0, "guest_rate": 1.0} and answered == [0.0]
        assert xen.commands[-1] == g.commands[-1] == "cat /proc/uptime; date -u -s @1800000000 >/dev/null"
    else:
        with pytest.raises(InfraError, match="wrong rate"):
            booted.check_clocks(xen, g)


def _fake_agent(sock: socket.socket, damage: bool) -> None:
    """The guest agent's side of XR-PUT: read the line, then the bytes."""
    f = sock.makefile("rb")
    while True:
        line = f.readline().decode().split()
        if line[0] == "XR-PING":
            sock.sendall(f"XR-PONG {line[1]}\n".encode())
        elif line[0] == "XR-PUT":
            data = f.read(int(line[2]))
            if damage:
                data = data[:-1] + b"?"
            sock.sendall(f"XR-PUT-OK {line[1]} {len(data)} {hashlib.sha256(data).hexdigest()}\n".encode())
            return


@pytest.mark.parametrize("damage", [False, True])
def test_guestctl_put_sends_the_file_and_checks_what_the_guest_wrote(tmp_path, damage):
    path = str(tmp_path / "agent.sock")
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen(1)
    blob = bytes(range(256)) * 400 + b"\n\x00XR-END x\n"
    (tmp_path / "m.ko").write_bytes(blob)
    t = threading.Thread(target=lambda: _fake_agent(server.accept()[0], damage), daemon=True)
    t.start()
    res = subprocess.run([sys.executable, str(Path(booted.__file__).parent / "remote" / "guestctl.py"),
                          "--socket", path, "--timeout", "20", "put", str(tmp_path / "m.ko"), "/lib/modules/x/m.ko"],
                         capture_output=True, text=True, timeout=60)
    if damage:
        assert res.returncode == 254 and "arrived damaged" in res.stderr
    else:
        assert res.returncode == 0, res.stderr
        assert res.stdout.strip() == hashlib.sha256(blob).hexdigest()


class _PipeChannel:
    """Enough of paramiko's Channel over a local `guestctl.py serve`."""

    def __init__(self, argv):
        self.p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.closed = False
        self._timeout = None

    def settimeout(self, t):
        self._timeout = t

    def sendall(self, data):
        self.p.stdin.write(data)
        self.p.stdin.flush()

    def recv(self, n):
        import select
        r, _, _ = select.select([self.p.stdout], [], [], self._timeout)
        if not r:
            raise socket.timeout()
        return os.read(self.p.stdout.fileno(), n)

    def exit_status_ready(self):
        return self.p.poll() is not None

    def recv_stderr_ready(self):
        return False

    def close(self):
        self.closed = True
        self.p.kill()
        self.p.wait()


def _run_agent(sock: socket.socket, damage_second: bool) -> None:
    """The guest agent's side of XR-PING / XR-RUN: the output is the command upper-cased."""
    import base64
    f = sock.makefile("rb")
    n = 0
    for raw in f:
        line = raw.decode().split()
        if line[0] == "XR-PING":
            sock.sendall(f"XR-PONG {line[1]}\n".encode())
        elif line[0] == "XR-RUN":
            n += 1
            out = base64.b64decode(line[3]).upper()
            digest = hashlib.sha256(out).hexdigest()
            if damage_second and n == 2:
                out = out[:-1] + b"!"
            sock.sendall(f"XR-OUT {line[1]} 3 {len(out)} {digest}\n".encode() + base64.b64encode(out) + b"\n"
                         + f"XR-END {line[1]}\n".encode())


def test_the_relay_runs_commands_over_one_channel_and_flags_damage(tmp_path):
    from harness.guest.relay import Relay

    path = str(tmp_path / "agent.sock")
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen(1)
    threading.Thread(target=lambda: _run_agent(server.accept()[0], True), daemon=True).start()
    guestctl = str(Path(booted.__file__).parent / "remote" / "guestctl.py")
    started = []

    class _Ssh:
        def stream(self, command, timeout_s):
            started.append(command)
            return _PipeChannel([sys.executable, guestctl, "--socket", path, "serve"])

    class _Host:
        ssh = _Ssh()

    relay = Relay(_Host(), path)
    res = relay.run("echo hi", timeout_s=20)
    assert (res.exit_status, res.stdout_bytes) == (3, b"ECHO HI")
    assert res.stderr == f"XR-SHA256 {hashlib.sha256(b'ECHO HI').hexdigest()}\n"
    bad = relay.run("again", timeout_s=20)
    assert bad.exit_status == 254 and "arrived damaged" in bad.stderr
    assert relay.run("third", timeout_s=20).stdout == "THIRD"
    assert len(started) == 1 and relay.answered == 3      # one relay for all three
    relay.close()
