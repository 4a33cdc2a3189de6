"""The smoke checks: is the PV-on-HVM stack really there and working?

Each check is one function returning one CheckResult, reported separately:
a person reading the report sees which layer broke (Xen's HVM support, the
platform device, grant tables, blkfront, data integrity) and why, with the
lines it saw.
"""

from __future__ import annotations

import shlex
import time
from typing import Callable

from harness.checks import parsers
from harness.checks.result import ERROR, FAIL, PASS, CheckResult
from harness.config import DiskConfig, Scenario
from harness.errors import XenrigError
from harness.guest import HvmGuest
from harness.host import XenHost

PLATFORM_PCI = ("5853", "0001")


def xen_hvm(xen: XenHost, guest: HvmGuest, scenario: Scenario) -> CheckResult:
    status = parsers.xen_hvm_status(xen.dmesg())
    if status.technology and status.hap:
        return CheckResult("xen.hvm-enabled", PASS, f"Xen enabled HVM with {status.technology} and HAP", status.line or "")
    return CheckResult("xen.hvm-enabled", FAIL, "xl dmesg has no 'HVM: SVM/VMX enabled' with HAP",
                       status.line or "(no HVM line in xl dmesg)", expected="HVM: SVM|VMX enabled + HAP",
                       actual=f"technology={status.technology} hap={status.hap}")


_PCI_LISTING = "for d in /sys/bus/pci/devices/*; do echo ${d##*/} $(cat $d/vendor) $(cat $d/device); done"


def platform_pci_seen(xen: XenHost, guest: HvmGuest, scenario: Scenario) -> CheckResult:
    res = guest.run(_PCI_LISTING, check=True, timeout_s=60)
    devices = parsers.pci_ids(res.stdout)
    found = [slot for slot, ven, dev in devices if (ven, dev) == PLATFORM_PCI]
    if found:
        return CheckResult("guest.platform-pci", PASS, f"the guest sees the Xen platform device 5853:0001 at {found[0]}", res.stdout.strip())
    return CheckResult("guest.platform-pci", FAIL, "no PCI device 5853:0001 in the guest", res.stdout.strip(),
                       expected="5853:0001", actual=", ".join(f"{v}:{d}" for _, v, d in devices))


def platform_driver(xen: XenHost, guest: HvmGuest, scenario: Scenario) -> CheckResult:
    res = guest.run("ls /sys/bus/pci/drivers/xen-platform-pci/ 2>&1", timeout_s=60)
    bound = [e for e in res.stdout.split() if e.startswith("0000:")]
    if bound:
        return CheckResult("guest.platform-pci-driver", PASS, f"xen-platform-pci is bound to {bound[0]}", res.stdout.strip())
    return CheckResult("guest.platform-pci-driver", FAIL, "the xen-platform-pci driver is bound to no device", res.stdout.strip())


def grant_tables_v1(xen: XenHost, guest: HvmGuest, scenario: Scenario) -> CheckResult:
    res = guest.run("dmesg | grep -i grant", timeout_s=60)
    version = parsers.grant_table_version(res.stdout)
    if version == 1:
        return CheckResult("guest.grant-table-v1", PASS, "the guest kernel uses grant tables, version 1 layout", res.stdout.strip())
    return CheckResult("guest.grant-table-v1", FAIL, f"grant table version in the guest log: {version}", res.stdout.strip(),
                       expected="1", actual=str(version))


def blkfront_bound(disk: DiskConfig) -> Callable:
    def check(xen: XenHost, guest: HvmGuest, scenario: Scenario) -> CheckResult:
        cid = f"guest.blkfront-bound[{disk.vdev}]"
        devid = parsers.vdev_number(disk.vdev)
        res = guest.run(f"readlink /sys/bus/xen/devices/vbd-{devid}/driver; test -b /dev/{disk.vdev} && echo block-device-ok; "
                        f"dmesg | grep 'blkfront: {disk.vdev}:'", timeout_s=60)
        backend = xen.run(f"xenstore-read /local/domain/{guest.domid}/device/vbd/{devid}/backend", timeout_s=30).stdout.strip()
        # /local/domain/<backend domid>/backend/<vbd|qdisk>/<frontend domid>/<devid>
        btype = backend.split("/")[5] if backend.count("/") >= 6 else "?"
        expected_backend = "vbd" if disk.backend == "phy" else "qdisk"
        evidence = f"{res.stdout.strip()}\nbackend: {backend or '(none in xenstore)'}"
        ok = res.stdout.split("\n")[0].endswith("/vbd") and "block-device-ok" in res.stdout
        if not ok:
            return CheckResult(cid, FAIL, f"xen-blkfront did not bind {disk.vdev}", evidence)
        if btype != expected_backend:
            return CheckResult(cid, FAIL, f"{disk.vdev} is served by backend '{btype}', not {disk.backend}", evidence,
                               expected=expected_backend, actual=btype)
        feats = parsers.blkfront_features(res.stdout).get(disk.vdev, {})
        summary = ", ".join(f"{k} {v}" for k, v in feats.items() if k in ("persistent grants", "indirect descriptors"))
        return CheckResult(cid, PASS, f"xen-blkfront bound {disk.vdev} ({disk.backend} backend{': ' + summary if summary else ''})",
                           evidence, extra={"features": feats, "backend_path": backend})
    return check


