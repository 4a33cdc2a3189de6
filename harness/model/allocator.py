"""The guest's grant-reference allocator, in two policies.

`seed`: the free list of the unmodified drivers' platform-pci/gnttab.c that
the seed document walks through (its lineage: linux-2.6.18-xen
drivers/xen/core/gnttab.c).  `linux-6.1`: drivers/xen/grant-table.c of the
Linux 6.1 guest kernel in use.  Both keep one singly linked free list whose
head is handed out first and where freed refs go back in front; they differ
in where a grown table's new entries go, in the order a freed chain returns,
in what a free of a reserved entry does, and in what ending a busy grant does:

| behaviour                        | seed                       | linux-6.1                              |
|----------------------------------|----------------------------|----------------------------------------|
| new frames' entries (grow)       | in front of the free list  | behind the last free entry (set_free)  |
| gnttab_free_grant_references     | chain spliced in front, in order | each ref pushed in front (reversed) |
| free of a ref < 8                | corrupts the list (a rule) | ignored (put_free_entry_locked)         |
| end_foreign_access on a busy ref | ref leaked with a warning  | ref deferred, retried by a timer        |
| free callbacks                   | checked on free and grow   | the same                               |

Invariants after every step, both policies, when the allocator is exact:
every ref in 8 .. nr_frames*512-1 is in exactly one of: the free list, a
private chain, held by the caller (and maybe granted), leaked (seed) or
deferred (linux-6.1); the free count equals the free list's length; no
entry below 8 is ever on the free list; a pending callback never wants no
more than the free count (it would have run).

An allocator that has not seen the table set up (the trace began after the
guest booted) is not exact: it cannot know the free list's order, so it
only checks that no ref is handed out while the model knows it is in use,
and learns each ref's state from the events.
"""

from __future__ import annotations

from collections import deque
from operator import itemgetter

from harness.model.constants import (
    ENOSPC, GNTTAB_LIST_END, GNTTAB_NR_RESERVED_ENTRIES, GREFS_PER_FRAME,
    GTF_type_mask,
)
from harness.model.gnttab import GrantTable
from harness.model.rules import Divergence

# Allocator state of a ref (bytearray values).
UNKNOWN = 0   # not seen since the trace began (allocator not exact)
FREE = 1      # on the free list
CHAIN = 2     # in a private chain (gnttab_alloc_grant_references)
HELD = 3      # handed to the caller (claimed, or a single allocation)
LEAKED = 4    # seed: ending access failed, ref and page leaked
DEFERRED = 5  # linux-6.1: ending access failed, retried by a timer

STATE_NAMES = {UNKNOWN: "unknown", FREE: "free", CHAIN: "in a private chain",
               HELD: "held by the caller", LEAKED: "leaked", DEFERRED: "deferred"}

POLICIES = ("seed", "linux-6.1")


