import pytest

from harness.config import DiskConfig, GuestConfig
from harness.guest import xlcfg
from harness.guest.hvm import guest_paths


def render(**kw):
    return xlcfg.render(GuestConfig(**kw), guest_paths("g1"))


def settings(text):
    out = {}
    for line in text.splitlines():
        k, _, v = line.partition(" = ")
        out[k] = v
    return out


def test_hvm_with_platform_pci():
    s = settings(render())
    assert s["type"] == '"hvm"'
    assert s["xen_platform_pci"] == "1"
    assert s["device_model_version"] == '"qemu-xen"'
    assert s["tsc_mode"] == '"native"'   # RDTSCP kills HVM guests under TCG-nested Xen
    assert s["on_crash"] == '"destroy"'
    assert "max_grant_frames" not in s
    assert "quiet" in s["cmdline"] and "console=ttyS0" in s["cmdline"]


def test_disks_pick_their_backend():
    s = settings(render(disks=[DiskConfig("xvda", "phy", 8), DiskConfig("xvdb", "qdisk", 8)]))
    assert s["disk"] == ('[ "format=raw,vdev=xvda,access=rw,backendtype=phy,target=/run/xenrig/guests/g1/vbd-xvda.img", '
                         '"format=raw,vdev=xvdb,access=rw,backendtype=qdisk,target=/run/xenrig/guests/g1/vbd-xvdb.img" ]')


def test_agent_channel_is_a_virtio_serial_socket():
    s = settings(render())
    assert "virtserialport,chardev=xragent,name=xenrig.agent" in s["device_model_args_hvm"]
    assert "path=/run/xenrig/guests/g1/agent.sock,server=on,wait=off" in s["device_model_args_hvm"]


def test_grant_frames_and_memory():
    s = settings(render(max_grant_frames=4, memory_mib=300, vcpus=2))
    assert s["max_grant_frames"] == "4" and s["memory"] == "300" and s["vcpus"] == "2"


def test_quotes_rejected():
    with pytest.raises(ValueError):
        render(cmdline_extra='a"b')
