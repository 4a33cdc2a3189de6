"""xenrig_trace's binary records, decoded into the guest's raw events.

The tracer (guest-kernel/xenrig_trace) writes each call it saw as one
fixed-layout record of little-endian 64-bit words, with no formatting
under a probe; this module is the other half of that layout, and the
only place that knows it.  It gives the dicts guest_trace.py post-
processes: the schema's fields plus the private ones (`_c`, `_s`, ...)
described in docs/capture.md.

A record is a 56-byte header (struct xr_head) and the words of its kind;
`_missed`, `_unsupported` and `_config` end in a NUL-padded name.  The
layout is checked as it is read: a record too short for its kind, a
length that is not a multiple of 8, or an unknown kind is a ValueError
naming the record, never a guess.
"""

from __future__ import annotations

import struct

HEAD = struct.Struct("<HBBIiIQQQQQ")     # len kind flags cpu task sub t c t_end c_end batch
assert HEAD.size == 56

# enum xr_kind and XRF_* in xenrig_trace.c
GRANT, END, DEFERRED_END, ALLOC, CLAIM, RELEASE, FREE, FREE_CHAIN, EXPAND, \
    CB_REQUEST, CB_FIRE, CB_CANCEL, REQ, PUSH, RSP, RING_FREE, LOCK, RESUME = range(1, 19)
DROPPED, MISSED, UNSUPPORTED, CONFIG = range(64, 68)
F_NESTED, F_SEGS_UNREAD, F_REQ_EVENT = 0x01, 0x02, 0x04

END_MODES = ("ref", "try", "end")
DOMID_SELF = 0x7FF0

# blkif operations (xen/interface/io/blkif.h)
OP_READ, OP_WRITE, OP_WRITE_BARRIER, OP_FLUSH_DISKCACHE, OP_DISCARD, OP_INDIRECT = 0, 1, 2, 3, 5, 6
RW_OPS = (OP_READ, OP_WRITE, OP_WRITE_BARRIER, OP_FLUSH_DISKCACHE)

# Kinds whose words are plain fields: (kind name, field names, signed fields).
_PLAIN: dict[int, tuple[str, tuple[str, ...], frozenset[str]]] = {
    DEFERRED_END: ("gnt.deferred_end", ("ref", "ok"), frozenset()),
    ALLOC: ("gnt.alloc", ("count", "head"), frozenset({"head"})),
    CLAIM: ("gnt.claim", ("head", "ref"), frozenset({"ref"})),
    RELEASE: ("gnt.release", ("head", "ref"), frozenset()),
    FREE: ("gnt.free", ("ref",), frozenset()),
    FREE_CHAIN: ("gnt.free_chain", ("head",), frozenset()),
    EXPAND: ("gnt.expand", ("old", "new"), frozenset()),
    CB_REQUEST: ("gnt.cb_request", ("cb", "count"), frozenset()),
    CB_FIRE: ("gnt.cb_fire", ("cb",), frozenset()),
    CB_CANCEL: ("gnt.cb_cancel", ("cb",), frozenset()),
    RSP: ("blkif.rsp", ("ring", "idx", "id", "op", "status"), frozenset({"status"})),
    RING_FREE: ("ring.free", ("ring", "req_prod", "rsp_cons"), frozenset()),
    RESUME: ("guest.resume", ("cancelled",), frozenset()),
}
_BOOLS = frozenset({"ok", "cancelled"})
_RINGS = frozenset({"ring"})

# blkif.req's fixed words (RQ_* in xenrig_trace.c)
_RQ_WORDS = 9


def _signed(word: int) -> int:
    return word - (1 << 64) if word >= 1 << 63 else word


def _name(words: tuple[int, ...]) -> str:
    """A NUL-padded name; the guest wrote it, so only printable ASCII is kept
    as it is (it goes into messages a person reads)."""
    raw = struct.pack(f"<{len(words)}Q", *words).split(b"\0", 1)[0]
    return "".join(chr(b) if 0x20 <= b < 0x7F else "?" for b in raw)


def _segs(words: tuple[int, ...]) -> list[list[int]]:
    return [[w & 0xFFFFFFFF, (w >> 32) & 0xFF, (w >> 40) & 0xFF] for w in words]


class RecordError(ValueError):
    pass


def _need(number: int, kind: int, words: tuple[int, ...], n: int) -> None:
    if len(words) < n:
        raise RecordError(f"guest trace record {number}: kind {kind} has {len(words)} words, needs {n}")


