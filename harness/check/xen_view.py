"""Xen's own view of a guest's grant table at a quiet point, held against
the model: the debug-key dump of active entries (`xen.gnttab`), and the whole
table as dom0 reads it from Xen (`xen.table`).

The whole-table read trusts nothing in the guest: an entry the model knows
(the trace granted, ended or claimed it) must be exactly what the model
says; an entry the trace never touched must stay as the first read found it,
so a grant made or ended where no probe of ours fires (a leak the tracer
cannot see, a driver writing the table by hand) is still caught.
"""

from __future__ import annotations

from harness.model.constants import (
    GNTPIN_writable_mask, GNTTAB_NR_RESERVED_ENTRIES, GREFS_PER_FRAME, GTF_reading, GTF_readonly,
    GTF_type_mask, GTF_writing,
)
from harness.model.gnttab import GrantTable
from harness.model.resume_events import check_reissued
from harness.model.rules import Divergence
from harness.model.state import REQUIRED_SOFT, ModelState
from harness.trace import schema as s


class XenView:
    """Handlers of the xen.* events a quiet point adds."""

    def __init__(self, state: ModelState):
        self.state = state
        self.hv = state.hv
        self.guests = state.guests
        self.exact_pins = state.exact_pins
        self.purged = 0   # inferred mappings a dump showed gone
        # Per domain: the entries the trace never touched, as the first
        # whole-table read found them (ref -> (flags, dom, frame)).
        self.baseline: dict[int, dict[int, tuple[int, int, int]]] = {}
        self.table_reads = 0
        self.entries_compared = 0
        # Entries a read showed in a state the guest moved them through
        # while dom0 read the table (see on_table_begin).
        self.concurrent_readings = 0
        self._handlers: dict = {}
        self._unwrapped: dict = {}
        self._window: tuple[int, dict[int, list[tuple]]] | None = None

    def handlers(self) -> dict:
        return {
            s.XenGnttab: self.on_dump,
            s.XenTableBegin: self.on_table_begin,
            s.XenTable: self.on_table,
        }

    def _owed(self, rdom: int) -> None:
        """A quiet point comes after a teardown finished: every grant of a
        torn-down ring must have been ended by now (an end that found the
        entry still mapped counts: gnttab_end_foreign_access defers it, and
        the deferral is the kernel's job, checked by the table itself)."""
        guest = self.guests.get(rdom)
        if guest is None or not guest.owed:
            return
        by_ring: dict[str, list[int]] = {}
        for gref, ring in sorted(guest.owed.items()):
            by_ring.setdefault(ring.name, []).append(gref)
        name, refs = next(iter(by_ring.items()))
        table = guest.table
        # A ref whose entry went with the old domain (guest.resume) is granted
        # to nobody now; Linux still holds it, out of its free list for good.
        where = ("Linux still holds them, never back on its free list (their entries went with the "
                 "domain before the resume)" if all(r in guest.wiped for r in refs)
                 else "they stay granted to the backend")
        raise Divergence("lifecycle.grant-leak", f"ring {name} was torn down (blkif_free_ring) and its "
                         f"gref(s) {_refs(refs)} were never ended: {where}",
                         expected="ended", actual="granted",
                         state={"ring": name, "leaked": refs, "by_ring": by_ring,
                                "gref": table.entry_state(refs[0])})

    def on_dump(self, ev: s.XenGnttab) -> None:
        self._owed(ev.rdom)
        if self.state.reissue_owed:
            check_reissued(self.state)
        self.hv.add_domain(ev.rdom)
        table = self.hv.table(ev.rdom)
        if table.nr_frames is not None and ev.nr_frames != table.nr_frames:
            raise Divergence("xen.dump.frames", f"Xen's table of d{ev.rdom} has {ev.nr_frames} frames; "
                             f"the model has {table.nr_frames}", expected=table.nr_frames,
                             actual=ev.nr_frames, state={"rdom": ev.rdom})
        if table.max_frames is not None and ev.max_frames != table.max_frames:
            raise Divergence("xen.dump.frames", f"Xen's table of d{ev.rdom} may grow to {ev.max_frames} "
                             f"frames; the model has {table.max_frames}", expected=table.max_frames,
                             actual=ev.max_frames, state={"rdom": ev.rdom})
        table.set_frames(ev.nr_frames)
        table.max_frames = ev.max_frames
        table.grow_capacity(ev.max_frames)
        guest = self.guests.get(ev.rdom)
        maybe = set()
        if guest is not None:
            maybe = {gref for gref, n in enumerate(guest.uses) if n}
            maybe.update(gref for gref, ring in enumerate(guest.pending) if ring is not None)
        listed = {}
        for entry in ev.entries:
            listed[entry.ref] = entry
            self._dump_entry(table, entry, maybe)
        for ref in [r for r, p in enumerate(table.pin) if p and r not in listed]:
            why = table.soft.get(ref)
            if why is None or why in REQUIRED_SOFT:
                raise Divergence("xen.dump.missing", f"Xen lists no mapping of d{ev.rdom}'s ref {ref}; "
                                 f"the model knows d{table.mapdom[ref]} maps it"
                                 + (f" ({why})" if why else ""), state=table.entry_state(ref))
            table.unpin_soft(ref)
            self.purged += 1

    def _dump_entry(self, table: GrantTable, e: s.DumpEntry, maybe: set[int]) -> None:
        ref = e.ref
        if ref >= table.capacity:
            raise Divergence("xen.dump.unexpected", f"Xen lists ref {ref}, outside the model's table",
                             state={"ref": ref})
        if ref < GNTTAB_NR_RESERVED_ENTRIES and not table.pin[ref]:
            # The toolstack's entries: learned at first sight, exact afterwards.
            table.learn_mapping(ref, e.mapdom, e.pin, e.flags, e.gdom, e.frame, "reserved")
            return
        if not table.pin[ref]:
            if not table.known[ref]:  # granted before the trace began
                table.learn_mapping(ref, e.mapdom, e.pin, e.flags, e.gdom, e.frame, "observed")
                return
            if ref not in maybe:
                raise Divergence("xen.dump.unexpected", f"Xen lists ref {ref} of d{table.domid} mapped by "
                                 f"d{e.mapdom} (pin {e.pin:#x}); the model says no domain has it mapped",
                                 state={**table.entry_state(ref), "xen": _entry_dict(e)})
            self._same_grant(table, e)
            return
        self._same_grant(table, e)
        soft = table.soft.get(ref)
        if e.mapdom != table.mapdom[ref]:
            raise Divergence("xen.dump.mismatch", f"Xen says d{e.mapdom} maps ref {ref}; the model says "
                             f"d{table.mapdom[ref]}", expected=table.mapdom[ref], actual=e.mapdom,
                             state={**table.entry_state(ref), "xen": _entry_dict(e)})
        exact = soft is None or soft == "reserved" or (self.exact_pins and soft != "observed")
        if exact and e.pin != table.pin[ref]:
            raise Divergence("xen.dump.mismatch", f"Xen's pin of ref {ref} is {e.pin:#x}; the model "
                             f"expects {table.pin[ref]:#x}", expected=table.pin[ref], actual=e.pin,
                             state={**table.entry_state(ref), "xen": _entry_dict(e)})
        if not exact and bool(e.pin & GNTPIN_writable_mask) != bool(table.pin[ref] & GNTPIN_writable_mask):
            raise Divergence("xen.dump.mismatch", f"Xen's pin of ref {ref} is {e.pin:#x}; the model "
                             f"expects a {'writable' if table.pin[ref] & GNTPIN_writable_mask else 'read-only'} map",
                             state={**table.entry_state(ref), "xen": _entry_dict(e)})
        if e.flags != table.flags[ref]:
            raise Divergence("xen.dump.mismatch", f"Xen's flags of ref {ref} are {e.flags:#x}; the model "
                             f"has {table.flags[ref]:#x}", expected=table.flags[ref], actual=e.flags,
                             state={**table.entry_state(ref), "xen": _entry_dict(e)})
        if soft in ("observed", "persistent") and not exact:
            table.pin[ref] = e.pin  # now we have seen it

    def _same_grant(self, table: GrantTable, e: s.DumpEntry) -> None:
        ref = e.ref
        base = table.flags[ref] & (GTF_type_mask | GTF_readonly)
        if (e.flags & (GTF_type_mask | GTF_readonly)) != base or e.gdom != table.gdom[ref] \
                or e.frame != table.frame[ref] or e.mapdom != table.gdom[ref]:
            raise Divergence("xen.dump.mismatch", f"Xen lists ref {ref} as granted to d{e.gdom}, frame "
                             f"{e.frame:#x}, mapped by d{e.mapdom}; the model has it granted to "
                             f"d{table.gdom[ref]}, frame {table.frame[ref]:#x}",
                             state={**table.entry_state(ref), "xen": _entry_dict(e)})
        if table.flags[ref] & GTF_readonly and e.pin & GNTPIN_writable_mask:
            raise Divergence("xen.dump.mismatch", f"Xen has a writable map of read-only ref {ref}",
                             state={**table.entry_state(ref), "xen": _entry_dict(e)})

    # -- the whole-table read and the guest running beside it

    def attach(self, handlers: dict) -> None:
        """The checker's handler dict, which a read's window wraps."""
        self._handlers = handlers

    def on_table_begin(self, ev: s.XenTableBegin) -> None:
        """Until the matching `xen.table`, every event is concurrent with the
        read: record each state the entries it names pass through, so the
        read may show any of them.  Outside a window this costs nothing."""
        self._close_window()
        table = self.hv.table(ev.rdom)
        passed: dict[int, list[tuple]] = {}
        self._window = (ev.rdom, passed)
        for cls, handler in list(self._handlers.items()):
            if cls in (s.XenTableBegin, s.XenTable):
                continue
            self._handlers[cls] = _journaled(handler, table, passed, self.state.rings)
            self._unwrapped[cls] = handler

    def _close_window(self) -> dict[int, list[tuple]]:
        self._handlers.update(self._unwrapped)
        self._unwrapped.clear()
        window, self._window = self._window, None
        return window[1] if window is not None else {}

    def on_table(self, ev: s.XenTable) -> None:
        # Any read closes the window (one of another domain included: its
        # journal must not excuse a much later read).
        window = self._window
        passed = self._close_window()
        if window is None or window[0] != ev.rdom:
            passed = {}
        self._owed(ev.rdom)
        self.hv.add_domain(ev.rdom)
        table = self.hv.table(ev.rdom)
        entries = ev.nr_frames * GREFS_PER_FRAME
        table.grow_capacity(ev.nr_frames)
        listed: dict[int, s.SharedEntry] = {}
        for e in ev.entries:
            if e.ref >= entries:
                raise Divergence("xen.table.unexpected", f"dom0's read of d{ev.rdom}'s table lists ref {e.ref}, "
                                 f"past its {ev.nr_frames} frame(s)", state={"xen": _shared_dict(e)})
            listed[e.ref] = e
        first = ev.rdom not in self.baseline
        baseline = self.baseline.setdefault(ev.rdom, {})
        self.table_reads += 1
        for ref in range(entries):
            e = listed.get(ref)
            now = _entry_of(table, ref)
            self.entries_compared += now[3]
            broken = self._judge(ev.rdom, table, ref, e, now, first, baseline)
            if broken is None:
                continue
            # The guest changed this entry while dom0 read it: any state it
            # passed through is a true reading.  A state from before the
            # trace knew the entry proves nothing on a first read (there is
            # no reading to hold it to) beyond "not granted".
            if any(self._judge_passed(ev.rdom, table, ref, e, was, first, baseline)
                   for was in passed.get(ref, ())):
                self.concurrent_readings += 1
                continue
            if ref in passed:
                broken.message += (f" (nor any of the {len(passed[ref])} state(s) the trace moved it "
                                   "through while dom0 read the table)")
            raise broken

    def _judge_passed(self, rdom: int, table: GrantTable, ref: int, e: s.SharedEntry | None, st: tuple,
                      first: bool, baseline: dict) -> bool:
        """Whether Xen's entry agrees with a state the window moved it
        through; never learns a baseline (only a first read of an entry the
        trace does not know would)."""
        if not st[3] and first:
            return not (e is not None and e.flags & ~_IN_USE)
        return self._judge(rdom, table, ref, e, st, first, baseline) is None

    def _judge(self, rdom: int, table: GrantTable, ref: int, e: s.SharedEntry | None, st: tuple,
               first: bool, baseline: dict) -> Divergence | None:
        """Xen's entry `e` (None: flags 0) against one model state `st` of the
        entry (see _entry_of); the broken rule, or None when they agree."""
        model, gdom, frame, known, pin, soft = st
        if not known:
            # Never touched by the trace: it must not change behind our back.
            seen = (e.flags & ~_IN_USE, e.dom, e.frame) if e is not None and e.flags & ~_IN_USE else None
            if first:
                if seen is not None:
                    baseline[ref] = seen
                return None
            if seen != baseline.get(ref):
                was = baseline.get(ref)
                return Divergence("xen.table.untraced", f"ref {ref} of d{rdom} changed with no event in the "
                                  f"trace: dom0 first read it {_describe(was)}, now {_describe(seen)}",
                                  state={"ref": ref, "xen": _shared_dict(e), "first_read": _describe(was)})
            return None
        xflags = e.flags if e is not None else 0
        if not model & GTF_type_mask:
            if xflags & GTF_type_mask:
                return Divergence("xen.table.unexpected", f"Xen holds ref {ref} of d{rdom} granted to "
                                  f"d{e.dom}, frame {e.frame:#x} (flags {xflags:#x}); the model says the "
                                  "guest ended it or never granted it",
                                  state={**table.entry_state(ref), "xen": _shared_dict(e)})
            if xflags and not pin:
                return Divergence("xen.table.mismatch", f"Xen's entry {ref} of d{rdom} has flags "
                                  f"{xflags:#x} and no grant",
                                  state={**table.entry_state(ref), "xen": _shared_dict(e)})
            return None
        if not xflags & GTF_type_mask:
            return Divergence("xen.table.missing", f"the model has ref {ref} of d{rdom} granted to "
                              f"d{gdom}, frame {frame:#x}; Xen's entry is not granted "
                              f"(flags {xflags:#x})", state={**table.entry_state(ref), "xen": _shared_dict(e)})
        if e.dom != gdom or e.frame != frame or (xflags & ~_IN_USE) != (model & ~_IN_USE):
            return Divergence("xen.table.mismatch", f"Xen's entry {ref} of d{rdom} grants d{e.dom} frame "
                              f"{e.frame:#x} with flags {xflags:#x}; the model has d{gdom}, frame "
                              f"{frame:#x}, flags {model:#x}",
                              state={**table.entry_state(ref), "xen": _shared_dict(e)})
        if soft not in _MAY_DROP and (xflags & _IN_USE) != (model & _IN_USE):
            return Divergence("xen.table.mismatch", f"Xen's entry {ref} of d{rdom} is "
                              f"{_in_use(xflags)}; the model has it {_in_use(model)}",
                              state={**table.entry_state(ref), "xen": _shared_dict(e)})
        return None


