"""A Xen host seen through dom0: xl, Xen's log, debug keys, files.

The same class serves the nested host (reached through the L0 VM's
forwarded port) and a real Xen host over the network: everything above
`connect` is the same code.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from harness.config import HostConfig
from harness.errors import InfraError
from harness.host.ssh import Result, SshSession

AGENT_DIR = "/run/xenrig/agent"
WORK_DIR = "/run/xenrig"
REMOTE_SOURCES = Path(__file__).resolve().parent.parent / "remote"


@dataclass
class Endpoint:
    address: str
    port: int
    user: str
    key_file: Path
    host_key: str


class XenHost:
    def __init__(self, ssh: SshSession, cfg: HostConfig):
        self.ssh = ssh
        self.cfg = cfg
        self.machine = None   # the L0 VM when the host is nested (harness.machine.Machine)

    def run(self, command: str, *, timeout_s: float | None = None, check: bool = False, what: str | None = None,
            digest: bool = False, retry: bool = False) -> Result:
        """`retry` only for commands that change nothing; `digest` for output
        that is evidence (see SshSession.run)."""
        return self.ssh.run(command, timeout_s=timeout_s or self.cfg.timeouts.command_s, check=check, what=what,
                            digest=digest, retry=retry)

    def xl(self, args: str, *, timeout_s: float | None = None, check: bool = True, retry: bool = False,
           digest: bool = False) -> Result:
        return self.run(f"xl {args}", timeout_s=timeout_s, check=check, what=f"'xl {args}'", retry=retry,
                        digest=digest)

    def dmesg(self) -> str:
        """Xen's whole console ring (never cleared: see dmesg_since)."""
        return self.xl("dmesg", timeout_s=30, retry=True, digest=True).stdout

    def dmesg_lines(self) -> int:
        res = self.run("xl dmesg | wc -l", timeout_s=30, retry=True)
        return int(res.stdout.strip()) if res.stdout.strip().isdigit() else 0

    def dmesg_since(self, lines: int) -> str:
        """What Xen logged after its first `lines` lines (all of it if the
        ring has wrapped since and fewer lines are there now)."""
        res = self.run(f"n=$(xl dmesg | wc -l); if [ \"$n\" -ge {int(lines)} ]; then xl dmesg | tail -n +{int(lines) + 1}; "
                       "else xl dmesg; fi", timeout_s=30, retry=True, digest=True)
        return res.stdout

    def debug_key(self, key: str) -> None:
        self.xl(f"debug-keys {key}", timeout_s=30)

    def domid(self, name: str) -> int | None:
        res = self.xl(f"domid {name}", check=False, timeout_s=30, retry=True)
        out = res.stdout.strip().splitlines()
        return int(out[-1]) if res.ok and out and out[-1].strip().isdigit() else None

    def upload_agents(self) -> None:
        """Copy the dom0-side helpers (harness/remote/*.py): uploaded on each
        connect so a real host needs nothing installed but python3."""
        self.run(f"mkdir -p {AGENT_DIR}", check=True, timeout_s=30)
        for src in sorted(REMOTE_SOURCES.glob("*.py")):
            self.ssh.put(src, f"{AGENT_DIR}/{src.name}", mode=0o755)



@contextlib.contextmanager
def connect(endpoint: Endpoint, cfg: HostConfig, timeout_s: float, label: str = "dom0") -> Iterator[XenHost]:
    ssh = SshSession(endpoint.address, endpoint.port, endpoint.user, endpoint.key_file, endpoint.host_key, label)
    try:
        ssh.connect(timeout_s, stage="ssh to dom0")
        host = XenHost(ssh, cfg)
        res = host.run("test -e /proc/xen/capabilities && cat /proc/xen/capabilities", timeout_s=30)
        if "control_d" not in res.stdout:
            raise InfraError(f"{endpoint.address}:{endpoint.port} is not a Xen dom0 (/proc/xen/capabilities lacks control_d)")
        host.upload_agents()
        yield host
    finally:
        ssh.close()