class GuestAllocator:
    """One guest's allocator; `policy` picks the seed's or Linux 6.1's behaviour."""

    __slots__ = (
        "policy", "seed", "table", "exact", "nr_frames", "max_frames", "free", "st",
        "chain_next", "chain_heads", "callbacks", "due", "last_growth",
        "deferred_count", "leaked_count",
    )

    def __init__(self, policy: str, table: GrantTable):
        if policy not in POLICIES:
            raise ValueError(f"unknown allocator policy {policy!r}; one of {POLICIES}")
        self.policy = policy
        self.seed = policy == "seed"
        self.table = table
        self.exact = False
        self.nr_frames: int | None = None
        self.max_frames: int | None = table.max_frames
        # The free list, head first; when not exact, only the refs known free.
        self.free: deque[int] = deque()
        self.st = table.alloc_state  # one byte per ref, sized with the table
        # Private chains, linked as gnttab_list links them: ref -> next ref.
        self.chain_next: dict[int, int] = {}
        self.chain_heads: set[int] = set()
        # Pending free callbacks, newest first (do_free_callbacks walks the
        # list from its head, where gnttab_request_free_callback pushes).
        self.callbacks: list[tuple[int, int]] = []
        self.due: list[int] = []
        # (old, new) frames of the last growth no gnt.expand event reported
        # yet; a capture that records growth reports it after the allocation.
        self.last_growth: tuple[int, int] | None = None
        self.deferred_count = 0
        self.leaked_count = 0

    # --- set-up and growth

    def setup(self, nr_frames: int, max_frames: int) -> None:
        """gnttab_init: `nr_frames` frames, entries 8.. free in order (both policies)."""
        self.nr_frames = nr_frames
        self.max_frames = max_frames
        self.table.grow_capacity(max(max_frames, nr_frames))
        self.table.set_frames(nr_frames)
        self.table.mark_all_known()
        for ref in range(GNTTAB_NR_RESERVED_ENTRIES):
            self.table.known[ref] = 0  # the toolstack's entries
        self.st[:] = bytes(len(self.st))
        first, end = GNTTAB_NR_RESERVED_ENTRIES, nr_frames * GREFS_PER_FRAME
        self.free = deque(range(first, end))
        self.st[first:end] = bytes([FREE]) * (end - first)
        self.chain_next.clear()
        self.chain_heads.clear()
        self.callbacks.clear()
        self.due.clear()
        self.last_growth = None
        self.exact = True

    def free_count(self) -> int | None:
        return len(self.free) if self.exact else None

    def growth_needed(self, count: int) -> int:
        """Frames get_free_entries would add for `count` refs (gnttab_expand)."""
        short = count - len(self.free)
        if short <= 0:
            return 0
        return (short + GREFS_PER_FRAME - 1) // GREFS_PER_FRAME

    def note_expand(self, old: int, new: int) -> None:
        """A gnt.expand event: it reports the growth of the allocation just before it."""
        if not self.exact:
            if self.max_frames is not None and new > self.max_frames:
                raise Divergence("gnt.expand", f"table grows to {new} frames, past the maximum "
                                 f"{self.max_frames}", expected=self.max_frames, actual=new,
                                 state={"nr_frames": old})
            self.nr_frames = new
            self.table.set_frames(new)
            return
        growth, self.last_growth = self.last_growth, None
        if growth != (old, new):
            did = f"grew {growth[0]}->{growth[1]} frames" if growth else "needed no growth"
            raise Divergence("gnt.expand", f"the table grew {old}->{new} frames; the allocation "
                             f"before it {did}", expected=growth, actual=(old, new),
                             state={"nr_frames": self.nr_frames, "free_count": len(self.free)})

    def _grow(self, extra: int) -> None:
        """grow_gnttab_list: new entries onto the free list, then callbacks."""
        old = self.nr_frames
        assert old is not None
        new = old + extra
        self.last_growth = (old, new)
        self.table.set_frames(new)
        start, end = old * GREFS_PER_FRAME, new * GREFS_PER_FRAME
        self.table.known[start:end] = b"\x01" * (end - start)
        self.st[start:end] = bytes([FREE]) * (end - start)
        if self.seed:
            # seed grow_gnttab_list: new entries chained in order, the last
            # pointing at the old head; the first new entry is the new head.
            self.free.extendleft(range(end - 1, start - 1, -1))
        else:
            # linux-6.1 gnttab_set_free: appended after gnttab_last_free.
            self.free.extend(range(start, end))
        self.nr_frames = new
        self._check_callbacks()

    def _take(self, count: int) -> list[int] | None:
        """get_free_entries(count) in exact mode: the refs taken, None for -ENOSPC."""
        extra = self.growth_needed(count)
        if extra:
            assert self.nr_frames is not None
            if self.max_frames is not None and self.nr_frames + extra > self.max_frames:
                return None
            self._grow(extra)
        popleft = self.free.popleft
        refs = [popleft() for _ in range(count)]
        st = self.st
        for ref in refs:
            st[ref] = CHAIN
        return refs

    # --- allocation

    def alloc(self, count: int, head: int) -> None:
        """gnttab_alloc_grant_references(count) returned `head` (or -errno)."""
        self.begin("gnt.alloc")
        if not self.exact:
            if head >= 0 and count >= 1 and self.free and self.free[0] == head:
                # The refs freed since the trace began sit, newest first, at
                # the front of the free list (both policies push frees on the
                # head), and an allocation takes `count` refs from the front:
                # the chain is the known prefix, its tail unknown if longer.
                # (Regression: a Linux 6.1 smoke capture claimed the second
                # ref of such a chain, which the model had left on its list.)
                refs = [self.free.popleft() for _ in range(min(count, len(self.free)))]
                nxt = self.chain_next
                for a, b in zip(refs, refs[1:]):
                    nxt[a] = b
                if len(refs) == count:
                    nxt[refs[-1]] = GNTTAB_LIST_END
                for ref in refs:
                    self.st[ref] = CHAIN
                self.chain_heads.add(head)
                return
            self._learn_alloc(head)
            if head >= 0:
                self.st[head] = CHAIN
                self.chain_heads.add(head)
            return
        if count < 1:
            raise Divergence("gnt.alloc", f"allocation of {count} refs; get_free_entries is "
                             "undefined for fewer than one", actual=count, state=self._state())
        refs = self._take(count)
        if refs is None:
            if head != -ENOSPC:
                raise Divergence("gnt.alloc", f"allocation of {count} returned {head}; growing by "
                                 f"{self.growth_needed(count)} frames would pass the maximum "
                                 f"{self.max_frames}, so it must fail with -ENOSPC",
                                 expected=-ENOSPC, actual=head, state=self._state())
            return
        first = refs[0]
        if head != first:
            # Undo so the report shows the list the guest should have used.
            self.free.extendleft(reversed(refs))
            for ref in refs:
                self.st[ref] = FREE
            raise Divergence("gnt.alloc", f"allocation of {count} returned head {head}; the "
                             f"{self.policy} free list yields {first}",
                             expected=first, actual=head, state=self._state(head, first))
        nxt = self.chain_next
        for a, b in zip(refs, refs[1:]):
            nxt[a] = b
        nxt[refs[-1]] = GNTTAB_LIST_END
        self.chain_heads.add(first)

    def alloc_one(self, ref: int) -> None:
        """gnttab_grant_foreign_access's get_free_entries(1) returned `ref`."""
        self.begin("gnt.grant")
        if not self.exact:
            self._learn_alloc(ref)
            if ref >= 0:
                self.st[ref] = HELD
            return
        refs = self._take(1)
        if refs is None:
            if ref != -ENOSPC:
                raise Divergence("gnt.alloc", f"grant_foreign_access took ref {ref}; the table is "
                                 "full at its maximum, so it must fail with -ENOSPC",
                                 expected=-ENOSPC, actual=ref, state=self._state())
            return
        first = refs[0]
        if ref != first:
            self.free.appendleft(first)
            self.st[first] = FREE
            raise Divergence("gnt.alloc", f"grant_foreign_access took ref {ref}; the {self.policy} "
                             f"free list yields {first}",
                             expected=first, actual=ref, state=self._state(ref, first))
        self.st[ref] = HELD

    def _learn_alloc(self, head: int) -> None:
        """Not exact: a ref handed out must not be one the model knows in use."""
        if head < 0:
            return
        if head >= len(self.st) or self.st[head] in (CHAIN, HELD, LEAKED, DEFERRED) or \
                self.table.flags[head] & GTF_type_mask:
            raise Divergence("gnt.alloc", f"allocation returned ref {head}, which is "
                             f"{self._describe(head)}",
                             actual=head, state=self._state(head))
        if self.free and self.free[0] == head:
            self.free.popleft()
        elif head in self.free:
            self.free.remove(head)

    def claim(self, head: int, ref: int) -> None:
        """gnttab_claim_grant_reference(&head) returned `ref` (or -ENOSPC)."""
        if self.due:
            self.begin("gnt.claim")
        heads = self.chain_heads
        if ref == head and head in heads:  # the common case, first
            heads.remove(head)
            nxt = self.chain_next.pop(head, GNTTAB_LIST_END)
            if nxt != GNTTAB_LIST_END:
                heads.add(nxt)
            self.st[head] = HELD
            return
        if head == GNTTAB_LIST_END:
            if ref != -ENOSPC:
                raise Divergence("gnt.claim", f"claim from an empty chain returned {ref}, not -ENOSPC",
                                 expected=-ENOSPC, actual=ref, state={"head": head})
            return
        if ref != head:
            raise Divergence("gnt.claim", f"claim from the chain at {head} returned {ref}; a claim "
                             "returns the chain's head",
                             expected=head, actual=ref, state=self._state(head))
        if not self.exact and self.st[head] in (UNKNOWN, CHAIN):
            # The chain's tail was never seen; the head the guest names is it.
            self.st[head] = HELD
            return
        raise Divergence("gnt.claim", f"claim names chain head {head}, which is {self._describe(head)}",
                         actual=head, state=self._state(head))

    def release(self, head: int, ref: int) -> None:
        """gnttab_release_grant_reference(&head, ref): `ref` back on a private chain."""
        self.begin("gnt.release")
        self._require_held(ref, "gnt.double-free", "released onto a chain")
        self.st[ref] = CHAIN
        self.chain_next[ref] = head
        self.chain_heads.discard(head)
        self.chain_heads.add(ref)

    # --- freeing

    def free_ref(self, ref: int) -> None:
        """gnttab_free_grant_reference(ref)."""
        self.begin("gnt.free")
        if ref < GNTTAB_NR_RESERVED_ENTRIES:
            if self.seed:
                raise Divergence("gnt.free-reserved", f"ref {ref} is reserved for the toolstack; "
                                 "the seed's put_free_entry would put it on the free list",
                                 actual=ref, state={"ref": ref})
            self._check_callbacks()  # linux-6.1 put_free_entry: ignored, callbacks checked
            return
        self._require_held(ref, "gnt.double-free", "freed")
        self._push_free(ref)
        self._check_callbacks()

    def free_chain(self, head: int) -> None:
        """gnttab_free_grant_references(head): the rest of a private chain."""
        self.begin("gnt.free_chain")
        if head == GNTTAB_LIST_END:
            if not self.seed:
                self._check_callbacks()  # linux-6.1 runs the check even for nothing
            return
        if head not in self.chain_heads:
            if not self.exact and self.st[head] in (UNKNOWN, CHAIN):
                self.st[head] = FREE
                self.free.appendleft(head)
                return
            raise Divergence("gnt.double-free", f"freeing the chain at {head}, which is "
                             f"{self._describe(head)}", actual=head, state=self._state(head))
        self.chain_heads.discard(head)
        refs = []
        nxt = self.chain_next
        ref = head
        while ref != GNTTAB_LIST_END:
            refs.append(ref)
            ref = nxt.pop(ref, GNTTAB_LIST_END)
        st = self.st
        for ref in refs:
            st[ref] = FREE
        if self.seed:
            self.free.extendleft(reversed(refs))  # spliced in front, in order
        else:
            self.free.extendleft(refs)  # each pushed in front: reversed
        self._check_callbacks()

    def _push_free(self, ref: int) -> None:
        self.st[ref] = FREE
        self.free.appendleft(ref)

    def _require_held(self, ref: int, rule: str, what: str) -> None:
        if ref >= len(self.st):
            raise Divergence(rule, f"ref {ref} {what} is outside the table", actual=ref,
                             state={"ref": ref, "nr_frames": self.nr_frames})
        state = self.st[ref]
        if state == HELD or (state == UNKNOWN and not self.exact):
            if self.table.flags[ref] & GTF_type_mask:
                raise Divergence("gnt.free-while-granted", f"ref {ref} {what} while still granted "
                                 f"to d{self.table.gdom[ref]}; its access was never ended",
                                 state=self._state(ref))
            return
        raise Divergence(rule, f"ref {ref} {what}, but it is {self._describe(ref)}",
                         actual=ref, state=self._state(ref))

    # --- granting and ending (the allocator's part; entries live in the table)

    def check_grantable(self, ref: int) -> None:
        """gnttab_grant_foreign_access_ref(ref): the caller must hold `ref`."""
        if self.due:
            self.begin("gnt.grant")
        if ref < GNTTAB_NR_RESERVED_ENTRIES:
            raise Divergence("gnt.grant-reserved", f"the guest granted entry {ref}; entries 0-7 "
                             "belong to the toolstack", actual=ref, state={"ref": ref})
        if ref >= len(self.st):
            raise Divergence("gnt.grant-unowned", f"ref {ref} is outside the table", actual=ref,
                             state={"ref": ref, "nr_frames": self.nr_frames})
        state = self.st[ref]
        if state == HELD:
            return
        if state == UNKNOWN and not self.exact:
            self.st[ref] = HELD
            return
        raise Divergence("gnt.grant-unowned", f"ref {ref} granted, but it is {self._describe(ref)}",
                         actual=ref, state=self._state(ref))

    def ended(self, ref: int, mode: str) -> None:
        """Access to `ref` ended (flags now 0); try/end modes give the ref back."""
        if mode != "ref":
            self.st[ref] = FREE
            self.free.appendleft(ref)
            if self.callbacks:
                self._check_callbacks()

    def end_failed(self, ref: int, mode: str) -> None:
        if mode == "end":
            if self.seed:
                self.st[ref] = LEAKED  # "leaking g.e. and page still in use!"
                self.leaked_count += 1
            else:
                self.st[ref] = DEFERRED  # gnttab_add_deferred
                self.deferred_count += 1

    def deferred_end(self, ref: int, ok: bool) -> None:
        """gnttab_handle_deferred retried `ref`."""
        self.begin("gnt.deferred_end")
        if self.seed:
            raise Divergence("gnt.deferred", "the seed's gnttab.c has no deferred ends; it leaks a "
                             "busy grant", actual=ref, state=self._state(ref))
        if ref >= len(self.st) or self.st[ref] != DEFERRED:
            if not self.exact and ref < len(self.st) and self.st[ref] == UNKNOWN:
                self.st[ref] = DEFERRED
                self.deferred_count += 1
            else:
                raise Divergence("gnt.deferred", f"deferred end of ref {ref}, which is "
                                 f"{self._describe(ref)}, not deferred",
                                 actual=ref, state=self._state(ref))
        if ok:
            self.deferred_count -= 1
            self._push_free(ref)
            self._check_callbacks()

    # --- free callbacks

    def request_callback(self, cb: int, count: int) -> None:
        """gnttab_request_free_callback: registered once, checked at once."""
        self.begin("gnt.cb_request")
        if any(c == cb for c, _ in self.callbacks):
            return  # "Check if the callback is already on the list"
        self.callbacks.insert(0, (cb, count))
        self._check_callbacks()

    def cancel_callback(self, cb: int) -> None:
        self.begin("gnt.cb_cancel")
        self.callbacks = [(c, n) for c, n in self.callbacks if c != cb]

    def callback_fired(self, cb: int) -> None:
        """A callback ran; it must be one the last free or growth satisfied."""
        if self.due:
            first = self.due[0]
            if cb != first:
                raise Divergence("gnt.callback-missed", f"free callback {cb:#x} ran before {first:#x}; "
                                 "do_free_callbacks runs them in list order",
                                 expected=first, actual=cb, state=self._state())
            del self.due[0]
            return
        pending = [n for c, n in self.callbacks if c == cb]
        if not pending:
            raise Divergence("gnt.callback-early", f"free callback {cb:#x} ran but was not requested",
                             actual=cb, state=self._state())
        if self.exact:
            raise Divergence("gnt.callback-early", f"free callback {cb:#x} ran with {len(self.free)} "
                             f"free entries; it asked for {pending[0]}",
                             expected=pending[0], actual=len(self.free), state=self._state())
        self.callbacks = [(c, n) for c, n in self.callbacks if c != cb]

    def _check_callbacks(self) -> None:
        """check_free_callbacks: the ones satisfied now must run next."""
        if not self.callbacks or not self.exact:
            return
        free = len(self.free)
        keep = []
        for cb, count in self.callbacks:
            if free >= count:
                self.due.append(cb)
            else:
                keep.append((cb, count))
        # do_free_callbacks re-pushes the ones it keeps onto a fresh list
        # head, so their order reverses (it decides who runs first later).
        keep.reverse()
        self.callbacks = keep

    def begin(self, what: str) -> None:
        """Every allocator call starts here: callbacks due must have run by now."""
        if self.due:
            cb = self.due[0]
            self.due.clear()
            raise Divergence("gnt.callback-missed", f"free callback {cb:#x} should have run when the "
                             f"free count reached its request; {what} came first",
                             state=self._state())

    # --- reporting

    def _describe(self, ref: int) -> str:
        if ref < GNTTAB_NR_RESERVED_ENTRIES:
            return "reserved for the toolstack"
        if ref >= len(self.st):
            return "outside the table"
        state = STATE_NAMES[self.st[ref]]
        if self.table.flags[ref] & GTF_type_mask:
            state += f", granted to d{self.table.gdom[ref]}"
        return state

    def _state(self, *refs: int) -> dict:
        state: dict = {
            "policy": self.policy,
            "exact": self.exact,
            "nr_frames": self.nr_frames,
            "free_count": len(self.free) if self.exact else None,
            "free_list_head": list(self.free)[:8],
        }
        if self.callbacks:
            state["pending_callbacks"] = [{"cb": f"{c:#x}", "count": n} for c, n in self.callbacks]
        for ref in refs:
            if ref is not None and ref >= 0:
                state[f"ref {ref}"] = self._describe(ref)
        return state

    def _refs_agree(self, end: int, free_set: set[int]) -> bool:
        """True when the per-ref checks of invariants() would find nothing,
        given a free list inside the table; answered with byte and tuple
        operations instead of a Python step per ref (tests ask after every
        step of thousands)."""
        states = bytes(self.st[GNTTAB_NR_RESERVED_ENTRIES:end])
        if UNKNOWN in states or states.count(FREE) != len(free_set):
            return False
        flags = self.table.flags
        if free_set:
            refs = tuple(free_set)
            if len(refs) == 1:
                return self.st[refs[0]] == FREE and not flags[refs[0]] & GTF_type_mask
            if itemgetter(*refs)(self.st).count(FREE) != len(refs):      # every ref on the list is FREE ...
                return False
            if any(f & GTF_type_mask for f in set(itemgetter(*refs)(flags))):   # ... and none is granted
                return False
        for state in (LEAKED, DEFERRED):        # few: each must still be granted
            i = states.find(state)
            while i != -1:
                if not flags[GNTTAB_NR_RESERVED_ENTRIES + i] & GTF_type_mask:
                    return False
                i = states.find(state, i + 1)
        return True

    def invariants(self) -> list[str]:
        """What must hold after every step; empty when all hold (tests call this)."""
        problems = []
        if not self.exact:
            return problems
        end = (self.nr_frames or 0) * GREFS_PER_FRAME
        free_set = set(self.free)
        if len(free_set) != len(self.free):
            problems.append("a ref is twice on the free list")
        in_table = not free_set or (min(free_set) >= GNTTAB_NR_RESERVED_ENTRIES and max(free_set) < end)
        if not in_table:
            problems.append("a reserved or out-of-table ref is on the free list")
        for ref in [] if in_table and self._refs_agree(end, free_set) else range(GNTTAB_NR_RESERVED_ENTRIES, end):
            state = self.st[ref]
            if (state == FREE) != (ref in free_set):
                problems.append(f"ref {ref} state {STATE_NAMES[state]} disagrees with the free list")
            if state == UNKNOWN:
                problems.append(f"ref {ref} unknown in an exact allocator")
            if state == FREE and self.table.flags[ref] & GTF_type_mask:
                problems.append(f"ref {ref} is free but granted")
            if state in (LEAKED, DEFERRED) and not self.table.flags[ref] & GTF_type_mask:
                problems.append(f"ref {ref} is {STATE_NAMES[state]} but not granted")
        chained = set()
        chain_problems = len(problems)
        for head in self.chain_heads:
            ref = head
            while ref != GNTTAB_LIST_END:
                if ref in chained:
                    problems.append(f"ref {ref} is in two chains")
                    break
                chained.add(ref)
                if self.st[ref] != CHAIN:
                    problems.append(f"ref {ref} linked in a chain but {STATE_NAMES[self.st[ref]]}")
                ref = self.chain_next.get(ref, GNTTAB_LIST_END)
        if not problems[chain_problems:] and (not chained or max(chained) < end):
            # Every chained ref is marked and inside the table: a mark in no chain is one mark too many.
            orphan = self.st[:end].count(CHAIN) > len(chained)
        else:
            orphan = any(self.st[ref] == CHAIN and ref not in chained for ref in range(end))
        if orphan:
            problems.append("a ref marked as chained is in no chain")
        free = len(self.free)
        if any(free >= count for _, count in self.callbacks):
            problems.append("a callback is pending although enough entries are free")
        return problems
