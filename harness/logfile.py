"""The run's log file: `xenrig.log` in the run folder.

Library messages (paramiko's transport thread among them: a broken stream
makes it log a traceback) go there, never as a traceback on the terminal;
progress for a person stays on stderr (harness.stages)."""

from __future__ import annotations

import logging
from pathlib import Path

_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_handler: logging.Handler | None = None


def quiet_terminal() -> None:
    """A handler on the root logger keeps Python's last-resort handler (which
    prints to stderr) from ever being used."""
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.NullHandler())
    root.setLevel(logging.INFO)
    # A log write that fails (the run folder's disk is full) must not print
    # logging's own traceback on the terminal; the run says what happened.
    logging.raiseExceptions = False


def attach(run_dir: Path) -> Path:
    """Log to run_dir/xenrig.log from now on (one run folder at a time)."""
    global _handler
    quiet_terminal()
    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
        _handler.close()
    path = run_dir / "xenrig.log"
    _handler = logging.FileHandler(path, encoding="utf-8")
    _handler.setFormatter(logging.Formatter(_FORMAT))
    root.addHandler(_handler)
    return path
