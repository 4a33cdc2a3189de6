"""xenrig run SCENARIO.yaml: boot, check, report; exit 0 PASS, 1 FAIL, 2 ERROR."""

from __future__ import annotations

import sys
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("run", help="run a scenario (boot the stack, check, report, tear down)")
    p.add_argument("scenario", type=Path, help="scenario file, e.g. configs/smoke.yaml")
    p.add_argument("--host", type=Path, help="host config to use instead of the scenario's")
    p.add_argument("--console", action="store_true", help="show the L0 serial console (Xen + dom0) live")
    p.add_argument("--cold", action="store_true",
                   help="boot Xen, dom0 and the guest from nothing instead of restoring a snapshot (and save none)")
    p.add_argument("--run-dir", type=Path, help="folder for the report (default: runs/<time>-<scenario>)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="change one setting of the scenario for this run (repeatable), e.g. "
                        "guest.disks[*].backend=qdisk or modules.blkfront.params.feature_persistent=0")
    p.set_defaults(handler=handle)


def handle(args) -> int:
    # Imported here, not at the top: building the parser (xenrig --help, check, nightly) must not load the
    # whole stack.
    from harness import runner
    from harness.config import overrides
    from harness.report import summary_text

    scenario, host = runner.load(args.scenario, args.host)
    if args.overrides:
        scenario = overrides.apply(scenario, args.overrides)
    if args.run_dir:
        args.run_dir.mkdir(parents=True, exist_ok=True)
    result = runner.run_scenario(scenario, host, run_dir=args.run_dir, console=args.console,
                                 cold=args.cold)
    rep = result.report
    sys.stdout.write(summary_text(rep))
    counts = {o: sum(1 for c in rep.checks if c.outcome == o) for o in ("PASS", "FAIL", "ERROR")}
    line = f"xenrig: {result.outcome} {scenario.name}: {counts['PASS']} passed, {counts['FAIL']} failed, {counts['ERROR']} errors"
    if result.outcome == "ERROR" and result.error is not None:
        line += f" ({result.error.kind}: {result.error.message.splitlines()[0][:200]})"
    elif result.outcome == "FAIL":
        first = next(c for c in rep.checks if c.outcome == "FAIL")
        line += f" (first failure: {first.id}: {first.message})"
        if result.error is not None:     # the FAIL stands; say what broke after it
            line += f"; then the run errored: {result.error.message.splitlines()[0][:200]}"
    print(f"{line}; report: {rep.run_dir / 'report.json'}")
    return result.exit_code

