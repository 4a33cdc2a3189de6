"""The typed configuration: hosts, guests, scenarios.

Every setting is declared here with its type and default; the loader
validates YAML against these classes, so code below this layer never looks
settings up by string.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal


def _rng(lo: int, hi: int) -> dict:
    return {"min": lo, "max": hi}


@dataclass
class Timeouts:
    """Seconds each wait may take before the stage is declared stuck."""

    dom0_boot_s: int = field(default=300, metadata=_rng(5, 3600))
    guest_boot_s: int = field(default=300, metadata=_rng(5, 3600))
    command_s: int = field(default=120, metadata=_rng(1, 3600))
    shutdown_s: int = field(default=30, metadata=_rng(1, 600))


@dataclass
class HostConfig:
    """A Xen host: a nested one we boot in QEMU, or a real one over SSH."""

    name: str = "local"
    kind: Literal["nested", "remote"] = "nested"
    # nested: the L0 VM
    accel: Literal["auto", "tcg", "kvm"] = "auto"
    libvirt_uri: str = "qemu:///embed"
    machine: Literal["pc", "q35"] = "pc"
    memory_mib: int = field(default=3072, metadata=_rng(1024, 1 << 20))
    vcpus: int = field(default=2, metadata=_rng(1, 256))
    dom0_mem_mib: int = field(default=1024, metadata=_rng(256, 1 << 20))
    xen_cmdline_extra: str = ""
    dom0_cmdline_extra: str = ""
    # The L0 CPU under TCG: "auto" is the model docs/dom0-corruption.md
    # settled on; "maximum" is QEMU's everything-TCG-can model; any other
    # value is a QEMU CPU model name, with `cpu_features` ("+svm", "-pdpe1gb")
    # added or removed.  Ignored under KVM (host passthrough).
    cpu_model: str = "auto"
    cpu_features: list[str] = field(default_factory=list)
    # remote: where dom0's sshd is and how we trust it
    address: str | None = None
    port: int = field(default=22, metadata=_rng(1, 65535))
    user: str = "root"
    key: Path | None = None
    host_key: str | None = None
    timeouts: Timeouts = field(default_factory=Timeouts)

    def validate(self):
        if self.kind == "remote":
            for key in ("address", "key", "host_key"):
                if getattr(self, key) is None:
                    return key, "is required for a remote host (kind: remote)"
        if self.kind == "nested" and self.dom0_mem_mib + 512 > self.memory_mib:
            return "dom0_mem_mib", f"leaves too little of memory_mib={self.memory_mib} for Xen and a guest (keep 512 MiB free)"
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", self.cpu_model):
            return "cpu_model", f"must be auto, maximum or a QEMU CPU model name, got {self.cpu_model!r}"
        for feat in self.cpu_features:
            if not re.fullmatch(r"[+-][a-z0-9_.-]{1,40}", feat):
                return "cpu_features", f"each entry is +name or -name (a QEMU CPU feature), got {feat!r}"
        if not (self.libvirt_uri.startswith("qemu:///embed") or self.libvirt_uri.startswith("qemu:///system")):
            return "libvirt_uri", "must be qemu:///embed (no daemon) or qemu:///system"
        return None


@dataclass
class DiskConfig:
    """One vbd of the HVM guest."""

    vdev: str = "xvda"
    backend: Literal["phy", "qdisk"] = "phy"
    size_mib: int = field(default=64, metadata=_rng(1, 65536))

    def validate(self):
        if not (self.vdev.startswith("xvd") and self.vdev[3:].isalpha() and len(self.vdev) == 4):
            return "vdev", f"must be xvda..xvdz, got {self.vdev!r}"
        return None


@dataclass
class GuestConfig:
    """The HVM guest that runs the frontends."""

    memory_mib: int = field(default=256, metadata=_rng(64, 1 << 20))
    vcpus: int = field(default=1, metadata=_rng(1, 64))
    max_grant_frames: int | None = field(default=None, metadata=_rng(1, 4096))
    disks: list[DiskConfig] = field(default_factory=lambda: [DiskConfig()])
    cmdline_extra: str = ""

    def validate(self):
        vdevs = [d.vdev for d in self.disks]
        if len(set(vdevs)) != len(vdevs):
            return "disks", f"two disks share a vdev: {vdevs}"
        return None


@dataclass
class ModuleSpec:
    """A guest kernel module the harness builds from source and loads."""

    enabled: bool = True
    # blkfront: "debian" = drivers/block/xen-blkfront.c from the Debian
    # linux-source package of the guest kernel's exact version; or a path to
    # a kernel tree or to the .c file.  exerciser: "builtin" =
    # guest-kernel/xenrig_gnttab, or a path to a module folder.
    source: str = "default"
    patches: list[Path] = field(default_factory=list)   # applied in order, with patch -p1
    params: dict[str, str] = field(default_factory=dict)  # module parameters for insmod

    def validate(self):
        for i, p in enumerate(self.patches):
            if not p.is_file():
                return "patches", f"entry {i} names {p}, which is not a file"
        for k, v in self.params.items():
            if not k.replace("_", "").isalnum():
                return "params", f"'{k}' is not a module parameter name"
            if not re.fullmatch(r"[A-Za-z0-9_.,:+-]{0,256}", str(v)):
                return "params", (f"the value of '{k}' ({str(v)[:40]!r}) may hold only letters, digits and _.,:+- "
                                  "(it goes on an insmod command line)")
        return None


@dataclass
class ModulesConfig:
    """The frontends under test, built from source (defaults: unmodified),
    and our capture module (loaded only when the scenario captures)."""

    blkfront: ModuleSpec = field(default_factory=ModuleSpec)
    exerciser: ModuleSpec = field(default_factory=ModuleSpec)
    tracer: ModuleSpec = field(default_factory=ModuleSpec)


BACKEND_BEHAVIOURS = ("delay", "duplicate", "unknown-id", "id-out-of-range", "wrong-op", "bad-status",
                      "rsp-prod-ahead", "rewrite-after-push", "unsolicited", "storm", "no-notify", "keep-mapped",
                      "reorder", "map-other", "scribble-write", "state-jump", "close-with-io", "vanish-with-io",
                      # about the device, not a request: every match field is ignored
                      "connect-early", "hold-persistent")


@dataclass
class BackendRule:
    """One lie of the scripted backend (harness/remote/xrback.py): what it
    does, for which requests it takes (the `nth` taken, 0-based, per vbd;
    reads or writes only; from the `after`-th on; those starting at
    `sector_from` or beyond; at most `count` times)."""

    do: Literal[BACKEND_BEHAVIOURS] = "delay"
    nth: int | None = field(default=None, metadata=_rng(0, 1 << 30))
    op: Literal["read", "write", "other"] | None = None
    after: int = field(default=0, metadata=_rng(0, 1 << 30))
    sector_from: int = field(default=0, metadata=_rng(0, 1 << 40))
    count: int | None = field(default=None, metadata=_rng(1, 1 << 30))
    # How long (delay, reorder, no-notify, keep-mapped, hold-persistent).
    # Unset, each behaviour takes its own default in the backend (100 ms
    # for delay, 2 s for reorder, no-notify and keep-mapped, 10 s for
    # hold-persistent): one shared default here made reorder's 100 ms.
    ms: int | None = field(default=None, metadata=_rng(0, 600_000))
    value: int = field(default=0, metadata=_rng(-32768, 1 << 20))  # status, how far ahead, how many events

    def validate(self):
        if self.do == "bad-status" and not -32768 <= self.value <= 32767:
            return "value", f"a blkif status is 16 bits signed: {self.value} does not fit"
        if self.do == "storm" and self.value > 200_000:
            return "value", f"{self.value} notifications would hold the backend for minutes: at most 200000"
        return None


@dataclass
class BackendScript:
    """What the scripted backend advertises and where it lies.  `features`
    overrides the backend's xenstore nodes (an empty value removes one)."""

    features: dict[str, str] = field(default_factory=dict)
    rules: list[BackendRule] = field(default_factory=list)

    def validate(self):
        for key, value in self.features.items():
            if not re.fullmatch(r"[a-z][a-z0-9-]{0,63}", key) or key in ("state", "frontend", "frontend-id"):
                return "features", f"{key!r} is not a backend feature node this script may set"
            if len(value) > 64 or not value.isprintable():
                return "features", f"the value of {key} must be at most 64 printable characters"
        return None


