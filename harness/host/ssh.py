"""SSH into a Xen host's dom0 with paramiko: pinned host key, key login,
commands with a timeout, exit status and output, SFTP.

The host key is pinned (from the image manifest for a nested host, from the
config for a real one); an unknown or changed key is refused, never
accepted blindly.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import logging
import re
import select
import shlex
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import paramiko

from harness.errors import CorruptionError, InfraError, StageTimeout, TransportError, XenrigError

log = logging.getLogger(__name__)
DIGEST = re.compile(r"^XR-SHA256 ([0-9a-f]{64})$", re.M)
SFTP_TIMEOUT_S = 120


@dataclass
class Result:
    command: str
    exit_status: int
    stdout: str
    stderr: str
    duration_s: float
    stdout_bytes: bytes = b""   # stdout as received, for callers that hash it

    @property
    def ok(self) -> bool:
        return self.exit_status == 0


def parse_public_key(line: str) -> paramiko.PKey:
    """An OpenSSH public key line ('ssh-ed25519 AAAA... comment')."""
    parts = line.split()
    if len(parts) < 2:
        raise InfraError(f"not an SSH public key: {line!r}")
    return paramiko.PKey.from_type_string(parts[0], base64.b64decode(parts[1]))


class SshSession:
    def __init__(self, address: str, port: int, user: str, key_file: Path, host_key: str, label: str = "dom0"):
        self.address, self.port, self.user = address, port, user
        self.key_file = key_file
        self.host_key = host_key
        self.label = label
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self.reconnects = 0                    # counted in report.json
        self.transport_events: list[str] = []  # why each reconnect happened
        # Asked between reads: a reason when the far end is known dead (the
        # nested stack's Xen or dom0 crashed: harness.deathwatch), else None.
        self.dead: Callable[[], str | None] = lambda: None

    # -- connection -------------------------------------------------------
    def _known_name(self) -> str:
        return self.address if self.port == 22 else f"[{self.address}]:{self.port}"

    def connect(self, timeout_s: float, stage: str = "ssh") -> "SshSession":
        """Connect, retrying until `timeout_s` (sshd may still be starting)."""
        pkey = paramiko.PKey.from_path(str(self.key_file))
        pinned = parse_public_key(self.host_key)
        deadline = time.monotonic() + timeout_s
        last = "no attempt made"
        while True:
            died = self.dead()
            if died:
                raise TransportError(f"stage '{stage}': {self.label} cannot be reached: {died}")
            client = paramiko.SSHClient()
            client.get_host_keys().add(self._known_name(), pinned.get_name(), pinned)
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
            try:
                client.connect(self.address, port=self.port, username=self.user, pkey=pkey,
                               timeout=10, banner_timeout=20, auth_timeout=20,
                               look_for_keys=False, allow_agent=False)
                client.get_transport().set_keepalive(15)
                self._client = client
                return self
            except paramiko.BadHostKeyException:
                client.close()
                raise InfraError(f"{self.label} at {self.address}:{self.port} presented a host key that is not the pinned one",
                                 hint="For a nested host, rebuild images ('xenrig images --rebuild'); for a real host, check host_key in its config") from None
            except (paramiko.SSHException, OSError, EOFError) as exc:
                client.close()
                last = f"{type(exc).__name__}: {exc}"
            if time.monotonic() >= deadline:
                raise StageTimeout(f"stage '{stage}': could not log in to {self.label} at {self.address}:{self.port} within {timeout_s:.0f}s (last error: {last})")
            time.sleep(1)

    def close(self) -> None:
        if self._sftp:
            self._sftp.close()
            self._sftp = None
        if self._client:
            self._client.close()
            self._client = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def client(self) -> paramiko.SSHClient:
        if self._client is None:
            died = self.dead()
            raise InfraError(f"not connected to {self.label}" + (f": {died}" if died else ""))
        return self._client

    # -- commands ---------------------------------------------------------
    def run(self, command: str, *, timeout_s: float, check: bool = False, input: bytes | None = None,
            what: str | None = None, digest: bool = False, retry: bool = False) -> Result:
        """Run `command` under sh in dom0.  The remote side is wrapped in
        timeout(1) so a stuck command dies there too, not only our wait.

        `digest`: dom0 hashes the output where it is made and the hash is
        checked here (evidence: logs, dumps, traces).  `retry`: the command
        only reads, so when the SSH stream breaks under it we reconnect and
        run it again; otherwise we reconnect (so teardown still works) and
        raise TransportError: the command may or may not have happened."""
        attempts = 2 if retry else 1
        for attempt in range(1, attempts + 1):
            try:
                return self._run_once(command, timeout_s=timeout_s, check=check, input=input, what=what,
                                      digest=digest)
            except TransportError as exc:
                self._recover(str(exc))
                if attempt == attempts:
                    raise

    def _recover(self, why: str) -> None:
        """A fresh connection with the pinned key after the stream broke."""
        self.reconnects += 1
        self.transport_events.append(why[:300])
        log.warning("%s: SSH transport broke (%s); reconnecting", self.label, why[:200])
        self.close()
        if self.dead():
            log.warning("%s: not reconnecting: %s", self.label, self.dead())
            return
        try:
            self.connect(60, stage="reconnect")
        except XenrigError as exc:
            log.warning("%s: reconnect failed: %s", self.label, exc)

    def _run_once(self, command: str, *, timeout_s: float, check: bool, input: bytes | None,
                  what: str | None, digest: bool) -> Result:
        wrapped = f"timeout -k 5 {max(1, int(timeout_s))} sh -c {shlex.quote(command)}"
        if digest:
            wrapped = digest_wrap(wrapped)
        started = time.monotonic()
        try:
            transport = self.client.get_transport()
            if transport is None or not transport.is_active():
                raise paramiko.SSHException("SSH session not active")
            died = self.dead()
            if died:
                raise paramiko.SSHException(f"the far end is dead: {died}")
            chan = transport.open_session(timeout=30)
            chan.settimeout(timeout_s + 15)
            chan.exec_command(wrapped)
            if input is not None:
                chan.sendall(input)
            chan.shutdown_write()
            out, err = io.BytesIO(), io.BytesIO()
            deadline = started + timeout_s + 15
            drain(chan, transport, out, err, deadline, f"{self.label}: '{_short(command)}'", timeout_s, self.dead)
            status = chan.recv_exit_status()
            chan.close()
        except (paramiko.SSHException, socket.error, EOFError) as exc:
            raise TransportError(f"{self.label}: the SSH connection broke while running '{_short(command)}': "
                                 f"{type(exc).__name__}: {exc}",
                                 hint="The harness reconnected; this command was not retried because it may have "
                                      "changed state. See docs/dom0-corruption.md") from None
        stderr = err.getvalue().decode(errors="replace")
        if digest:
            stderr = check_digest(out.getvalue(), stderr, f"{self.label}: the output of '{_short(command)}'", "dom0")
        res = Result(command, status, out.getvalue().decode(errors="replace"), stderr,
                     time.monotonic() - started, out.getvalue())
        if check and status != 0:
            detail = (res.stderr or res.stdout).strip().splitlines()[-10:]
            timed = " (killed by its timeout)" if status in (124, 137) else ""
            raise InfraError(f"{self.label}: {what or repr(_short(command))} failed with status {status}{timed}: " + "\n".join(detail))
        return res

    def stream(self, command: str, timeout_s: float) -> "paramiko.Channel":
        """Start `command` with its stdin/stdout as a channel the caller
        talks to line by line (a long-lived agent); killed by timeout(1)
        in dom0 after `timeout_s` whatever happens to us."""
        wrapped = f"timeout -k 5 {max(1, int(timeout_s))} sh -c {shlex.quote(command)}"
        try:
            chan = self.client.get_transport().open_session(timeout=30)
            chan.exec_command(wrapped)
        except (paramiko.SSHException, socket.error, EOFError) as exc:
            raise InfraError(f"{self.label}: could not start '{_short(command)}': {exc}") from None
        return chan

    # -- files ------------------------------------------------------------
    @property
    def sftp(self) -> paramiko.SFTPClient:
        if self._sftp is None:
            self._sftp = self.client.open_sftp()
            # Every SFTP read and write waits at most this long: a stuck
            # dom0 must end in an error, not hang the run.
            self._sftp.get_channel().settimeout(SFTP_TIMEOUT_S)
        return self._sftp

    def put(self, local: Path, remote: str, mode: int | None = None) -> None:
        with self._sftp_op(f"copying {local.name} to {remote}"):
            self.sftp.put(str(local), remote)
            if mode is not None:
                self.sftp.chmod(remote, mode)

    def get(self, remote: str, local: Path) -> None:
        local.parent.mkdir(parents=True, exist_ok=True)
        with self._sftp_op(f"copying {remote} from dom0"):
            self.sftp.get(remote, str(local))

    def write(self, remote: str, data: bytes | str, mode: int | None = None) -> None:
        with self._sftp_op(f"writing {remote}"):
            with self.sftp.open(remote, "wb") as fh:
                fh.write(data.encode() if isinstance(data, str) else data)
            if mode is not None:
                self.sftp.chmod(remote, mode)

    def read(self, remote: str) -> bytes:
        with self._sftp_op(f"reading {remote}"):
            with self.sftp.open(remote, "rb") as fh:
                return fh.read()

    @contextlib.contextmanager
    def _sftp_op(self, what: str):
        """SFTP trouble is an error that names the file, never a traceback; a
        broken stream also gets a fresh connection for what comes next."""
        try:
            yield
        except FileNotFoundError:
            raise InfraError(f"{self.label}: {what}: no such file") from None
        except (paramiko.SSHException, EOFError, socket.timeout, ConnectionError) as exc:
            self._recover(f"SFTP {what}: {type(exc).__name__}: {exc}")
            raise TransportError(f"{self.label}: the SSH connection broke while {what}: {type(exc).__name__}: {exc}",
                                 hint="The harness reconnected; see docs/dom0-corruption.md") from None
        except OSError as exc:
            raise InfraError(f"{self.label}: {what} failed: {exc}") from None


def drain(chan, transport, out: io.BytesIO, err: io.BytesIO, deadline: float, what: str, timeout_s: float,
          dead: Callable[[], str | None] = lambda: None) -> None:
    """Read stdout and stderr until the channel's EOF, then wait for its exit
    status.  Not until the exit status: sshd sends that as soon as the
    command exits, possibly before the tail of a large output that is still
    waiting for window space, so stopping there loses the last 32 or 64 KiB
    (measured: 32 MiB transfers came back 32768 bytes short).  Blocks in
    select() on the channel instead of polling: QEMU needs the CPU."""
    fd = chan.fileno()
    while True:
        got = False
        if chan.recv_ready():
            out.write(chan.recv(65536))
            got = True
        if chan.recv_stderr_ready():
            err.write(chan.recv_stderr(65536))
            got = True
        if got:
            continue
        if chan.eof_received or chan.closed:
            break
        left = deadline - time.monotonic()
        if left <= 0:
            chan.close()
            raise StageTimeout(f"{what} gave no end of output within {timeout_s:.0f}s")
        if not transport.is_active():
            raise paramiko.SSHException("the SSH transport closed")
        died = dead()
        if died:
            raise paramiko.SSHException(f"the far end is dead: {died}")
        select.select([fd], [], [], min(left, 1.0))
    if not chan.status_event.wait(max(1.0, deadline - time.monotonic())):
        chan.close()
        raise StageTimeout(f"{what} gave no exit status within {timeout_s:.0f}s")


def digest_wrap(shell_command: str, tmpdir: str = "/dev/shm") -> str:
    """`shell_command` with its stdout kept in a tmpfs file, hashed where it
    was made, then sent; the hash is the last line of stderr.  mktemp: no
    two commands share a file."""
    return (f'f=$(mktemp {tmpdir}/xr-out.XXXXXX) || exit 125; '
            f'{shell_command} > "$f"; rc=$?; cat "$f"; '
            'echo "XR-SHA256 $(sha256sum < "$f" | cut -c1-64)" >&2; rm -f "$f"; exit $rc')


def check_digest(stdout: bytes, stderr: str, what: str, source: str) -> str:
    """Check the `XR-SHA256` line `source` put on stderr against `stdout`;
    stderr without that line, or CorruptionError."""
    found = DIGEST.findall(stderr)
    if not found:
        raise CorruptionError(f"{what} came without the sha256 {source} computes over every output",
                              hint="The stream was cut or damaged; see docs/dom0-corruption.md")
    if hashlib.sha256(stdout).hexdigest() != found[-1]:
        raise CorruptionError(f"{what} arrived on the host with a sha256 other than the one {source} computed "
                              f"({len(stdout)} bytes)", hint="The stack corrupts memory: see docs/dom0-corruption.md")
    return DIGEST.sub("", stderr).rstrip("\n")


def _short(command: str) -> str:
    return command if len(command) < 120 else command[:117] + "..."