def _entry_of(table: GrantTable, ref: int) -> tuple:
    """What the whole-table read is judged on, for one entry."""
    return (table.flags[ref], table.gdom[ref], table.frame[ref], table.known[ref], table.pin[ref],
            table.soft.get(ref))


def _named_refs(ev: s.Event, rings: dict) -> list[int]:
    """The grant refs an event names (the entries it may change); an event
    of a ring (blkif.connect pins its pages) names the ring's pages too."""
    refs = []
    ring = rings.get(getattr(ev, "ring", None))
    if ring is not None:
        refs.extend(ring.grefs)
    ref = getattr(ev, "ref", None)
    if isinstance(ref, int) and ref >= 0:
        refs.append(ref)
    refs.extend(getattr(ev, "grefs", ()))
    refs.extend(seg[0] for seg in getattr(ev, "segs", ()))
    refs.extend(getattr(ev, "indirect_grefs", ()))
    return refs


def _journaled(handler, table: GrantTable, passed: dict[int, list[tuple]], rings: dict):
    """`handler`, recording the states of the entries its event names
    before and after it runs (each state once in a row)."""
    def journaled(ev):
        refs = [r for r in _named_refs(ev, rings) if r < table.capacity]
        for ref in refs:
            states = passed.setdefault(ref, [])
            was = _entry_of(table, ref)
            if not states or states[-1] != was:
                states.append(was)
        handler(ev)
        for ref in refs:
            if ref < table.capacity:
                now = _entry_of(table, ref)
                if passed[ref][-1] != now:
                    passed[ref].append(now)
    return journaled