@dataclass
class VbdStep:
    """A vbd attached to or detached from the running guest (xl
    block-attach / block-detach).  `target: missing` attaches a vbd whose
    image does not exist; `target: stalled` (phy only) one whose hotplug
    script never hands blkback a device, so blkback maps the ring and waits
    in InitWait for ever.  For both the step waits `settle_s` and reports
    the states both ends reached.  `target: slow` (phy only) attaches a
    memory-backed null_blk device in dom0 that completes each request
    `latency_ms` after it arrived: the guest's requests pile up, so its
    rings fill (harness/host/slow_disk.py)."""

    op: Literal["attach", "detach"] = "attach"
    vdev: str = "xvdb"
    # None: the backend of the guest's first disk (so a nightly cell that
    # puts every disk on qdisk attaches on qdisk too).
    backend: Literal["phy", "qdisk", "scripted"] | None = None
    size_mib: int = field(default=16, metadata=_rng(1, 65536))
    target: Literal["file", "missing", "stalled", "slow"] = "file"
    # backend: scripted only (harness/host/scripted_backend.py).
    script: BackendScript | None = None
    trusted: bool = True
    settle_s: int = field(default=10, metadata=_rng(1, 600))
    latency_ms: int = field(default=200, metadata=_rng(1, 10_000))

    def validate(self):
        if self.target == "stalled" and self.backend not in (None, "phy"):
            return "target", "stalled needs backend: phy (the kernel's blkback, held back by the hotplug script)"
        if self.target == "slow" and self.backend not in (None, "phy"):
            return "target", "slow needs backend: phy (the kernel's blkback on a null_blk device in dom0)"
        if self.backend == "scripted" and self.target != "file":
            return "target", "a scripted backend serves an image file: leave target at file"
        if self.script is not None and self.backend != "scripted":
            return "script", "only a vbd with backend: scripted follows a script"
        if not self.trusted and self.backend != "scripted":
            return "trusted", "trusted: false is written by the scripted backend only (backend: scripted)"
        if self.target == "slow" and self.size_mib > 4096:
            return "size_mib", f"is {self.size_mib}, but a slow disk lives in dom0's memory: at most 4096"
        return DiskConfig(self.vdev, "phy", self.size_mib).validate()


