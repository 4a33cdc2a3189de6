"""xenrig up: boot the stack and leave it running for a person."""

from __future__ import annotations

from pathlib import Path

from harness import paths
from harness.machine import stackfile


def register(sub) -> None:
    p = sub.add_parser("up", help="boot Xen, dom0 and the scenario's HVM guest, and leave them running")
    p.add_argument("scenario", type=Path, nargs="?", default=Path("configs/smoke.yaml"),
                   help="scenario whose host and guest to start (default: configs/smoke.yaml)")
    p.add_argument("--host", type=Path, help="host config to use instead of the scenario's")
    p.add_argument("--no-guest", action="store_true", help="start only Xen and dom0")
    p.add_argument("--console", action="store_true", help="show the L0 serial console live while booting")
    p.set_defaults(handler=handle)


def handle(args) -> int:
    # Imported here, not at the top: building the parser (xenrig --help, check, nightly) must not load the
    # whole stack.
    from harness import runner, sshkeys, stack
    from harness.stages import ConsoleProgress, Timeline

    scenario, host_cfg = runner.load(args.scenario, args.host)
    if host_cfg.kind != "nested":
        print("xenrig up: a remote host is already up; use 'xenrig run' against it")
        return 2
    state = paths.state_dir()
    run_dir = runner.new_run_dir(f"up-{scenario.name}")
    timeline = Timeline([ConsoleProgress()])
    key_file, _ = sshkeys.client_key(state)
    built_images, built_modules = runner.prepare(scenario, timeline, run_dir)
    # The VM is kept only once everything is up: a failure on the way out of
    # these blocks tears down whatever was started.
    with stack.xen_host(host_cfg, timeline, run_dir, built=built_images, console=args.console, keep=True,
                        replace_kept=True) as xen:
        machine = xen.machine
        try:
            guest_name = None
            if not args.no_guest:
                with runner.guest_with_modules(xen, scenario, built_modules, timeline, run_dir, {}, keep=True) as (g, _):
                    guest_name = g.name
            runner.keep_stack(xen, host_cfg, run_dir, guest_name)
            record = stackfile.load(state)
        except BaseException:
            machine.destroy()
            raise
    print(f"xenrig: the stack is up ({timeline.elapsed():.0f}s).")
    print(f"  dom0 shell:   xenrig shell dom0      (or: ssh -p {record.ssh_port} -i {key_file} root@127.0.0.1)")
    if record.guest:
        print(f"  guest shell:  xenrig shell guest     (guest '{record.guest}', through the guest agent)")
    print(f"  console log:  {record.serial_log}  (Xen + dom0)")
    print("  stop it with: xenrig down")
    return 0
