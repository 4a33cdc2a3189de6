#!/usr/bin/env python3
"""xenrig's scripted blkif backend for dom0: one process serves one vbd of
one guest from an image file, through /dev/xen/gntdev (the guest's grants
mapped into this process), /dev/xen/evtchn and xenstored's socket, and does
what its script says instead of the right thing where the script says so.

    xrback.py SPEC.json

SPEC (written by harness/host/scripted_backend.py):
  frontend, backend   the vbd's xenstore directories (checked below)
  domid, devid        the guest and the device number
  image               the image file; sectors = its size / 512
  log                 where JSON lines of what this backend did go
  script              {"features": {node: value|null}, "rules": [...]}:
                      harness/host/scripted_backend.py documents the rules

Without rules it is a correct backend: requests are answered in the order
they were taken, each data grant is mapped only while its request is
served (persistent grants stay mapped until the disconnect when both ends
offer them), every response is pushed with the ring macros' notify test.

The guest is the subject under test: every value read from its ring or its
xenstore nodes is bounds-checked before use; a request that breaks the
protocol is answered BLKIF_RSP_ERROR and logged, never served.  Python 3's
standard library only (dom0 has python3 and nothing else we could rely on).
"""

import ctypes
import fcntl
import json
import mmap
import os
import select
import signal
import socket
import struct
import sys
import time

PAGE = 4096
SECTOR = 512


def _ioc(kind, nr, size):
    return (size << 16) | (ord(kind) << 8) | nr


IOCTL_GNTDEV_MAP_GRANT_REF = _ioc("G", 0, 24)
IOCTL_GNTDEV_UNMAP_GRANT_REF = _ioc("G", 1, 16)
IOCTL_EVTCHN_BIND_INTERDOMAIN = _ioc("E", 1, 8)
IOCTL_EVTCHN_UNBIND = _ioc("E", 3, 4)
IOCTL_EVTCHN_NOTIFY = _ioc("E", 4, 4)

# xen/include/public/io/blkif.h, x86_64 layout
OP_READ, OP_WRITE, OP_BARRIER, OP_FLUSH, OP_DISCARD, OP_INDIRECT = 0, 1, 2, 3, 5, 6
RSP_OKAY, RSP_ERROR, RSP_EOPNOTSUPP = 0, -1, -2
MAX_SEGS = 11
SEG = struct.Struct("<IBB2x")                   # gref first_sect last_sect
RW = struct.Struct("<BBHIQQ")                   # op nr_segments handle pad id sector
INDIRECT = struct.Struct("<BBHIQQH2x8I4x")      # op indirect_op nr_segments pad id sector handle grefs[8]
RSP = struct.Struct("<QBxh4x")                  # id operation status
REQ_SIZE, RSP_OFF = 112, 64                     # sizeof(union blkif_sring_entry); the ring header
SEGS_PER_PAGE = PAGE // SEG.size
ZERO_SECTOR = bytes(SECTOR)
MAX_PERSISTENT = 1056                          # blkback's default max_persistent_grants

XS_READ, XS_TX_START, XS_TX_END, XS_WRITE, XS_RM, XS_SET_PERMS, XS_ERROR = 2, 6, 7, 11, 13, 14, 16
STATES = {"Initialising": 1, "InitWait": 2, "Initialised": 3, "Connected": 4, "Closing": 5, "Closed": 6}

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_spin = ctypes.c_int(0)
_libc.pthread_spin_init(ctypes.byref(_spin), 0)


def fence():
    """A full memory barrier: the lock prefix of pthread_spin_lock orders
    every store before it with every load after it on x86, as mb() does in
    the ring macros (Python has no barrier of its own)."""
    _libc.pthread_spin_lock(ctypes.byref(_spin))
    _libc.pthread_spin_unlock(ctypes.byref(_spin))


class Log:
    def __init__(self, path):
        self.f = open(path, "a", buffering=1)
        self.t0 = time.monotonic()

    def __call__(self, event, **fields):
        fields.update(ev=event, t=round(time.monotonic() - self.t0, 4))
        self.f.write(json.dumps(fields, sort_keys=True) + "\n")


class XenStore:
    """xenstored's wire protocol over its socket: requests one at a time
    (this process never watches, so every reply is the one asked for)."""

    def __init__(self, path="/run/xenstored/socket"):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(30)
        self.sock.connect(path)
        self.req = 0

    def _call(self, kind, payload, tx=0):
        self.req += 1
        self.sock.sendall(struct.pack("<IIII", kind, self.req, tx, len(payload)) + payload)
        head = self._recv(16)
        rkind, _, _, size = struct.unpack("<IIII", head)
        body = self._recv(size)
        if rkind == XS_ERROR:
            raise KeyError(body.rstrip(b"\0").decode())
        return body

    def _recv(self, n):
        out = b""
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            if not chunk:
                raise OSError("xenstored closed the connection")
            out += chunk
        return out

    def read(self, path, default=None):
        try:
            return self._call(XS_READ, path.encode() + b"\0").decode(errors="replace")
        except KeyError:
            return default

    def write(self, path, value, tx=0):
        self._call(XS_WRITE, path.encode() + b"\0" + str(value).encode(), tx)

    def rm(self, path, tx=0):
        try:
            self._call(XS_RM, path.encode() + b"\0", tx)
        except KeyError:
            pass

    def set_perms(self, path, perms, tx=0):
        self._call(XS_SET_PERMS, path.encode() + b"\0" + b"".join(p.encode() + b"\0" for p in perms), tx)

    def transaction(self, body):
        """Run body(tx) in a transaction, again while xenstored says EAGAIN."""
        for _ in range(20):
            tx = int(self._call(XS_TX_START, b"\0").rstrip(b"\0"))
            body(tx)
            try:
                self._call(XS_TX_END, b"T\0", tx)
                return
            except KeyError as exc:
                if str(exc).strip("'") != "EAGAIN":
                    raise
        raise OSError("xenstore transaction kept failing with EAGAIN")


