"""xl configuration of the HVM guest (pure: unit-tested without Xen).

Choices and why (FIELD-NOTES): direct kernel boot keeps the guest image out
of the vbd under test; `tsc_mode = "native"` because an HVM guest that runs
RDTSCP dies under a TCG-nested Xen (no NRIP-save); no VGA/VNC and a quiet
console because every console line costs about 0.1 s; serial port 0 is the
guest console (a file in dom0); the guest agent talks over a virtio-serial
port that qemu-xen exposes as a unix socket in dom0 (fast, and it uses no
grants: see images/guest/files/usr/lib/xenrig/agent).
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.config import DiskConfig, GuestConfig


@dataclass
class GuestPaths:
    """Where a guest's files live in dom0."""

    name: str
    run_dir: str          # /run/xenrig/guests/<name>
    kernel: str
    ramdisk: str

    @property
    def config(self) -> str:
        return f"{self.run_dir}/guest.xl"

    @property
    def console_log(self) -> str:
        return f"{self.run_dir}/console.log"

    @property
    def agent_socket(self) -> str:
        return f"{self.run_dir}/agent.sock"

    def vbd_image(self, disk: DiskConfig) -> str:
        return f"{self.run_dir}/vbd-{disk.vdev}.img"


def _quote(value: str) -> str:
    if '"' in value or "\n" in value:
        raise ValueError(f"xl config values cannot contain quotes or newlines: {value!r}")
    return f'"{value}"'


def disk_spec(disk: DiskConfig, target: str) -> str:
    # backendtype=phy: the kernel's blkback on a loop device the block
    # hotplug script sets up in dom0; qdisk: QEMU's userspace backend.
    return f"format=raw,vdev={disk.vdev},access=rw,backendtype={disk.backend},target={target}"


def render(cfg: GuestConfig, paths: GuestPaths) -> str:
    cmdline = " ".join(["console=ttyS0,115200", "quiet", "loglevel=3", *cfg.cmdline_extra.split()])
    lines = [
        f"name = {_quote(paths.name)}",
        'type = "hvm"',
        f"memory = {cfg.memory_mib}",
        f"vcpus = {cfg.vcpus}",
        f"kernel = {_quote(paths.kernel)}",
        f"ramdisk = {_quote(paths.ramdisk)}",
        f"cmdline = {_quote(cmdline)}",
        "xen_platform_pci = 1",
        'device_model_version = "qemu-xen"',
        'tsc_mode = "native"',
        'vga = "none"',
        "vnc = 0",
        "sdl = 0",
        "vif = []",
        f'serial = {_quote("file:" + paths.console_log)}',
        "device_model_args_hvm = [ " + ", ".join(_quote(a) for a in (
            "-device", "virtio-serial-pci",
            "-chardev", f"socket,id=xragent,path={paths.agent_socket},server=on,wait=off",
            "-device", "virtserialport,chardev=xragent,name=xenrig.agent",
        )) + " ]",
        'on_poweroff = "destroy"',
        'on_reboot = "destroy"',
        'on_crash = "destroy"',
        "disk = [ " + ", ".join(_quote(disk_spec(d, paths.vbd_image(d))) for d in cfg.disks) + " ]",
    ]
    if cfg.max_grant_frames is not None:
        lines.append(f"max_grant_frames = {cfg.max_grant_frames}")
    return "\n".join(lines) + "\n"
