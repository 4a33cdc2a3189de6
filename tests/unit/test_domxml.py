from pathlib import Path
from xml.etree import ElementTree as ET

import pytest

from harness.machine import domxml


def spec(accel="tcg", **kw):
    return domxml.L0Spec(**kw,
        name="xenrig-t", accel=accel, machine="pc", memory_mib=3072, vcpus=2, xen=Path("/c/xen.elf"),
        xen_cmdline=domxml.xen_cmdline(accel, 1024), dom0_kernel=Path("/c/vmlinuz"),
        dom0_cmdline=domxml.dom0_cmdline(), dom0_initrd=Path("/c/initrd.img"), root_disk=Path("/r/o.qcow2"),
        guest_disk=Path("/c/guest.ext4"), serial_log=Path("/r/serial.log"), ssh_port=40022)


def test_tcg_domain():
    root = ET.fromstring(domxml.render(spec("tcg")))
    assert root.get("type") == "qemu"
    assert root.find("cpu").get("mode") == "maximum"
    # docs/dom0-corruption.md: XSAVE under QEMU 7.2's TCG leaks guest state into dom0
    assert {(f.get("name"), f.get("policy")) for f in root.findall("cpu/feature")} == {("xsave", "disable")}
    cmdline = root.find("os/cmdline").text
    assert "smap=0" in cmdline and "dom0_mem=1024M,max:1024M" in cmdline and "console=com1" in cmdline
    # multiboot modules: kernel + args, then the initramfs, comma separated
    assert root.find("os/initrd").text == "/c/vmlinuz console=hvc0 earlyprintk=xen loglevel=4,/c/initrd.img"
    assert root.find("os/kernel").text == "/c/xen.elf"
    # without ACPI and APIC Xen panics early
    assert root.find("features/acpi") is not None and root.find("features/apic") is not None
    disks = root.findall("devices/disk")
    assert [d.find("target").get("dev") for d in disks] == ["vda", "vdb"]
    assert disks[1].find("readonly") is not None
    assert root.find("devices/serial/source").get("path") == "/r/serial.log"


def test_a_named_tcg_model_with_features_added_and_removed():
    root = ET.fromstring(domxml.render(spec(cpu_model="qemu64", cpu_features=("+svm", "+npt", "-pdpe1gb"))))
    cpu = root.find("cpu")
    assert (cpu.get("mode"), cpu.get("check"), cpu.find("model").text) == ("custom", "none", "qemu64")
    assert [(f.get("name"), f.get("policy")) for f in cpu.findall("feature")] == [
        ("svm", "require"), ("npt", "require"), ("pdpe1gb", "disable")]


def test_maximum_means_qemus_max_with_nothing_taken_away():
    cpu = ET.fromstring(domxml.render(spec(cpu_model="maximum"))).find("cpu")
    assert cpu.get("mode") == "maximum" and cpu.findall("feature") == []


def test_kvm_domain_passes_host_cpu_and_keeps_smap():
    root = ET.fromstring(domxml.render(spec("kvm")))
    assert root.get("type") == "kvm"
    assert root.find("cpu").get("mode") == "host-passthrough"
    assert "smap=0" not in root.find("os/cmdline").text


def test_ssh_forward_is_loopback_only_and_restricted():
    xml = domxml.render(spec())
    args = [a.get("value") for a in ET.fromstring(xml).iter(f"{{{domxml.QEMU_NS}}}arg")]
    netdev = args[args.index("-netdev") + 1]
    assert "hostfwd=tcp:127.0.0.1:40022-:22" in netdev
    assert "restrict=on" in netdev


def test_dom0_args_cannot_contain_commas():
    with pytest.raises(ValueError, match="multiboot"):
        domxml.dom0_cmdline("foo=a,b")
