import json
import os
import stat

import pytest

from harness.images import apt, kmods
from harness.images.cache import Store, key_of
from harness.images.recipes import tree_parts


def test_deb822_and_one_line_sources(tmp_path):
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\n"
        "Components: main\nSigned-By: /k.gpg\n\n"
        "Types: deb\nURIs: https://other.example/apt\nSuites: cloud-sdk main\nComponents: main\n")
    (tmp_path / "sources.list.d" / "sec.list").write_text(
        "# comment\ndeb http://mirror.example/debian-security bookworm-security main\ndeb http://x/ubuntu jammy main\n")
    lines = apt.debian_source_lines("bookworm", tmp_path)
    assert lines == [
        "deb [signed-by=/k.gpg] http://mirror.example/debian bookworm main",
        "deb [signed-by=/k.gpg] http://mirror.example/debian bookworm-updates main",
        "deb http://mirror.example/debian-security bookworm-security main",
    ]


def test_no_debian_source_is_a_clear_error(tmp_path):
    from harness.errors import HostSetupError
    with pytest.raises(HostSetupError, match="no Debian 'bookworm' archive"):
        apt.debian_source_lines("bookworm", tmp_path)


def test_store_builds_reuses_and_rebuilds_on_corruption(tmp_path):
    store = Store(tmp_path)
    calls = []

    def build(out):
        calls.append(1)
        (out / "a.bin").write_bytes(b"hello")
        (out / "scratch").mkdir()
        (out / "scratch" / "junk").write_text("x")
        return {"k": "v"}

    a = store.ensure("thing", "k1", build)
    assert not a.reused and a.meta == {"k": "v"} and list(a.files) == ["a.bin"]
    assert not (a.path / "scratch").exists()
    b = store.ensure("thing", "k1", build)
    assert b.reused and len(calls) == 1
    (a.path / "a.bin").write_bytes(b"tampered")
    c = store.ensure("thing", "k1", build)
    assert not c.reused and len(calls) == 2 and (c.path / "a.bin").read_bytes() == b"hello"
    assert json.loads((c.path / "manifest.json").read_text())["key"] == "k1"


def test_failed_build_leaves_nothing(tmp_path):
    store = Store(tmp_path)

    def build(out):
        (out / "half").write_text("x")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        store.ensure("thing", "k2", build)
    assert store.lookup("thing", "k2") is None
    # Nothing but the key's (empty) lock file is left.
    assert [p.name for p in store.root.iterdir()] == [".thing-k2.lock"]


def test_key_changes_with_content_names_and_modes(tmp_path):
    base = key_of([("a", b"1"), ("b", b"2")])
    assert base == key_of([("b", b"2"), ("a", b"1")])
    assert base != key_of([("a", b"1"), ("b", b"3")])
    assert base != key_of([("a", b"1"), ("c", b"2")])
    f = tmp_path / "t" / "init"
    f.parent.mkdir()
    f.write_text("#!/bin/sh\n")
    before = tree_parts(tmp_path / "t", "t")
    os.chmod(f, f.stat().st_mode | stat.S_IXUSR)
    assert tree_parts(tmp_path / "t", "t") != before


def test_module_order_puts_dependencies_first(tmp_path):
    (tmp_path / "modules.dep").write_text(
        "kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko\n"
        "kernel/lib/crc16.ko:\nkernel/fs/mbcache.ko:\nkernel/fs/jbd2/jbd2.ko:\n"
        "kernel/drivers/block/xen-blkfront.ko:\n")
    order = kmods.resolve(tmp_path, ["ext4", "xen_blkfront", "crc16"])
    assert order[-2:] == ["kernel/fs/ext4/ext4.ko", "kernel/drivers/block/xen-blkfront.ko"]
    assert set(order[:3]) == {"kernel/lib/crc16.ko", "kernel/fs/mbcache.ko", "kernel/fs/jbd2/jbd2.ko"}
    from harness.errors import InfraError
    with pytest.raises(InfraError, match="'nosuch' is not in"):
        kmods.resolve(tmp_path, ["nosuch"])


def test_two_builders_of_one_key_build_once_and_both_get_it(tmp_path):
    import threading
    import time as _time

    from harness.images.cache import Store

    store, built, got = Store(tmp_path), [], []

    def builder(out):
        built.append(1)
        _time.sleep(0.5)                        # the other one arrives meanwhile
        (out / "x").write_text("image")
        return {"v": 1}

    threads = [threading.Thread(target=lambda: got.append(store.ensure("dom0", "k1", builder))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(built) == 1 and len(got) == 2
    assert {a.file("x").read_text() for a in got} == {"image"}
    assert [p.name for p in (tmp_path / "images").iterdir() if p.name.endswith(".building")] == []


def test_the_key_covers_the_whole_builder_package(tmp_path):
    from harness.images.cache import builder_parts

    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "dom0.py").write_text("x = 1\n")
    (pkg / "helper.py").write_text("y = 1\n")
    before = builder_parts(pkg / "dom0.py")
    (pkg / "helper.py").write_text("y = 2\n")
    assert builder_parts(pkg / "dom0.py") != before