@dataclass
class ModuleStep:
    """blkfront unloaded (rmmod: every device removed, its rings torn down)
    or loaded again (the same build, the scenario's parameters; the step
    waits until every vbd the guest has connected again)."""

    op: Literal["unload", "load"] = "unload"
    name: Literal["blkfront"] = "blkfront"


@dataclass
class DomainStep:
    """The running guest saved and restored (`op: save-restore`: xl save
    suspends it, writes its memory to a file in dom0 and destroys the
    domain; xl restore makes a new domain of it) or migrated live to the
    same host (`op: migrate`: xl migrate copies its memory to a new domain
    while it runs, then suspends it for the last pages).  Either way the
    guest resumes where it was: blkfront's resume path tears its rings
    down, connects new ones and issues again the requests that were in
    flight.  The step waits until the guest's agent answers and every vbd
    is connected again, and reports the old and the new domain id."""

    op: Literal["save-restore", "migrate"] = "save-restore"


@dataclass
class Step:
    """One step of a scenario, run in order after the guest is up.

    Exactly one of: `guest` (a command line for the grant-table exerciser,
    docs/exerciser.md), `shell` (a shell command in the guest), `dom0` (a
    GNTTABOP for dom0's grant agent: op plus its inputs), `dump: true` (a
    quiet point: Xen's grant dump goes into the trace), `vbd` (attach or
    detach a disk), `module` (unload or load blkfront), `domain` (save
    and restore, or migrate, the guest) or `idle_s` (the guest left alone that long:
    blkfront's purge work and blkback's persistent-grant timeout run); the
    last four end with a quiet point of their own.  Values may name an
    earlier step's result as "@ID.field"; "guest" in dom0 inputs means the
    guest's domain id.  `expect` lists result fields and the values they
    must have (GNTST names such as okay or bad_gntref are allowed for
    status); with `capture: true`, dom0 and hypercall steps are also judged
    by the model.
    """

    name: str = ""
    id: str | None = None
    guest: str | None = None
    shell: str | None = None
    dom0: dict[str, str] | None = None
    dump: bool = False
    vbd: VbdStep | None = None
    module: ModuleStep | None = None
    domain: DomainStep | None = None
    idle_s: int | None = field(default=None, metadata=_rng(1, 3600))
    expect: dict[str, str] = field(default_factory=dict)
    timeout_s: int = field(default=120, metadata=_rng(1, 3600))

    def validate(self):
        given = [k for k in ("guest", "shell", "dom0", "vbd", "module", "domain", "idle_s")
                 if getattr(self, k) is not None] \
            + (["dump"] if self.dump else [])
        if len(given) != 1:
            return "name", ("a step needs exactly one of guest, shell, dom0, dump, vbd, module, domain, idle_s; "
                            f"this one has {', '.join(given) or 'none'}")
        if self.idle_s is not None and self.idle_s >= self.timeout_s:
            return "idle_s", (f"{self.idle_s} s of idling does not fit in the step's timeout_s ({self.timeout_s}); "
                              "raise timeout_s above it")
        if self.dom0 is not None and "op" not in self.dom0:
            return "dom0", "needs an 'op' (query_size, setup_table, map, unmap, copy, transfer, set_version, get_version, gntalloc, read_grant)"
        return None


