"""Reading a serial log file that QEMU is still writing: wait for markers,
spot panics early, and optionally echo it live to a terminal."""

from __future__ import annotations

import re
import sys
import threading
import time
from pathlib import Path

from harness.errors import InfraError, StageTimeout

# Lines that mean the boot is lost: no point waiting out the timeout.
FATAL_PATTERNS = [
    re.compile(r"Panic on CPU \d+"),
    re.compile(r"Kernel panic - not syncing"),
    re.compile(r"xenrig initramfs: cannot mount"),
]


class SerialLog:
    def __init__(self, path: Path):
        self.path = path
        self._echo_thread: threading.Thread | None = None
        self._stop = threading.Event()

    def text(self) -> str:
        try:
            return self.path.read_bytes().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def tail(self, lines: int = 15) -> str:
        return "\n".join(self.text().rstrip().splitlines()[-lines:])

    def wait_for(self, marker: str, *, timeout_s: float, stage: str, alive=lambda: True) -> str:
        """Wait until `marker` appears; return the line that holds it."""
        deadline = time.monotonic() + timeout_s
        while True:
            text = self.text()
            idx = text.find(marker)
            if idx >= 0:
                end = text.find("\n", idx)
                start = text.rfind("\n", 0, idx) + 1
                return text[start:end if end >= 0 else None]
            for pat in FATAL_PATTERNS:
                m = pat.search(text)
                if m:
                    raise InfraError(f"stage '{stage}': the console shows '{m.group(0)}' (boot failed); last lines:\n{self.tail()}\n",
                                     log=str(self.path))
            if not alive():
                raise InfraError(f"stage '{stage}': the VM stopped before '{marker}' appeared; last lines:\n{self.tail()}\n",
                                 log=str(self.path))
            if time.monotonic() >= deadline:
                raise StageTimeout(f"stage '{stage}': timed out after {timeout_s:.0f}s waiting for '{marker}' on the console; last lines:\n{self.tail()}\n",
                                   log=str(self.path), hint="Raise timeouts in the host config if this machine is just slow")
            time.sleep(0.25)

    def echo(self, stream=None) -> None:
        """Copy what QEMU writes to `stream` as it arrives (xenrig --console)."""
        stream = stream or sys.stdout

        def run() -> None:
            pos = 0
            while not self._stop.is_set():
                try:
                    with open(self.path, "rb") as fh:
                        fh.seek(pos)
                        data = fh.read()
                except FileNotFoundError:
                    data = b""
                if data:
                    pos += len(data)
                    stream.write(data.decode(errors="replace"))
                    stream.flush()
                self._stop.wait(0.2)

        self._echo_thread = threading.Thread(target=run, name="serial-echo", daemon=True)
        self._echo_thread.start()

    def stop_echo(self) -> None:
        self._stop.set()
        if self._echo_thread:
            self._echo_thread.join(timeout=2)
