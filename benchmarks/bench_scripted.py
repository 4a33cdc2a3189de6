#!/usr/bin/env python3
"""What xenrig's scripted backend (harness/remote/xrback.py, Python in dom0)
delivers against the kernel's blkback, in the same run on the same guest.

    .venv/bin/python benchmarks/bench_scripted.py [--mib 16] [--rounds 3]

Starts the stack and a guest as configs/scenarios/blkfront-io.yaml does
(blkfront with persistent grants and indirect descriptors; xvda on
blkback), attaches xvdb on the scripted backend with no lies, then
alternates blkback and scripted rounds of the same O_DIRECT workloads so
drift hits both alike: 128 KiB requests 32 in flight, and 4 KiB requests 8
in flight, each written then read back and checked by xr-io.  Prints each
round and, as its last line, `scripted_ratio=<scripted/blkback, 128 KiB>
scripted_ratio_4k=<...> blkback_mib_s=<...> scripted_mib_s=<...>`.  A
benchmark: it asserts nothing.
"""

from __future__ import annotations

import argparse
import re
import shlex
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from harness import config, runner, stack  # noqa: E402
from harness.config import DiskConfig  # noqa: E402
from harness.errors import XenrigError  # noqa: E402
from harness.guest import modules as guest_modules  # noqa: E402
from harness.host import scripted_backend  # noqa: E402
from harness.stages import ConsoleProgress, Timeline  # noqa: E402

WORKLOADS = {"128k": (131072, 32), "4k": (4096, 8)}


def rate(guest, dev: str, mib: int, bs: int, depth: int) -> float:
    count = max(depth, mib * 1048576 // bs)
    res = guest.run(f"xr-io /dev/{dev} rw {bs} {count} {depth} 2048", timeout_s=1800, check=True,
                    what=f"xr-io on {dev}")
    m = re.search(r"bytes=(\d+) seconds=([0-9.]+).* errors=0 mismatches=0", res.stdout)
    if not m:
        raise SystemExit(f"bench_scripted: xr-io on {dev} did not pass: {res.stdout[-300:]}")
    return int(m.group(1)) / 1048576 / max(float(m.group(2)), 1e-3)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=16, help="MiB written and read back per round and workload")
    ap.add_argument("--rounds", type=int, default=3, help="blkback/scripted pairs per workload")
    args = ap.parse_args()

    scenario = config.load_scenario(REPO / "configs" / "scenarios" / "blkfront-io.yaml")
    scenario.steps = []
    size = max(64, args.mib + 8)
    scenario.guest.disks[0].size_mib = size
    host_cfg = config.load_host(scenario.host)
    timeline = Timeline([ConsoleProgress()])
    run_dir = runner.new_run_dir("bench-scripted")
    _images, modules = runner.prepare(scenario, timeline, run_dir)
    got: dict[str, dict[str, list[float]]] = {w: {"blkback": [], "scripted": []} for w in WORKLOADS}
    try:
        with stack.xen_host(host_cfg, timeline, run_dir, built=_images) as xen:
            with runner.guest_with_modules(xen, scenario, modules, timeline, run_dir, {}, capture=False) as (g, _):
                image = g.paths.vbd_image(DiskConfig("xvdb", "phy", size))
                xen.run(f"truncate -s {size}M {shlex.quote(image)}", check=True, timeout_s=30, what="the scripted disk's image")
                vbd = scripted_backend.start(xen, domid=g.domid, vdev="xvdb", image=image, script={},
                                             run_dir=run_dir)
                try:
                    guest_modules.wait_disks(g, ["xvdb"], 120, "attach xvdb (scripted)")
                    for i in range(args.rounds):
                        for name, (bs, depth) in WORKLOADS.items():
                            for backend, dev in (("blkback", "xvda"), ("scripted", "xvdb")):
                                r = rate(g, dev, args.mib, bs, depth)
                                got[name][backend].append(r)
                                print(f"round {i + 1} {name} {backend}: {r:.2f} MiB/s", flush=True)
                finally:
                    scripted_backend.fetch_log(xen, vbd, run_dir)
                    scripted_backend.kill(xen, vbd)
    except XenrigError as exc:
        print(f"bench_scripted: no figures: {exc.message}\n  logs: {run_dir}", file=sys.stderr)
        return 2
    mean = {w: {b: statistics.mean(v) for b, v in d.items()} for w, d in got.items()}
    print(f"{args.rounds} rounds of {args.mib} MiB written + read per workload; logs: {run_dir}")
    print(f"scripted_ratio={mean['128k']['scripted'] / mean['128k']['blkback']:.3f} "
          f"scripted_ratio_4k={mean['4k']['scripted'] / mean['4k']['blkback']:.3f} "
          f"blkback_mib_s={mean['128k']['blkback']:.2f} scripted_mib_s={mean['128k']['scripted']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
