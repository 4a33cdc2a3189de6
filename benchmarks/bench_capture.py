#!/usr/bin/env python3
"""What capture costs: blkfront throughput in the guest with the tracer off
and on, on a 1-vCPU and a 4-vCPU guest of the same stack, and the trace's
size per MiB of I/O.

    .venv/bin/python benchmarks/bench_capture.py [--mib 32] [--rounds 2] [--vcpus 1,4]

Boots the stack once; for each vCPU count starts a guest, loads blkfront
(persistent grants and indirect descriptors on, as in
configs/scenarios/blkfront-io.yaml, one queue per vCPU as blkfront-smp
asks), then alternates off / on rounds of the same O_DIRECT workload (one
xr-io per vCPU, pinned, each on its own part of the disk: 128 KiB
requests, 16 in flight each, write then read back) so drift hits both
sides alike.  Throughput is all the bytes moved over the slowest
process's time.  Prints each round and, as its last line,
`capture_ratio_<n>vcpu=<on/off> trace_bytes_per_mib_<n>vcpu=<n> ...`.
A round whose trace dropped records is reported, and its vCPU count's
figures are marked `dropped`.  A benchmark: it asserts nothing.
"""

from __future__ import annotations

import argparse
import copy
import re
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from harness import build, config, runner, stack  # noqa: E402
from harness.errors import XenrigError  # noqa: E402
from harness.capture.live import TRACE_DIR, CaptureSession  # noqa: E402
from harness.stages import ConsoleProgress, Timeline  # noqa: E402

SECTORS_PER_REQ = 131072 // 512


def workload(guest, mib: int, cpus: int) -> float:
    """MiB/s of one write+read pass, one pinned xr-io per CPU."""
    count = max(1, mib * 8 // cpus)   # 128 KiB requests per process
    procs = "".join(f"busybox taskset -c {c} xr-io /dev/xvda rw 131072 {count} 16 {c * count * SECTORS_PER_REQ} "
                    f"> /tmp/bench-{c}.log 2>&1 & p=\"$p $!\"; " for c in range(cpus))
    res = guest.run(f"rm -f /tmp/bench-*.log; {procs}rc=0; for x in $p; do wait $x || rc=1; done; "
                    "cat /tmp/bench-*.log; exit $rc", timeout_s=1800, check=True, what="the workload")
    rows = [(int(b), float(t)) for b, t in re.findall(r"bytes=(\d+) seconds=([0-9.]+)", res.stdout)]
    if len(rows) != cpus:
        raise SystemExit(f"bench_capture: expected {cpus} xr-io results, got: {res.stdout[-400:]}")
    return sum(b for b, _ in rows) / 1048576 / max(max(t for _, t in rows), 1e-3)


def stat(text: str, key: str) -> int:
    return int(re.search(rf"^{key}[=:]\s*(\d+)", text, re.M).group(1))


def measure(xen, base, vcpus: int, modules, tracer, args, timeline, run_dir) -> dict:
    scenario = copy.deepcopy(base)
    scenario.guest.vcpus = vcpus
    blkfront = next(m for m in modules if m.role == "blkfront")
    blkfront.params = {**blkfront.params, "max_queues": vcpus}
    off, on, trace_bytes, io_mib, dropped = [], [], 0, 0, 0
    # The tracer rides in the guest's initramfs but is not loaded: capture off.
    with runner.guest_with_modules(xen, scenario, modules, timeline, run_dir, {}, capture=False) as (g, _):
        session = CaptureSession(xen, g, scenario, run_dir)
        # Addresses differ from boot to boot: this guest's, on a copy.
        loaded = copy.copy(tracer)
        loaded.params = {**session.tracer_params(blkfront), **tracer.params}
        args_line = loaded.insmod_args()
        for i in range(args.rounds):
            rate = workload(g, args.mib, vcpus)
            off.append(rate)
            print(f"{vcpus} vCPU round {i + 1} capture off: {rate:.2f} MiB/s", flush=True)
            g.run(f"echo 0 > /proc/sys/debug/kprobes-optimization; insmod /lib/modules/xenrig/xenrig_trace.ko {args_line}",
                  check=True, timeout_s=120, what="loading the tracer")
            rate = workload(g, args.mib, vcpus)
            on.append(rate)
            stats = g.run(f"cat {TRACE_DIR}/stats", timeout_s=30).stdout
            nbytes, lost = stat(stats, "bytes"), stat(stats, "dropped")
            trace_bytes += nbytes
            dropped += lost
            io_mib += 2 * args.mib
            g.run("rmmod xenrig_trace", check=True, timeout_s=120, what="unloading the tracer")
            print(f"{vcpus} vCPU round {i + 1} capture on:  {rate:.2f} MiB/s, trace {nbytes} bytes"
                  + (f", {lost} records DROPPED" if lost else ""), flush=True)
    return {"off": statistics.mean(off), "on": statistics.mean(on), "per_mib": trace_bytes / io_mib,
            "dropped": dropped}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=32, help="MiB written and read back per round (all vCPUs together)")
    ap.add_argument("--rounds", type=int, default=2, help="off/on pairs per vCPU count")
    ap.add_argument("--vcpus", default="1,4", help="guest vCPU counts to measure, comma-separated")
    args = ap.parse_args()
    try:
        counts = [int(v) for v in args.vcpus.split(",")]
    except ValueError:
        ap.error(f"--vcpus {args.vcpus!r}: give vCPU counts such as 1,4")

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

    results = {}
    try:
        with stack.xen_host(host_cfg, timeline, run_dir, built=built_images) as xen:
            for n in counts:
                results[n] = measure(xen, scenario, n, modules, tracer, args, timeline, run_dir)
    except XenrigError as exc:
        # No figure from a run that broke (a guest that died under nested
        # TCG, say): the stack is torn down by now, the logs are kept.
        print(f"bench_capture: no figures: {exc.message}\n  logs: {run_dir}", file=sys.stderr)
        return 2
    figures = []
    for n, r in results.items():
        print(f"{n} vCPU: throughput off {r['off']:.2f} MiB/s, on {r['on']:.2f} MiB/s "
              f"({args.rounds} rounds of {args.mib} MiB written + read)"
              + (f"; {r['dropped']} records dropped: figures not comparable" if r["dropped"] else ""))
        mark = "dropped" if r["dropped"] else ""
        figures.append(f"capture_ratio_{n}vcpu={r['on'] / r['off']:.3f}{mark} "
                       f"trace_bytes_per_mib_{n}vcpu={r['per_mib']:.0f}")
    print(" ".join(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
