"""What the host needs, what it lacks, and the command that installs it.

`xenrig doctor` prints every requirement with ok/MISSING; `--fix` installs
the missing Debian packages (apt-get) and creates the libvirt-qemu system
user that libvirt's QEMU driver insists on looking up.
"""

from __future__ import annotations

import importlib
import os
import pwd
import subprocess
from dataclasses import dataclass
from pathlib import Path

from harness import paths
from harness.machine import accel

# Debian package -> a file it provides that we check for (fast, no dpkg query).
PACKAGES = {
    "qemu-system-x86": "/usr/bin/qemu-system-x86_64",
    "qemu-utils": "/usr/bin/qemu-img",
    "libvirt-daemon-driver-qemu": "/usr/lib/x86_64-linux-gnu/libvirt/connection-driver/libvirt_driver_qemu.so",
    "libvirt-dev": "/usr/include/libvirt/libvirt.h",      # libvirt-python builds against it
    "pkg-config": "/usr/bin/pkg-config",
    "mmdebstrap": "/usr/bin/mmdebstrap",
    "e2fsprogs": "/usr/sbin/mkfs.ext4",
    "cpio": "/usr/bin/cpio",
    "kmod": "/usr/sbin/depmod",
    "gcc": "/usr/bin/gcc",
    "libc6-dev": "/usr/lib/x86_64-linux-gnu/libc.a",       # static workload tools for the guest
    "patch": "/usr/bin/patch",
    "binutils": "/usr/bin/objdump",                        # the tracer's push site in blkfront's code
    "chromium": "/usr/bin/chromium",                       # the tests render report.html headless
    "make": "/usr/bin/make",
}
MIN_FREE_GIB = 6
MIN_MEM_GIB = 4


@dataclass
class Finding:
    name: str
    ok: bool
    detail: str
    fix: str = ""          # a shell command that fixes it
    package: str = ""      # the Debian package that fixes it


def _free_gib(path: Path) -> float:
    path.mkdir(parents=True, exist_ok=True)
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize / (1 << 30)


def _mem_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / (1 << 20)
    return 0.0


def examine() -> list[Finding]:
    out: list[Finding] = []
    out.append(Finding("root", os.geteuid() == 0,
                       "running as root" if os.geteuid() == 0 else "xenrig needs root (mmdebstrap's root mode, QEMU as root)",
                       fix="run xenrig as root"))
    for pkg, probe in PACKAGES.items():
        present = Path(probe).exists()
        out.append(Finding(f"package {pkg}", present, probe if present else f"{probe} is missing",
                           fix=f"apt-get install -y --no-install-recommends {pkg}", package=pkg))
    try:
        pwd.getpwnam("libvirt-qemu")
        out.append(Finding("user libvirt-qemu", True, "exists (libvirt's QEMU driver looks it up)"))
    except KeyError:
        out.append(Finding("user libvirt-qemu", False, "missing: libvirt's QEMU driver refuses to start without it",
                           fix="useradd --system --no-create-home --shell /usr/sbin/nologin --user-group libvirt-qemu"))
    for mod in ("libvirt", "paramiko", "yaml"):
        try:
            importlib.import_module(mod)
            out.append(Finding(f"python {mod}", True, "importable"))
        except ImportError:
            out.append(Finding(f"python {mod}", False, "not importable in this Python",
                               fix="pip install -e . (after the Debian packages above)"))
    free = _free_gib(paths.cache_dir())
    out.append(Finding("disk space", free >= MIN_FREE_GIB, f"{free:.1f} GiB free under {paths.cache_dir()} (need {MIN_FREE_GIB})",
                       fix="free space or set XENRIG_CACHE to a bigger disk"))
    mem = _mem_gib()
    out.append(Finding("memory", mem >= MIN_MEM_GIB, f"{mem:.1f} GiB (the L0 VM takes 3 GiB)", fix="use a bigger machine"))
    rep = accel.probe()
    out.append(Finding("accelerator", True, ("KVM can run Xen: " if rep.usable_kvm else "TCG will be used: ") + rep.reason))
    return out


def fix(findings: list[Finding], log=print) -> bool:
    """Install what is missing; True when everything it tried worked."""
    packages = [f.package for f in findings if not f.ok and f.package]
    ok = True
    if packages:
        log(f"installing: {' '.join(packages)}")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        for cmd in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages]):
            try:
                res = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=1800)
            except subprocess.TimeoutExpired:
                log(f"'{' '.join(cmd)}' did not finish within 30 minutes")
                return False
            if res.returncode != 0:
                log(res.stdout.decode(errors="replace")[-2000:])
                log(f"'{' '.join(cmd)}' failed with status {res.returncode}")
                return False
    for f in findings:
        if not f.ok and f.name == "user libvirt-qemu":
            res = subprocess.run(f.fix.split(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
            ok &= res.returncode == 0
            if res.returncode != 0:
                log(res.stdout.decode(errors="replace"))
    return ok