def _request(number: int, flags: int, words: tuple[int, ...]) -> dict:
    _need(number, REQ, words, _RQ_WORDS)
    ring, idx, op, rid, sector, aux, nr_segments, n_igrefs, n_segs = words[:_RQ_WORDS]
    _need(number, REQ, words, _RQ_WORDS + n_igrefs + n_segs)
    rest = words[_RQ_WORDS:]
    ev: dict = {"ring": f"gref:{ring}", "idx": idx, "op": op}
    if op == OP_INDIRECT:
        ev.update(id=rid, sector=sector, indirect_op=aux, nr_segments=nr_segments,
                  indirect_grefs=list(rest[:n_igrefs]), segs=_segs(rest[n_igrefs:n_igrefs + n_segs]))
        if flags & F_SEGS_UNREAD:
            ev["_segs_unread"] = 1
    elif op == OP_DISCARD:
        ev.update(id=rid, sector=sector, segs=[], _nr_sectors=aux)
    elif op in RW_OPS:
        ev.update(id=rid, sector=sector, segs=_segs(rest[:n_segs]))
        if nr_segments != n_segs:   # more than a request can hold
            ev["_nr_segments"] = nr_segments
    else:
        ev.update(id=rid, segs=[])
    return ev


def _body(number: int, kind: int, flags: int, words: tuple[int, ...]) -> tuple[str, dict]:
    """The kind's name and its fields."""
    if kind in _PLAIN:
        name, fields, signed = _PLAIN[kind]
        _need(number, kind, words, len(fields))
        ev = {}
        for field, word in zip(fields, words):
            if field in signed:
                word = _signed(word)
            ev[field] = bool(word) if field in _BOOLS else f"gref:{word}" if field in _RINGS else word
        return name, ev
    if kind == GRANT:
        _need(number, kind, words, 5)
        ref, to, frame, ro, alloc = words[:5]
        ev = {"ref": _signed(ref), "to": to, "frame": frame, "ro": bool(ro), "alloc": bool(alloc)}
        if flags & F_NESTED:
            ev["_nested"] = 1
        return "gnt.grant", ev
    if kind == END:
        _need(number, kind, words, 3)
        if words[2] >= len(END_MODES):
            raise RecordError(f"guest trace record {number}: gnt.end mode {words[2]} is unknown")
        return "gnt.end", {"ref": words[0], "ok": bool(words[1]), "mode": END_MODES[words[2]]}
    if kind == REQ:
        return "blkif.req", _request(number, flags, words)
    if kind == PUSH:
        _need(number, kind, words, 6)
        ring, old, new, notify, req_event, rinfo = words[:6]
        ev = {"ring": f"gref:{ring}", "old": old, "new": new, "notify": bool(notify)}
        if flags & F_REQ_EVENT:
            ev["req_event"] = req_event
        ev["_rinfo"] = f"{rinfo:016x}"
        return "ring.push", ev
    if kind == LOCK:
        return "_lock", {}
    if kind == DROPPED:
        _need(number, kind, words, 1)
        return "_dropped", {"count": words[0]}
    if kind == MISSED:
        _need(number, kind, words, 1)
        return "_missed", {"count": words[0], "probe": _name(words[1:])}
    if kind == UNSUPPORTED:
        return "_unsupported", {"call": _name(words)}
    if kind == CONFIG:
        _need(number, kind, words, 2)
        return "_config", {"version": words[0], "cb_fire": bool(words[1]), "blkfront": _name(words[2:])}
    raise RecordError(f"guest trace record {number}: unknown kind {kind}")


def decode(data: bytes, first_number: int = 1) -> list[dict]:
    """The records in `data` (a whole number of them), as raw event dicts in
    the order they were read.  `first_number` numbers them in errors."""
    out: list[dict] = []
    pos, number = 0, first_number
    view = memoryview(data)
    while pos < len(data):
        if len(data) - pos < HEAD.size:
            raise RecordError(f"guest trace record {number}: {len(data) - pos} bytes left, "
                              f"less than a record header ({HEAD.size})")
        length, kind, flags, cpu, task, sub, t, c, t_end, c_end, batch = HEAD.unpack_from(view, pos)
        if length < HEAD.size or length % 8 or pos + length > len(data):
            raise RecordError(f"guest trace record {number} at byte {pos}: length {length} does not fit "
                              f"(a multiple of 8, at least {HEAD.size}, within the {len(data)} bytes read)")
        words = struct.unpack_from(f"<{(length - HEAD.size) // 8}Q", view, pos + HEAD.size)
        name, body = _body(number, kind, flags, words)
        # A call's record (an unsupported call is one too) carries the call's
        # context; the capture's own markers carry their count or settings.
        of_call = kind < DROPPED or kind == UNSUPPORTED
        ev: dict = {"t_ns": t}
        if of_call:
            ev.update(dom=DOMID_SELF, src="guest")
        ev["kind"] = name
        ev.update(body)
        if c:
            ev["_c"] = c
        if of_call:
            if sub:
                ev["_s"] = sub
            if t_end:
                ev["_t_end"] = t_end
            if c_end:
                ev["_c_end"] = c_end
            ev["_task"] = task
            ev["_cpu"] = cpu
            if batch:
                ev["_batch"] = batch
        out.append(ev)
        pos += length
        number += 1
    return out


