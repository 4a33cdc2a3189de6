"""Running host commands: always with a timeout, output kept, errors readable.

A failing command becomes an InfraError that names the command, its exit
status and its last lines of output, so the user sees the tool's own words
instead of a Python traceback.
"""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path
from typing import Sequence

from harness.errors import InfraError


def run(
    cmd: Sequence[str],
    *,
    timeout_s: float,
    what: str,
    cwd: Path | None = None,
    log: Path | None = None,
    input: bytes | None = None,
    env: dict | None = None,
    check: bool = True,
    hint: str = "",
    binary_stdout: bool = False,
) -> subprocess.CompletedProcess:
    """Run `cmd`; on failure raise InfraError describing `what` went wrong."""
    try:
        proc = subprocess.run(
            list(map(str, cmd)),
            cwd=cwd,
            input=input,
            stdout=subprocess.PIPE,
            # Binary output must not be interleaved with diagnostics.
            stderr=subprocess.PIPE if binary_stdout else subprocess.STDOUT,
            timeout=timeout_s,
            env=env,
        )
    except FileNotFoundError:
        raise InfraError(
            f"{what}: the command '{cmd[0]}' is not installed",
            hint="Run 'xenrig doctor --fix' to install what is missing",
        ) from None
    except subprocess.TimeoutExpired as exc:
        _save(log, cmd, exc.output or b"")
        raise InfraError(
            f"{what}: '{_short(cmd)}' did not finish within {timeout_s:.0f}s",
            log=str(log) if log else None,
            hint=hint,
        ) from None
    text_out = proc.stderr if binary_stdout else proc.stdout
    _save(log, cmd, text_out or b"")
    if check and proc.returncode != 0:
        tail = "\n".join((text_out or b"").decode(errors="replace").rstrip().splitlines()[-12:])
        raise InfraError(
            f"{what}: '{_short(cmd)}' exited with status {proc.returncode}; its last lines were:\n{tail}\n",
            log=str(log) if log else None,
            hint=hint,
        )
    return proc


def _short(cmd: Sequence[str]) -> str:
    text = shlex.join(map(str, cmd))
    return text if len(text) < 160 else text[:157] + "..."


def _save(log: Path | None, cmd: Sequence[str], output: bytes) -> None:
    if log is None:
        return
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as fh:
        fh.write(f"$ {shlex.join(map(str, cmd))}\n".encode())
        fh.write(output)
        fh.write(b"\n")
