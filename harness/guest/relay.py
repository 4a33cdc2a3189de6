"""A long-lived `guestctl.py serve` in dom0, one per guest, over one SSH
channel: a guest command costs one round trip to the guest agent instead
of a Python start in dom0 and a reconnect to the agent's port (measured
under TCG: 0.5-0.9 s of the 1.3 s a command took).  Answers carry the
sha256 the guest computed, checked in dom0 and here as before.

The relay is an optimisation, never a second behaviour: when it cannot be
started the caller falls back to one `guestctl.py run` per command, and
when its channel dies (a reconnect of the SSH session, a relay killed by
its own timeout) the next command starts a new one.  A command that gets
no answer in time closes the relay, so a late answer can never be taken
for the next command's.
"""

from __future__ import annotations

import base64
import itertools
import json
import logging
import shlex
import socket
import threading
import time

from harness.errors import InfraError, StageTimeout
from harness.host.ssh import Result
from harness.host.xen_host import AGENT_DIR, XenHost

log = logging.getLogger(__name__)

# The relay's own lifetime in dom0 (timeout(1) around it); a run that lasts
# longer simply gets a new relay.
RELAY_LIFETIME_S = 4 * 3600


class Relay:
    def __init__(self, host: XenHost, socket_path: str):
        self.host, self.socket_path = host, socket_path
        self._chan = None
        self._buf = b""
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self.answered = 0

    def _start(self) -> None:
        self._chan = self.host.ssh.stream(
            f"exec python3 {AGENT_DIR}/guestctl.py --socket {shlex.quote(self.socket_path)} serve", RELAY_LIFETIME_S)
        self._buf = b""

    def _usable(self) -> bool:
        return self._chan is not None and not self._chan.closed and not self._chan.exit_status_ready()

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _drop(self) -> None:
        if self._chan is not None:
            try:
                self._chan.close()
            except (OSError, EOFError):
                pass
        self._chan = None
        self._buf = b""

    def _line(self, deadline: float) -> bytes | None:
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self._chan.settimeout(min(left, 1.0))
            try:
                data = self._chan.recv(65536)
            except socket.timeout:
                died = self.host.ssh.dead()
                if died:
                    raise EOFError(f"dom0 is dead: {died}") from None
                continue
            if not data:
                return None
            self._buf += data
        line, self._buf = self._buf.split(b"\n", 1)
        return line

    def run(self, command: str, timeout_s: float) -> Result:
        """The command's Result, with the guest's sha256 as the last line of
        stderr (`XR-SHA256 <hex>`) like `guestctl.py run`; exit 255/254 with
        a `guestctl:` message when the guest is unreachable or the output
        arrived damaged in dom0.  InfraError if the relay itself fails."""
        with self._lock:
            if not self._usable():
                self._start()
            rid = next(self._ids)
            started = time.monotonic()
            req = {"id": rid, "timeout": int(timeout_s), "cmd": base64.b64encode(command.encode()).decode()}
            try:
                self._chan.sendall((json.dumps(req) + "\n").encode())
                raw = self._line(started + timeout_s + 20)
            except (OSError, EOFError) as exc:
                self._drop()
                raise InfraError(f"the guest relay in dom0 broke while running '{command[:80]}': {exc}") from None
            if raw is None and self._chan.exit_status_ready():
                err = self._chan.recv_stderr(65536).decode(errors="replace") if self._chan.recv_stderr_ready() else ""
                self._drop()
                raise InfraError(f"the guest relay in dom0 exited while running '{command[:80]}': {err.strip()[-300:]}")
            if raw is None:
                self._drop()
                raise StageTimeout(f"the guest relay in dom0 gave no answer to '{command[:80]}' within "
                                   f"{timeout_s + 20:.0f}s")
            try:
                answer = json.loads(raw)
                if answer.get("id") != rid:
                    raise ValueError(f"answer for request {answer.get('id')}, not {rid}")
                status = int(answer["status"])
                out = base64.b64decode(answer.get("out") or "")
            except (ValueError, KeyError, TypeError) as exc:
                self._drop()
                raise InfraError(f"the guest relay in dom0 gave an answer that does not parse: {exc}: "
                                 f"{raw[:160]!r}") from None
            self.answered += 1
        stderr = answer.get("error") or ""
        if answer.get("sha256"):
            stderr += f"XR-SHA256 {answer['sha256']}\n"
        return Result(command, status, out.decode(errors="replace"), stderr, time.monotonic() - started, out)