@dataclass
class ReproSignature:
    """What a reproduced bug looks like (any one that matches is enough)."""

    rule: str | None = None          # a model rule id, e.g. blkif.seg-grant
    guest_log: str | None = None     # a regex over the guest's console and dmesg
    xen_log: str | None = None       # a regex over xl dmesg
    hang: bool = False               # requests stop completing

    def validate(self):
        if not (self.rule or self.guest_log or self.xen_log or self.hang):
            return "rule", "a signature needs at least one of rule, guest_log, xen_log, hang"
        import re
        for key in ("guest_log", "xen_log"):
            pattern = getattr(self, key)
            if pattern:
                try:
                    re.compile(pattern)
                except re.error as exc:
                    return key, f"is not a valid regular expression ({exc})"
        return None


@dataclass
class ReproSpec:
    """`xenrig repro`: the bug's signature."""

    signature: ReproSignature
    bug: str = ""                    # one line: what the bug is


# The smoke checks a scenario may name (harness/checks/smoke.py); a name
# without [vdev] means "for every disk".
SMOKE_CHECKS = (
    "xen.hvm-enabled", "guest.platform-pci", "guest.platform-pci-driver", "guest.grant-table-v1",
    "guest.blkfront-bound", "guest.io-roundtrip",
)


@dataclass
class Scenario:
    """What `xenrig run FILE` does."""

    name: str
    host: Path = Path("hosts/local.yaml")
    guest: GuestConfig = field(default_factory=GuestConfig)
    modules: ModulesConfig = field(default_factory=ModulesConfig)
    checks: list[str] = field(default_factory=list)
    # capture: trace the frontends (xenrig_trace), dom0's grant operations
    # and Xen's dumps, and check the trace with the model.
    capture: bool = False
    steps: list[Step] = field(default_factory=list)
    # Seconds without progress after which a guest operation that waits on
    # blkfront (loading it, a step) is judged a hang (a FAIL with what is
    # stuck), not a harness timeout.  0: the host's command timeout.
    hang_after_s: int = field(default=0, metadata=_rng(0, 3600))
    repro: ReproSpec | None = None
    io_mib: int = field(default=4, metadata=_rng(1, 4096))
    # Rings (vdev/queue, e.g. xvdb/1) the steps must fill, every slot in
    # flight at once: blkfront stops and restarts a queue only on a full
    # ring.  A captured run that never fills one is an ERROR, not a PASS.
    fill_rings: list[str] = field(default_factory=list)
    description: str = ""

    def validate(self):
        ids = [st.id for st in self.steps if st.id]
        if len(set(ids)) != len(ids):
            return "steps", f"two steps share an id: {sorted(i for i in ids if ids.count(i) > 1)[0]}"
        if not self.capture:
            scripted = {st.vbd.vdev for st in self.steps if st.vbd and st.vbd.backend == "scripted"}
            # A scripted vbd needs no xl and no quiet point: a scenario of
            # lies is judged by what the guest does (hostile-backend.yaml).
            plain = [st for st in self.steps if st.vbd and st.vbd.vdev not in scripted]
            if plain or any(st.dump or st.module or st.domain for st in self.steps):
                return "steps", ("dump, module and domain steps, and vbd steps other than a scripted backend's, "
                                 "feed the captured trace: set 'capture: true'")
        for name in self.checks:
            if name.split("[")[0] not in SMOKE_CHECKS:
                return "checks", f"names an unknown check '{name}' (known: {', '.join(SMOKE_CHECKS)})"
        for ring in self.fill_rings:
            if not re.fullmatch(r"xvd[a-z]/[0-9]{1,2}", ring):
                return "fill_rings", f"each entry is a ring as vdev/queue (e.g. xvdb/1), got {ring!r}"
        if self.fill_rings and not self.capture:
            return "fill_rings", "is judged from the captured trace: set 'capture: true'"
        for disk in self.guest.disks:
            if self.io_mib > disk.size_mib:
                return "io_mib", f"is {self.io_mib} MiB but disk {disk.vdev} has only {disk.size_mib} MiB"
        return None
