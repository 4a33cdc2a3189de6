#!/usr/bin/env python3
"""Is every byte that leaves dom0 and the guest the byte that was made there?

    .venv/bin/python benchmarks/bench_transport.py [--gib 1] [--host FILE]
        [--phases idle,paused,io] [--blob-mib 32] [--guest-blob-mib 2]

Boots the stack with the smoke scenario's guest (blkfront loaded on a
blkback and a qdisk disk), then for each phase moves blobs of random bytes
whose sha256 was computed where they were made:

- dom0 -> host over SSH: a blob in dom0's tmpfs, `cat` on a fresh channel;
- guest -> host through the guest-agent relay (virtio-serial -> qemu-xen ->
  guestctl.py in dom0 -> SSH): a blob in the guest's tmpfs.

Phases: `idle` (guest running, nothing to do), `paused` (`xl pause`; the
relay is skipped), `io` (xr-io writing and verifying on every guest disk in
a loop the whole time).  Each transfer is hashed on the host; a wrong hash,
a truncated blob or a broken SSH stream ("Mismatched MAC") is a corruption.
A broken stream is reconnected by the harness itself (SshSession) with the
pinned key; its reconnects are counted.  Where a
good copy is at hand, the damaged byte ranges are printed (offsets within
the blob and within the 4 KiB page), the evidence an upstream report needs.

This is also the reproducer for docs/dom0-corruption.md: `--host` with the
CPU model under suspicion.  A benchmark: it asserts nothing.  Last line:
`transport_bytes=<n> corruptions=<n> reconnects=<n>`.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from harness import config, runner, stack  # noqa: E402
from harness.errors import CorruptionError, XenrigError  # noqa: E402
from harness.stages import ConsoleProgress, Timeline  # noqa: E402

DOM0_BLOB = "/dev/shm/xr-transport.bin"
GUEST_BLOB = "/tmp/xr-transport.bin"
IO_PIDFILE = "/tmp/xr-transport-io.pid"


class Tally:
    def __init__(self):
        self.bytes = 0
        self.transfers = 0
        self.corruptions = 0
        self.reconnects = 0
        self.damage: list[str] = []


def damaged_ranges(good: bytes, bad: bytes, limit: int = 12) -> str:
    """'[start,end)' byte runs where `bad` differs from `good`, with their
    offset inside the 4 KiB page: the shape of the damage."""
    if len(good) != len(bad):
        return f"length {len(bad)} instead of {len(good)}"
    runs, start = [], None
    step = 64
    for off in range(0, len(good), step):
        if good[off:off + step] != bad[off:off + step]:
            if start is None:
                start = off
        elif start is not None:
            runs.append((start, off))
            start = None
    if start is not None:
        runs.append((start, len(good)))
    exact = []
    for s, e in runs[:limit]:
        while s < e and good[s] == bad[s]:
            s += 1
        while e > s and good[e - 1] == bad[e - 1]:
            e -= 1
        exact.append(f"[{s},{e}) page+{s % 4096} len {e - s}")
    more = f" ... {len(runs) - limit} more" if len(runs) > limit else ""
    return f"{len(runs)} runs: " + ", ".join(exact) + more


def judge(tally: Tally, path: str, data: bytes, want: str, good: dict) -> None:
    """Count a transfer whose hash is not the source's; keep the first good
    copy of each path to describe later damage against."""
    if hashlib.sha256(data).hexdigest() == want:
        good.setdefault(path, data)
        return
    tally.corruptions += 1
    ref = good.get(path)
    tally.damage.append(f"{path} transfer {tally.transfers}: sha256 wrong, "
                        + (damaged_ranges(ref, data) if ref and data else f"{len(data)} bytes, no good copy to compare"))


def fetch_dom0(xen, tally: Tally, want: str, good: dict) -> None:
    tally.transfers += 1
    try:
        res = xen.ssh.run(f"cat {DOM0_BLOB}", timeout_s=300)
        data = res.stdout_bytes
    except XenrigError as exc:
        tally.corruptions += 1
        tally.damage.append(f"dom0 transfer {tally.transfers}: SSH stream broke: {str(exc)[:160]}")
        return
    tally.bytes += len(data)
    judge(tally, "dom0", data, want, good)


def fetch_guest(xen, g, tally: Tally, want: str, good: dict) -> None:
    tally.transfers += 1
    try:
        res = g.run(f"base64 {GUEST_BLOB}", timeout_s=300)
    except CorruptionError as exc:      # the agent's own digest caught it
        tally.corruptions += 1
        tally.damage.append(f"guest transfer {tally.transfers}: {str(exc)[:200]}")
        return
    except XenrigError as exc:
        tally.corruptions += 1
        tally.damage.append(f"guest transfer {tally.transfers}: relay broke: {str(exc)[:160]}")
        return
    try:
        data = base64.b64decode("".join(res.stdout.split()), validate=True)
    except (binascii.Error, ValueError):
        data = b""
    tally.bytes += len(res.stdout_bytes) or len(res.stdout)
    judge(tally, "guest", data, want, good)


def start_io(g, vdevs: list[str]) -> None:
    loop = "; ".join(f"xr-io /dev/{v} rw 131072 256 16 0" for v in vdevs)
    g.run(f"setsid sh -c 'while :; do {loop}; done' </dev/null >/dev/null 2>&1 & echo $! > {IO_PIDFILE}",
          check=True, timeout_s=60, what="starting the I/O loop")


def stop_io(g) -> None:
    g.run(f"kill $(cat {IO_PIDFILE}) 2>/dev/null; killall xr-io 2>/dev/null; true", timeout_s=60)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gib", type=float, default=1.0, help="bytes to move in all, in GiB, spread over the phases")
    ap.add_argument("--host", type=Path, help="host config (default: the smoke scenario's)")
    ap.add_argument("--scenario", type=Path, default=REPO / "configs" / "smoke.yaml")
    ap.add_argument("--phases", default="idle,paused,io")
    ap.add_argument("--blob-mib", type=int, default=32)
    ap.add_argument("--guest-blob-mib", type=int, default=2)
    args = ap.parse_args()

    scenario, host_cfg = runner.load(args.scenario, args.host)
    phases = [p for p in args.phases.split(",") if p]
    timeline = Timeline([ConsoleProgress()])
    run_dir = runner.new_run_dir("bench-transport")
    built_images, built_modules = runner.prepare(scenario, timeline, run_dir)
    per_phase = int(args.gib * (1 << 30) / len(phases))
    totals = Tally()
    started = time.monotonic()
    with stack.xen_host(host_cfg, timeline, run_dir, built=built_images) as xen:
        with runner.guest_with_modules(xen, scenario, built_modules, timeline, run_dir, {}) as (g, _):
            size = args.blob_mib << 20
            want_dom0 = xen.run(f"head -c {size} /dev/urandom > {DOM0_BLOB} && sha256sum {DOM0_BLOB}",
                                check=True, timeout_s=120).stdout.split()[0]
            gsize = args.guest_blob_mib << 20
            want_guest = g.run(f"head -c {gsize} /dev/urandom > {GUEST_BLOB} && sha256sum {GUEST_BLOB}",
                               check=True, timeout_s=120).stdout.split()[0]
            good: dict[str, bytes] = {}
            vdevs = [d.vdev for d in scenario.guest.disks]
            for phase in phases:
                tally = Tally()
                t0, reconnects_before = time.monotonic(), xen.ssh.reconnects
                if phase == "paused":
                    xen.xl(f"pause {g.name}", timeout_s=60)
                elif phase == "io":
                    start_io(g, vdevs)
                try:
                    while tally.bytes < per_phase:
                        fetch_dom0(xen, tally, want_dom0, good)
                        if phase != "paused":
                            fetch_guest(xen, g, tally, want_guest, good)
                finally:
                    if phase == "paused":
                        xen.xl(f"unpause {g.name}", timeout_s=60)
                    elif phase == "io":
                        stop_io(g)
                dt = time.monotonic() - t0
                tally.reconnects = xen.ssh.reconnects - reconnects_before
                print(f"phase {phase}: {tally.transfers} transfers, {tally.bytes / 1e6:.0f} MB in {dt:.0f}s, "
                      f"corruptions={tally.corruptions} reconnects={tally.reconnects}", flush=True)
                for line in tally.damage:
                    print(f"  {line}", flush=True)
                totals.bytes += tally.bytes
                totals.corruptions += tally.corruptions
                totals.reconnects += tally.reconnects
            xen.run(f"rm -f {DOM0_BLOB}", timeout_s=30)
    print(f"host {host_cfg.name}: {totals.bytes / 1e9:.2f} GB in {time.monotonic() - started:.0f}s, run folder {run_dir}")
    print(f"transport_bytes={totals.bytes} corruptions={totals.corruptions} reconnects={totals.reconnects}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
