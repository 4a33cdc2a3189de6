"""The HVM guest: Debian's kernel and a small busybox initramfs with the
guest agent, packed with the kernel onto a small ext4 disk that dom0 mounts
(so the guest's boot files reach dom0 without a copy over SSH)."""

from __future__ import annotations

import shutil
from pathlib import Path

from harness import proc
from harness.images import apt, initramfs, kmods
from harness.images.cache import Artifact, Store, require
from harness.images.recipes import GuestRecipe, cache_key, images_dir, load_recipe
from harness.paths import repo_root


def ensure(store: Store, log: Path) -> Artifact:
    recipe: GuestRecipe = load_recipe("guest", GuestRecipe)
    kernel_pkg = apt.resolve_kernel(recipe.kernel)
    versions = apt.candidate_versions([kernel_pkg, recipe.busybox])
    tools = repo_root() / "guest-kernel" / "tools"
    key = cache_key("guest", files=[images_dir() / "guest.yaml"], trees=[images_dir() / "guest" / "files", tools],
                    builder=Path(__file__), extra=versions)

    def build(out: Path) -> dict:
        scratch = out / "scratch"
        kdeb, bdeb = apt.download([kernel_pkg, recipe.busybox], scratch / "debs", log=log)
        apt.extract(kdeb, scratch / "kernel", log=log)
        apt.extract(bdeb, scratch / "busybox", log=log)
        kver = kernel_pkg.removeprefix("linux-image-")
        moddir = scratch / "kernel" / "lib" / "modules" / kver
        # The package leaves modules.dep to its postinst; make it here.
        proc.run(["depmod", "-b", scratch / "kernel", kver], timeout_s=300, log=log, what="indexing the guest kernel's modules")

        stage = scratch / "initramfs"
        shutil.copytree(images_dir() / "guest" / "files", stage, symlinks=True)
        (stage / "bin").mkdir(exist_ok=True)
        shutil.copy(require(scratch / "busybox" / "bin" / "busybox", "busybox"), stage / "bin" / "busybox")
        mods = stage / "lib" / "modules"
        mods.mkdir(parents=True, exist_ok=True)
        order = []
        for rel in kmods.resolve(moddir, recipe.modules):
            shutil.copy(moddir / rel, mods / Path(rel).name)
            order.append(Path(rel).name)
        (mods / "load.order").write_text("".join(f"{m}\n" for m in order))
        # Workload tools of ours (guest-kernel/tools/*.c), static: the guest
        # has no C library beyond busybox's.
        (stage / "usr" / "bin").mkdir(parents=True, exist_ok=True)
        for src in sorted(tools.glob("*.c")):
            proc.run(["gcc", "-O2", "-static", "-Wall", "-Wextra", "-Werror", "-o", stage / "usr" / "bin" / src.stem, src],
                     timeout_s=300, log=log, what=f"compiling {src.name} for the guest")

        disk = scratch / "disk"
        disk.mkdir()
        shutil.copy(require(scratch / "kernel" / "boot" / f"vmlinuz-{kver}", "the guest kernel"), disk / "vmlinuz")
        size = initramfs.pack(stage, disk / "initrd.img")
        # The disk also carries the files alone, for reading on the host.
        shutil.copy(disk / "vmlinuz", out / "vmlinuz")
        shutil.copy(disk / "initrd.img", out / "initrd.img")
        mib = (sum(f.stat().st_size for f in disk.iterdir()) >> 20) + 16
        proc.run(["mkfs.ext4", "-q", "-F", "-L", "xenrig-guest", "-d", disk, out / "guest.ext4", f"{mib}M"],
                 timeout_s=300, log=log, what="making the guest image disk")
        return {"kernel_package": kernel_pkg, "kernel_version": kver, "initrd_bytes": size,
                "modules": order, "versions": versions}

    return store.ensure("guest", key, build)
