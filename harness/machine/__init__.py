"""The L0 VM: QEMU (TCG, or KVM where it can run Xen) driven through
libvirt, booting Xen with dom0 from the cached images."""

from harness.machine.vm import Machine, boot, destroy_stale

__all__ = ["Machine", "boot", "destroy_stale"]
