"""A Xen host reached over SSH (dom0): nested in our L0 VM, or a real one."""

from harness.host.xen_host import Endpoint, XenHost, connect

__all__ = ["Endpoint", "XenHost", "connect"]
