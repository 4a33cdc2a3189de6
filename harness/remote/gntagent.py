#!/usr/bin/env python3
"""xenrig's grant-table agent for dom0: issues GNTTABOP operations against
grants a guest made and records each call's inputs and the status Xen
returned, as JSON lines.

    gntagent.py < ops.jsonl > results.jsonl

Each input line is one operation, e.g. {"op": "map", "rdom": 1, "ref": 9,
"flags": 1}.  Raw GNTTABOPs go through /dev/xen/privcmd (the hypercall and
its status exactly as Xen answers, error paths included), with argument
structures in /dev/xen/hypercall memory; /dev/xen/gntalloc gives dom0 grants
of its own (copy destinations); /dev/xen/gntdev maps a guest grant into this
process to read it; libxenforeignmemory (through ctypes) maps a guest's
whole grant table from Xen to read every entry.  Uploaded by the harness;
python3's standard library only.
"""

import ctypes
import fcntl
import json
import mmap
import os
import struct
import sys
import time

HYPERVISOR_grant_table_op = 20
GNTTABOP = {"map": 0, "unmap": 1, "setup_table": 2, "transfer": 4, "copy": 5, "query_size": 6,
            "set_version": 8, "get_version": 10}


def _ioc(nr_type, nr, size, direction=0):
    return (direction << 30) | (size << 16) | (ord(nr_type) << 8) | nr


IOCTL_PRIVCMD_HYPERCALL = _ioc("P", 0, 48)
IOCTL_GNTDEV_MAP_GRANT_REF = _ioc("G", 0, 24)
IOCTL_GNTDEV_UNMAP_GRANT_REF = _ioc("G", 1, 16)
IOCTL_GNTALLOC_ALLOC_GREF = _ioc("G", 5, 24)
IOCTL_GNTALLOC_DEALLOC_GREF = _ioc("G", 6, 16)
PAGE = 4096

# struct layouts of xen/include/public/grant_table.h on x86_64
MAP = struct.Struct("<QIIHhIQ")            # host_addr flags ref dom status handle dev_bus_addr
UNMAP = struct.Struct("<QQIh2x")           # host_addr dev_bus_addr handle status
SETUP = struct.Struct("<H2xIh6xQ")         # dom nr_frames status frame_list
QUERY = struct.Struct("<H2xIIh2x")         # dom nr_frames max_nr_frames status
COPY = struct.Struct("<QHH4xQHH4xHHh2x")   # src{u dom off} dst{u dom off} len flags status
TRANSFER = struct.Struct("<QH2xIh6x")      # mfn domid ref status
SET_VERSION = struct.Struct("<I")
GET_VERSION = struct.Struct("<HHI")        # dom pad version


