"""xenrig down: stop a stack left running by `xenrig up` (or a killed run)."""

from __future__ import annotations

from harness import paths
from harness.machine import stackfile


def register(sub) -> None:
    p = sub.add_parser("down", help="stop the stack left running by 'xenrig up' and any leftovers")
    p.set_defaults(handler=handle)


def handle(args) -> int:
    from harness.machine import vm

    state = paths.state_dir()
    with stackfile.StackLock(state):
        gone = vm.stop_kept(state)
    for g in gone:
        print(f"stopped {g}")
    print("xenrig: nothing was running" if not gone else "xenrig: the stack is down")
    return 0
