"""An HVM guest on a Xen host: created with xl from dom0, commands run in it
through the guest agent, always destroyed on the way out.

Transport for commands (documented in docs/guest-agent.md): a virtio-serial
port of the guest is a unix socket of qemu-xen in dom0; a busybox-sh agent
in the guest serves a line protocol on it, and `guestctl.py` (uploaded into
dom0) relays one command per SSH exec.  It needs no network and no grant
of its own, so it neither disturbs nor depends on the PV paths under test.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from harness.config import GuestConfig
from harness.errors import CorruptionError, InfraError, StageTimeout
from harness.guest import xlcfg
from harness.guest.relay import Relay
from harness.host.ssh import Result
from harness.host.ssh import check_digest as ssh_digest
from harness.host.xen_host import AGENT_DIR, XenHost
from harness.stages import Timeline, wait_for

log = logging.getLogger(__name__)

GUEST_IMAGE_DIR = "/var/lib/xenrig/guest-image"
UNREACHABLE = 255
CORRUPTED = 254          # guestctl: the output arrived in dom0 with the wrong sha256
PANIC = re.compile(r"Kernel panic - not syncing.*|BUG: .*|Oops: .*")


@dataclass
class HvmGuest:
    host: XenHost
    cfg: GuestConfig
    paths: xlcfg.GuestPaths
    domid: int | None = None
    # One long-lived relay in dom0 for this guest's commands (guest/relay.py);
    # None until the first command, False once it could not be started.
    _relay: Relay | None | bool = field(default=None, repr=False, compare=False)

    @property
    def name(self) -> str:
        return self.paths.name

    def run(self, command: str, *, timeout_s: float | None = None, check: bool = False, what: str | None = None) -> Result:
        """Run `command` with sh in the guest; its exit status and output."""
        timeout_s = timeout_s or self.host.cfg.timeouts.command_s
        res = self._via_relay(command, timeout_s)
        if res is None:
            relay = (f"python3 {AGENT_DIR}/guestctl.py --socket {shlex.quote(self.paths.agent_socket)} "
                     f"--timeout {int(timeout_s)} run -- {shlex.quote(command)}")
            res = self.host.run(relay, timeout_s=timeout_s + 20)
        if res.exit_status == UNREACHABLE and res.stderr.startswith("guestctl:"):
            raise InfraError(f"guest {self.name}: {res.stderr.strip()} (while running '{command[:80]}')",
                             hint=f"The guest console is {self.paths.console_log} in dom0")
        check_digest(res, f"guest {self.name}: the output of '{command[:80]}'")
        if check and res.exit_status != 0:
            raise InfraError(f"guest {self.name}: {what or repr(command[:80])} failed with status {res.exit_status}: "
                             + res.stdout.strip()[-600:])
        return res

    def _via_relay(self, command: str, timeout_s: float) -> Result | None:
        """The command run through the relay; None when there is none (it
        could not be started, or XENRIG_GUEST_RELAY=0): one guestctl each."""
        if self._relay is False or os.environ.get("XENRIG_GUEST_RELAY") == "0":
            return None
        if self._relay is None:
            self._relay = Relay(self.host, self.paths.agent_socket)
        try:
            return self._relay.run(command, timeout_s)
        except InfraError as exc:
            # A relay that could not start, or died before its first answer
            # (an old or broken guestctl in dom0): fall back for good.
            if not self._relay.answered and not isinstance(exc, StageTimeout):
                log.warning("guest %s: no relay in dom0 (%s); one guestctl per command", self.name, exc.message)
                self._relay = False
                return None
            raise

    def close_relay(self) -> None:
        if isinstance(self._relay, Relay):
            self._relay.close()
        self._relay = None

    def ping(self, timeout_s: float) -> bool:
        self.close_relay()      # one connection at a time to the agent's port
        res = self.host.run(f"python3 {AGENT_DIR}/guestctl.py --socket {shlex.quote(self.paths.agent_socket)} "
                            f"--timeout {int(timeout_s)} ping", timeout_s=timeout_s + 15, retry=True)
        return res.ok

    def put(self, files: list[tuple[Path, str]], timeout_s: float = 120) -> list[str]:
        """Copy files of the host to their paths in the guest (via dom0, in
        one exchange with the agent); return the sha256 the guest computed
        of each as written, already checked against what dom0 sent."""
        # The agent's port takes one connection at a time: the relay's must
        # go for guestctl's own (the next command starts a new relay).
        self.close_relay()
        pairs = []
        for i, (local, dest) in enumerate(files):
            staged = f"{self.paths.run_dir}/put-{i}-{local.name}"
            self.host.ssh.put(local, staged)
            pairs += [shlex.quote(staged), shlex.quote(dest)]
        res = self.host.run(f"python3 {AGENT_DIR}/guestctl.py --socket {shlex.quote(self.paths.agent_socket)} "
                            f"--timeout {int(timeout_s)} put {' '.join(pairs)} ; rc=$? ; "
                            f"rm -f {' '.join(pairs[0::2])} ; exit $rc", timeout_s=timeout_s + 20)
        names = ", ".join(local.name for local, _ in files)
        if res.exit_status == CORRUPTED:
            raise CorruptionError(f"guest {self.name}: {names} damaged on the way into the guest: "
                                  f"{res.stderr.strip()[:200]}", hint="The stack corrupts memory: see docs/dom0-corruption.md")
        got = res.stdout.split()
        if not res.ok or len(got) != len(files):
            raise InfraError(f"guest {self.name}: copying {names} into the guest failed: "
                             + (res.stderr or res.stdout).strip()[-400:],
                             hint=f"The guest console is {self.paths.console_log} in dom0")
        return got

    def console(self) -> str:
        res = self.host.run(f"cat {shlex.quote(self.paths.console_log)} 2>/dev/null", timeout_s=30, retry=True,
                            digest=True)
        return res.stdout

    def exists(self) -> bool:
        return self.host.domid(self.name) is not None


def check_digest(res: Result, what: str) -> None:
    """The agent hashed the output in the guest; guestctl checked it in dom0
    and passed the hash on: check it once more here.  Damage anywhere on the
    way is an infrastructure error about the stack, never evidence."""
    if res.exit_status == CORRUPTED and "arrived damaged" in res.stderr:
        raise CorruptionError(f"{what} was damaged between the guest and dom0: {res.stderr.strip()[:200]}",
                              hint="The stack corrupts memory: see docs/dom0-corruption.md")
    res.stderr = ssh_digest(res.stdout_bytes, res.stderr, what, "the guest agent")


def _prepare(host: XenHost, cfg: GuestConfig, paths: xlcfg.GuestPaths) -> None:
    # Leftovers of a killed run on a kept-up or real host: same name, same files.
    if host.domid(paths.name) is not None:
        host.xl(f"destroy {paths.name}", check=False, timeout_s=60)
    cmds = [f"rm -rf {shlex.quote(paths.run_dir)}", f"mkdir -p {shlex.quote(paths.run_dir)}"]
    for disk in cfg.disks:
        cmds.append(f"truncate -s {disk.size_mib}M {shlex.quote(paths.vbd_image(disk))}")
    host.run(" && ".join(cmds), check=True, timeout_s=60, what="preparing the guest's files in dom0")
    host.ssh.write(paths.config, xlcfg.render(cfg, paths))


def wait_ready(guest: HvmGuest, timeout_s: float, stage: str) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        left = deadline - time.monotonic()
        if guest.ping(min(15.0, max(1.0, left))):
            return
        if not guest.exists():
            raise InfraError(f"stage '{stage}': guest {guest.name} stopped before its agent answered; its console ends with:\n"
                             + "\n".join(guest.console().strip().splitlines()[-15:]) + "\n")
        panic = PANIC.search(guest.console())
        if panic:
            raise InfraError(f"stage '{stage}': guest {guest.name} console shows '{panic.group(0)[:160]}'")
        if time.monotonic() >= deadline:
            raise StageTimeout(f"stage '{stage}': guest {guest.name} agent did not answer within {timeout_s:.0f}s; console ends with:\n"
                               + "\n".join(guest.console().strip().splitlines()[-15:]) + "\n")


def guest_paths(name: str) -> xlcfg.GuestPaths:
    return xlcfg.GuestPaths(name=name, run_dir=f"/run/xenrig/guests/{name}",
                            kernel=f"{GUEST_IMAGE_DIR}/vmlinuz", ramdisk=f"{GUEST_IMAGE_DIR}/initrd.img")


def attach(host: XenHost, name: str, cfg: GuestConfig | None = None) -> HvmGuest:
    """An already running guest (left up by `xenrig up`, or restored with
    its stack from a snapshot)."""
    guest = HvmGuest(host, cfg or GuestConfig(), guest_paths(name))
    guest.domid = host.domid(name)
    if guest.domid is None:
        raise InfraError(f"no guest named {name} is running on this Xen host", hint="Start one with 'xenrig up'")
    return guest


def create(host: XenHost, cfg: GuestConfig, timeline: Timeline, *, name: str = "xenrig-guest",
           artifacts: Path | None = None) -> HvmGuest:
    """Create the guest from the base image and wait for its agent.  The
    modules under test come later, through the agent: that way a guest at
    this point is the same for every scenario and can be snapshotted.  If it
    does not come up it is destroyed here, its console kept."""
    paths = guest_paths(name)
    guest = HvmGuest(host, cfg, paths)
    created = False
    try:
        with timeline.stage("start HVM guest") as st:
            _prepare(host, cfg, paths)
            res = host.xl(f"create {paths.config}", check=False, timeout_s=120)
            if not res.ok:
                raise InfraError(f"'xl create' failed for guest {name}: " + (res.stderr or res.stdout).strip()[-800:],
                                 hint=f"The xl config is {paths.config} in dom0; /var/log/xen/ has libxl's logs")
            created = True
            # xl may still hold its lock right after create: ask until it answers.
            guest.domid = wait_for(lambda: host.domid(name), timeout_s=30, what=f"the domain id of {name}",
                                   stage=st.name, interval_s=1)
            timeline.note(f"guest {name} is domain {guest.domid}")
            wait_ready(guest, host.cfg.timeouts.guest_boot_s, st.name)
    except BaseException:
        if created:
            _finish(guest, timeline, artifacts, keep=False)
        raise
    return guest


@contextlib.contextmanager
def start(host: XenHost, cfg: GuestConfig, timeline: Timeline, *, name: str = "xenrig-guest",
          artifacts: Path | None = None, keep: bool = False) -> Iterator[HvmGuest]:
    """Create the guest; it is destroyed on the way out unless kept."""
    guest = create(host, cfg, timeline, name=name, artifacts=artifacts)
    with owned(guest, timeline, artifacts, keep):
        yield guest


@contextlib.contextmanager
def owned(guest: HvmGuest, timeline: Timeline, artifacts: Path | None, keep: bool = False) -> Iterator[HvmGuest]:
    """A running guest (created here or restored with its stack) that is
    destroyed on the way out, its console kept, unless `keep`."""
    try:
        yield guest
    finally:
        _finish(guest, timeline, artifacts, keep)


def _finish(guest: HvmGuest, timeline: Timeline, artifacts: Path | None, keep: bool) -> None:
    """Keep the guest's console as evidence, then destroy it (unless kept)."""
    guest.close_relay()
    if artifacts is not None:
        with contextlib.suppress(Exception):
            artifacts.mkdir(parents=True, exist_ok=True)
            (artifacts / f"{guest.name}-console.log").write_text(guest.console())
    if not keep:
        with timeline.stage("destroy HVM guest"):
            guest.host.xl(f"destroy {guest.name}", check=False, timeout_s=guest.host.cfg.timeouts.shutdown_s + 30)