def encode(ev: dict) -> bytes:
    """One record from a raw event dict: the tracer's side of the layout,
    for tests that build traces (golden inputs, the replay of real shapes)."""
    kind_of = {name: k for k, (name, _, _) in _PLAIN.items()}
    kind_of.update({"gnt.grant": GRANT, "gnt.end": END, "blkif.req": REQ, "ring.push": PUSH, "_lock": LOCK,
                    "_dropped": DROPPED, "_missed": MISSED, "_unsupported": UNSUPPORTED, "_config": CONFIG})
    name = ev["kind"]
    kind = kind_of[name]
    flags = 0
    words: list[int] = []

    def name_words(s: str) -> list[int]:
        raw = s.encode()[:119] + b"\0"
        raw += b"\0" * (-len(raw) % 8)
        return list(struct.unpack(f"<{len(raw) // 8}Q", raw))

    def ring(value: str) -> int:
        return int(value.split(":", 1)[1])

    if kind in _PLAIN:
        _, fields, _ = _PLAIN[kind]
        words = [ring(ev[f]) if f in _RINGS else int(ev[f]) for f in fields]
    elif kind == GRANT:
        words = [ev["ref"], ev["to"], ev["frame"], int(ev["ro"]), int(ev["alloc"])]
        flags |= F_NESTED if ev.get("_nested") else 0
    elif kind == END:
        words = [ev["ref"], int(ev["ok"]), END_MODES.index(ev["mode"])]
    elif kind == REQ:
        op = ev["op"]
        segs = [s[0] | s[1] << 32 | s[2] << 40 for s in ev.get("segs", ())]
        igrefs = list(ev.get("indirect_grefs", ()))
        aux = ev.get("indirect_op", ev.get("_nr_sectors", 0))
        nr_segments = ev.get("nr_segments", ev.get("_nr_segments", len(segs) if op in RW_OPS else 0))
        words = [ring(ev["ring"]), ev["idx"], op, ev["id"], ev.get("sector", 0), aux, nr_segments,
                 len(igrefs), len(segs)] + igrefs + segs
        flags |= F_SEGS_UNREAD if ev.get("_segs_unread") else 0
    elif kind == PUSH:
        words = [ring(ev["ring"]), ev["old"], ev["new"], int(ev["notify"]), ev.get("req_event", 0),
                 int(ev.get("_rinfo", "0"), 16)]
        flags |= F_REQ_EVENT if "req_event" in ev else 0
    elif kind == DROPPED:
        words = [ev["count"]]
    elif kind == MISSED:
        words = [ev["count"]] + name_words(ev["probe"])
    elif kind == UNSUPPORTED:
        words = name_words(ev["call"])
    elif kind == CONFIG:
        words = [ev["version"], int(ev["cb_fire"])] + name_words(ev["blkfront"])
    words = [w & (2**64 - 1) for w in words]
    length = HEAD.size + 8 * len(words)
    head = HEAD.pack(length, kind, flags, ev.get("_cpu", 0), ev.get("_task", 0), ev.get("_s", 0),
                     ev["t_ns"], ev.get("_c", 0), ev.get("_t_end", 0), ev.get("_c_end", 0), ev.get("_batch", 0))
    return head + struct.pack(f"<{len(words)}Q", *words)




def split(data: bytes, marker: bytes) -> tuple[bytes, int, bytes]:
    """`data` is records followed by `marker` (the drain's shell output):
    (the records, how many, what follows the marker).  The walk goes by the records'
    own lengths, so no byte inside a record is taken for the marker; a
    marker's first bytes are no valid header (its length would not be a
    multiple of 8)."""
    pos = n = 0
    while not data.startswith(marker, pos):
        if len(data) - pos < HEAD.size:
            raise RecordError(f"the guest trace ends at byte {pos} without its end marker {marker!r}")
        (length,) = struct.unpack_from("<H", data, pos)
        if length < HEAD.size or length % 8:
            raise RecordError(f"guest trace record at byte {pos}: length {length} is not a record's")
        pos += length
        n += 1
    return data[:pos], n, data[pos + len(marker):]


__all__ = ["RecordError", "decode", "encode", "split"]
