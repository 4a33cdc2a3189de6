#!/usr/bin/env python3
"""What capture costs: blkfront throughput in the guest with the tracer off
and on, in the same boot, and the trace's size per MiB of I/O.

    .venv/bin/python benchmarks/bench_capture.py [--mib 32] [--rounds 2]

Boots the stack once, loads blkfront (persistent grants and indirect
descriptors on, as in configs/scenarios/blkfront-io.yaml), then alternates
off / on rounds of the same O_DIRECT workload (xr-io: 128 KiB requests, 16
in flight, write then read back) so drift hits both sides alike.  Prints
each round and, as its last line,
`capture_ratio=<on/off> trace_bytes_per_mib=<n>`.  A benchmark: it asserts
nothing.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from harness import build, config, runner, stack  # noqa: E402
from harness.capture.live import TRACE_DIR, CaptureSession  # noqa: E402
from harness.stages import ConsoleProgress, Timeline  # noqa: E402


def workload(guest, mib: int) -> float:
    """MiB/s of one write+read pass (xr-io reports the rate it measured)."""
    count = mib * 8   # 128 KiB requests
    res = guest.run(f"xr-io /dev/xvda rw 131072 {count} 16 0", timeout_s=1800, check=True, what="the workload")
    m = re.search(r"mib_s=([0-9.]+)", res.stdout)
    return float(m.group(1))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=32, help="MiB written and read back per round")
    ap.add_argument("--rounds", type=int, default=2, help="off/on pairs")
    args = ap.parse_args()

    scenario = config.load_scenario(REPO / "configs" / "scenarios" / "blkfront-io.yaml")
    scenario.steps = []
    scenario.guest.disks[0].size_mib = max(64, args.mib + 8)
    host_cfg = config.load_host(scenario.host)
    timeline = Timeline([ConsoleProgress()])
    run_dir = runner.new_run_dir("bench-capture")
    built_images, built_modules = runner.prepare(scenario, timeline, run_dir)
    tracer = build.ensure(scenario.modules, built_images.guest.meta, timeline, run_dir, capture=True)
    tracer = next(m for m in tracer if m.role == "tracer")
    modules = built_modules + [tracer]

    off, on, trace_bytes, io_mib = [], [], 0, 0
    with stack.xen_host(host_cfg, timeline, run_dir, built=built_images) as xen:
        # The tracer rides in the guest's initramfs but is not loaded: capture off.
        with runner.guest_with_modules(xen, scenario, modules, timeline, run_dir, {}, capture=False) as (g, _):
            session = CaptureSession(xen, g, scenario, run_dir)
            params = session.tracer_params(next(m for m in modules if m.role == "blkfront"))
            tracer.params = {**params, **tracer.params}
            args_line = tracer.insmod_args()
            for i in range(args.rounds):
                rate = workload(g, args.mib)
                off.append(rate)
                print(f"round {i + 1} capture off: {rate:.2f} MiB/s", flush=True)
                g.run(f"echo 0 > /proc/sys/debug/kprobes-optimization; insmod /lib/modules/xenrig/xenrig_trace.ko {args_line}",
                      check=True, timeout_s=120, what="loading the tracer")
                rate = workload(g, args.mib)
                on.append(rate)
                stats = g.run(f"cat {TRACE_DIR}/stats", timeout_s=30).stdout
                nbytes = int(re.search(r"^bytes[=:]\s*(\d+)", stats, re.M).group(1))
                trace_bytes += nbytes
                io_mib += 2 * args.mib
                g.run("rmmod xenrig_trace", check=True, timeout_s=120, what="unloading the tracer")
                print(f"round {i + 1} capture on:  {rate:.2f} MiB/s, trace {nbytes} bytes", flush=True)
    ratio = statistics.mean(on) / statistics.mean(off)
    per_mib = trace_bytes / io_mib
    print(f"throughput off {statistics.mean(off):.2f} MiB/s, on {statistics.mean(on):.2f} MiB/s "
          f"({args.rounds} rounds of {args.mib} MiB written + read)")
    print(f"capture_ratio={ratio:.3f} trace_bytes_per_mib={per_mib:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
