"""`xenrig check TRACE.jsonl`: replay a captured trace through the model offline."""

from __future__ import annotations

import argparse
import sys

from harness.check import backend_log, check_file
from harness.model.allocator import POLICIES


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "check",
        help="replay a trace through the reference model",
        description=(
            "Replay a JSON Lines trace (docs/trace-schema.md) through the reference model and "
            "report PASS, or FAIL with the first divergent event, the rule it broke and the "
            "model state around it. A scripted backend's log (xrback-<vdev>.jsonl from a run folder) is "
            "judged by the rules for a backend that lies (docs/model.md). "
            "Exit code 0 PASS, 1 FAIL, 2 ERROR (bad input)."
        ),
    )
    parser.add_argument("trace", metavar="TRACE.jsonl", help="the trace to check")
    parser.add_argument(
        "--policy", choices=POLICIES, default=None,
        help="guest allocator policy (default: the trace header's, else linux-6.1)",
    )
    parser.add_argument("--json", action="store_true", help="print the verdict as JSON")
    parser.add_argument(
        "--series", action="store_true",
        help="include time series (ring occupancy, entries granted and mapped, table frames), "
             "the kinds histogram and the final ledger",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    # A bad trace raises TraceFormatError (a UsageError): the CLI prints it as
    # one paragraph with the line number and exits 2.
    if backend_log.is_backend_log(args.trace):
        verdict = backend_log.check_file(args.trace)
    else:
        verdict = check_file(args.trace, policy=args.policy, series=args.series)
    if args.json:
        print(verdict.to_json())
    else:
        print(verdict.summary())
    sys.stdout.flush()
    return verdict.exit_code
