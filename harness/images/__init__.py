"""Images: Xen, the dom0 disk, the guest kernel + initramfs, built from
Debian packages and cached content-addressed (see cache.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness import paths, sshkeys
from harness.images import dom0, guest, xen
from harness.images.cache import Artifact, Store
from harness.stages import Timeline


@dataclass
class Images:
    xen: Artifact | None      # None for a real (remote) Xen host: it has its own
    dom0: Artifact | None
    guest: Artifact

    def all(self) -> list[Artifact]:
        return [a for a in (self.xen, self.dom0, self.guest) if a is not None]


def ensure(timeline: Timeline, log_dir: Path, guest_only: bool = False) -> Images:
    """All images for a nested host; only the guest's for a real one."""
    store = Store(paths.cache_dir())
    _, client_pub = sshkeys.client_key(paths.state_dir())
    log_dir.mkdir(parents=True, exist_ok=True)
    x = d = None
    with timeline.stage("images"):
        if not guest_only:
            x = xen.ensure(store, log_dir / "image-xen.log")
            timeline.note(f"xen {'cached' if x.reused else 'built'}: {x.path.name}")
            d = dom0.ensure(store, log_dir / "image-dom0.log", client_pub)
            timeline.note(f"dom0 {'cached' if d.reused else 'built'}: {d.path.name}")
        g = guest.ensure(store, log_dir / "image-guest.log")
        timeline.note(f"guest {'cached' if g.reused else 'built'}: {g.path.name}")
    return Images(x, d, g)