class Xen:
    def __init__(self):
        self.privcmd = os.open("/dev/xen/privcmd", os.O_RDWR)
        hfd = os.open("/dev/xen/hypercall", os.O_RDWR)
        # Hypercall-safe memory: locked, never swapped or moved.
        self.buf = mmap.mmap(hfd, 2 * PAGE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        os.close(hfd)
        self.addr = ctypes.addressof(ctypes.c_char.from_buffer(self.buf))
        self.gntdev = None
        self.gntalloc = None
        self.alloc_maps = {}   # gref -> (index, mmap)
        self.held = {}         # handle -> the map request, until unmapped

    def op(self, name, payload: bytes, count=1, extra: bytes = b""):
        """Run GNTTABOP `name` on `payload` (placed at the start of the
        buffer, `extra` after it at offset 2048); return (rc, bytes back)."""
        self.buf[0:len(payload)] = payload
        if extra:
            self.buf[2048:2048 + len(extra)] = extra
        args = struct.pack("<6Q", HYPERVISOR_grant_table_op, GNTTABOP[name], self.addr, count, 0, 0)
        try:
            rc = fcntl.ioctl(self.privcmd, IOCTL_PRIVCMD_HYPERCALL, bytearray(args), True)
        except OSError as exc:
            rc = -exc.errno
        return rc, bytes(self.buf[0:len(payload)])

    # -- gntalloc / gntdev ----------------------------------------------------
    def alloc_gref(self, domid, writable=True):
        if self.gntalloc is None:
            self.gntalloc = os.open("/dev/xen/gntalloc", os.O_RDWR)
        arg = bytearray(struct.pack("<HHIQI4x", domid, 1 if writable else 0, 1, 0, 0))
        fcntl.ioctl(self.gntalloc, IOCTL_GNTALLOC_ALLOC_GREF, arg, True)
        _, _, _, index, gref = struct.unpack("<HHIQI4x", arg)
        m = mmap.mmap(self.gntalloc, PAGE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=index)
        self.alloc_maps[gref] = (index, m)
        return gref, index

    def gntalloc_bytes(self, gref, n=16):
        return bytes(self.alloc_maps[gref][1][0:n])

    def read_grant(self, rdom, ref, n=16):
        """Map a guest's grant with gntdev (read-only) and read its first bytes."""
        if self.gntdev is None:
            self.gntdev = os.open("/dev/xen/gntdev", os.O_RDWR)
        arg = bytearray(struct.pack("<IIQII", 1, 0, 0, rdom, ref))
        fcntl.ioctl(self.gntdev, IOCTL_GNTDEV_MAP_GRANT_REF, arg, True)
        index = struct.unpack("<IIQII", arg)[2]
        try:
            m = mmap.mmap(self.gntdev, PAGE, mmap.MAP_SHARED, mmap.PROT_READ, offset=index)
            data = bytes(m[0:n])
            m.close()
        finally:
            fcntl.ioctl(self.gntdev, IOCTL_GNTDEV_UNMAP_GRANT_REF, bytearray(struct.pack("<QII", index, 1, 0)), True)
        return data


XENMEM_resource_grant_table = 1            # xen/include/public/memory.h
XENMEM_resource_grant_table_id_shared = 0
GRANT_ENTRY_V1 = struct.Struct("<HHI")       # flags domid frame


def read_table(rdom, nr_frames):
    """Every entry of domain `rdom`'s first `nr_frames` shared grant frames
    whose flags are not 0, as [ref, flags, domid, frame].  The caller passes
    the size Xen's dump gave: mapping a frame past the table's current size
    makes Xen grow the table (gnttab_get_shared_frame_mfn)."""
    lib = ctypes.CDLL("libxenforeignmemory.so.1", use_errno=True)
    lib.xenforeignmemory_open.restype = ctypes.c_void_p
    lib.xenforeignmemory_open.argtypes = [ctypes.c_void_p, ctypes.c_uint]
    lib.xenforeignmemory_map_resource.restype = ctypes.c_void_p
    lib.xenforeignmemory_map_resource.argtypes = [
        ctypes.c_void_p, ctypes.c_uint16, ctypes.c_uint, ctypes.c_uint, ctypes.c_ulong, ctypes.c_ulong,
        ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_int]
    lib.xenforeignmemory_unmap_resource.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    lib.xenforeignmemory_close.argtypes = [ctypes.c_void_p]
    fmem = lib.xenforeignmemory_open(None, 0)
    if not fmem:
        raise OSError(ctypes.get_errno(), "xenforeignmemory_open failed")
    try:
        addr = ctypes.c_void_p(None)
        res = lib.xenforeignmemory_map_resource(fmem, rdom, XENMEM_resource_grant_table,
                                                XENMEM_resource_grant_table_id_shared, 0, nr_frames,
                                                ctypes.byref(addr), mmap.PROT_READ, 0)
        if not res:
            err = ctypes.get_errno()
            raise OSError(err, f"mapping d{rdom}'s grant table: {os.strerror(err)}")
        try:
            data = ctypes.string_at(addr.value, nr_frames * PAGE)
        finally:
            lib.xenforeignmemory_unmap_resource(fmem, res)
    finally:
        lib.xenforeignmemory_close(fmem)
    out = []
    for ref in range(nr_frames * PAGE // GRANT_ENTRY_V1.size):
        flags, domid, frame = GRANT_ENTRY_V1.unpack_from(data, ref * GRANT_ENTRY_V1.size)
        if flags:
            out.append([ref, flags, domid, frame])
    return out


def run_op(xen, req):
    op = req["op"]
    out = dict(req)
    if op == "query_size":
        rc, back = xen.op(op, QUERY.pack(req["rdom"], 0, 0, 0))
        _, nr, mx, st = QUERY.unpack(back)
        out.update(rc=rc, status=st)
        if rc == 0 and st == 0:
            out.update(nr_frames=nr, max_nr_frames=mx)
    elif op == "setup_table":
        rc, back = xen.op(op, SETUP.pack(req["rdom"], req["nr_frames"], 0, xen.addr + 2048))
        out.update(rc=rc, status=SETUP.unpack(back)[2])
    elif op == "map":
        rc, back = xen.op(op, MAP.pack(req.get("host_addr", 0), req["flags"], req["ref"], req["rdom"], 0, 0, 0))
        _, _, _, _, st, handle, bus = MAP.unpack(back)
        out.update(rc=rc, status=st)
        if rc == 0 and st == 0:
            out.update(handle=handle, dev_bus_addr=bus)
            xen.held[handle] = dict(out)
    elif op == "unmap":
        held = xen.held.get(req["handle"], {})
        # Unless told otherwise, unmap what the map with this handle mapped.
        bus = req.get("dev_bus_addr", held.get("dev_bus_addr", 0))
        rc, back = xen.op(op, UNMAP.pack(req.get("host_addr", 0), bus, req["handle"], 0))
        st = UNMAP.unpack(back)[3]
        out.update(rc=rc, status=st, dev_bus_addr=bus)
        if rc == 0 and st == 0:
            xen.held.pop(req["handle"], None)
    elif op == "copy":
        rc, back = xen.op(op, COPY.pack(req["src"], req["src_dom"], req["src_off"], req["dst"], req["dst_dom"],
                                        req["dst_off"], req["len"], req["flags"], 0))
        out.update(rc=rc, status=COPY.unpack(back)[8])
    elif op == "transfer":
        rc, back = xen.op(op, TRANSFER.pack(req["gfn"], req["rdom"], req["ref"], 0))
        out.update(rc=rc, status=TRANSFER.unpack(back)[3])
    elif op == "set_version":
        rc, back = xen.op(op, SET_VERSION.pack(req["version"]))
        out.update(rc=rc)
        if rc == 0:
            out.update(out_version=SET_VERSION.unpack(back)[0])
    elif op == "get_version":
        rc, back = xen.op(op, GET_VERSION.pack(req["rdom"], 0, 0))
        out.update(rc=rc)
        if rc == 0:
            out.update(version=GET_VERSION.unpack(back)[2])
    elif op == "gntalloc":
        gref, index = xen.alloc_gref(req.get("to", 0), req.get("writable", True))
        out.update(gref=gref, index=index)
    elif op == "gntalloc_read":
        out.update(hex=xen.gntalloc_bytes(req["gref"], req.get("n", 16)).hex())
    elif op == "read_grant":
        try:
            out.update(hex=xen.read_grant(req["rdom"], req["ref"], req.get("n", 16)).hex(), ok=True)
        except OSError as exc:
            out.update(ok=False, errno=exc.errno)
    elif op == "read_table":
        out.update(entries=read_table(req["rdom"], req["nr_frames"]))
    elif op == "sleep":
        time.sleep(req.get("s", 0.1))
    else:
        out.update(error=f"unknown op {op}")
    out["t_ns"] = time.monotonic_ns()
    return out


def main():
    try:
        xen = Xen()
    except OSError as exc:
        print(json.dumps({"op": "open", "error": f"{exc.filename}: {exc.strerror}"}))
        return 2
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            req = json.loads(line)
            print(json.dumps(run_op(xen, req)), flush=True)
        except (ValueError, KeyError, OSError, struct.error) as exc:
            print(json.dumps({"op": "error", "input": line, "error": f"{type(exc).__name__}: {exc}"}), flush=True)
    # Never leave a mapping of a guest's page behind: Xen would keep the
    # guest a zombie after destroy.  These unmaps are part of the record.
    for handle in sorted(xen.held):
        print(json.dumps(run_op(xen, {"op": "unmap", "handle": handle, "cleanup": True})), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
