"""The lock that keeps one stack per user at a time, and the record of a
stack left running by `xenrig up` (read by down/shell)."""

from __future__ import annotations

import fcntl
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from harness.errors import UsageError


@dataclass
class StackRecord:
    domain: str
    libvirt_uri: str
    embed_root: str
    ssh_port: int
    host_key: str
    client_key: str
    run_dir: str
    serial_log: str
    guest: str | None = None
    pid: int = 0


class StackLock:
    """An flock on <state>/stack.lock: two stacks at once would starve each
    other on a 2-core machine and fight over the embedded libvirt root."""

    def __init__(self, state: Path):
        self.path = state / "stack.lock"
        self._fh = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a+")
        try:
            fcntl.flock(self._fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._fh.seek(0)
            holder = self._fh.read().strip() or "another process"
            self._fh.close()
            self._fh = None
            raise UsageError(f"another xenrig run is using the stack right now (pid {holder})",
                             hint="Wait for it to finish, or stop it; 'xenrig down' stops a stack left up") from None
        self._fh.seek(0)
        self._fh.truncate()
        self._fh.write(str(os.getpid()))
        self._fh.flush()

    def release(self) -> None:
        if self._fh:
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()


def record_path(state: Path) -> Path:
    return state / "stack.json"


def save(state: Path, record: StackRecord) -> None:
    record_path(state).write_text(json.dumps(asdict(record), indent=1))


def load(state: Path) -> StackRecord | None:
    try:
        return StackRecord(**json.loads(record_path(state).read_text()))
    except FileNotFoundError:
        return None
    except (ValueError, TypeError):
        record_path(state).unlink(missing_ok=True)
        return None


def clear(state: Path) -> None:
    record_path(state).unlink(missing_ok=True)
