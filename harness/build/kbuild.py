"""Out-of-tree module builds against the guest kernel's headers."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from harness import proc
from harness.errors import InfraError, XenrigError


class CompileError(XenrigError):
    """The module under test does not compile: deterministic, never retried."""

    exit_code = 4
    kind = "build"


def headers_dir(kernel_version: str, log: Path) -> Path:
    """/usr/src/linux-headers-<kver>, installed from Debian if missing."""
    path = Path(f"/usr/src/linux-headers-{kernel_version}")
    if not (path / "Makefile").exists():
        proc.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", f"linux-headers-{kernel_version}"],
                 timeout_s=1800, log=log, what=f"installing linux-headers-{kernel_version} to build guest modules",
                 env={"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
                 hint="The headers must match the guest kernel exactly")
    if not (path / "Makefile").exists():
        raise InfraError(f"{path} is still missing after installing linux-headers-{kernel_version}")
    return path


def _diagnostics(output: str) -> str:
    """The compiler's own error/warning lines with their context lines."""
    lines = output.splitlines()
    keep = [i for i, line in enumerate(lines) if re.search(r"\b(error|warning|undefined)\b", line, re.I)]
    picked: list[str] = []
    for i in keep[:12]:
        for line in lines[i:i + 3]:
            if line not in picked:
                picked.append(line)
    return "\n".join(picked or lines[-20:])


def make_modules(headers: Path, build_dir: Path, log: Path, label: str) -> str:
    cmd = ["make", "-C", str(headers), f"M={build_dir}", "modules"]
    try:
        res = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=900)
    except subprocess.TimeoutExpired:
        raise CompileError(f"building {label} did not finish within 15 minutes") from None
    out = res.stdout.decode(errors="replace")
    with open(log, "a") as fh:
        fh.write(f"$ {' '.join(cmd)}\n{out}\n")
    if res.returncode != 0:
        raise CompileError(f"building {label} failed; the compiler said:\n{_diagnostics(out)}\n", log=str(log))
    return out
