"""SSH into a Xen host's dom0 with paramiko: pinned host key, key login,
commands with a timeout, exit status and output, SFTP.

The host key is pinned (from the image manifest for a nested host, from the
config for a real one); an unknown or changed key is refused, never
accepted blindly.
"""

from __future__ import annotations

import base64
import io
import shlex
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import paramiko

from harness.errors import InfraError, StageTimeout


@dataclass
class Result:
    command: str
    exit_status: int
    stdout: str
    stderr: str
    duration_s: float

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
            raise InfraError(f"not connected to {self.label}")
        return self._client

    # -- commands ---------------------------------------------------------
    def run(self, command: str, *, timeout_s: float, check: bool = False, input: bytes | None = None,
            what: str | None = None) -> Result:
        """Run `command` under sh in dom0.  The remote side is wrapped in
        timeout(1) so a stuck command dies there too, not only our wait."""
        wrapped = f"timeout -k 5 {max(1, int(timeout_s))} sh -c {shlex.quote(command)}"
        started = time.monotonic()
        try:
            chan = self.client.get_transport().open_session(timeout=30)
            chan.settimeout(timeout_s + 15)
            chan.exec_command(wrapped)
            if input is not None:
                chan.sendall(input)
            chan.shutdown_write()
            out, err = io.BytesIO(), io.BytesIO()
            deadline = started + timeout_s + 15
            while True:
                if chan.recv_ready():
                    out.write(chan.recv(65536))
                elif chan.recv_stderr_ready():
                    err.write(chan.recv_stderr(65536))
                elif chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
                    break
                else:
                    if time.monotonic() > deadline:
                        chan.close()
                        raise StageTimeout(f"{self.label}: '{_short(command)}' gave no exit status within {timeout_s:.0f}s")
                    time.sleep(0.01)
            status = chan.recv_exit_status()
            chan.close()
        except (paramiko.SSHException, socket.error, EOFError) as exc:
            raise InfraError(f"{self.label}: the SSH connection failed while running '{_short(command)}': {exc}") from None
        res = Result(command, status, out.getvalue().decode(errors="replace"), err.getvalue().decode(errors="replace"),
                     time.monotonic() - started)
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
        return self._sftp

    def put(self, local: Path, remote: str, mode: int | None = None) -> None:
        self.sftp.put(str(local), remote)
        if mode is not None:
            self.sftp.chmod(remote, mode)

    def get(self, remote: str, local: Path) -> None:
        local.parent.mkdir(parents=True, exist_ok=True)
        self.sftp.get(remote, str(local))

    def write(self, remote: str, data: bytes | str, mode: int | None = None) -> None:
        with self.sftp.open(remote, "wb") as fh:
            fh.write(data.encode() if isinstance(data, str) else data)
        if mode is not None:
            self.sftp.chmod(remote, mode)

    def read(self, remote: str) -> bytes:
        with self.sftp.open(remote, "rb") as fh:
            return fh.read()


def _short(command: str) -> str:
    return command if len(command) < 120 else command[:117] + "..."
