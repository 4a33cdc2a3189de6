#!/usr/bin/env python3
"""xenrig's memory canary in dom0: does this stack damage dom0's memory?

    canary.py start --state DIR [--mib N] [--max-s S]   fork a watcher, return at once
    canary.py stop --state DIR              stop it; print its findings (JSON)

The watcher keeps N MiB of a known pattern resident and, every second,
also fills a fresh buffer (memory the kernel has just handed out again: the
damage seen on these stacks hit pages in reuse, docs/dom0-corruption.md),
then compares both with the pattern.  Each damaged 64-byte block is counted
and the first few are described.  Uploaded by the harness; standard library
only, so it runs on a real Xen host unchanged.
"""

import argparse
import hashlib
import json
import os
import signal
import sys
import time

BLOCK = 64


def pattern(mib: int) -> bytes:
    seed = hashlib.sha256(b"xenrig-canary").digest()
    unit = b"".join(hashlib.sha256(seed + i.to_bytes(4, "little")).digest() for i in range(128))  # 4 KiB
    return unit * (mib * 256)


def compare(want: bytes, got, where: str, found: list) -> int:
    if want == got:
        return 0
    bad = 0
    for off in range(0, len(want), BLOCK):
        if want[off:off + BLOCK] != got[off:off + BLOCK]:
            bad += 1
            if len(found) < 20:
                found.append({"where": where, "offset": off, "page_offset": off % 4096,
                              "got": bytes(got[off:off + BLOCK]).hex()})
    return bad


def watch(state: str, mib: int, max_s: float) -> None:
    want = pattern(mib)
    resident = bytearray(want)
    status = {"pid": os.getpid(), "mib": mib, "checks": 0, "damaged_blocks": 0, "found": [], "started": time.time()}
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    fresh_want = want[: 4 << 20]
    # A harness that dies without stopping us must not leave us running on a
    # real host for ever: give up after max_s.
    deadline = time.monotonic() + max_s
    while not stop and time.monotonic() < deadline:
        fresh = bytearray(fresh_want)           # new pages, filled now
        time.sleep(1.0)
        status["damaged_blocks"] += compare(fresh_want, fresh, "fresh", status["found"])
        damaged = compare(want, resident, "resident", status["found"])
        if damaged:
            status["damaged_blocks"] += damaged
            resident[:] = want                  # count each damage once, not every second after
        status["checks"] += 1
        del fresh
        tmp = os.path.join(state, "status.json.tmp")
        with open(tmp, "w") as fh:
            json.dump(status, fh)
        os.replace(tmp, os.path.join(state, "status.json"))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("action", choices=["start", "stop"])
    ap.add_argument("--state", required=True)
    ap.add_argument("--mib", type=int, default=32)
    ap.add_argument("--max-s", type=float, default=6 * 3600, help="the watcher stops by itself after this long")
    args = ap.parse_args()
    os.makedirs(args.state, exist_ok=True)
    pidfile = os.path.join(args.state, "pid")
    if args.action == "start":
        pid = os.fork()
        if pid == 0:
            os.setsid()
            devnull = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(devnull, fd)
            try:
                watch(args.state, args.mib, args.max_s)
            finally:
                os._exit(0)
        with open(pidfile, "w") as fh:
            fh.write(str(pid))
        print(json.dumps({"pid": pid}))
        return 0
    try:
        pid = int(open(pidfile).read())
    except (OSError, ValueError):
        print(json.dumps({"error": "no canary was running"}))
        return 1
    alive = True
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        alive = False
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        time.sleep(0.2)
    try:
        status = json.load(open(os.path.join(args.state, "status.json")))
    except (OSError, ValueError):
        status = {"checks": 0, "damaged_blocks": 0, "found": [], "error": "the canary wrote no status"}
    status["alive_at_stop"] = alive
    print(json.dumps(status))
    return 0


if __name__ == "__main__":
    sys.exit(main())
