"""Pack a folder as a gzip'd newc cpio archive, the format the kernel unpacks."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

from harness import proc


def pack(root: Path, out: Path) -> int:
    """Archive `root` into `out`; return its size in bytes.

    Entries are sorted and timestamps fixed so the same input gives the same
    archive (and the same cache hash)."""
    names = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    for p in root.rglob("*"):
        os.utime(p, (0, 0), follow_symlinks=False)
    listing = ("\n".join(["."] + names) + "\n").encode()
    raw = proc.run(["cpio", "--quiet", "-o", "-H", "newc", "-R", "0:0", "--reproducible"], cwd=root,
                   input=listing, timeout_s=300, what="packing an initramfs", binary_stdout=True).stdout
    with open(out, "wb") as fh:
        fh.write(gzip.compress(raw, compresslevel=6, mtime=0))
    return out.stat().st_size
