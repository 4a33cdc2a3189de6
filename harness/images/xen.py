"""The Xen hypervisor image: Debian's package, unpacked, gunzipped."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

from harness.images import apt
from harness.images.cache import Artifact, Store, require
from harness.images.recipes import XenRecipe, cache_key, images_dir, load_recipe


def ensure(store: Store, log: Path) -> Artifact:
    recipe: XenRecipe = load_recipe("xen", XenRecipe)
    versions = apt.candidate_versions([recipe.package])
    key = cache_key("xen", files=[images_dir() / "xen.yaml"], trees=[], builder=Path(__file__), extra=versions)

    def build(out: Path) -> dict:
        scratch = out / "scratch"
        (deb,) = apt.download([recipe.package], scratch, log=log)
        apt.extract(deb, scratch / "x", log=log)
        src = require(scratch / "x" / recipe.file, f"{recipe.file} inside {deb.name}")
        with gzip.open(src, "rb") as fin, open(out / "xen.elf", "wb") as fout:
            shutil.copyfileobj(fin, fout)
        return {"package": recipe.package, "version": versions[recipe.package]}

    return store.ensure("xen", key, build)
