"""Snapshots of a booted stack: the L0 VM saved at the point every scenario
shares (Xen and dom0 up, the HVM guest booted to its agent, no module
under test loaded, no workload run), restored for each run in seconds.

A snapshot is a cache entry `<cache>/snapshots/stack-<key>/`:

- `state.bin`: QEMU's migration stream of the L0 VM (memory, devices, CPU
  state including TCG's nested SVM state);
- `dom0-disk.qcow2`: dom0's disk at that instant, a qcow2 over the cached
  dom0 image; each run restores into its own overlay on top of it, so runs
  never see each other's writes and several can restore it at once;
- `domain.xml`: libvirt's definition of the VM that was saved (its machine
  type pinned, as a migration stream needs);
- the manifest, with the sha256 of each file, checked on every reuse.

The key covers everything that shapes that point: the images' keys, the
host and guest configs, the accelerator, QEMU's version and the code that
boots the stack.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from harness import paths
from harness.config import GuestConfig, HostConfig
from harness.images import Images
from harness.images.cache import Artifact, Store, key_of
from harness.machine import tools as host_tools

NAME = "stack"
STATE = "state.bin"
DISK = "dom0-disk.qcow2"
DOMAIN_XML = "domain.xml"

# The code that takes the stack to the snapshot point: a change in any of
# these files may change what a restored stack looks like.
_BOOT_CODE = ("machine/*.py", "guest/hvm.py", "guest/xlcfg.py", "stack.py", "booted.py", "snapshot.py")


@dataclass
class Snapshot:
    key: str
    path: Path
    meta: dict

    @property
    def state(self) -> Path:
        return self.path / STATE

    @property
    def disk(self) -> Path:
        return self.path / DISK

    @property
    def domain_xml(self) -> str:
        return (self.path / DOMAIN_XML).read_text()

    def size_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.path.iterdir() if f.is_file())

    def brief(self) -> dict:
        return {"name": self.path.name, "key": self.key, "size_bytes": self.size_bytes(),
                **{k: self.meta[k] for k in ("made_at", "make_s", "accel", "guest") if k in self.meta}}


def store() -> Store:
    return Store(paths.cache_dir(), kind="snapshots")


def _boot_code() -> list[tuple[str, bytes]]:
    root = Path(__file__).resolve().parent
    parts = []
    for pattern in _BOOT_CODE:
        for f in sorted(root.glob(pattern)):
            parts.append((f"code/{f.relative_to(root)}", f.read_bytes()))
    return parts


def key_for(built: Images, host: HostConfig, guest: GuestConfig, accel: str) -> str:
    host_fields = dataclasses.asdict(host)
    # How long the harness waits shapes nothing in the machine.
    host_fields.pop("timeouts", None)
    tools = host_tools.versions()
    parts = [
        # The files' hashes too: a rebuilt image at the same key would change
        # what the snapshot's disk overlay stands on.
        ("images", json.dumps({a.name: [a.key, a.files] for a in built.all()}, sort_keys=True).encode()),
        ("host", json.dumps(host_fields, sort_keys=True, default=str).encode()),
        ("guest", json.dumps(dataclasses.asdict(guest), sort_keys=True, default=str).encode()),
        ("accel", accel.encode()),
        ("qemu", json.dumps(tools, sort_keys=True).encode()),
        *_boot_code(),
    ]
    return key_of(parts)


def lookup(key: str) -> Snapshot | None:
    """The snapshot for `key`, if present, complete and every file matches
    its hash, and the dom0 image its disk stands on is still there."""
    art = store().lookup(NAME, key)
    if art is None:
        return None
    snap = _from(art)
    backing = snap.meta.get("dom0_backing")
    if backing and not Path(backing).exists():
        return None
    return snap


def _from(art: Artifact) -> Snapshot:
    return Snapshot(art.key, art.path, art.meta)


def list_all() -> list[Snapshot]:
    root = store().root
    if not root.exists():
        return []
    found = []
    for d in sorted(root.iterdir()):
        manifest = d / "manifest.json"
        if d.is_dir() and not d.name.startswith(".") and manifest.exists():
            try:
                data = json.loads(manifest.read_text())
            except (OSError, ValueError):
                continue
            found.append(Snapshot(data.get("key", ""), d, data.get("meta", {})))
    return found


def prune(keep_keys: set[str] = frozenset()) -> list[Path]:
    """Remove every snapshot (and unfinished one) whose key is not kept."""
    root = store().root
    removed = []
    if not root.exists():
        return removed
    for d in sorted(root.iterdir()):
        if d.name.endswith(".lock"):
            continue
        key = d.name.split("-", 1)[-1].split(".", 1)[0]
        if key not in keep_keys:
            if d.is_dir():
                shutil.rmtree(d, ignore_errors=True)
            else:
                d.unlink(missing_ok=True)
            removed.append(d)
    return removed


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