def _entry_dict(e: s.DumpEntry) -> dict:
    return {"ref": e.ref, "mapdom": e.mapdom, "pin": f"{e.pin:#x}", "gdom": e.gdom,
            "frame": f"{e.frame:#x}", "flags": f"{e.flags:#x}"}


# Flags a mapping sets and clears without the guest (Xen's _set_status_v1).
_IN_USE = GTF_reading | GTF_writing
# Inferred mappings blkback may drop at any moment (purge_persistent_gnt, disconnect).
_MAY_DROP = ("persistent", "observed", "disconnecting")


def _shared_dict(e: s.SharedEntry | None) -> dict:
    if e is None:
        return {"flags": "0x0"}
    return {"ref": e.ref, "flags": f"{e.flags:#x}", "dom": e.dom, "frame": f"{e.frame:#x}"}


def _describe(seen: tuple[int, int, int] | None) -> str:
    if seen is None:
        return "not granted"
    flags, dom, frame = seen
    return f"granted to d{dom}, frame {frame:#x} (flags {flags:#x})"


def _in_use(flags: int) -> str:
    if flags & GTF_writing:
        return "mapped writable (GTF_reading|GTF_writing)"
    return "mapped (GTF_reading)" if flags & GTF_reading else "not mapped"


def _refs(refs: list[int]) -> str:
    shown = ", ".join(str(r) for r in refs[:12])
    return shown + (f" and {len(refs) - 12} more" if len(refs) > 12 else "")
