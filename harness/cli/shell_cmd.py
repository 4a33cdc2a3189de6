"""xenrig shell dom0|guest [-- COMMAND]: a shell on the stack `xenrig up` left.

dom0: the system ssh client with the harness's key and the pinned host key.
guest: commands through the guest agent (one at a time, no terminal): give
a command to run it once, or none for a line-by-line prompt.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

from harness import config, paths
from harness.errors import UsageError
from harness.machine import stackfile


def register(sub) -> None:
    p = sub.add_parser("shell", help="a shell in dom0 or the guest of the stack left up by 'xenrig up'")
    p.add_argument("where", choices=["dom0", "guest"])
    p.add_argument("command", nargs="*", help="run this command instead of an interactive shell")
    p.set_defaults(handler=handle)


def _record() -> stackfile.StackRecord:
    record = stackfile.load(paths.state_dir())
    if record is None:
        raise UsageError("no stack is up", hint="Start one with 'xenrig up'")
    return record


def _command_line(words: list[str]) -> str:
    """One word is taken as a shell command line as it is; several are
    quoted as separate arguments."""
    return words[0] if len(words) == 1 else shlex.join(words)


def handle(args) -> int:
    record = _record()
    if args.where == "dom0":
        known = paths.state_dir() / "known_hosts"
        known.write_text(f"[127.0.0.1]:{record.ssh_port} {record.host_key}\n")
        ssh = ["ssh", "-p", str(record.ssh_port), "-i", record.client_key, "-o", f"UserKnownHostsFile={known}",
               "-o", "StrictHostKeyChecking=yes", "-o", "IdentitiesOnly=yes", "root@127.0.0.1"]
        if args.command:
            ssh.append(_command_line(args.command))
        os.execvp("ssh", ssh)
    if not record.guest:
        raise UsageError("the stack has no guest (it was started with --no-guest)")
    from harness import host as hostmod
    from harness.guest.hvm import attach

    endpoint = hostmod.Endpoint("127.0.0.1", record.ssh_port, "root", Path(record.client_key), record.host_key)
    with hostmod.connect(endpoint, config.HostConfig(), 30) as xen:
        guest = attach(xen, record.guest)
        if args.command:
            res = guest.run(_command_line(args.command))
            sys.stdout.write(res.stdout)
            return res.exit_status
        print(f"guest {guest.name} (domain {guest.domid}); one command per line, no terminal; Ctrl-D ends")
        status = 0
        while True:
            try:
                line = input(f"{guest.name}# ")
            except EOFError:
                print()
                return status
            if line.strip():
                res = guest.run(line)
                sys.stdout.write(res.stdout)
                status = res.exit_status
                if status:
                    print(f"[exit {status}]")
