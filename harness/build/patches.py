"""Applying a scenario's patches, in order, to a copy of the source tree.

A patch that does not apply is reported with patch(1)'s own words and the
patch's name, and nothing is built.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from harness.errors import ConfigError


class PatchError(ConfigError):
    kind = "patch"


def apply(tree: Path, patches: list[Path]) -> None:
    for p in patches:
        try:
            res = subprocess.run(["patch", "-p1", "--batch", "--forward", "--no-backup-if-mismatch", "-d", str(tree),
                                  "-i", str(p.resolve())], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
        except subprocess.TimeoutExpired:
            raise PatchError(f"patch {p} did not finish applying within 60 s") from None
        if res.returncode != 0:
            words = res.stdout.decode(errors="replace").strip()
            raise PatchError(f"patch {p} does not apply to the driver source; patch said:\n{words}\n",
                             hint="Rebase the patch on the guest kernel's source (paths relative to the kernel tree, -p1)")
