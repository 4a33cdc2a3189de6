"""What a hardened frontend must do when its backend breaks the protocol,
judged from the scripted backend's own log (harness/remote/xrback.py).

That log is the ring as the backend saw it: every request taken (`request`,
with its ring index `at`), every response put (`rsp`, with `at` and the lie
it told, if any), and the frontend's `rsp_event` each time it moved
(`seen`).  blkfront sets rsp_event to rsp_cons + 1 after every batch it
handled, and its error path (`goto err` in blkif_interrupt) returns before
it does: so rsp_event says how far the frontend consumed, and a ring it
disabled keeps its rsp_event where it was.  The guest-side trace cannot
tell this (the tracer reads rsp_cons, which the error path leaves behind a
response it may already have completed), which is why these rules read the
backend's side.

Pure: events in (dicts, as the log's JSON lines), the first broken rule out
as a `Divergence`; `judge` returns it with the index of the event.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.model.rules import Divergence

MASK = 0xFFFFFFFF

# Lies blkfront 6.1 must refuse: blkif_interrupt's checks end in
# "disabled for further use" (keep-mapped only without persistent grants:
# with them blkfront keeps the grant as a persistent one).
DISABLING = ("duplicate", "unknown-id", "id-out-of-range", "wrong-op", "unsolicited", "rsp-prod-ahead",
             "keep-mapped")
# Lies it documents as harmless: it goes on consuming past them.
TOLERATED = ("bad-status", "delay", "reorder", "map-other", "scribble-write", "rewrite-after-push", "no-notify",
             "storm")


def after(a: int, b: int) -> bool:
    """a is later than b on a ring index (free-running 32-bit counters)."""
    return 0 < ((a - b) & MASK) < 1 << 31


@dataclass
class _Ring:
    pending: set = field(default_factory=set)      # ids taken, not yet answered
    rsp_event: int | None = None
    disabled_at: tuple | None = None               # (slot, lie, line) of the first refusing lie
    owed: list = field(default_factory=list)       # [slot, lie, line]: tolerated, not yet consumed past
    put: set = field(default_factory=set)          # slots a response was put in


class BackendLog:
    """The rules, event by event; `finish` judges what the end of the log owes."""

    def __init__(self) -> None:
        self.rings: dict[str, _Ring] = {}
        self.persistent = False
        self.trusted = True

    def ring(self, name: str) -> _Ring:
        return self.rings.setdefault(name, _Ring())

    def feed(self, ev: dict, line: int) -> None:
        kind = ev.get("ev")
        handler = getattr(self, "on_" + str(kind).replace("-", "_"), None)
        if handler is not None:
            handler(ev, line)

    # -- the device ------------------------------------------------------------
    def on_nodes(self, ev: dict, line: int) -> None:
        self.trusted = bool(ev.get("trusted", 1))

    def on_connected(self, ev: dict, line: int) -> None:
        self.persistent = bool(ev.get("persistent"))

    # -- the ring ----------------------------------------------------------------
    def on_request(self, ev: dict, line: int) -> None:
        ring, rid = self.ring(ev["ring"]), ev["id"]
        if rid in ring.pending:
            raise Divergence("lie.id-reuse", f"request {ev.get('at')} on {ev['ring']} carries id {rid}, which the "
                             "backend has taken and not answered yet",
                             state={"ring": ev["ring"], "pending_ids": sorted(ring.pending)[:16]})
        ring.pending.add(rid)

    on_bad_request = on_request

    def on_rsp(self, ev: dict, line: int) -> None:
        ring, at, lie = self.ring(ev["ring"]), ev["at"], ev.get("lie")
        ring.pending.discard(ev["id"])
        ring.put.add(at)
        if lie is None:
            return
        if self.refuses(lie):
            if ring.disabled_at is None:
                ring.disabled_at = (at, lie, line)
        elif lie in TOLERATED or lie == "keep-mapped":
            ring.owed.append([at, lie, line])

    def refuses(self, lie: str) -> bool:
        return lie in DISABLING and not (lie == "keep-mapped" and self.persistent)

    def on_lie(self, ev: dict, line: int) -> None:
        did, name = ev.get("did"), ev.get("ring")
        if name is None:
            return
        ring = self.ring(name)
        if did == "rsp-prod-ahead" and ring.disabled_at is None:
            # The responses produced are real; the slots past them are not.
            ring.disabled_at = ((ev["produced"]) & MASK, did, line)
        elif did in ("no-notify", "storm") and "at" in ev:
            ring.owed.append([ev["at"], did, line])
        elif did == "rewrite-after-push" and "next_at" in ev:
            # The rewritten response was consumed before it was rewritten;
            # a frontend that read it again would stop at it.  The next
            # response must be consumed too (if the backend put one).
            ring.owed.append([ev["next_at"] & MASK, did, line])
        elif did == "map-other" and ev.get("allowed"):
            raise Divergence("lie.grant-ended", f"Xen let the backend map again grant(s) {ev['allowed']} of request "
                             f"{ev.get('id')} after the frontend had consumed its response: the frontend still "
                             "grants them", state={"ring": name, "grefs": ev.get("grefs")})

    def on_seen(self, ev: dict, line: int) -> None:
        ring, event = self.ring(ev["ring"]), ev["rsp_event"] & MASK
        ring.rsp_event = event
        if ring.disabled_at is not None:
            at, lie, lie_line = ring.disabled_at
            if after(event, (at + 1) & MASK):
                raise Divergence("lie.disable", f"after the {lie} response at slot {at} (line {lie_line}) the "
                                 f"frontend consumed past it: rsp_event {event} > {(at + 1) & MASK}; a hardened "
                                 "frontend stops there and disables the device",
                                 state={"ring": ev["ring"], "lie": lie, "lie_slot": at, "lie_line": lie_line},
                                 expected=f"rsp_event <= {(at + 1) & MASK}", actual=event)
        ring.owed = [o for o in ring.owed if not after(event, (o[0] + 1) & MASK)]

    # -- the pages -----------------------------------------------------------------
    def on_unzeroed(self, ev: dict, line: int) -> None:
        if not self.trusted:
            raise Divergence("lie.zeroed", f"a {ev.get('kind', 'shared page')} of an untrusted disk holds "
                             f"{ev.get('nonzero_bytes')} byte(s) no request put there",
                             state={k: ev[k] for k in ("kind", "gref", "sector", "ring") if k in ev})

    def on_held_page_reused(self, ev: dict, line: int) -> None:
        raise Divergence("lie.held-page", f"grant {ev.get('gref')}'s page changed while the backend still mapped "
                         "it after the frontend ended the grant: the guest reused a page the backend can read",
                         state={"gref": ev.get("gref"), "changed_bytes": ev.get("changed_bytes")})

    # -- the end -------------------------------------------------------------------
    def finish(self) -> None:
        """What the end of the log owes.  The backend logs rsp_event within
        50 ms of each move for as long as it runs, and the harness reads its
        log only at the vbd's detach or at the end of the run: a response
        not consumed by the end of the log was not consumed by then."""
        for name, ring in self.rings.items():
            for at, lie, line in ring.owed:
                if at not in ring.put:
                    continue        # nothing was ever put there to consume
                raise Divergence("lie.tolerate", f"the frontend never consumed the response at slot {at} on {name} "
                                 f"after the {lie} lie (line {line}); its last rsp_event is {ring.rsp_event}. "
                                 "The hardened frontend documents this lie as harmless and goes on",
                                 state={"ring": name, "lie": lie, "slot": at, "lie_line": line},
                                 expected=f"rsp_event > {(at + 1) & MASK}", actual=ring.rsp_event)


class Malformed(Exception):
    """An event lacks a field its kind needs (a log edited by hand, or from
    another version of the backend): the log cannot be judged."""


def judge(events: list[dict]) -> tuple[int, Divergence] | None:
    """The first broken rule and the index of the event that broke it (the
    last event's index for what the end of the log owes), or None.  Raises
    Malformed (with the event's index as args[1]) for an event it cannot read."""
    log = BackendLog()
    for i, ev in enumerate(events):
        try:
            log.feed(ev, i)
        except Divergence as exc:
            return i, exc
        except (KeyError, TypeError) as exc:
            raise Malformed(f"a {ev.get('ev')!r} event without a usable {exc}", i) from None
    try:
        log.finish()
    except Divergence as exc:
        return len(events) - 1, exc
    return None


def lies_told(events: list[dict]) -> list[str]:
    """The lies a log says were told, once each, in order."""
    out: list[str] = []
    for ev in events:
        did = ev.get("did") if ev.get("ev") == "lie" else ev.get("lie") if ev.get("ev") == "rsp" else None
        if did and did not in out:
            out.append(did)
    return out
