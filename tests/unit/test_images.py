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


def test_reuse_rehashes_only_files_whose_stat_stamp_changed(tmp_path, monkeypatch):
    from harness.images import cache

    store = Store(tmp_path)
    store.build("img", "k", lambda d: (d / "disk.raw").write_bytes(b"A" * 4096) and {})
    hashed = []
    real = cache.sha256_file
    monkeypatch.setattr(cache, "sha256_file", lambda f: hashed.append(f.name) or real(f))
    assert store.lookup("img", "k") is not None and hashed == ["disk.raw"]     # first reuse: full hash
    assert store.lookup("img", "k") is not None and hashed == ["disk.raw"]     # stamps match: no hash
    f = store.dir_for("img", "k") / "disk.raw"
    f.write_bytes(b"B" * 4096)                      # same size, new content: ctime/mtime move
    os.utime(f, ns=(0, 0))
    assert store.lookup("img", "k") is None and hashed == ["disk.raw", "disk.raw"]


def test_apt_answers_are_remembered_until_apt_state_changes(tmp_path, monkeypatch):
    monkeypatch.setenv("XENRIG_CACHE", str(tmp_path / "cache"))
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "Packages").write_text("a")
    monkeypatch.setattr(apt, "LISTS_DIR", lists)
    monkeypatch.setattr(apt, "APT_DIR", tmp_path / "etc-apt")
    calls = []

    class _Out:
        stdout = b"linux-image-x:\n  Candidate: 1.0\n"

    monkeypatch.setattr(apt.proc, "run", lambda cmd, **kw: calls.append(cmd) or _Out())
    assert apt.candidate_versions(["linux-image-x"]) == {"linux-image-x": "1.0"}
    assert apt.candidate_versions(["linux-image-x"]) == {"linux-image-x": "1.0"}
    assert len(calls) == 1
    (lists / "Packages").write_text("after apt-get update")
    apt.candidate_versions(["linux-image-x"])
    assert len(calls) == 2
