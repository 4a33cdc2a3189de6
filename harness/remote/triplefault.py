#!/usr/bin/env python3
"""Make an HVM guest triple-fault where it stands, for the fault campaign.

    triplefault.py DOMID

With the domain paused, its HVM context is read through libxenctrl, every
vCPU's IDT limit is set to 0 and the context written back.  The next
interrupt or exception the guest takes cannot be delivered (#GP, then #DF,
then a triple fault), wherever the vCPU was: in the idle loop or a user
process, that is outside every module, as the nested-TCG triple fault
(harness.checks.guest_death) is.  Prints one line: the vCPUs changed.
python3's standard library only (ctypes).
"""

import ctypes
import struct
import sys

CPU_TYPECODE = 2                    # HVM_SAVE_CODE(CPU), xen/include/public/arch-x86/hvm/save.h
DESCRIPTOR = struct.Struct("<HHI")  # typecode, instance, length
# struct hvm_hw_cpu: fpu_regs[512], 16 GPRs, rip, rflags, 4 CRs, 6 DRs,
# 8 selectors (u32), then the limits (u32): cs ds es fs gs ss tr ldtr idtr.
IDTR_LIMIT = 512 + 16 * 8 + 2 * 8 + 4 * 8 + 6 * 8 + 8 * 4 + 8 * 4


def main(domid: int) -> int:
    xc = ctypes.CDLL("libxenctrl.so.4.17" if _has("libxenctrl.so.4.17") else "libxenctrl.so")
    xc.xc_interface_open.restype = ctypes.c_void_p
    xch = xc.xc_interface_open(None, None, 0)
    if not xch:
        print("error: cannot open libxenctrl", file=sys.stderr)
        return 1
    xch = ctypes.c_void_p(xch)
    if xc.xc_domain_pause(xch, domid) != 0:
        print(f"error: cannot pause domain {domid}", file=sys.stderr)
        return 1
    try:
        size = xc.xc_domain_hvm_getcontext(xch, domid, None, 0)
        if size <= 0:
            print(f"error: no HVM context for domain {domid}", file=sys.stderr)
            return 1
        buf = ctypes.create_string_buffer(size)
        size = xc.xc_domain_hvm_getcontext(xch, domid, buf, size)
        changed, off = [], 0
        while 0 < size - off >= DESCRIPTOR.size:
            code, instance, length = DESCRIPTOR.unpack_from(buf, off)
            off += DESCRIPTOR.size
            if code == CPU_TYPECODE and length > IDTR_LIMIT + 4:
                struct.pack_into("<I", buf, off + IDTR_LIMIT, 0)
                changed.append(instance)
            if code == 0:        # HVM_SAVE_CODE(END)
                break
            off += length
        if not changed or xc.xc_domain_hvm_setcontext(xch, domid, buf, size) != 0:
            print(f"error: could not set the IDT limit of domain {domid}", file=sys.stderr)
            return 1
        print(f"idt limit 0 on vcpus {changed}")
        return 0
    finally:
        xc.xc_domain_unpause(xch, domid)


def _has(name: str) -> bool:
    try:
        ctypes.CDLL(name)
        return True
    except OSError:
        return False


if __name__ == "__main__":
    if len(sys.argv) != 2 or not sys.argv[1].isdigit():
        print("usage: triplefault.py DOMID", file=sys.stderr)
        sys.exit(2)
    sys.exit(main(int(sys.argv[1])))
