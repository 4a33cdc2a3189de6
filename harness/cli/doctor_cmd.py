"""xenrig doctor [--fix]: check (and install) what the host needs."""

from __future__ import annotations

from harness import doctor


def register(sub) -> None:
    p = sub.add_parser("doctor", help="check the host for what xenrig needs; --fix installs it")
    p.add_argument("--fix", action="store_true", help="install missing Debian packages and create the libvirt-qemu user")
    p.set_defaults(handler=handle)


def _print(findings) -> int:
    missing = 0
    for f in findings:
        mark = "ok     " if f.ok else "MISSING"
        print(f"{mark} {f.name}: {f.detail}")
        if not f.ok:
            missing += 1
            if f.fix:
                print(f"        fix: {f.fix}")
    return missing


def handle(args) -> int:
    findings = doctor.examine()
    missing = _print(findings)
    if missing and args.fix:
        print()
        if not doctor.fix(findings):
            print("xenrig doctor: the fix did not complete; see the output above")
            return 2
        print()
        missing = _print(doctor.examine())
    if missing:
        print(f"xenrig doctor: {missing} thing(s) missing" + ("" if args.fix else "; 'xenrig doctor --fix' installs them"))
        return 2
    print("xenrig doctor: this host has everything xenrig needs")
    return 0