class Mapping:
    """Pages mapped from gntdev, through libc's mmap: Python's mmap module
    keeps a duplicate of the descriptor per mapping, and a backend that
    keeps a thousand persistent grants mapped would run out of them."""

    def __init__(self, fd, index, count, writable):
        prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
        self.size = PAGE * count
        addr = _libc.mmap(None, self.size, prot, mmap.MAP_SHARED, fd, index)
        if addr in (None, ctypes.c_void_p(-1).value):
            raise OSError(ctypes.get_errno(), "mmap of granted pages failed")
        self.addr = addr
        self.view = memoryview((ctypes.c_char * self.size).from_address(addr)).cast("B")

    def __getitem__(self, key):
        return self.view[key]

    def __setitem__(self, key, value):
        self.view[key] = value

    def close(self):
        self.view.release()
        _libc.munmap(ctypes.c_void_p(self.addr), self.size)


class Gntdev:
    def __init__(self):
        self.fd = os.open("/dev/xen/gntdev", os.O_RDWR)

    def map(self, domid, refs, writable):
        """Map the guest's grants `refs` into this process, in one call;
        returns (mapping, index).  A read-only mapping makes gntdev map with
        GNTMAP_readonly, so a write request's pages are never writable."""
        arg = bytearray(struct.pack("<IIQ", len(refs), 0, 0) + b"".join(struct.pack("<II", domid, r) for r in refs))
        fcntl.ioctl(self.fd, IOCTL_GNTDEV_MAP_GRANT_REF, arg, True)
        index = struct.unpack_from("<Q", arg, 8)[0]
        try:
            m = Mapping(self.fd, index, len(refs), writable)
        except OSError:
            # Xen refused a grant: gntdev maps at mmap time.
            self._release(index, len(refs))
            raise
        return m, index

    def unmap(self, m, index, count):
        m.close()
        self._release(index, count)

    def _release(self, index, count):
        fcntl.ioctl(self.fd, IOCTL_GNTDEV_UNMAP_GRANT_REF, bytearray(struct.pack("<QII", index, count, 0)), True)


class Evtchn:
    def __init__(self):
        self.fd = os.open("/dev/xen/evtchn", os.O_RDWR)

    def bind(self, domid, port):
        return fcntl.ioctl(self.fd, IOCTL_EVTCHN_BIND_INTERDOMAIN, bytearray(struct.pack("<II", domid, port)), True)

    def notify(self, port):
        fcntl.ioctl(self.fd, IOCTL_EVTCHN_NOTIFY, bytearray(struct.pack("<I", port)), True)

    def unbind(self, port):
        fcntl.ioctl(self.fd, IOCTL_EVTCHN_UNBIND, bytearray(struct.pack("<I", port)), True)

    def pending(self):
        """Ports that fired; each is unmasked again before returning (the
        driver masks a port when it delivers it)."""
        data = os.read(self.fd, 4 * 64)
        ports = list(struct.unpack(f"<{len(data) // 4}I", data))
        if ports:
            os.write(self.fd, data)
        return ports


class ProtocolError(Exception):
    """The frontend broke the protocol: logged, the request answered ERROR."""


# Lies about the device rather than one request: how it connects, how it
# lets go.  The rest are looked up per request (Script.rule_for).
DEVICE_LIES = ("connect-early", "hold-persistent")
MARKER = b"\xb7" * PAGE            # what hold-persistent writes into a page it keeps


class Script:
    """Which rule applies to the n-th request taken (0-based, per vbd),
    starting at `sector`.  `sector_from` keeps a lie off the reads the
    kernel makes when the disk appears (its partition scan, at sector 0):
    a request stuck there would hold the guest's xenbus thread for ever."""

    def __init__(self, rules):
        self.rules = rules
        self.fired = {}

    def rule_for(self, n, op, sector=0):
        for i, rule in enumerate(self.rules):
            if rule.get("op") not in (None, op):
                continue
            if sector < rule.get("sector_from", 0):
                continue
            if rule.get("nth") not in (None, n):
                continue
            if n < rule.get("after", 0):
                continue
            if rule.get("count") is not None and self.fired.get(i, 0) >= rule["count"]:
                continue
            self.fired[i] = self.fired.get(i, 0) + 1
            return rule
        return None


