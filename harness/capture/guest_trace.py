"""The guest's view: xenrig_trace's records turned into schema-v1 events.

guest-kernel/xenrig_trace writes one binary record per call it saw;
guest_records.py decodes each into a dict in the schema's shape but with
private fields (names starting with `_`) that only this step uses.  The
same dicts, written as JSON lines, are what unit tests and golden inputs
give.  docs/capture.md describes them; this module does the
post-processing it promises, in this order:

1. refuse an incomplete capture: `_dropped` (the module's buffer was full),
   `_missed` (a probe did not run, or something could not be read) and
   `_unsupported` (a call schema v1 cannot express) make a ValueError, and
   so does a `gnt.cb_request` when the module was loaded without the
   callback list's address (`_config` says `cb_fire: false`): the model
   would then wait for callbacks it is never told ran;
2. drop calls made inside another traced call (`_nested`);
3. order the events by `_c` (the order their calls began; `_s` orders the
   events one call produced; a response's `_c` is taken where the
   interrupt released the ring lock), except that a call which took refs
   off the free list goes right after the call on another CPU that began
   while it ran (`_c` .. `_c_end`) and put back the very ref it got first:
   both took gnttab_list_lock, the free first (_settle_allocations);
4. put each response of a blkif_interrupt (`_batch`) just before the first
   end of access to a grant of its request made inside that interrupt, so
   that a request's grants are ended after its response and before the
   next response, as blkfront does (the module can only read the responses
   when the handler returns);
5. name the rings: `gref:N` (the ring's first ring-ref) becomes the name
   `ring_names[N]` the harness read from xenstore (e.g. `xvda/0`);
6. strip the private fields, set `dom` to the guest's domid, and make `t_ns`
   non-decreasing in that order (a moved response takes the time of the
   event it precedes).

Each event is then checked against the schema (with a stand-in `seq`).
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Iterable

import msgspec

from harness.capture import guest_records
from harness.trace.schema import AnyEvent

GUEST_KINDS = frozenset({
    "gnt.grant", "gnt.end", "gnt.deferred_end", "gnt.alloc", "gnt.claim", "gnt.release",
    "gnt.free", "gnt.free_chain", "gnt.expand", "gnt.cb_request", "gnt.cb_fire",
    "gnt.cb_cancel", "blkif.req", "ring.push", "blkif.rsp", "ring.free", "guest.resume",
})
RING_KINDS = frozenset({"blkif.req", "ring.push", "blkif.rsp", "ring.free"})
HEAD_FIELDS = ("t_ns", "dom", "src", "kind")
RING_PREFIX = "gref:"

_validator = msgspec.json.Decoder(AnyEvent)


class _Line:
    """One event with where it came from (a JSON line's text, or None for a
    decoded record, shown as JSON only in an error)."""
    __slots__ = ("number", "text", "ev", "key", "order")

    def __init__(self, number: int, text: str | None, ev: dict):
        self.number = number
        self.text = text
        self.ev = ev
        self.key: tuple = ()


def _fail(line: _Line | None, number: int, text: str | None, problem: str) -> ValueError:
    what = "line"
    if line is not None:
        number, text = line.number, line.text
        if text is None:
            what, text = "record", json.dumps(line.ev)
    excerpt = text if len(text) <= 200 else text[:200] + "..."
    return ValueError(f"guest trace {what} {number}: {problem}: {excerpt}")


def _int(ev: dict, field: str, line: _Line) -> int:
    value = ev.get(field)
    if type(value) is not int:
        raise _fail(line, 0, "", f"field {field!r} must be an integer")
    return value


def _json_lines(lines: Iterable[str | bytes]) -> Iterable[_Line]:
    for number, raw in enumerate(lines, start=1):
        text = raw.decode() if isinstance(raw, bytes) else raw
        text = text.strip()
        if not text:
            continue
        try:
            ev = json.loads(text)
        except json.JSONDecodeError as exc:
            raise _fail(None, number, text, f"not valid JSON ({exc.msg})") from None
        if not isinstance(ev, dict) or not isinstance(ev.get("kind"), str):
            raise _fail(None, number, text, "not a JSON object with a string `kind`")
        yield _Line(number, text, ev)


def _read(items: Iterable[_Line]) -> tuple[list[_Line], list[_Line], list[_Line]]:
    """Events, `_config` lines and `_lock` records, after refusing markers
    of an incomplete capture."""
    events: list[_Line] = []
    configs: list[_Line] = []
    locks: list[_Line] = []
    for line in items:
        ev = line.ev
        kind = ev["kind"]
        if kind == "_dropped":
            raise _fail(line, 0, "", f"the capture buffer was full and {ev.get('count', '?')} "
                        "events were lost (load xenrig_trace with a larger buf_mb, or read "
                        "the trace more often)")
        if kind == "_missed":
            raise _fail(line, 0, "", f"the capture missed {ev.get('count', '?')} event(s) at "
                        f"{ev.get('probe', '?')!r}")
        if kind == "_unsupported":
            raise _fail(line, 0, "", f"the guest called {ev.get('call', '?')}, which trace "
                        "schema v1 cannot express")
        if kind == "_config":
            configs.append(line)
            continue
        if kind == "_lock":
            _int(ev, "_c", line)
            locks.append(line)
            continue
        if kind not in GUEST_KINDS:
            raise _fail(line, 0, "", f"unknown guest event kind {kind!r}")
        _int(ev, "t_ns", line)
        _int(ev, "_c", line)
        if "_c_end" in ev:
            _int(ev, "_c_end", line)
        if ev.get("_nested"):
            continue
        events.append(line)
    return events, configs, locks


def _check_callbacks(events: list[_Line], configs: list[_Line]) -> None:
    blind = [c for c in configs if c.ev.get("cb_fire") is False]
    if not blind:
        return
    for line in events:
        if line.ev["kind"] == "gnt.cb_request":
            raise _fail(line, 0, "", "a free callback was requested, but xenrig_trace was loaded "
                        "without sym_free_callback_list, so callbacks that ran are not in the "
                        f"trace (see its _config on line {blind[0].number})")


def _puts_back(ev: dict) -> bool:
    """Whether the call put refs back on the free list (under gnttab_list_lock)."""
    kind = ev["kind"]
    if kind in ("gnt.free", "gnt.free_chain"):
        return True
    if kind == "gnt.end":   # `ref` mode ends access only; `try` and `end` free the ref when it ended
        return bool(ev.get("ok")) and ev.get("mode") in ("try", "end")
    return kind == "gnt.deferred_end" and bool(ev.get("ok"))


def _freed_ref(ev: dict) -> int | None:
    """The one ref a free-list call put back, when the event names it."""
    return ev.get("ref") if ev["kind"] in ("gnt.free", "gnt.end", "gnt.deferred_end") else None


def _is_alloc(ev: dict) -> bool:
    return ev["kind"] == "gnt.alloc" or (ev["kind"] == "gnt.grant" and bool(ev.get("alloc")))


def _settle_allocations(events: list[_Line]) -> None:
    """Sort keys (`order`): by `_c`, but an allocation right after the free
    that handed it its first ref.

    An allocation (gnt.alloc, gnt.grant with alloc) takes its refs under
    gnttab_list_lock somewhere between its entry (`_c`) and its return
    (`_c_end`), with interrupts off on its CPU; a free on another CPU that
    was running meanwhile may have taken the lock before it or after.  The
    free list is last-in first-out, so the ref the allocation got first
    (gnt.alloc's `head`, gnt.grant's `ref`) tells where it stood: right
    after the last free of that very ref, when that free ran on another
    CPU and
      - began inside the allocation's span, or
      - began before it, with no allocation in between (frees that began
        in between and put their refs in front of it would have handed
        out those refs first: they took the lock after it), and nothing of
        the allocation's own CPU in between (its program order stands).
    A free of a whole chain (gnt.free_chain) does not say which ref it put
    back last: an allocation no single free explains goes after the last
    such chain free inside its span.  On one CPU nothing moves."""
    lines = sorted(events, key=lambda line: (line.ev["_c"], line.ev.get("_s", 0)))
    starts = [line.ev["_c"] for line in lines]
    last_free: dict[int, list[int]] = {}     # ref -> positions in `lines` of its frees
    for pos, line in enumerate(lines):
        line.order = (line.ev["_c"], line.ev.get("_s", 0), 0)
        ref = _freed_ref(line.ev) if _puts_back(line.ev) else None
        if ref is not None:
            last_free.setdefault(ref, []).append(pos)
    previous = -1   # position of the allocation before this one: nothing moves past it
    for pos, line in enumerate(lines):
        ev = line.ev
        end = ev.get("_c_end")
        if not _is_alloc(ev):
            continue
        before, previous = previous, pos
        if not isinstance(end, int):
            continue
        first = ev.get("head") if ev["kind"] == "gnt.alloc" else ev.get("ref")
        cpu = ev.get("_cpu")
        limit = bisect.bisect_left(starts, end)
        positions = last_free.get(first, [])
        frees = positions[:bisect.bisect_left(positions, limit)]
        anchor = None
        if frees and lines[frees[-1]].ev.get("_cpu") != cpu:
            f = frees[-1]
            if f > pos:
                anchor = lines[f]
            elif f > before:   # no allocation in between (the slice stays short)
                own = [b for b in lines[f + 1:pos] if b.ev.get("_cpu") == cpu]
                anchor = own[-1] if own else lines[f]
        elif not frees:
            chains = [b for b in lines[pos + 1:limit]
                      if b.ev["kind"] == "gnt.free_chain" and b.ev.get("_cpu") != cpu]
            anchor = chains[-1] if chains else None
        if anchor is not None:
            line.order = (anchor.ev["_c"], anchor.ev.get("_s", 0), 1)


def _lock_span(ev: dict) -> tuple[int, int | None] | None:
    """Where a call releases gnttab_list_lock: after its `_c`, and before
    its `_c_end` or (None) at some point after it returned (an end of
    access whose ref the caller frees next: gnttab_end_foreign_access, the
    deferred-end timer).  None: a call that does not take the lock."""
    kind, c = ev["kind"], ev["_c"]
    if _is_alloc(ev) or (kind == "gnt.end" and ev.get("mode") == "try" and _puts_back(ev)):
        return c, ev.get("_c_end")
    if _puts_back(ev) or kind in ("gnt.cb_request", "gnt.cb_cancel"):
        return c, None
    return None


def _order_by_lock(events: list[_Line], locks: list[_Line]) -> bool:
    """Sort keys (`order`) with each free-list change at its place under
    gnttab_list_lock, when the module recorded the lock (`_lock`: a number
    from the same counter, taken just before the lock was released).

    On each CPU a lock belongs to the innermost traced call open at that
    point: the latest begun among the calls that take the lock and have
    neither returned (`_c_end`) nor been given their lock yet; calls nest
    on a CPU (an interrupt's calls end before the call it interrupted goes
    on).  False, leaving `order` to _settle_allocations, when the records
    do not pair up one to one (a lock no traced call explains, or a call
    that took the lock without its record): then nothing is guessed."""
    if not locks:
        return False
    calls: dict[object, list[tuple[int, int | None, _Line]]] = {}
    for line in events:
        span = _lock_span(line.ev)
        if span is not None:
            calls.setdefault(line.ev.get("_cpu"), []).append((span[0], span[1], line))
    seqs: dict[object, list[int]] = {}
    for lock in locks:
        seqs.setdefault(lock.ev.get("_cpu"), []).append(lock.ev["_c"])
    if set(calls) - set(seqs):
        return False
    placed: dict[int, int] = {}
    for cpu, numbers in seqs.items():
        mine = sorted(calls.get(cpu, ()), key=lambda span: span[0])
        open_: list[tuple[int, int | None, _Line]] = []
        nxt = 0
        for seq in sorted(numbers):
            while nxt < len(mine) and mine[nxt][0] < seq:
                open_.append(mine[nxt])
                nxt += 1
            if any(end is not None and end < seq for _, end, _ in open_):
                return False    # returned without its lock
            if not open_:
                return False
            placed[id(open_.pop()[2])] = seq
        if nxt < len(mine) or open_:
            return False
    for line in events:
        ev = line.ev
        line.order = (placed.get(id(line), ev["_c"]), ev.get("_s", 0), 0)
    return True


def _request_grefs(ev: dict) -> set[int]:
    grefs = {seg[0] for seg in ev.get("segs", ()) if isinstance(seg, list) and seg}
    grefs.update(ev.get("indirect_grefs", ()))
    return grefs


def _place_responses(events: list[_Line], inflight: dict[tuple[str, int], set[int]] | None = None) -> None:
    """Sort keys: responses of each interrupt go before the first end of their grants.

    `inflight`: the grefs of each request (by ring and id) not yet answered,
    carried from one drain to the next: a request may be issued before a
    drain and answered after it (a slow backend, I/O across steps)."""
    tagged: dict[int, list[int]] = {}
    for pos, line in enumerate(events):
        ev = line.ev
        line.key = (pos, 1, 0)
        batch = ev.get("_batch")
        if batch is not None and ev["kind"] != "blkif.rsp":
            tagged.setdefault(batch, []).append(pos)

    inflight = {} if inflight is None else inflight
    pos = 0
    while pos < len(events):
        ev = events[pos].ev
        kind = ev["kind"]
        if kind == "blkif.req":
            inflight[(ev.get("ring"), ev.get("id"))] = _request_grefs(ev)
        if kind != "blkif.rsp" or ev.get("_batch") is None:
            pos += 1
            continue
        # One interrupt's responses: consecutive, in index order (`_s`).
        batch = ev["_batch"]
        end = pos
        while end < len(events) and events[end].ev["kind"] == "blkif.rsp" \
                and events[end].ev.get("_batch") == batch:
            end += 1
        responses = events[pos:end]
        owned = [inflight.pop((r.ev.get("ring"), r.ev.get("id")), set()) for r in responses]
        placed = 0
        last = None
        for tpos in tagged.get(batch, ()):
            last = tpos
            tev = events[tpos].ev
            if tev["kind"] != "gnt.end" or placed == len(responses):
                continue
            ref = tev.get("ref")
            for j in range(placed, len(responses)):
                if ref in owned[j]:
                    for k in range(placed, j + 1):
                        responses[k].key = (tpos, 0, k)
                    placed = j + 1
                    break
        if last is not None:
            for k in range(placed, len(responses)):
                responses[k].key = (last, 2, k)
        pos = end


def _finish(line: _Line, guest_domid: int, ring_names: dict[int, str]) -> dict:
    ev = line.ev
    out = {"t_ns": ev["t_ns"], "dom": guest_domid, "src": "guest", "kind": ev["kind"]}
    for field, value in ev.items():
        if field.startswith("_") or field in out or field in ("dom", "src", "seq"):
            continue
        out[field] = value
    if ev["kind"] in RING_KINDS:
        ring = ev.get("ring")
        if not isinstance(ring, str) or not ring.startswith(RING_PREFIX):
            raise _fail(line, 0, "", f"ring {ring!r} is not {RING_PREFIX}<ring-ref>")
        try:
            out["ring"] = ring_names[int(ring[len(RING_PREFIX):])]
        except (KeyError, ValueError):
            raise _fail(line, 0, "", f"no ring name for {ring!r} (ring_names knows ring-refs "
                        f"{sorted(ring_names)})") from None
    return out


def parse_guest_lines(lines: Iterable[str | bytes], guest_domid: int,
                      ring_names: dict[int, str]) -> list[dict]:
    """Schema-shaped guest events (without `seq`) from the raw events as
    JSON lines (tests, golden inputs).

    `ring_names` maps a ring's first ring-ref to its schema name ("xvda/0").
    Raises ValueError naming the line for malformed or incomplete input.
    """
    return _process(_json_lines(lines), guest_domid, ring_names)


def parse_guest_records(data: bytes, guest_domid: int, ring_names: dict[int, str],
                        first_number: int = 1, names_before_resume: dict[int, str] | None = None,
                        inflight: dict | None = None) -> list[dict]:
    """The same from xenrig_trace's binary records (a whole number of them).
    Raises ValueError naming the record for malformed or incomplete input.

    `names_before_resume`: the guest was saved and restored since the last
    drain.  Its rings were made anew after the resume, and a ring-ref may
    now name another ring than before (blkfront frees every ring, then
    grants the new ones from the head of the free list): the events before
    the guest.resume record take their names from this map, and so do the
    events after it on a ring-ref until its old ring is freed (blkfront
    frees the old rings after the resume); the rest take theirs from
    `ring_names`.  The records must then hold the resume.

    `inflight`: the caller's map of requests not yet answered, kept from one
    call to the next (see _place_responses)."""
    raws = guest_records.decode(data, first_number)
    return _process((_Line(first_number + i, None, ev) for i, ev in enumerate(raws)),
                    guest_domid, ring_names, names_before_resume, inflight)


def _process(items: Iterable[_Line], guest_domid: int, ring_names: dict[int, str],
             names_before_resume: dict[int, str] | None = None, inflight: dict | None = None) -> list[dict]:
    events, configs, locks = _read(items)
    _check_callbacks(events, configs)
    if not _order_by_lock(events, locks):
        _settle_allocations(events)
    events.sort(key=lambda line: line.order)
    _place_responses(events, inflight)
    events.sort(key=lambda line: line.key)
    out: list[dict] = []
    last_t = 0
    resumed = names_before_resume is None
    # A ring-ref first granted after the resume is only in the new map.
    before = {**ring_names, **names_before_resume} if names_before_resume is not None else ring_names
    made_anew: set[str] = set()   # ring values ("gref:N") whose old ring was freed after the resume
    for line in events:
        names = ring_names
        if names_before_resume is not None and (not resumed or line.ev.get("ring") not in made_anew):
            names = before
        ev = _finish(line, guest_domid, names)
        if ev["kind"] == "guest.resume" and not ev.get("cancelled"):
            resumed = True
        elif resumed and ev["kind"] == "ring.free":
            made_anew.add(line.ev["ring"])
        ev["t_ns"] = last_t = max(ev["t_ns"], last_t)
        try:
            _validator.decode(json.dumps({"seq": 1, **ev}))
        except msgspec.ValidationError as exc:
            raise _fail(line, 0, "", f"does not fit trace schema v1 ({exc})") from None
        out.append(ev)
    if not resumed:
        raise ValueError("the guest was saved and restored, but its records hold no guest.resume "
                         "(the tracer's xen_arch_post_suspend probe did not fire): which ring each "
                         "event was on cannot be told")
    return out


__all__ = ["GUEST_KINDS", "parse_guest_lines", "parse_guest_records"]
