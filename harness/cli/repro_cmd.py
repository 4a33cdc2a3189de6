"""xenrig repro FILE [--runs N] [--keep]: build, boot, trigger, verdict.

Exit codes: 0 REPRODUCED, 1 NOT REPRODUCED, 2 INFRASTRUCTURE ERROR (with
--runs N: 0 when at least one run reproduced)."""

from __future__ import annotations

from pathlib import Path

from harness.errors import UsageError


def register(sub) -> None:
    p = sub.add_parser("repro", help="reproduce a driver bug: build the variant, boot, trigger, verdict with evidence")
    p.add_argument("file", type=Path, help="repro file, e.g. configs/repro/grant-ended-early.yaml")
    p.add_argument("--host", type=Path, help="host config to use instead of the file's")
    p.add_argument("--runs", type=int, default=1, help="repeat N times (racy bugs); report how many reproduced")
    p.add_argument("--keep", action="store_true", help="leave the stack up after the (last) run, for a person")
    p.set_defaults(handler=handle)


def handle(args) -> int:
    # Imported here, not at the top: building the parser (xenrig --help, check, nightly) must not load the
    # whole stack.
    from harness import repro, runner
    from harness.stages import ConsoleProgress, Timeline

    scenario, host = runner.load(args.file, args.host)
    if scenario.repro is None:
        raise UsageError(f"{args.file} has no 'repro:' section with a signature",
                         hint="See configs/repro/*.yaml for the form")
    if args.runs < 1:
        raise UsageError("--runs must be at least 1")
    verdicts = []
    for i in range(args.runs):
        if args.runs > 1:
            print(f"xenrig repro: run {i + 1} of {args.runs}")
        keep = args.keep and i == args.runs - 1
        outcome = runner.run_scenario(scenario, host, timeline=Timeline([ConsoleProgress()]), keep=keep)
        v = repro.judge(outcome, scenario.repro.signature)
        verdicts.append(v)
        print(f"{v.verdict}: {scenario.name}" + (f" ({scenario.repro.bug})" if scenario.repro.bug else ""))
        for line in v.evidence:
            print(f"  {line}")
        print(f"  report: {v.run_dir / 'report.html'}")
    if args.runs > 1:
        n = sum(1 for v in verdicts if v.verdict == repro.REPRODUCED)
        infra = sum(1 for v in verdicts if v.verdict == repro.INFRA)
        print(f"xenrig repro: reproduced in {n} of {args.runs} runs" + (f" ({infra} infrastructure errors)" if infra else ""))
        if n:
            return repro.EXIT_CODES[repro.REPRODUCED]
        return repro.EXIT_CODES[repro.INFRA if infra == args.runs else repro.NOT_REPRODUCED]
    return verdicts[0].exit_code
