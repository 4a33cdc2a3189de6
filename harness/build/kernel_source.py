"""Driver sources from the guest kernel's own Debian source package.

The default blkfront is drivers/block/xen-blkfront.c exactly as Debian
ships it for the guest kernel's version (linux-source-<major.minor> of the
same package version), extracted once and cached.
"""

from __future__ import annotations

from pathlib import Path

from harness import proc
from harness.errors import InfraError
from harness.images.cache import Artifact, Store, builder_parts, key_of


def source_package(kernel_version: str) -> str:
    """'6.1.0-56-amd64' -> 'linux-source-6.1'."""
    major_minor = ".".join(kernel_version.split(".")[:2])
    return f"linux-source-{major_minor}"


def ensure(store: Store, kernel_version: str, package_version: str, files: list[str], log: Path) -> Artifact:
    pkg = source_package(kernel_version)
    key = key_of([("pkg", pkg.encode()), ("version", package_version.encode()),
                  ("files", "\n".join(sorted(files)).encode()), *builder_parts(Path(__file__))])

    def build(out: Path) -> dict:
        scratch = out / "scratch"
        scratch.mkdir(parents=True)
        proc.run(["apt-get", "download", f"{pkg}={package_version}"], cwd=scratch, timeout_s=1800, log=log,
                 what=f"downloading {pkg} {package_version}",
                 hint="The guest kernel's source package must be available from the apt mirror")
        debs = sorted(scratch.glob(f"{pkg}_*.deb"))
        if not debs:
            raise InfraError(f"apt-get download left no {pkg} package in {scratch}")
        inner = f"./usr/src/{pkg}.tar.xz"
        members = [f"{pkg}/{f}" for f in files]
        # The package holds one big tarball; stream it and take only what we need.
        script = 'set -o pipefail; dpkg-deb --fsys-tarfile "$1" | tar -xO "$2" | tar -xJ -C "$3" "${@:4}"'
        proc.run(["bash", "-c", script, "extract", debs[0], inner, out, *members], timeout_s=900, log=log,
                 what=f"extracting {', '.join(files)} from {debs[0].name}")
        # Keep the tree layout (drivers/block/...) so kernel-style patches apply.
        (out / pkg).rename(out / "tree")
        return {"package": pkg, "version": package_version, "files": files}

    return store.ensure(f"source-{pkg}", key, build)
