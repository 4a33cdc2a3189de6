#!/usr/bin/env python3
"""Where a smoke run's time goes: a cold run (empty image cache) and a warm
run (images cached), side by side in one invocation.

    .venv/bin/python benchmarks/bench_boot.py [--warm-only] [--scenario configs/smoke.yaml]

Prints each stage's duration for both runs and, as its last line,
`warm_total_s=<n> cold_total_s=<n>`.  A benchmark, not a test: it asserts
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
    ("xen to dom0 ssh ready", ["clean up leftovers", "boot xen + dom0", "connect to dom0"]),
    ("hvm guest ready", ["start HVM guest"]),
    ("checks", ["checks"]),
    ("teardown", ["destroy HVM guest", "tear down L0 VM"]),
]


def run(scenario: Path, run_dir: Path, env: dict) -> dict:
    proc = subprocess.run([sys.executable, "-m", "harness", "run", str(scenario), "--run-dir", str(run_dir)],
                          cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=3600)
    report = json.loads((run_dir / "report.json").read_text())
    if report["outcome"] != "PASS":
        print(proc.stdout[-3000:], file=sys.stderr)
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
            results["cold"] = run(args.scenario, work / "cold", env)
        # Warm: the user's cache (built now if it was empty, then measured again).
        run(args.scenario, work / "prime", dict(os.environ))
        results["warm"] = run(args.scenario, work / "warm", dict(os.environ))
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
    print(f"warm_total_s={warm:.1f} cold_total_s={cold:.1f}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
