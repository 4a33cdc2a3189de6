"""A line-by-line transliteration of the two C allocators, for property tests.

It keeps the C data structures (the gnttab_list link array, free head,
free count, Linux 6.1's gnttab_last_free) so the model's deque-based
allocator can be compared with the code it claims to follow.  It records
the events a capture would see, in the order the C code produces them.

seed: the seed document's gnttab.c (get_free_entries, gnttab_expand,
grow_gnttab_list, put_free_entry) and linux-2.6.18-xen gnttab.c for
gnttab_free_grant_references.  linux-6.1: drivers/xen/grant-table.c.
"""

from __future__ import annotations

END = 0xFFFFFFFF
ENOSPC = 28
RESERVED = 8
PER_FRAME = 512


class CAllocator:
    def __init__(self, policy: str, max_frames: int, emit):
        self.policy = policy
        self.max_frames = max_frames
        self.emit = emit  # emit(kind, **fields)
        self.entry: dict[int, int] = {}
        self.nr_frames = 1
        n = PER_FRAME
        for i in range(RESERVED, n - 1):
            self.entry[i] = i + 1
        self.entry[n - 1] = END
        self.free_head = RESERVED
        self.free_count = n - RESERVED
        self.last_free = n - 1  # linux-6.1 gnttab_last_free
        self.callbacks: list[tuple[int, int]] = []  # list head first

    # --- callbacks (do_free_callbacks, identical in both)

    def check_free_callbacks(self) -> None:
        if not self.callbacks:
            return
        new: list[tuple[int, int]] = []
        for cb, count in self.callbacks:
            if self.free_count >= count:
                self.emit("gnt.cb_fire", cb=cb)
            else:
                new.insert(0, (cb, count))
        self.callbacks = new

    def request_free_callback(self, cb: int, count: int) -> None:
        if any(c == cb for c, _ in self.callbacks):
            return
        self.callbacks.insert(0, (cb, count))
        self.check_free_callbacks()

    # --- growth

    def expand(self, req_entries: int) -> int:
        extra = (req_entries + PER_FRAME - 1) // PER_FRAME
        if self.nr_frames + extra > self.max_frames:
            return -ENOSPC
        old = self.nr_frames
        self.emit("gnt.expand", old=old, new=old + extra)
        start, end = old * PER_FRAME, (old + extra) * PER_FRAME
        if self.policy == "seed":
            for i in range(start, end - 1):
                self.entry[i] = i + 1
            self.entry[end - 1] = self.free_head
            self.free_head = start
            self.free_count += end - start
        else:  # gnttab_set_free
            for i in range(start, end - 1):
                self.entry[i] = i + 1
            self.entry[end - 1] = END
            if not self.free_count:
                self.free_head = start
            else:
                self.entry[self.last_free] = start
            self.free_count += end - start
            self.last_free = end - 1
        self.nr_frames = old + extra
        self.check_free_callbacks()
        return 0

    def get_free_entries(self, count: int) -> int:
        if self.free_count < count:
            rc = self.expand(count - self.free_count)
            if rc < 0:
                return rc
        ref = head = self.free_head
        self.free_count -= count
        for _ in range(count - 1):
            head = self.entry[head]
        self.free_head = self.entry[head]
        self.entry[head] = END
        if self.policy != "seed" and not self.free_count:
            self.last_free = END
        return ref

    # --- freeing

    def put_free_entry(self, ref: int) -> None:
        self._put_locked(ref)
        self.check_free_callbacks()

    def _put_locked(self, ref: int) -> None:
        if self.policy != "seed" and ref < RESERVED:
            return
        self.entry[ref] = self.free_head
        self.free_head = ref
        if self.policy != "seed" and not self.free_count:
            self.last_free = ref
        self.free_count += 1

    def free_grant_references(self, head: int) -> None:
        if self.policy == "seed":
            if head == END:
                return
            ref, count = head, 1
            while self.entry[ref] != END:
                ref = self.entry[ref]
                count += 1
            self.entry[ref] = self.free_head
            self.free_head = head
            self.free_count += count
        else:
            while head != END:
                nxt = self.entry[head]
                self._put_locked(head)
                head = nxt
        self.check_free_callbacks()

    def claim(self, head: int) -> tuple[int, int]:
        """gnttab_claim_grant_reference: (ref, new head)."""
        if head == END:
            return -ENOSPC, head
        return head, self.entry[head]

    # --- inspection

    def free_list(self) -> list[int]:
        out, ref = [], self.free_head
        for _ in range(self.free_count):
            out.append(ref)
            ref = self.entry[ref]
        return out

    def chain(self, head: int) -> list[int]:
        out = []
        while head != END:
            out.append(head)
            head = self.entry[head]
        return out
