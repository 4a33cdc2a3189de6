"""The fault campaign as a table (harness.faultcampaign): each case breaks a
run for real, then one unbroken run follows.  Ends with
`faults_tried=N classified_right=N orphans=N next_run_ok=N`.

    .venv/bin/python benchmarks/bench_faults.py [--out DIR] [--case FAULT ...]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness import faultcampaign  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None, help="where the runs go (default: a temporary folder)")
    ap.add_argument("--case", action="append", default=[], help="only this fault (repeatable), e.g. dom0-panic@step:2")
    args = ap.parse_args()
    cases = [c for c in faultcampaign.CASES if not args.case or c.fault in args.case]
    out = args.out or Path(tempfile.mkdtemp(prefix="xenrig-faults-"))
    faultcampaign.make_snapshot()
    results = []
    print(f"{'case':36} {'outcome':8} {'category':15} {'secs':>6} {'left':>4} {'orph':>4} {'next':6} problems")
    for i, case in enumerate(cases):
        r = faultcampaign.run_case(case, out / f"{i:02d}")
        results.append(r)
        row = r.row()
        print(f"{case.name:36} {str(row['outcome']):8} {str(row['category']):15} {row['seconds']:6.1f} "
              f"{row['left_after_case']:4} {row['orphans']:4} {str(row['next_run']):6} {'; '.join(r.problems) or '-'}",
              flush=True)
    (out / "faults.json").write_text(json.dumps([r.row() for r in results], indent=1))
    print(f"# runs in {out}")
    print(f"faults_tried={len(results)} classified_right={sum(r.classified_right for r in results)} "
          f"orphans={sum(r.orphans for r in results)} next_run_ok={sum(r.next_run_ok for r in results)}")
    return 0 if all(not r.problems for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
