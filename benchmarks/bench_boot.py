#!/usr/bin/env python3
"""Where a smoke run's time goes, side by side in one invocation: a cold
run (empty image cache, booted), a warm run (images cached, booted with
--cold) and a restored run (from the booted stack's snapshot, made by a
priming run first if there is none).

    .venv/bin/python benchmarks/bench_boot.py [--warm-only] [--scenario configs/smoke.yaml]

Prints each stage's duration for every run and, as its last line,
`restored_total_s=<n> warm_total_s=<n> cold_total_s=<n>
restore_to_guest_cmd_s=<n> ratio=<restored/warm> snapshot_mib=<n>
snapshot_make_s=<n> harness_cpu_pct=<n>` (the harness's own CPU over the
warm run, in percent of one core).  A benchmark, not a test: it asserts
nothing about time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

GROUPS = [
    ("image build/verify", ["images"]),
    ("snapshot find/save", ["find snapshot", "save snapshot"]),
    ("xen to dom0 ssh ready", ["clean up leftovers", "boot xen + dom0", "restore snapshot", "connect to dom0"]),
    ("hvm guest ready", ["start HVM guest", "wake restored stack"]),
    ("modules copied + loaded", ["load guest modules"]),
    ("checks", ["checks"]),
    ("teardown", ["destroy HVM guest", "tear down L0 VM"]),
]


def run(scenario: Path, run_dir: Path, env: dict, *extra: str) -> dict:
    """One `xenrig run`; its report, with the harness process's own CPU time
    (wait4's rusage: the process and the short tools it waited for, not QEMU,
    which libvirt daemonizes) as report["harness_cpu_s"]."""
    log = run_dir.parent / f"{run_dir.name}.out"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "harness", "run", str(scenario), "--run-dir", str(run_dir), *extra],
                                cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            _, _, usage = os.wait4(proc.pid, 0)
        finally:
            proc.returncode = 0   # reaped by wait4 above
    report = json.loads((run_dir / "report.json").read_text())
    report["harness_cpu_s"] = usage.ru_utime + usage.ru_stime
    if report["outcome"] != "PASS":
        print(log.read_text()[-3000:], file=sys.stderr)
    return report


def grouped(report: dict) -> dict[str, float]:
    stages = {s["name"]: s["duration_s"] for s in report["stages"]}
    return {label: sum(stages.get(n, 0.0) for n in names) for label, names in GROUPS}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scenario", type=Path, default=REPO / "configs" / "smoke.yaml")
    ap.add_argument("--warm-only", action="store_true", help="skip the cold run (no image rebuild)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="xenrig-bench-"))
    results = {}
    try:
        if not args.warm_only:
            env = dict(os.environ, XENRIG_CACHE=str(work / "cold-cache"))
            results["cold"] = run(args.scenario, work / "cold", env, "--cold")
        # The user's cache: images built now if it was empty, the snapshot
        # made now if there was none; then each kind measured.
        prime = run(args.scenario, work / "prime", dict(os.environ))
        results["warm"] = run(args.scenario, work / "warm", dict(os.environ), "--cold")
        results["restored"] = run(args.scenario, work / "restored", dict(os.environ))
    finally:
        shutil.rmtree(work / "cold-cache", ignore_errors=True)
    print(f"{'stage':28}" + "".join(f"{k:>10}" for k in results))
    tables = {k: grouped(r) for k, r in results.items()}
    for label, _ in GROUPS:
        print(f"{label:28}" + "".join(f"{tables[k][label]:10.1f}" for k in results))
    print(f"{'total (wall)':28}" + "".join(f"{r['duration_s']:10.1f}" for r in results.values()))
    print("outcomes: " + ", ".join(f"{k}={r['outcome']}" for k, r in results.items()))
    warm = results["warm"]["duration_s"]
    cold = results["cold"]["duration_s"] if "cold" in results else float("nan")
    # Of one core, over the warm run's wall time: what the harness itself
    # takes from QEMU on a 2-core machine.
    cpu_pct = 100 * results["warm"]["harness_cpu_s"] / warm
    print(f"harness CPU in the warm run: {results['warm']['harness_cpu_s']:.1f} s of {warm:.1f} s")
    restored = results["restored"]
    snap = restored["info"].get("snapshot", {})
    if not snap.get("restored"):
        print("the restored run did not restore a snapshot: " + json.dumps(snap), file=sys.stderr)
    made = prime["info"].get("snapshot", {})
    make_s = made.get("make_s", float("nan")) if made.get("made") else float("nan")
    print(f"snapshot {snap.get('name')}: {snap.get('size_bytes', 0) / 2**20:.0f} MiB; "
          + (f"made by the priming run in {make_s:.1f}s" if made.get("made") else "made before this benchmark"))
    print(f"restored_total_s={restored['duration_s']:.1f} warm_total_s={warm:.1f} cold_total_s={cold:.1f} "
          f"restore_to_guest_cmd_s={snap.get('restore_to_guest_cmd_s', float('nan'))} "
          f"ratio={restored['duration_s'] / warm:.2f} snapshot_mib={snap.get('size_bytes', 0) / 2**20:.0f} "
          f"snapshot_make_s={make_s} harness_cpu_pct={cpu_pct:.1f}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
