#!/usr/bin/env python3
"""xenrig's relay in dom0: runs a command in an HVM guest through the guest
agent, which listens on a virtio-serial port of the guest.  The device
model (qemu-xen) exposes that port as a unix socket in dom0.

    guestctl.py --socket PATH [--timeout S] ping
    guestctl.py --socket PATH [--timeout S] run -- COMMAND...
    guestctl.py --socket PATH [--timeout S] put SRC DEST [SRC DEST ...]
    guestctl.py --socket PATH serve      (JSON requests on stdin: see serve())

`put` copies each file SRC of dom0 to DEST in the guest and prints, one
line each, the sha256 the guest computed of what it wrote (exit 254 if it
differs from what was sent).

Prints the command's output and exits with its exit status; 255 when the
guest cannot be reached (the message says why on stderr).  The agent sends
the sha256 of the output it made; it is checked here and passed on as the
last line of stderr (`XR-SHA256 <hex>`) for the harness to check again, so
damage anywhere between the guest and the host is seen.  This file is
uploaded by the harness at connect time: it needs only python3's standard
library, so it runs on a real Xen host unchanged.
"""

import argparse
import base64
import hashlib
import json
import os
import socket
import sys
import time

UNREACHABLE = 255
CORRUPTED = 254


class Channel:
    def __init__(self, path, deadline):
        self.deadline = deadline
        self.buf = b""
        last = None
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.connect(path)
                return
            except OSError as exc:
                last = exc
                self.sock.close()
            if time.monotonic() > deadline:
                raise TimeoutError(f"cannot connect to {path}: {last}")
            time.sleep(0.2)

    def send(self, line):
        self.sock.sendall(line.encode() + b"\n")

    def line(self):
        while b"\n" not in self.buf:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the guest agent did not answer in time")
            self.sock.settimeout(min(left, 1.0))
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            if not data:
                raise ConnectionError("the guest agent's socket closed")
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode(errors="replace").strip("\r")

    def sync(self, tag):
        """Ping until our own pong comes back: skips output left over from an
        earlier, interrupted exchange and the agent's startup banner."""
        while True:
            self.send(f"XR-PING {tag}")
            resend = time.monotonic() + 2.0
            while time.monotonic() < resend:
                try:
                    self.sock.settimeout(0.5)
                    data = self.sock.recv(65536)
                except socket.timeout:
                    if time.monotonic() > self.deadline:
                        raise TimeoutError("the guest agent did not answer a ping in time")
                    continue
                if not data:
                    raise ConnectionError("the guest agent's socket closed")
                self.buf += data
                while b"\n" in self.buf:
                    line, self.buf = self.buf.split(b"\n", 1)
                    if line.decode(errors="replace").strip("\r") == f"XR-PONG {tag}":
                        return
            if time.monotonic() > self.deadline:
                raise TimeoutError("the guest agent did not answer a ping in time")


def put(ch, tag, src, dest):
    with open(src, "rb") as fh:
        data = fh.read()
    ch.send(f"XR-PUT {tag} {len(data)} {base64.b64encode(dest.encode()).decode()}")
    ch.sock.sendall(data)
    while True:
        line = ch.line()
        if line.startswith(f"XR-PUT-OK {tag} "):
            break
    fields = line.split()
    want = hashlib.sha256(data).hexdigest()
    # XR-PUT-OK <id> <bytes> <sha256>
    if len(fields) < 4 or fields[2] != str(len(data)) or fields[3] != want:
        print(f"guestctl: {dest} arrived damaged in the guest (guest has {' '.join(fields[2:4])}, "
              f"sent {len(data)} bytes {want})", file=sys.stderr)
        return CORRUPTED
    print(want)
    return 0


