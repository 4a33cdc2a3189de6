"""Files the harness adds to the guest at boot, without rebuilding its image.

The kernel unpacks concatenated initramfs archives in order, so the built
modules travel as a second small archive appended to the guest's cached
initramfs in dom0.  No bulk copy through the guest agent is needed.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from harness.build import BuiltModule
from harness.images import initramfs

GUEST_MODULE_DIR = "/lib/modules/xenrig"


def pack_modules(modules: list[BuiltModule], out: Path) -> Path:
    with tempfile.TemporaryDirectory(prefix="xenrig-payload-") as tmp:
        stage = Path(tmp) / "root"
        dest = stage / GUEST_MODULE_DIR.lstrip("/")
        dest.mkdir(parents=True)
        for m in modules:
            shutil.copy(m.ko, dest / m.ko.name)
        initramfs.pack(stage, out)
    return out
