"""A content-addressed store for built images.

An artifact lives in `<cache>/images/<name>-<key>/` where key is the hash of
everything that went into it (recipe files, builder code, resolved package
versions).  A manifest records the sha256 of every file; reuse re-hashes them
so a corrupted or half-written image is rebuilt rather than booted.  Builds
happen in a temporary folder that is renamed into place only when complete.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from harness.errors import InfraError

MANIFEST = "manifest.json"


def sha256_file(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def key_of(parts: list[tuple[str, bytes]]) -> str:
    """Hash of named inputs; names are part of the hash so moves count too."""
    h = hashlib.sha256()
    for name, data in sorted(parts):
        h.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    return h.hexdigest()[:16]


def builder_parts(builder: Path) -> list[tuple[str, bytes]]:
    """Every module of the builder's package, not only the builder's own
    file: a change in a helper it calls changes what it builds."""
    return [(f"builder/{p.name}", p.read_bytes()) for p in sorted(builder.parent.glob("*.py"))]


@dataclass
class Artifact:
    name: str
    key: str
    path: Path
    files: dict[str, str] = field(default_factory=dict)   # relpath -> sha256
    meta: dict = field(default_factory=dict)
    reused: bool = False

    def file(self, rel: str) -> Path:
        return self.path / rel


class Store:
    """`kind` names the cache's subfolder: images (and built modules), or
    snapshots of a booted stack."""

    def __init__(self, root: Path, kind: str = "images"):
        self.root = root / kind

    def dir_for(self, name: str, key: str) -> Path:
        return self.root / f"{name}-{key}"

    def lookup(self, name: str, key: str) -> Artifact | None:
        """The cached artifact if present and every file matches its hash."""
        path = self.dir_for(name, key)
        manifest = path / MANIFEST
        if not manifest.exists():
            return None
        try:
            data = json.loads(manifest.read_text())
        except (OSError, ValueError):
            return None
        if not _verified(path, data["files"]):
            return None
        return Artifact(name, key, path, data["files"], data.get("meta", {}), reused=True)

    def build(self, name: str, key: str, builder: Callable[[Path], dict]) -> Artifact:
        """Run `builder(tmpdir) -> meta`, hash what it left, publish atomically.
        The temporary folder is unique, so a crashed build never collides
        with the next one; call under the key's lock (ensure does)."""
        final = self.dir_for(name, key)
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}-{key}.", suffix=".building", dir=self.root))
        try:
            meta = builder(tmp) or {}
            files = {}
            for f in sorted(tmp.rglob("*")):
                if f.is_file() and not f.is_symlink() and f.name != MANIFEST and not _in_scratch(f, tmp):
                    files[str(f.relative_to(tmp))] = sha256_file(f)
            shutil.rmtree(tmp / "scratch", ignore_errors=True)
            (tmp / MANIFEST).write_text(json.dumps(
                {"name": name, "key": key, "files": files, "meta": meta, "built_at": time.time()}, indent=1))
            shutil.rmtree(final, ignore_errors=True)
            tmp.rename(final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return Artifact(name, key, final, files, meta)

    def ensure(self, name: str, key: str, builder: Callable[[Path], dict], wait_s: float = 3600) -> Artifact:
        """The artifact, built if needed.  One builder per key at a time, on
        this machine: a second one waits for the first and reuses its work."""
        found = self.lookup(name, key)
        if found:
            return found
        with self.key_lock(name, key, wait_s):
            found = self.lookup(name, key)        # built while we waited?
            if found:
                return found
            if self.dir_for(name, key).exists():
                # Present but failing its hashes: rebuild.
                shutil.rmtree(self.dir_for(name, key), ignore_errors=True)
            return self.build(name, key, builder)

    @contextlib.contextmanager
    def key_lock(self, name: str, key: str, wait_s: float):
        """Held while one process builds name-key; wait_s=0 fails at once."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / f".{name}-{key}.lock", "a+") as fh:
            deadline = time.monotonic() + wait_s
            while True:
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise InfraError(f"another process has been building {name}-{key} for over {wait_s:.0f}s",
                                         hint=f"Is it stuck? Its lock is {fh.name}") from None
                    time.sleep(1)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def prune(self, keep: set[str]) -> list[Path]:
        """Remove artifacts whose directory name is not in `keep`."""
        removed = []
        if not self.root.exists():
            return removed
        for d in self.root.iterdir():
            if d.is_dir() and d.name not in keep and not d.name.startswith("."):
                shutil.rmtree(d, ignore_errors=True)
                removed.append(d)
        return removed


VERIFIED = ".verified.json"


def _stamp(f: Path) -> list[int]:
    st = f.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns]


def _verified(path: Path, files: dict[str, str]) -> bool:
    """Every file matches its sha256.  A full hash costs seconds per run
    for the 1 GiB dom0 disk, so once the files have hashed right their
    stat stamps (size, mtime, inode, ctime) are kept beside the manifest;
    while no stamp changed the hashes are not recomputed.  Anything that
    writes, replaces or truncates a file changes its stamp, and a changed
    stamp means a full hash again."""
    stamps_file = path / VERIFIED
    try:
        stamps = json.loads(stamps_file.read_text())
    except (OSError, ValueError):
        stamps = {}
    fresh = {}
    for rel, digest in files.items():
        f = path / rel
        try:
            stamp = _stamp(f)
        except OSError:
            return False
        if stamps.get(rel) != stamp and sha256_file(f) != digest:
            return False
        fresh[rel] = stamp
    if fresh != stamps:
        with contextlib.suppress(OSError):
            tmp = path / f".verified.{os.getpid()}"
            tmp.write_text(json.dumps(fresh))
            os.replace(tmp, stamps_file)
    return True


def _in_scratch(f: Path, root: Path) -> bool:
    rel = f.relative_to(root).parts
    return bool(rel) and rel[0] == "scratch"


def require(path: Path, what: str) -> Path:
    if not path.exists():
        raise InfraError(f"image build: expected {what} at {path} but it is not there")
    return path