def exchange(ch, tag, cmd, deadline):
    """Run `cmd` in the guest: (status, output, sha256 the guest computed or
    None); ValueError when the output arrived damaged."""
    budget = max(1, int(deadline - time.monotonic()) - 2)
    ch.send(f"XR-RUN {tag} {budget} {base64.b64encode(cmd.encode()).decode()}")
    while True:
        line = ch.line()
        if line.startswith(f"XR-OUT {tag} "):
            fields = line.split()
            status, size = int(fields[2]), int(fields[3])
            digest = fields[4] if len(fields) > 4 else None
            break
    chunks = []
    while True:
        line = ch.line()
        if line == f"XR-END {tag}":
            break
        chunks.append(line)
    out = base64.b64decode("".join(chunks))
    if digest is not None and (len(out) != size or hashlib.sha256(out).hexdigest() != digest):
        raise Damaged(f"the guest's output arrived damaged in dom0 ({len(out)} of {size} bytes, "
                      "sha256 differs from the one the guest computed)", out)
    return status, out, digest


class Damaged(Exception):
    def __init__(self, message, out):
        super().__init__(message)
        self.out = out


def serve(path):
    """One request per stdin line, one answer per stdout line, both JSON:
    {"id", "timeout", "cmd"} -> {"id", "status", "out" (base64), "sha256"}
    or {"id", "status": 255|254, "error"}.  The harness keeps one of these
    per guest for a whole run: a command then costs one round trip to the
    agent instead of a Python start in dom0 (half a second under TCG) and a
    reconnect to the port.  The socket is reopened after any failure."""
    ch = None
    for raw in sys.stdin.buffer:
        req = json.loads(raw)
        deadline = time.monotonic() + float(req["timeout"])
        tag = f"{os.getpid()}-{req['id']}"
        try:
            if ch is None:
                ch = Channel(path, deadline)
            ch.deadline = deadline
            ch.sync(tag)
            status, out, digest = exchange(ch, tag, base64.b64decode(req["cmd"]).decode(), deadline)
            answer = {"id": req["id"], "status": status, "out": base64.b64encode(out).decode(), "sha256": digest}
        except Damaged as exc:
            answer = {"id": req["id"], "status": CORRUPTED, "error": f"guestctl: {exc}"}
        except (TimeoutError, ConnectionError, OSError, ValueError) as exc:
            if ch is not None:
                ch.sock.close()
            ch = None
            answer = {"id": req["id"], "status": UNREACHABLE, "error": f"guestctl: {exc}"}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--socket", required=True)
    ap.add_argument("--timeout", type=float, default=60)
    ap.add_argument("action", choices=["ping", "run", "put", "serve"])
    ap.add_argument("command", nargs=argparse.REMAINDER)
    args = ap.parse_args()
    if args.action == "serve":
        return serve(args.socket)
    deadline = time.monotonic() + args.timeout
    tag = f"{os.getpid()}-{int(time.time() * 1000)}"
    try:
        ch = Channel(args.socket, deadline)
        ch.sync(tag)
        if args.action == "ping":
            print("pong")
            return 0
        if args.action == "put":
            files = args.command
            if len(files) % 2 or not files:
                print("guestctl: put takes SRC DEST pairs", file=sys.stderr)
                return UNREACHABLE
            for i in range(0, len(files), 2):
                rc = put(ch, f"{tag}.{i // 2}", files[i], files[i + 1])
                if rc:
                    return rc
            return 0
        cmd = " ".join(args.command[1:] if args.command[:1] == ["--"] else args.command)
        try:
            status, out, digest = exchange(ch, tag, cmd, deadline)
        except Damaged as exc:
            sys.stdout.buffer.write(exc.out)
            print(f"guestctl: {exc}", file=sys.stderr)
            return CORRUPTED
        sys.stdout.buffer.write(out)
        sys.stdout.flush()
        if digest is not None:
            print(f"XR-SHA256 {digest}", file=sys.stderr)
        return status
    except (TimeoutError, ConnectionError, OSError, ValueError) as exc:
        print(f"guestctl: {exc}", file=sys.stderr)
        return UNREACHABLE


if __name__ == "__main__":
    sys.exit(main())
