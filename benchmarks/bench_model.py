"""Benchmark: how fast the checker reads and judges a large blkif + grant trace.

Generates a synthetic trace of Linux 6.1 blkfront traffic on one ring
(requests of 1-11 segments and 32-segment indirect ones, up to 8 in flight,
answered in any order, every grant claimed, granted, and ended after its
response, with a Xen dump at quiet points), writes it as JSONL, then times
(a) decoding only and (b) decoding plus the full check.  The last line is
`check_eps=<n> parse_eps=<n> ratio=<b/a>`.

This is a measurement, not a test: nothing here asserts a figure.

    python benchmarks/bench_model.py [--events N] [--keep PATH] [--seed S]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from collections import deque
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.check import check_file  # noqa: E402
from harness.trace.io import TraceReader, gc_paused  # noqa: E402

GUEST, BACKEND = 1, 0
RING = "xvda/0"
LIST_END = 0xFFFFFFFF
RING_SIZE = 32
MAX_IN_FLIGHT = 8
QUIET_EVERY = 200_000  # events between quiet points (drain + Xen dump)


class Generator:
    """Plays blkfront with Linux 6.1's free list, writing JSONL lines."""

    def __init__(self, out, seed: int):
        self.out = out
        self.rng = random.Random(seed)
        self.seq = 0
        self.buf: list[bytes] = []
        # linux-6.1 after gnttab_init with 4 frames grown: refs handed out from
        # the head, freed refs pushed back in front.
        self.free = deque(range(8, 512))
        self.nr_frames = 1
        self.ids = list(range(RING_SIZE))
        self.in_flight: dict[int, list[int]] = {}  # id -> grefs
        self.backend_done: list[int] = []
        self.req_prod = self.req_prod_pvt = self.rsp_cons = 0
        self.req_event = 1
        self.since_quiet = 0

    def line(self, kind: bytes, body: bytes, dom: int = GUEST, src: bytes = b"guest") -> None:
        self.seq += 1
        self.buf.append(b'{"seq":%d,"t_ns":%d,"dom":%d,"src":"%s","kind":"%s",%s}\n'
                        % (self.seq, self.seq * 250, dom, src, kind, body))
        if len(self.buf) >= 4096:
            self.out.write(b"".join(self.buf))
            self.buf.clear()

    def start(self) -> None:
        self.out.write(b'{"v":1,"kind":"header","policy":"linux-6.1","backend":"blkback",'
                       b'"guest":1,"backend_dom":0,"max_grant_frames":64,'
                       b'"note":"synthetic: benchmarks/bench_model.py"}\n')
        self.line(b"gnt.setup", b'"nr_frames":1,"max_frames":64')
        ring_ref = self.take(1)[0]
        self.line(b"gnt.grant", b'"ref":%d,"to":0,"frame":%d' % (ring_ref, 0x10000 + ring_ref))
        self.line(b"ring.setup", b'"ring":"%s","grefs":[%d],"backend":0,"nr_ents":32'
                  % (RING.encode(), ring_ref))
        self.line(b"blkif.connect", b'"ring":"%s","persistent":false,"max_indirect":32' % RING.encode())
        self.ring_ref = ring_ref

    def take(self, count: int) -> list[int]:
        """gnttab_alloc_grant_references + claims, as linux-6.1 does them."""
        if len(self.free) < count:
            extra = -(-(count - len(self.free)) // 512)
            start = self.nr_frames * 512
            self.free.extend(range(start, start + extra * 512))
            head = self.free[0]
            self.line(b"gnt.alloc", b'"count":%d,"head":%d' % (count, head))
            self.line(b"gnt.expand", b'"old":%d,"new":%d' % (self.nr_frames, self.nr_frames + extra))
            self.nr_frames += extra
        else:
            self.line(b"gnt.alloc", b'"count":%d,"head":%d' % (count, self.free[0]))
        refs = [self.free.popleft() for _ in range(count)]
        for ref in refs:
            self.line(b"gnt.claim", b'"head":%d,"ref":%d' % (ref, ref))
        return refs

    def request(self) -> None:
        rid = self.ids.pop(0)
        rng = self.rng
        indirect = rng.random() < 0.3
        nseg = 32 if indirect else rng.randint(1, 11)
        refs = self.take(nseg + (1 if indirect else 0))
        op = rng.randint(0, 1)
        for ref in refs:
            self.line(b"gnt.grant", b'"ref":%d,"to":0,"frame":%d' % (ref, 0x40000 + ref))
        self.line(b"gnt.free_chain", b'"head":%d' % LIST_END)
        segs = b",".join(b"[%d,0,7]" % ref for ref in refs[:nseg])
        ring = RING.encode()
        if indirect:
            self.line(b"blkif.req", b'"ring":"%s","idx":%d,"id":%d,"op":6,"indirect_op":%d,'
                      b'"nr_segments":32,"indirect_grefs":[%d],"sector":%d,"segs":[%s]'
                      % (ring, self.req_prod_pvt, rid, op, refs[-1], self.seq * 8, segs))
        else:
            self.line(b"blkif.req", b'"ring":"%s","idx":%d,"id":%d,"op":%d,"sector":%d,"segs":[%s]'
                      % (ring, self.req_prod_pvt, rid, op, self.seq * 8, segs))
        self.req_prod_pvt = (self.req_prod_pvt + 1) & 0xFFFFFFFF
        self.in_flight[rid] = (op, refs)

    def push(self) -> None:
        old, new = self.req_prod, self.req_prod_pvt
        notify = ((new - self.req_event) & 0xFFFFFFFF) < ((new - old) & 0xFFFFFFFF)
        self.line(b"ring.push", b'"ring":"%s","old":%d,"new":%d,"notify":%s,"req_event":%d'
                  % (RING.encode(), old, new, b"true" if notify else b"false", self.req_event))
        self.req_prod = new
        self.req_event = (new + 1) & 0xFFFFFFFF  # the backend caught up and asked again
        self.backend_done.extend(rid for rid in self.in_flight if rid not in self.backend_done)
        self.rng.shuffle(self.backend_done)

    def respond(self) -> None:
        rid = self.backend_done.pop()
        op, refs = self.in_flight.pop(rid)
        self.line(b"blkif.rsp", b'"ring":"%s","idx":%d,"id":%d,"op":%d,"status":0'
                  % (RING.encode(), self.rsp_cons, rid, op))
        self.rsp_cons = (self.rsp_cons + 1) & 0xFFFFFFFF
        for ref in refs:
            self.line(b"gnt.end", b'"ref":%d,"ok":true' % ref)
            self.free.appendleft(ref)
        self.ids.insert(0, rid)

    def quiet_point(self) -> None:
        while self.backend_done:
            self.respond()
        self.line(b"xen.gnttab", b'"rdom":1,"nr_frames":%d,"max_frames":64,"entries":[{"ref":%d,'
                  b'"mapdom":0,"pin":1,"gdom":0,"frame":%d,"flags":25}]'
                  % (self.nr_frames, self.ring_ref, 0x10000 + self.ring_ref), dom=0, src=b"xen")

    def run(self, events: int) -> int:
        self.start()
        rng = self.rng
        next_quiet = QUIET_EVERY
        while self.seq < events:
            if self.seq >= next_quiet and not self.in_flight:
                self.quiet_point()
                next_quiet = self.seq + QUIET_EVERY
            elif len(self.in_flight) < MAX_IN_FLIGHT and rng.random() < 0.55 and self.seq < next_quiet:
                self.request()
                if rng.random() < 0.5:
                    self.push()
            elif self.req_prod != self.req_prod_pvt:
                self.push()
            elif self.backend_done:
                self.respond()
            elif self.in_flight:
                self.push()
            else:
                self.request()
                self.push()
        while self.req_prod != self.req_prod_pvt or self.in_flight:
            if self.req_prod != self.req_prod_pvt:
                self.push()
            self.respond()
        self.out.write(b"".join(self.buf))
        self.buf.clear()
        return self.seq


def parse_only(path: str) -> int:
    """Exactly the reading check_file does (same reader, same GC pause), nothing else."""
    count = 0
    with TraceReader(path) as reader, gc_paused():
        for block in reader.blocks():
            count += len(block.events)
    return count


def best_of(repeat: int, run):
    """Fastest of `repeat` runs: the machine is shared, the minimum is the least disturbed."""
    best = None
    for _ in range(max(1, repeat)):
        started = time.perf_counter()
        result = run()
        elapsed = time.perf_counter() - started
        if best is None or elapsed < best[0]:
            best = (elapsed, result)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=10_000_000, help="events to generate (default 10M)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", metavar="PATH", help="write the trace here and keep it")
    parser.add_argument("--repeat", type=int, default=3,
                        help="time each measurement this many times and keep the fastest (default 3)")
    args = parser.parse_args()

    if args.keep:
        path = args.keep
    else:
        fd, path = tempfile.mkstemp(prefix="xenrig-bench-", suffix=".jsonl")
        os.close(fd)
    try:
        started = time.perf_counter()
        with open(path, "wb") as out:
            count = Generator(out, args.seed).run(args.events)
        size = os.path.getsize(path)
        print(f"generated {count} events, {size / 1e6:.0f} MB in {time.perf_counter() - started:.1f} s")

        parse_s, parsed = best_of(args.repeat, lambda: parse_only(path))
        parse_eps = parsed / parse_s
        print(f"(a) parse only:    {parsed} events in {parse_s:.2f} s = {parse_eps:,.0f} events/s")

        check_s, verdict = best_of(args.repeat, lambda: check_file(path))
        check_eps = verdict.events / check_s
        print(f"(b) parse + check: {verdict.events} events in {check_s:.2f} s = {check_eps:,.0f} events/s"
              f" -> {verdict.outcome}")
        if verdict.outcome != "PASS":
            print(verdict.summary())
        print(f"check_eps={check_eps:.0f} parse_eps={parse_eps:.0f} ratio={check_eps / parse_eps:.3f}")
        return 0 if verdict.outcome == "PASS" else 1
    finally:
        if not args.keep:
            os.unlink(path)


if __name__ == "__main__":
    sys.exit(main())
