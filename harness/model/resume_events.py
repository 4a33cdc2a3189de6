"""The guest back from a suspend (xl save/restore, migration): guest.resume.

A domain restored from a save, or received by a migration, is a new
domain.  Xen gives it a new grant table, every entry zero, and what other
domains had mapped of the old one went with it (blkback unmapped before
the old domain was destroyed).  The guest's memory is the same: Linux's
free list, its rings and their requests, and its belief that the grants it
made are still granted.  blkfront then tears its rings down
(blkif_free_ring: it ends every grant it held, which now succeeds at once),
connects new ones and issues again the requests that were in flight.

So at guest.resume the model makes Xen's side of the guest's table new and
keeps Linux's side.  The refs Linux still believes granted are `wiped`: it
may end them (each once), it owes the ends of those a torn-down ring held
(lifecycle.grant-leak at the next quiet point), and granting one again
without ending it first is gnt.regrant-active as before the resume.  A
cancelled suspend (a checkpoint) leaves the same domain running: nothing
changes.
"""

from __future__ import annotations

from harness.model.constants import BLKIF_OP_INDIRECT, BLKIF_OP_READ, BLKIF_OP_WRITE
from harness.model.rules import Divergence
from harness.model.state import ModelState
from harness.trace import schema as s


class ResumeEvents:
    def __init__(self, state: ModelState, baselines: dict[int, dict]):
        self.state = state
        # XenView's first readings per domain: the new table has none of them.
        self.baselines = baselines

    def handlers(self) -> dict:
        return {s.GuestResume: self.on_resume}

    def on_resume(self, ev: s.GuestResume) -> None:
        state = self.state
        if ev.cancelled:
            state.notes.append(f"d{ev.dom} resumed from a cancelled suspend (a checkpoint): the same domain ran on")
            return
        guest = state.guest(ev.dom)
        wiped = guest.table.start_anew()
        guest.wiped.update(wiped)
        guest.granted = 0
        state.hv.forget_mappings_of(ev.dom)
        self.baselines.pop(ev.dom, None)
        owed = owe_reissue(state, ev.dom)
        state.notes.append(f"d{ev.dom} resumed in a new domain: Xen's grant table began anew; "
                           f"{len(wiped)} entries Linux still held granted were wiped; {owed} read(s) and "
                           "write(s) in flight were owed again")


# --- requests in flight at the resume must be issued again

DATA_OPS = (BLKIF_OP_READ, BLKIF_OP_WRITE)


class Owed:
    """A read or write that was in flight at a resume: the sectors of it
    no request issued since has covered."""

    __slots__ = ("ring", "id", "op", "sector", "nsect", "left", "quiet_points")

    def __init__(self, ring: str, id: int, op: int, sector: int, nsect: int):
        self.ring, self.id, self.op, self.sector, self.nsect = ring, id, op, sector, nsect
        self.left = [(sector, sector + nsect)]
        self.quiet_points = 0


def _sectors(ev: s.BlkifReq) -> tuple[int, int] | None:
    """(data operation, sectors) of a request; None when it moves no data
    or the capture could not read its segments."""
    op = ev.indirect_op if ev.op == BLKIF_OP_INDIRECT else ev.op
    if op not in DATA_OPS or not ev.segs:
        return None
    return op, sum(last - first + 1 for _gref, first, last in ev.segs)


def owe_reissue(state: ModelState, dom: int) -> int:
    """At the resume: every read and write in flight on the guest's rings."""
    n = 0
    for ring in state.rings.values():
        if ring.dom != dom or ring.freed:
            continue
        for request in ring.in_flight.values():
            shape = request.ev is not None and _sectors(request.ev)
            if shape:
                state.reissue_owed.append(Owed(ring.name, request.id, shape[0], request.ev.sector, shape[1]))
                n += 1
    return n


def reissued(state: ModelState, ev: s.BlkifReq) -> None:
    """A request after the resume covers what it covers of the owed ones
    on the same device (blkif_recover issues the bios again, merged and
    split as the block layer likes, on any of the device's new rings)."""
    shape = _sectors(ev)
    if shape is None:
        return
    op, nsect = shape
    lo, hi = ev.sector, ev.sector + nsect
    device = ev.ring.split("/")[0]
    keep = []
    for owed in state.reissue_owed:
        if owed.op == op and owed.ring.split("/")[0] == device:
            owed.left = [piece for a, b in owed.left
                         for piece in ((a, min(b, lo)), (max(a, hi), b)) if piece[0] < piece[1]]
        if owed.left:
            keep.append(owed)
    state.reissue_owed[:] = keep


def check_reissued(state: ModelState) -> None:
    """At a quiet point: what was owed at the one before must be issued by
    now (one quiet point's grace: the restore step's own comes right after
    the reconnect, while the issued-again bios may still wait for ring
    slots)."""
    for owed in state.reissue_owed:
        owed.quiet_points += 1
        if owed.quiet_points >= 2:
            a, b = owed.left[0]
            raise Divergence("blkif.resume-lost-request",
                             f"request {owed.id} on ring {owed.ring} ({'WRITE' if owed.op else 'READ'} of sectors "
                             f"{owed.sector}..{owed.sector + owed.nsect - 1}) was in flight when the guest was "
                             "suspended and was never issued again after the resume: sectors "
                             f"{a}..{b - 1} were not {'written' if owed.op else 'read'}",
                             expected="issued again", actual="never issued",
                             state={"ring": owed.ring, "id": owed.id, "op": owed.op, "sector": owed.sector,
                                    "not_reissued": [list(p) for p in owed.left]})
