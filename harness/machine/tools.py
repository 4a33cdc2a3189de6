"""The host's own virtualization stack, recorded in report.json beside the
image package versions: a nightly that changes behaviour when Debian moves
QEMU or libvirt must be able to say so."""

from __future__ import annotations

import subprocess

PACKAGES = ("qemu-system-x86", "libvirt-daemon-driver-qemu", "libvirt0")


def versions() -> dict[str, str]:
    out: dict[str, str] = {}
    for pkg in PACKAGES:
        out[pkg] = _run(["dpkg-query", "-W", "-f=${Version}", pkg]) or "not installed"
    out["qemu-system-x86_64 --version"] = (_run(["qemu-system-x86_64", "--version"]) or "not found").splitlines()[0]
    return out


def _run(cmd: list[str]) -> str:
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return res.stdout.strip() if res.returncode == 0 else ""
