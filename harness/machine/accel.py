"""Choose the L0 accelerator: KVM only where it can really run Xen.

/dev/kvm alone proves nothing: on some clouds it is a paravirtual KVM (e.g.
kvm_pvm) that cannot run a nested hypervisor.  KVM is usable for Xen when a
kvm_intel/kvm_amd module is loaded with nested virtualization on and the CPU
flags show vmx or svm.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass
class AccelReport:
    usable_kvm: bool
    reason: str


def probe(sys_root: Path = Path("/")) -> AccelReport:
    kvm = sys_root / "dev" / "kvm"
    if not kvm.exists():
        return AccelReport(False, "/dev/kvm does not exist")
    if sys_root == Path("/") and not os.access(kvm, os.R_OK | os.W_OK):
        return AccelReport(False, "/dev/kvm is not readable and writable by this user")
    flags = set()
    try:
        for line in (sys_root / "proc" / "cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    for module, flag in (("kvm_intel", "vmx"), ("kvm_amd", "svm")):
        nested = sys_root / "sys" / "module" / module / "parameters" / "nested"
        if nested.exists():
            value = nested.read_text().strip()
            if value in ("1", "Y", "y") and flag in flags:
                return AccelReport(True, f"{module} loaded with nested={value} and the CPU shows {flag}")
            return AccelReport(False, f"{module} is loaded but nested={value} or the CPU lacks {flag}")
    others = sorted(p.name for p in (sys_root / "sys" / "module").glob("kvm*")) if (sys_root / "sys" / "module").exists() else []
    return AccelReport(False, f"no kvm_intel/kvm_amd module with nested virtualization (found: {', '.join(others) or 'none'})")


def choose(setting: str, report: AccelReport | None = None) -> str:
    """'tcg' or 'kvm' from the config's accel setting (auto|tcg|kvm)."""
    if setting in ("tcg", "kvm"):
        return setting
    report = report or probe()
    return "kvm" if report.usable_kvm else "tcg"
