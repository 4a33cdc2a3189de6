"""dom0: a Debian root filesystem (mmdebstrap) on an ext4 disk image, its
kernel, and a tiny initramfs that mounts the disk.

The ssh host key is generated here and its public half recorded in the
manifest, so the harness pins it; the harness's client key is authorized.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from harness import proc, sshkeys
from harness.images import apt, initramfs, kmods
from harness.images.cache import Artifact, Store, require
from harness.images.recipes import Dom0Recipe, cache_key, images_dir, load_recipe

# dpkg leaves these out of the rootfs: nobody reads docs in dom0, and every
# megabyte is hashed on reuse.
_EXCLUDES = ["/usr/share/doc/*", "/usr/share/man/*", "/usr/share/locale/*", "/usr/share/info/*"]


def ensure(store: Store, log: Path, client_pubkey: str, busybox_static: str = "busybox-static") -> Artifact:
    recipe: Dom0Recipe = load_recipe("dom0", Dom0Recipe)
    kernel_pkg = apt.resolve_kernel(recipe.kernel)
    packages = recipe.packages + [kernel_pkg]
    versions = apt.candidate_versions(packages + [busybox_static])
    key = cache_key(
        "dom0",
        files=[images_dir() / "dom0.yaml", images_dir() / "initramfs" / "init-dom0"],
        trees=[images_dir() / "dom0" / "files"],
        builder=Path(__file__),
        extra={**versions, "client_pubkey": client_pubkey},
    )

    def build(out: Path) -> dict:
        scratch = out / "scratch"
        root = scratch / "root"
        scratch.mkdir(parents=True, exist_ok=True)  # mmdebstrap wants the parent to exist
        mirrors = apt.debian_source_lines(recipe.suite)
        cmd = ["mmdebstrap", "--variant=minbase", f"--include={','.join(packages)}"]
        cmd += [f"--dpkgopt=path-exclude={p}" for p in _EXCLUDES]
        cmd += [recipe.suite, root, *mirrors]
        proc.run(cmd, timeout_s=1800, log=log, what="building the dom0 root filesystem with mmdebstrap",
                 hint="The log has mmdebstrap's full output; a package download failure means the mirror is unreachable")
        shutil.copytree(images_dir() / "dom0" / "files", root, dirs_exist_ok=True, symlinks=True)
        # Host key made here, pinned by the harness; the package's own keys go.
        for old in (root / "etc" / "ssh").glob("ssh_host_*"):
            old.unlink()
        host_pub = sshkeys.generate_ed25519(root / "etc/ssh/ssh_host_ed25519_key", "xenrig-dom0")
        ssh_dir = root / "root" / ".ssh"
        ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        (ssh_dir / "authorized_keys").write_text(client_pubkey + "\n")
        (ssh_dir / "authorized_keys").chmod(0o600)

        kver = kernel_pkg.removeprefix("linux-image-")
        shutil.copy(require(root / "boot" / f"vmlinuz-{kver}", "the dom0 kernel"), out / "vmlinuz")
        _initramfs(root / "lib" / "modules" / kver, recipe.initramfs_modules, busybox_static, scratch, out, log)

        used_mib = _du_mib(root)
        size_mib = used_mib + used_mib // 5 + recipe.free_space_mib
        proc.run(["mkfs.ext4", "-q", "-F", "-L", "xenrig-dom0", "-d", root, out / "rootfs.ext4", f"{size_mib}M"],
                 timeout_s=600, log=log, what="making the dom0 ext4 image")
        return {"kernel_package": kernel_pkg, "kernel_version": kver, "host_key": host_pub,
                "versions": versions, "rootfs_mib": size_mib}

    return store.ensure("dom0", key, build)


def _initramfs(moddir: Path, modules: list[str], busybox_pkg: str, scratch: Path, out: Path, log: Path) -> None:
    (deb,) = apt.download([busybox_pkg], scratch / "debs", log=log)
    apt.extract(deb, scratch / "busybox", log=log)
    stage = scratch / "initramfs"
    (stage / "bin").mkdir(parents=True)
    (stage / "modules").mkdir()
    shutil.copy(require(scratch / "busybox" / "bin" / "busybox", "busybox in busybox-static"), stage / "bin" / "busybox")
    shutil.copy(images_dir() / "initramfs" / "init-dom0", stage / "init")
    order = []
    for rel in kmods.resolve(moddir, modules):
        shutil.copy(moddir / rel, stage / "modules" / Path(rel).name)
        order.append(Path(rel).name)
    (stage / "modules.order").write_text("\n".join(order) + "\n")
    initramfs.pack(stage, out / "initrd.img")


def _du_mib(root: Path) -> int:
    total = 0
    for p in root.rglob("*"):
        try:
            if p.is_file() and not p.is_symlink():
                total += p.stat().st_blocks * 512
        except OSError:
            pass
    return total // (1 << 20) + 1
