"""xenrig snapshot list|make|prune: the saved booted stacks runs restore."""

from __future__ import annotations

import time
from pathlib import Path

from harness.errors import UsageError


def register(sub) -> None:
    p = sub.add_parser("snapshot", help="list, make or prune the snapshots of a booted stack that runs restore")
    p.add_argument("action", choices=["list", "make", "prune"])
    p.add_argument("scenario", type=Path, nargs="?", default=Path("configs/smoke.yaml"),
                   help="make: the scenario whose host and guest to snapshot (default: configs/smoke.yaml)")
    p.add_argument("--host", type=Path, help="make: host config to use instead of the scenario's")
    p.add_argument("--all", action="store_true", help="prune: remove every snapshot, not only stale ones")
    p.set_defaults(handler=handle)


def handle(args) -> int:
    # Imported here, not at the top: building the parser (xenrig --help, check, nightly) must not load the
    # whole stack.
    from harness import booted, images, runner, snapshot
    from harness.stages import ConsoleProgress, Timeline

    if args.action == "list":
        snaps = snapshot.list_all()
        for s in snaps:
            b = s.brief()
            print(f"{b['name']}  {b['size_bytes'] / 2**20:8.1f} MiB  made {b.get('made_at', '?')} "
                  f"in {b.get('make_s', '?')}s  accel={b.get('accel', '?')}  {s.path}")
        if not snaps:
            print("no snapshots; the next 'xenrig run' of a nested host makes one")
        return 0
    if args.action == "prune":
        keep = set()
        if not args.all:
            keep = {s.key for s in snapshot.list_all() if snapshot.lookup(s.key) is not None}
        for d in snapshot.prune(keep):
            print(f"pruned {d}")
        return 0
    scenario, host = runner.load(args.scenario, args.host)
    if host.kind != "nested":
        raise UsageError(f"host {host.name} is a real Xen host: only a nested (QEMU) host can be snapshotted",
                         hint="Use a host config with kind: nested")
    timeline = Timeline([ConsoleProgress()])
    run_dir = runner.new_run_dir(f"snapshot-{scenario.name}")
    built_images = images.ensure(timeline, run_dir)
    info: dict = {}
    started = time.monotonic()
    with booted.stack_and_guest(host, scenario.guest, timeline, run_dir, built=built_images, info=info):
        pass
    snap = info.get("snapshot", {})
    if snap.get("restored"):
        print(f"xenrig: snapshot {snap['name']} was there already and restores (checked in "
              f"{time.monotonic() - started:.0f}s)")
    elif snap.get("made"):
        print(f"xenrig: made snapshot {snap['name']}: {snap['size_bytes'] / 2**20:.0f} MiB, {snap['make_s']}s")
    else:
        print(f"xenrig: no snapshot made: {snap.get('save_error', 'another run is making it')}")
        return 2
    return 0
