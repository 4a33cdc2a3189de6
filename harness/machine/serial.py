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

    def _read_from(self, pos: int) -> bytes:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(pos)
                return fh.read()
        except FileNotFoundError:
            return b""

    def wait_for(self, marker: str, *, timeout_s: float, stage: str, alive=lambda: True) -> str:
        """Wait until `marker` appears; return the line that holds it.  Reads
        only what QEMU wrote since the last look (the whole log, four times a
        second, was CPU taken from QEMU on a 2-core machine)."""
        deadline = time.monotonic() + timeout_s
        pos, carry = 0, ""          # carry: the last, unfinished line
        while True:
            data = self._read_from(pos)
            pos += len(data)
            window = carry + data.decode(errors="replace")
            idx = window.find(marker)
            if idx >= 0:
                end = window.find("\n", idx)
                start = window.rfind("\n", 0, idx) + 1
                return window[start:end if end >= 0 else None]
            for pat in FATAL_PATTERNS:
                m = pat.search(window)
                if m:
                    raise InfraError(f"stage '{stage}': the console shows '{m.group(0)}' (boot failed); last lines:\n{self.tail()}\n",
                                     log=str(self.path))
            carry = window[window.rfind("\n") + 1:]
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
                data = self._read_from(pos)
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