def io_roundtrip(disk: DiskConfig) -> Callable:
    def check(xen: XenHost, guest: HvmGuest, scenario: Scenario) -> CheckResult:
        cid = f"guest.io-roundtrip[{disk.vdev}]"
        mib = min(scenario.io_mib, disk.size_mib)
        dev = f"/dev/{disk.vdev}"
        # O_DIRECT both ways and dropped caches: the bytes really go through
        # blkfront, the ring and the backend, not the guest's page cache.
        script = " && ".join([
            f"dd if=/dev/urandom of=/tmp/xr-src bs=1M count={mib} 2>/dev/null",
            f"dd if=/tmp/xr-src of={shlex.quote(dev)} bs=1M oflag=direct conv=fsync 2>/dev/null",
            "echo 3 > /proc/sys/vm/drop_caches",
            f"dd if={shlex.quote(dev)} of=/tmp/xr-back bs=1M count={mib} iflag=direct 2>/dev/null",
            "md5sum /tmp/xr-src /tmp/xr-back",
        ]) + "; rc=$?; rm -f /tmp/xr-src /tmp/xr-back; exit $rc"
        res = guest.run(script, timeout_s=max(120, mib * 30))
        sums = [line.split()[0] for line in res.stdout.splitlines() if len(line.split()) == 2]
        if res.exit_status != 0 or len(sums) != 2:
            return CheckResult(cid, FAIL, f"write-then-read of {mib} MiB on {disk.vdev} did not complete (status {res.exit_status})",
                               res.stdout.strip())
        if sums[0] != sums[1]:
            return CheckResult(cid, FAIL, f"{mib} MiB read back from {disk.vdev} differ from what was written",
                               res.stdout.strip(), expected=sums[0], actual=sums[1])
        return CheckResult(cid, PASS, f"{mib} MiB written to and read back from {disk.vdev} ({disk.backend}) with O_DIRECT: identical",
                           res.stdout.strip())
    return check


def all_checks(scenario: Scenario) -> list[tuple[str, Callable]]:
    checks: list[tuple[str, Callable]] = [
        ("xen.hvm-enabled", xen_hvm),
        ("guest.platform-pci", platform_pci_seen),
        ("guest.platform-pci-driver", platform_driver),
        ("guest.grant-table-v1", grant_tables_v1),
    ]
    for disk in scenario.guest.disks:
        checks.append((f"guest.blkfront-bound[{disk.vdev}]", blkfront_bound(disk)))
        checks.append((f"guest.io-roundtrip[{disk.vdev}]", io_roundtrip(disk)))
    return checks


def select(scenario: Scenario) -> list[tuple[str, Callable]]:
    """The checks the scenario asks for (all when it names none); a name
    without [vdev] selects that check for every disk."""
    available = all_checks(scenario)
    if not scenario.checks:
        return available
    wanted = set(scenario.checks)
    return [(cid, fn) for cid, fn in available if cid in wanted or cid.split("[")[0] in wanted]


def run(xen: XenHost, guest: HvmGuest, scenario: Scenario, on_result=None) -> list[CheckResult]:
    results = []
    for cid, fn in select(scenario):
        started = time.monotonic()
        try:
            result = fn(xen, guest, scenario)
        except XenrigError as exc:
            result = CheckResult(cid, ERROR, exc.paragraph())
        result.duration_s = round(time.monotonic() - started, 3)
        results.append(result)
        if on_result:
            on_result(result)
    return results