class Ring:
    def __init__(self, back, name, refs, port):
        self.back, self.name = back, name
        self.npages = len(refs)
        self.mm, self.index = back.gnt.map(back.domid, refs, True)
        self.hdr = self.mm.view.cast("I")[:4]      # req_prod req_event rsp_prod rsp_event
        self.size = 1 << ((PAGE * self.npages - RSP_OFF) // REQ_SIZE).bit_length() - 1
        # Requests the frontend pushed before we mapped the ring (connect-early
        # lets it) are unanswered: start at the responses, not at req_prod.
        self.req_cons = self.hdr[2]
        self.rsp_pvt = self.hdr[2]
        self.port = back.evt.bind(back.domid, port)
        self.delayed = []            # (due, responses, lie) held back by a delay rule
        self.reordered = []          # (due, responses, lie) held until a later one is out
        self.outstanding = set()     # ids taken and not answered yet
        self.late_notify = None      # when a withheld notification is finally sent
        self.seen = None             # the frontend's rsp_event, last logged

    def close(self):
        self.back.evt.unbind(self.port)
        self.hdr.release()
        self.back.gnt.unmap(self.mm, self.index, self.npages)

    def slot(self, idx):
        return RSP_OFF + (idx % self.size) * REQ_SIZE

    def take(self):
        """Every request the frontend has produced, copied out once, with
        its ring index (RING_FINAL_CHECK_FOR_REQUESTS: re-arm req_event,
        then look again)."""
        reqs = []
        while True:
            prod = self.hdr[0]
            if (prod - self.req_cons) & 0xFFFFFFFF > self.size:
                raise ProtocolError(f"req_prod {prod} is more than a ring ahead of {self.req_cons}")
            while self.req_cons != prod:
                off = self.slot(self.req_cons)
                reqs.append((self.req_cons, bytes(self.mm[off:off + REQ_SIZE])))
                self.req_cons = (self.req_cons + 1) & 0xFFFFFFFF
            self.hdr[1] = (self.req_cons + 1) & 0xFFFFFFFF
            fence()
            if self.hdr[0] == self.req_cons:
                return reqs

    def put(self, rid, op, status, lie=None):
        """One response at rsp_pvt, logged with its index: the model
        (harness/model/backend_lies.py) follows every id answered, and which
        response a lie put."""
        off = self.slot(self.rsp_pvt)
        self.mm[off:off + RSP.size] = RSP.pack(rid & 0xFFFFFFFFFFFFFFFF, op & 0xFF, status)
        fields = {"ring": self.name, "at": self.rsp_pvt, "id": rid, "op": op & 0xFF, "st": status}
        if lie is not None:
            fields["lie"] = lie
        self.back.log("rsp", **fields)
        self.rsp_pvt = (self.rsp_pvt + 1) & 0xFFFFFFFF
        return off

    def watch_front(self):
        """Log the frontend's rsp_event when it moves: blkfront sets it to
        rsp_cons + 1 after each batch it handled, so it says how far the
        frontend consumed (and a disabled ring's stays put)."""
        seen = self.hdr[3]
        if seen != self.seen:
            self.seen = seen
            self.back.log("seen", ring=self.name, rsp_event=seen)

    def push(self, prod=None, notify=True):
        """RING_PUSH_RESPONSES_AND_CHECK_NOTIFY (prod: publish this instead
        of what was produced, for a rule that lies about it)."""
        old, new = self.hdr[2], self.rsp_pvt if prod is None else prod
        self.hdr[2] = new
        fence()
        due = ((new - self.hdr[3]) & 0xFFFFFFFF) < ((new - old) & 0xFFFFFFFF)
        if due and notify:
            self.back.evt.notify(self.port)
        return due


class Backend:
    def __init__(self, spec):
        self.spec = spec
        self.domid, self.devid = int(spec["domid"]), int(spec["devid"])
        self.front, self.backp = spec["frontend"], spec["backend"]
        if not (self.front == f"/local/domain/{self.domid}/device/vbd/{self.devid}"
                and self.backp == f"/local/domain/0/backend/xrvbd/{self.domid}/{self.devid}"):
            raise SystemExit("xrback: frontend/backend paths do not belong to this domid/devid")
        self.log = Log(spec["log"])
        self.xs = XenStore()
        self.gnt, self.evt = Gntdev(), Evtchn()
        self.fd = os.open(spec["image"], os.O_RDWR)
        self.sectors = os.fstat(self.fd).st_size // SECTOR
        script = spec.get("script") or {}
        self.features = script.get("features") or {}
        rules = script.get("rules") or []
        self.device_lies = {r["do"]: r for r in rules if r.get("do") in DEVICE_LIES}
        self.script = Script([r for r in rules if r.get("do") not in DEVICE_LIES])
        self.last_grefs = []         # data grants of the request answered last (map-other)
        self.ending = None           # close-with-io / vanish-with-io, once told
        self.rings = {}              # local port -> Ring
        self.persistent = {}         # gref -> (mapping, index)
        self.covered = {}            # persistent gref -> sectors some request covered
        self.checks = {"ring_pages": 0, "sectors_checked": 0, "unzeroed": 0,
                       "other_maps_refused": 0, "other_maps_allowed": 0, "held_pages_reused": 0}
        self.held = []               # (until, mapping, index, count): the keep-mapped lie
        self.use_persistent = False
        self.taken = 0
        self.stop = False
        self.max_indirect = 0

    # -- xenstore and the state machine ---------------------------------------
    def create_nodes(self):
        """Both directories in one transaction, as libxl makes a vbd: the
        backend's owned by dom0 and readable by the guest, the frontend's
        owned by the guest and readable by dom0 (children inherit)."""
        d = self.domid
        back = {"frontend": self.front, "frontend-id": d, "online": 1, "state": 1,
                "params": self.spec["image"], "type": "xrvbd", "dev": self.spec["vdev"]}
        front = {"backend": self.backp, "backend-id": 0, "state": 1, "virtual-device": self.devid,
                 "device-type": "disk", "trusted": 1 if self.spec.get("trusted", True) else 0}

        def body(tx):
            for path, perms, nodes in ((self.backp, ["n0", f"r{d}"], back), (self.front, [f"n{d}", "r0"], front)):
                self.xs.write(path, "", tx)
                self.xs.set_perms(path, perms, tx)
                for key, value in nodes.items():
                    self.xs.write(f"{path}/{key}", value, tx)
        self.xs.transaction(body)
        self.log("nodes", trusted=front["trusted"])

    def remove_nodes(self):
        """The frontend's directory goes first: the guest's xenbus then
        removes the device (blkfront_remove)."""
        self.xs.rm(self.front)
        self.xs.rm(self.backp)
        self.log("nodes-removed")

    def advertise(self):
        nodes = {"sectors": self.sectors, "sector-size": SECTOR, "info": 0, "mode": "w",
                 "feature-flush-cache": 1, "feature-barrier": 0, "feature-discard": 0,
                 "feature-persistent": 1, "feature-max-indirect-segments": 256,
                 "max-ring-page-order": 4, "multi-queue-max-queues": 4}
        nodes.update(self.features)
        for key, value in nodes.items():
            if value is None or value == "":
                # An empty value in the scenario's script removes the node
                # (BackendScript: a node absent is a lie of its own).
                self.xs.rm(f"{self.backp}/{key}")
            else:
                self.xs.write(f"{self.backp}/{key}", value)
        self.max_indirect = _int(nodes.get("feature-max-indirect-segments"), 0, 4096) or 0
        self.set_state("InitWait")

    def set_state(self, name):
        self.xs.write(f"{self.backp}/state", STATES[name])
        self.log("state", state=name)

    def front_state(self):
        return _int(self.xs.read(f"{self.front}/state"), 0, 7)

    def wait_front(self, wanted, timeout_s=120):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not self.stop:
            state = self.front_state()
            if state in wanted:
                return state
            time.sleep(0.1)
        return None

    def connect(self):
        early = "connect-early" in self.device_lies
        if early:
            # Connected straight after InitWait, before the frontend has
            # published its rings: blkfront must talk first, then connect.
            self.set_state("Connected")
            self.log("lie", did="connect-early")
        state = self.wait_front({3, 4, 5, 6})
        if state not in ((3, 4) if early else (3,)):
            self.log("no-connect", frontend_state=state)
            return False
        f = self.front
        queues = _int(self.xs.read(f"{f}/multi-queue-num-queues"), 1, 64)
        order = _int(self.xs.read(f"{f}/ring-page-order"), 0, 4) or 0
        protocol = self.xs.read(f"{f}/protocol", "x86_64-abi")
        if protocol != "x86_64-abi":
            self.log("refused", why=f"protocol {protocol!r}")
            return False
        self.use_persistent = (self.xs.read(f"{f}/feature-persistent") == "1"
                               and str(self.features.get("feature-persistent", 1)) == "1")
        dirs = [f] if queues is None else [f"{f}/queue-{q}" for q in range(queues)]
        for q, d in enumerate(dirs):
            if order == 0 and self.xs.read(f"{d}/ring-ref") is not None:
                refs = [_int(self.xs.read(f"{d}/ring-ref"), 0, 2**32 - 1)]
            else:
                refs = [_int(self.xs.read(f"{d}/ring-ref{i}"), 0, 2**32 - 1) for i in range(1 << order)]
            port = _int(self.xs.read(f"{d}/event-channel"), 1, 2**17)
            if None in refs or port is None:
                self.log("refused", why=f"queue {q}: ring-ref or event-channel missing or malformed")
                return False
            ring = Ring(self, f"q{q}", refs, port)
            self.check_ring_zero(ring)
            ring.watch_front()
            self.rings[ring.port] = ring
        self.log("connected", queues=len(dirs), order=order, persistent=self.use_persistent)
        if not early:
            self.set_state("Connected")
        return True

    def disconnect(self):
        self.release_held(0, everything=True)
        for ring in self.rings.values():
            ring.watch_front()
            ring.close()
        self.rings.clear()
        held = {}
        if "hold-persistent" in self.device_lies:
            held, self.persistent = self.persistent, {}
        for m, index in self.persistent.values():
            self.gnt.unmap(m, index, 1)
        self.log("disconnected", persistent_unmapped=len(self.persistent), persistent_held=len(held), **self.checks)
        self.persistent = held

    # -- requests -------------------------------------------------------------
    def segments(self, raw):
        """(op, id, sector, [(gref, first, last)]) of one request."""
        op = raw[0]
        if op == OP_INDIRECT:
            _, iop, nseg, _, rid, sector, _, *grefs = INDIRECT.unpack_from(raw)
            if iop not in (OP_READ, OP_WRITE) or not 0 < nseg <= self.max_indirect:
                raise ProtocolError(f"indirect request: operation {iop}, {nseg} segments")
            pages = (nseg + SEGS_PER_PAGE - 1) // SEGS_PER_PAGE
            m, index = self.gnt.map(self.domid, grefs[:pages], False)
            try:
                table = bytes(m[:nseg * SEG.size])    # read once
            finally:
                self.gnt.unmap(m, index, pages)
            segs = [SEG.unpack_from(table, i * SEG.size) for i in range(nseg)]
            return iop, rid, sector, segs
        _, nseg, _, _, rid, sector = RW.unpack_from(raw)
        if op in (OP_FLUSH, OP_BARRIER):
            return op, rid, sector, []
        if op not in (OP_READ, OP_WRITE) or not 0 < nseg <= MAX_SEGS:
            raise ProtocolError(f"request: operation {op}, {nseg} segments")
        return op, rid, sector, [SEG.unpack_from(raw, RW.size + i * SEG.size) for i in range(nseg)]

    def serve(self, op, sector, segs, hold_ms=None, scribble=False):
        """Do the I/O; returns a status.  `hold_ms`: the request's data
        grants stay mapped that long after it (the keep-mapped lie).
        `scribble`: a write's pages are mapped writable and, once the data
        is on disk, overwritten with 0x5a (the scribble-write lie): on a
        disk blkfront bounces, only its bounce pages change; on one it does
        not, the guest's own buffer does."""
        if op in (OP_FLUSH, OP_BARRIER):
            os.fsync(self.fd)
            return RSP_OKAY
        for _, first, last in segs:
            if not first <= last < PAGE // SECTOR:
                raise ProtocolError(f"segment sectors {first}..{last}")
        nsect = sum(last - first + 1 for _, first, last in segs)
        if sector + nsect > self.sectors:
            raise ProtocolError(f"sectors {sector}..{sector + nsect - 1} beyond the disk's {self.sectors}")
        pos = sector * SECTOR
        todo = [g for g in dict.fromkeys(g for g, _, _ in segs) if g not in self.persistent]
        if todo and self.use_persistent and len(self.persistent) + len(todo) <= MAX_PERSISTENT:
            # Kept mapped read-write until the disconnect (blkfront grants
            # a persistent page for either direction), one mapping each.
            for gref in todo:
                self.persistent[gref] = self.gnt.map(self.domid, [gref], True)
            todo = []
        for gref in dict.fromkeys(g for g, _, _ in segs):
            if gref in self.persistent:
                self.check_uncovered(gref, [(f, last) for g, f, last in segs if g == gref])
        m = index = None
        writable = op == OP_READ or (scribble and op == OP_WRITE)
        if todo:
            try:
                m, index = self.gnt.map(self.domid, todo, writable)
            except OSError as exc:
                if op == OP_READ or not scribble:
                    raise
                self.log("lie", did="scribble-write", writable_map="refused", why=str(exc))
                scribble, writable = False, False
                m, index = self.gnt.map(self.domid, todo, False)
        try:
            where = {g: i for i, g in enumerate(todo)}
            for gref, first, last in segs:
                start, length = first * SECTOR, (last - first + 1) * SECTOR
                page, base = (self.persistent[gref][0], 0) if gref in self.persistent else (m, where[gref] * PAGE)
                if op == OP_READ:
                    page[base + start:base + start + length] = os.pread(self.fd, length, pos)
                else:
                    os.pwrite(self.fd, page[base + start:base + start + length], pos)
                pos += length
            if scribble and op == OP_WRITE:
                for gref, first, last in segs:
                    start, length = first * SECTOR, (last - first + 1) * SECTOR
                    page, base = (self.persistent[gref][0], 0) if gref in self.persistent else (m, where[gref] * PAGE)
                    page[base + start:base + start + length] = b"\x5a" * length
                self.log("lie", did="scribble-write", writable_map="allowed", sector=sector,
                         pages=len(dict.fromkeys(g for g, _, _ in segs)),
                         persistent=sum(1 for g in dict.fromkeys(g for g, _, _ in segs) if g in self.persistent))
        finally:
            if m is not None and hold_ms is None:
                self.gnt.unmap(m, index, len(todo))
            elif m is not None:
                self.held.append((time.monotonic() + hold_ms / 1000, m, index, len(todo)))
                self.log("lie", did="keep-mapped", grefs=todo, ms=hold_ms)
        return RSP_OKAY

    def check_uncovered(self, gref, spans):
        """XSA-403: a page the frontend shares holds nothing but what
        requests put there.  A persistent grant stays the same page until
        the disconnect, so each of its sectors that no request has covered
        yet must be zero (blkfront allocates its bounce pages zeroed).  A
        grant mapped for one request only is not followed: its ref may name
        another page next time."""
        covered = self.covered.setdefault(gref, set())
        now = {s for first, last in spans for s in range(first, last + 1)}
        page = self.persistent[gref][0]
        for sector in range(PAGE // SECTOR):
            if sector in covered or sector in now:
                continue
            self.checks["sectors_checked"] += 1
            data = bytes(page[sector * SECTOR:(sector + 1) * SECTOR])
            if data != ZERO_SECTOR:
                self.checks["unzeroed"] += 1
                self.log("unzeroed", kind="persistent data page", gref=gref, sector=sector,
                         nonzero_bytes=SECTOR - data.count(0))
        covered |= now

    def check_ring_zero(self, ring):
        """The ring's pages at connect: beyond the four indexes, zero."""
        data = bytes(ring.mm[16:PAGE * ring.npages])
        self.checks["ring_pages"] += ring.npages
        if data.count(0) != len(data):
            self.checks["unzeroed"] += 1
            self.log("unzeroed", kind="ring page", ring=ring.name, nonzero_bytes=len(data) - data.count(0))

    def handle(self, ring, at, raw):
        n = self.taken
        self.taken += 1
        try:
            op, rid, sector, segs = self.segments(raw)
        except ProtocolError as exc:
            # id sits at byte 8 in every request layout; an indirect
            # request's response carries its indirect_op.
            rid, op = struct.unpack_from("<Q", raw, 8)[0], raw[1] if raw[0] == OP_INDIRECT else raw[0]
            self.log("bad-request", ring=ring.name, n=n, at=at, why=str(exc), id=rid)
            return [(rid, op, RSP_ERROR)], None
        rule = self.script.rule_for(n, {OP_READ: "read", OP_WRITE: "write"}.get(op, "other"), sector)
        try:
            hold = rule.get("ms", 2000) if rule and rule.get("do") == "keep-mapped" else None
            status = self.serve(op, sector, segs, hold, scribble=bool(rule) and rule.get("do") == "scribble-write")
        except ProtocolError as exc:
            self.log("bad-request", ring=ring.name, n=n, id=rid, why=exc.args[0])
            status = RSP_ERROR
        except OSError as exc:
            self.log("io-error", ring=ring.name, n=n, id=rid, why=str(exc))
            status = RSP_ERROR
        self.log("request", ring=ring.name, n=n, at=at, id=rid, op=op, sector=sector, segs=len(segs), status=status,
                 rule=rule.get("do") if rule else None)
        # For map-other: the grants this request used that end with it.
        self.last_grefs = [g for g in dict.fromkeys(g for g, _, _ in segs) if g not in self.persistent]
        return [(rid, op, status)], rule

    def process(self, ring):
        try:
            reqs = ring.take()
        except ProtocolError as exc:
            self.log("ring-broken", ring=ring.name, why=str(exc))
            self.stop = True
            return
        for _, raw in reqs:
            ring.outstanding.add(struct.unpack_from("<Q", raw, 8)[0])
        pushed, after = False, []
        for at, raw in reqs:
            responses, rule = self.handle(ring, at, raw)
            lie = rule.get("do") if rule else None
            if lie == "delay":
                ring.delayed.append((time.monotonic() + rule.get("ms", 100) / 1000, responses, "delay"))
                continue
            if lie == "reorder" and ring.reordered:
                lie = None       # one held at a time: this one overtakes it
            if lie == "reorder":
                # Held until a later request's response is out (or `ms`);
                # one at a time, so the next one overtakes it.
                ring.reordered.append((time.monotonic() + rule.get("ms", 2000) / 1000, responses, "reorder"))
                self.log("lie", ring=ring.name, did="reorder", id=responses[0][0])
                continue
            if lie in ("close-with-io", "vanish-with-io"):
                # Never answered: the device goes away under it.
                self.ending = lie
                self.stop = True
                self.log("lie", ring=ring.name, did=lie, unanswered_id=responses[0][0])
                break
            if lie is not None:
                after.append((lie, rule, self.lie(ring, lie, rule, responses)))
            else:
                self.answer(ring, responses)
            pushed = True
        if pushed and ring.reordered:
            # Later responses are on the ring now: the held ones go after.
            held, ring.reordered = ring.reordered, []
            for _, responses, lie in held:
                self.answer(ring, responses, lie)
            self.log("reordered", ring=ring.name, ids=[r[0][0] for _, r, _ in held])
        if not pushed:
            return
        lies = {lie for lie, _, _ in after}
        prod = None
        if "rsp-prod-ahead" in lies:
            rule = next(r for lie, r, _ in after if lie == "rsp-prod-ahead")
            prod = (ring.rsp_pvt + (rule.get("value") or ring.size + 1)) & 0xFFFFFFFF
        if "no-notify" in lies:
            rule = next(r for lie, r, _ in after if lie == "no-notify")
            due = ring.push(prod, notify=False)
            ring.late_notify = time.monotonic() + rule.get("ms", 2000) / 1000
            self.log("lie", ring=ring.name, did="no-notify", notify_was_due=due, late_in_ms=rule.get("ms", 2000),
                     at=(ring.rsp_pvt - 1) & 0xFFFFFFFF)
        else:
            ring.push(prod)
        if prod is not None:
            self.log("lie", ring=ring.name, did="rsp-prod-ahead", published=prod, produced=ring.rsp_pvt)
        for lie, rule, extra in after:
            if lie == "storm":
                count = rule.get("value") or 10000
                for _ in range(count):
                    self.evt.notify(ring.port)
                self.log("lie", ring=ring.name, did="storm", notifications=count, at=(ring.rsp_pvt - 1) & 0xFFFFFFFF)
            elif lie == "rewrite-after-push":
                self.rewrite(ring, *extra)
            elif lie == "map-other":
                self.map_other(ring, *extra)
            elif lie == "state-jump":
                self.state_jump()

    def answer(self, ring, responses, lie=None):
        for rid, op, status in responses:
            ring.outstanding.discard(rid)
            ring.put(rid, op, status, lie)

    def not_pending(self, ring, rid):
        """An id inside the ring's range that no request taken and not yet
        answered carries (so blkfront's shadow slot is not waiting)."""
        return next(i for i in range(ring.size) if i not in ring.outstanding and i != rid)

    def lie(self, ring, lie, rule, responses):
        """Put this request's response(s) as the lie says; returns what a
        lie done after the push needs."""
        (rid, op, status), = responses
        said = {"ring": ring.name, "did": lie, "id": rid}
        extra = None
        if lie == "duplicate":
            self.answer(ring, responses)
            ring.put(rid, op, status, lie)
        elif lie == "unknown-id":
            # The request itself is never answered: blkfront must stop at
            # the lie, not wait for its answer.
            said["answered_id"] = other = self.not_pending(ring, rid)
            ring.put(other, op, status, lie)
        elif lie == "id-out-of-range":
            said["answered_id"] = other = rule.get("value") or (1 << 20) + rid
            ring.put(other, op, status, lie)
        elif lie == "wrong-op":
            said["answered_op"] = wrong = {OP_READ: OP_WRITE, OP_WRITE: OP_READ}.get(op, OP_READ)
            ring.outstanding.discard(rid)
            ring.put(rid, wrong, status, lie)
        elif lie == "bad-status":
            said["status"] = bad = rule.get("value") or 7
            ring.outstanding.discard(rid)
            ring.put(rid, op, bad, lie)
        elif lie == "unsolicited":
            said["unsolicited_id"] = other = self.not_pending(ring, rid)
            ring.put(other, op, RSP_OKAY, lie)
            self.answer(ring, responses)
        elif lie == "rewrite-after-push":
            ring.outstanding.discard(rid)
            extra = (ring.put(rid, op, status, lie), ring.rsp_pvt, rid, op)
        elif lie == "map-other":
            self.answer(ring, responses, lie)
            extra = (ring.rsp_pvt, rid, list(self.last_grefs))
        else:   # the response is right; the ring's handling or the grants lie
            self.answer(ring, responses, lie)
        if lie not in ("rsp-prod-ahead", "storm", "no-notify", "rewrite-after-push", "keep-mapped", "map-other",
                       "state-jump", "scribble-write"):
            self.log("lie", **said)
        return extra

    def consumed(self, ring, index, timeout_s=5):
        """Wait until the frontend has read the responses up to `index`:
        blkfront sets rsp_event to rsp_cons + 1 once it has handled what was
        published, so past `index`."""
        def done():
            return 1 <= ((ring.hdr[3] - index) & 0xFFFFFFFF) <= ring.size
        deadline = time.monotonic() + timeout_s
        while not done() and time.monotonic() < deadline:
            time.sleep(0.001)
        return done()

    def map_other(self, ring, index, rid, grefs):
        """Once blkfront has handled the response (and so ended the
        request's grants), map those grants again, writable: Xen must refuse
        each, since the frontend no longer grants them."""
        if not self.consumed(ring, index):
            self.log("lie-skipped", ring=ring.name, did="map-other", id=rid, why="not consumed within 5 s")
            return
        allowed = []
        for gref in grefs:
            try:
                m, index_ = self.gnt.map(self.domid, [gref], True)
            except OSError:
                self.checks["other_maps_refused"] += 1
                continue
            self.gnt.unmap(m, index_, 1)
            self.checks["other_maps_allowed"] += 1
            allowed.append(gref)
        self.log("lie", ring=ring.name, did="map-other", id=rid, grefs=grefs, allowed=allowed)

    def state_jump(self):
        """States out of order while connected, back to Connected at the
        end (which blkfront reads as a capacity change)."""
        for name in ("Initialising", "InitWait", "Initialised", "Connected"):
            self.set_state(name)
            time.sleep(0.2)
        self.log("lie", did="state-jump")

    def rewrite(self, ring, off, index, rid, op):
        """Once the frontend has consumed the response (its rsp_event moves
        past it), overwrite it with another id and an error: a frontend
        that reads a response twice would see the second one."""
        if not self.consumed(ring, index):
            # Rewriting now would be a different lie (a wrong id it reads
            # first); say so and leave the response as it was.
            self.log("lie-skipped", ring=ring.name, did="rewrite-after-push", id=rid, why="not consumed within 5 s")
            return
        other = self.not_pending(ring, rid)
        ring.mm[off:off + RSP.size] = RSP.pack(other, op & 0xFF, RSP_ERROR)
        # next_at: a frontend that read the rewritten response would stop
        # there; the model wants the responses after it consumed.
        self.log("lie", ring=ring.name, did="rewrite-after-push", id=rid, rewritten_id=other, next_at=ring.rsp_pvt)

    def release_held(self, now, everything=False):
        keep = []
        for item in self.held:
            if everything or item[0] <= now:
                self.gnt.unmap(*item[1:])
                self.log("unmapped-late", index=item[2])
            else:
                keep.append(item)
        self.held = keep

    def release_delayed(self, ring, now):
        if ring.late_notify is not None and now >= ring.late_notify:
            ring.late_notify = None
            self.evt.notify(ring.port)
            self.log("late-notify", ring=ring.name)
        late = [r for r in ring.reordered if r[0] <= now]
        if late:
            ring.reordered = [r for r in ring.reordered if r[0] > now]
            self.log("reorder-timeout", ring=ring.name, ids=[r[0][0] for _, r, _ in late])
            ring.delayed.extend((now, r, lie) for _, r, lie in late)
        due = [r for r in ring.delayed if r[0] <= now]
        if not due:
            return
        ring.delayed = [r for r in ring.delayed if r[0] > now]
        for _, responses, lie in due:
            self.answer(ring, responses, lie)
        ring.push()

    # -- the loop ---------------------------------------------------------------
    def run(self):
        self.create_nodes()
        self.advertise()
        if not self.connect():
            self.remove_nodes()
            return 1
        last_state = 0.0
        while not self.stop:
            delays = [d for r in self.rings.values() for d, _, _ in r.delayed + r.reordered]
            delays += [r.late_notify for r in self.rings.values() if r.late_notify is not None]
            delays += [h[0] for h in self.held]
            wait = 0.05 if not delays else max(0.0, min(min(delays) - time.monotonic(), 0.05))
            ready, _, _ = select.select([self.evt.fd], [], [], wait)
            if ready:
                self.evt.pending()
            # Every ring is looked at even without its event: the timeout
            # bounds what a lost notification can cost.
            now = time.monotonic()
            self.release_held(now)
            for ring in list(self.rings.values()):
                self.release_delayed(ring, now)
                self.process(ring)
                ring.watch_front()
            if now - last_state > 0.5:
                last_state = now
                state = self.front_state()
                if state is None or state >= 5:
                    self.log("frontend-closing", frontend_state=state)
                    break
        if self.ending == "vanish-with-io":
            # Gone without a word, as a driver domain that died: our
            # directory goes, the frontend's stays with a request in flight.
            self.xs.rm(self.backp)
            self.log("backend-vanished")
            self.disconnect()
            return 0
        # As blkback: unmap everything, then Closing; the frontend ends its
        # grants and answers Closed; then the device goes away.
        self.disconnect()
        self.set_state("Closing")
        self.stop = False
        state = self.wait_front({6, None}, timeout_s=30)
        self.set_state("Closed")
        self.log("closed", frontend_state=state)
        self.remove_nodes()
        if self.persistent:
            self.hold_persistent()
        return 0

    def hold_persistent(self):
        """The hold-persistent lie: the frontend has ended its persistent
        grants and freed their pages (blkif_free_ring); we keep them mapped.
        A hardened kernel keeps such a page allocated until the backend lets
        go (gnttab's deferred list holds a reference), so the marker we
        write must stay as written: a page that changes was handed to
        someone else in the guest while we could still read it."""
        rule = self.device_lies["hold-persistent"]
        pages = list(self.persistent.items())
        for _, (m, _) in pages:
            m[0:PAGE] = MARKER
        self.log("lie", did="hold-persistent", pages=len(pages), ms=rule.get("ms", 10000))
        reused = set()
        deadline = time.monotonic() + rule.get("ms", 10000) / 1000
        while time.monotonic() < deadline:
            for gref, (m, _) in pages:
                if gref not in reused and bytes(m[0:PAGE]) != MARKER:
                    reused.add(gref)
                    self.log("held-page-reused", gref=gref, changed_bytes=PAGE - bytes(m[0:PAGE]).count(0xB7))
            time.sleep(0.1)
        self.checks["held_pages_reused"] = len(reused)
        for m, index in self.persistent.values():
            self.gnt.unmap(m, index, 1)
        self.persistent.clear()
        self.log("released", pages=len(pages), **self.checks)


def _int(text, lo, hi):
    text = (text or "").strip() if isinstance(text, str) else text
    if isinstance(text, int):
        return text if lo <= text <= hi else None
    return int(text) if text and text.isdigit() and len(text) <= 10 and lo <= int(text) <= hi else None


def main():
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    back = Backend(spec)

    def stop(*_):
        back.stop = True
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        return back.run()
    except Exception as exc:  # the log is the evidence; the harness reads it
        back.log("crashed", why=f"{type(exc).__name__}: {exc}")
        raise


if __name__ == "__main__":
    sys.exit(main())
