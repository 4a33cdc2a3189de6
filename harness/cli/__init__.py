"""Command line: `xenrig COMMAND ...`.

Each command lives in its own module in this package and exposes
`register(subparsers)`; the module's handler returns an exit code.  This file
only dispatches and turns errors into one paragraph: no traceback reaches a
user for a problem they can fix.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import traceback

from harness import logfile, paths
from harness.outcome import EXIT_INTERNAL
from harness.errors import XenrigError

# Order is the order of `xenrig --help`.
COMMAND_MODULES = [
    "doctor",
    "images",
    "up",
    "down",
    "run",
    "snapshot",
    "repro",
    "shell",
    "check",
    "nightly",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xenrig",
        description="Hardware-in-the-loop harness for Xen's PV-on-HVM drivers.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="exit codes: 0 PASS (or SKIP), 1 FAIL (the subject is proven wrong), 2 ERROR (infrastructure:\n"
               "worth a retry), 3 internal error of xenrig, 4 usage, configuration, patch or compile error\n"
               "(never worth a retry); 130 interrupted.  xenrig repro: 0 REPRODUCED, 1 NOT REPRODUCED, 2 ERROR.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"harness.cli.{name}_cmd")
        except ModuleNotFoundError as exc:
            # A command whose module is not there yet is simply not offered.
            if exc.name == f"harness.cli.{name}_cmd":
                continue
            raise
        module.register(sub)
    return parser


_signals: list[int] = []


def _stop(signum, frame):
    """The first Ctrl-C or SIGTERM (a CI system stops jobs with it) unwinds
    the run like Ctrl-C, so every VM and process it started is stopped on the
    way out; any further one is only counted, so it cannot cut that teardown
    short."""
    _signals.append(signum)
    if len(_signals) == 1:
        raise KeyboardInterrupt
    print(f"xenrig: still stopping what was started (signal {signum} deferred)", file=sys.stderr)


def _interrupted_code() -> int:
    return 143 if _signals and _signals[0] == signal.SIGTERM else 130


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _signals.clear()
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    logfile.quiet_terminal()
    try:
        return int(args.handler(args) or 0)
    except XenrigError as exc:
        print(f"xenrig: ERROR ({exc.kind}): {exc.paragraph()}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("xenrig: interrupted; everything started was stopped.", file=sys.stderr)
        return _interrupted_code()
    except BrokenPipeError:
        # Whoever read our output stopped reading (`xenrig check T | head`):
        # not a bug.  Nothing more goes to the closed pipe, not even Python's
        # flush at exit; 141 is what a shell reports for SIGPIPE.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception as exc:  # noqa: BLE001 - a bug of ours: one line here, the traceback in a file
        path = paths.state_dir() / "internal-error.txt"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(traceback.format_exception(exc)))
            where = f"the traceback is in {path}"
        except OSError:
            where = "the traceback could not be written"
        print(f"xenrig: INTERNAL ERROR: {type(exc).__name__}: {exc} (a bug of xenrig; {where})", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
