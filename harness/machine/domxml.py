"""libvirt domain XML for the L0 VM that runs Xen.

Pure functions of their inputs so they are unit-tested without a VM.  The
facts behind each element are in FIELD-NOTES: Xen is the multiboot kernel,
dom0's kernel and initramfs are multiboot modules (comma separated in QEMU's
-initrd, passed through by libvirt unchanged), ACPI and APIC must be on or
Xen panics early, and under TCG the CPU model must offer SVM+NPT with SMAP
switched off in Xen (`smap=0`) or dom0 crashes, and must not offer XSAVE
(docs/dom0-corruption.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree as ET

QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"


@dataclass
class L0Spec:
    name: str
    accel: str                 # tcg | kvm
    machine: str               # pc | q35
    memory_mib: int
    vcpus: int
    xen: Path
    xen_cmdline: str
    dom0_kernel: Path
    dom0_cmdline: str
    dom0_initrd: Path
    root_disk: Path            # qcow2 overlay of the dom0 image
    guest_disk: Path           # raw ext4 with the guest's boot files
    serial_log: Path
    ssh_port: int
    cpu_model: str = "auto"
    cpu_features: tuple[str, ...] = ()
    emulator: str = "/usr/bin/qemu-system-x86_64"


def xen_cmdline(accel: str, dom0_mem_mib: int, extra: str = "") -> str:
    args = [
        "console=com1", "com1=115200,8n1", "loglvl=all", "guest_loglvl=all", "noreboot",
        f"dom0_mem={dom0_mem_mib}M,max:{dom0_mem_mib}M",
        # Xen's console ring must hold a whole grant dump ('xl debug-keys g':
        # one line per mapped entry, 266+ with persistent grants).
        "conring_size=4M",
    ]
    if accel == "tcg":
        # QEMU's 'max' CPU offers SMAP, which breaks the PV dom0 under TCG.
        args.append("smap=0")
    return " ".join(args + extra.split())


def dom0_cmdline(extra: str = "") -> str:
    args = ["console=hvc0", "earlyprintk=xen", "loglevel=4"]
    cmdline = " ".join(args + extra.split())
    if "," in cmdline:
        # QEMU splits multiboot modules at commas.
        raise ValueError("dom0 kernel arguments cannot contain ',' (QEMU's multiboot module separator)")
    return cmdline


def render(spec: L0Spec) -> str:
    ET.register_namespace("qemu", QEMU_NS)
    dom = ET.Element("domain", type="kvm" if spec.accel == "kvm" else "qemu")
    ET.SubElement(dom, "name").text = spec.name
    ET.SubElement(dom, "memory", unit="MiB").text = str(spec.memory_mib)
    ET.SubElement(dom, "vcpu").text = str(spec.vcpus)
    os_el = ET.SubElement(dom, "os")
    ET.SubElement(os_el, "type", arch="x86_64", machine=spec.machine).text = "hvm"
    ET.SubElement(os_el, "kernel").text = str(spec.xen)
    ET.SubElement(os_el, "initrd").text = f"{spec.dom0_kernel} {spec.dom0_cmdline},{spec.dom0_initrd}"
    ET.SubElement(os_el, "cmdline").text = spec.xen_cmdline
    feats = ET.SubElement(dom, "features")
    ET.SubElement(feats, "acpi")
    ET.SubElement(feats, "apic")
    if spec.accel == "kvm":
        ET.SubElement(dom, "cpu", mode="host-passthrough", check="none", migratable="off")
    else:
        _tcg_cpu(dom, spec.cpu_model, spec.cpu_features)
    ET.SubElement(dom, "clock", offset="utc")
    for event in ("on_poweroff", "on_reboot", "on_crash"):
        ET.SubElement(dom, event).text = "destroy"
    devs = ET.SubElement(dom, "devices")
    ET.SubElement(devs, "emulator").text = spec.emulator
    _disk(devs, spec.root_disk, "qcow2", "vda", readonly=False)
    _disk(devs, spec.guest_disk, "raw", "vdb", readonly=True)
    serial = ET.SubElement(devs, "serial", type="file")
    ET.SubElement(serial, "source", path=str(spec.serial_log), append="off")
    ET.SubElement(serial, "target", port="0")
    video = ET.SubElement(devs, "video")
    ET.SubElement(video, "model", type="none")
    ET.SubElement(devs, "memballoon", model="none")
    # libvirt's user networking cannot forward ports without passt, so QEMU
    # gets its slirp netdev directly.  restrict=on: dom0 cannot reach the
    # host or any network; only the forwarded SSH port comes in.
    cmd = ET.SubElement(dom, f"{{{QEMU_NS}}}commandline")
    for arg in (
        "-netdev", f"user,id=xrnet,restrict=on,hostfwd=tcp:127.0.0.1:{spec.ssh_port}-:22",
        "-device", "virtio-net-pci,netdev=xrnet,addr=0x1e",  # a slot libvirt never picks
    ):
        ET.SubElement(cmd, f"{{{QEMU_NS}}}arg", value=arg)
    ET.indent(dom)
    return ET.tostring(dom, encoding="unicode")


# What "auto" means under TCG.  With XSAVE offered to Xen under QEMU 7.2's
# TCG, data in flight in dom0 is damaged while an HVM guest runs (SSH
# "Mismatched MAC", damaged guest output): 5-7 transfers in 10 broken on a
# 1-vCPU L0; without XSAVE, 0 in 20 there and 0 in 51 (1.1 GB) on the default
# 2-vCPU host.  Taking away AVX, XSAVEOPT, PKU or MPX alone did not help.
# The measurements and what an upstream report needs: docs/dom0-corruption.md.
TCG_AUTO_MODEL = "maximum"
TCG_AUTO_FEATURES: tuple[str, ...] = ("-xsave",)


def _tcg_cpu(dom: ET.Element, model: str, features: tuple[str, ...]) -> None:
    if model == "auto":
        model, features = TCG_AUTO_MODEL, TCG_AUTO_FEATURES + tuple(features)
    if model == "maximum":
        cpu = ET.SubElement(dom, "cpu", mode="maximum", migratable="off")
    else:
        # check='none': libvirt must not hold a TCG model against the host CPU.
        cpu = ET.SubElement(dom, "cpu", mode="custom", match="exact", check="none")
        ET.SubElement(cpu, "model", fallback="forbid").text = model
    for feat in features:
        ET.SubElement(cpu, "feature", policy="require" if feat[0] == "+" else "disable", name=feat[1:])


def _disk(devs: ET.Element, path: Path, fmt: str, target: str, readonly: bool) -> None:
    disk = ET.SubElement(devs, "disk", type="file", device="disk")
    # The overlay is thrown away after the run: no reason to pay for flushes.
    ET.SubElement(disk, "driver", name="qemu", type=fmt, cache="unsafe")
    ET.SubElement(disk, "source", file=str(path))
    ET.SubElement(disk, "target", dev=target, bus="virtio")
    if readonly:
        ET.SubElement(disk, "readonly")
