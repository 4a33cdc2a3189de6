"""Running host commands: always with a timeout, output kept, errors readable.

A failing command becomes an InfraError that names the command, its exit
status and its last lines of output, so the user sees the tool's own words
instead of a Python traceback.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
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
        proc = _run_in_group(list(map(str, cmd)), cwd=cwd, input=input, timeout_s=timeout_s, env=env,
                             # Binary output must not be interleaved with diagnostics.
                             stderr=subprocess.PIPE if binary_stdout else subprocess.STDOUT)
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


def _run_in_group(cmd: list[str], *, cwd, input, timeout_s: float, env, stderr) -> subprocess.CompletedProcess:
    """subprocess.run, but the command gets a process group of its own and
    the whole group is killed when time runs out or we are interrupted: a
    timed-out `make` or `mmdebstrap` leaves none of its children behind."""
    with subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.PIPE if input is not None else None,
                          stdout=subprocess.PIPE, stderr=stderr, start_new_session=True) as p:
        try:
            out, err = p.communicate(input, timeout=timeout_s)
        except BaseException as exc:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            out, err = p.communicate()
            if isinstance(exc, subprocess.TimeoutExpired):
                raise subprocess.TimeoutExpired(cmd, timeout_s, output=out, stderr=err) from None
            raise
    return subprocess.CompletedProcess(cmd, p.returncode, out, err)


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
