"""The L0 VM: QEMU (TCG, or KVM where it can run Xen) driven through
libvirt, booting Xen with dom0 from the cached images.

Modules: accel (choose TCG or KVM), domxml (the domain XML), libvirt_conn
(the embedded connection), serial (console log), vm (boot and teardown),
stackfile (lock and the record of a stack left up).  Importing this package
does not import libvirt, so `xenrig doctor` works before it is installed.
"""
