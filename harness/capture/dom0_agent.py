"""GNTTABOPs issued from dom0 (harness/remote/gntagent.py) as trace events.

The agent answers one JSON line per operation with its inputs and what Xen
returned; this module runs it over SSH and turns the hypercall results into
`gnttab.*` events.  Helper operations (gntalloc, reading a grant) stay out
of the trace but their results are returned to the caller.
"""

from __future__ import annotations

import json
import select
import time

from harness.errors import InfraError, StageTimeout
from harness.host import XenHost
from harness.host.xen_host import AGENT_DIR

_FIELDS = {
    "query_size": ("rdom", "status", "nr_frames", "max_nr_frames", "rc"),
    "setup_table": ("rdom", "nr_frames", "status", "rc"),
    "map": ("rdom", "ref", "flags", "status", "host_addr", "handle", "dev_bus_addr", "rc"),
    "unmap": ("handle", "status", "host_addr", "dev_bus_addr", "rc"),
    "copy": ("src_dom", "src", "src_off", "dst_dom", "dst", "dst_off", "len", "flags", "status", "rc"),
    "transfer": ("rdom", "ref", "gfn", "status", "rc"),
    "set_version": ("version", "rc", "out_version"),
    "get_version": ("rdom", "rc", "version"),
}
HYPERCALLS = set(_FIELDS)


def run(xen: XenHost, ops: list[dict], timeout_s: float = 60) -> list[dict]:
    """Run the operations in one agent process; one result per operation
    (plus the agent's clean-up unmaps at the end)."""
    payload = "".join(json.dumps(op) + "\n" for op in ops).encode()
    # digest: the results are evidence the model judges; dom0 hashes them.
    res = xen.ssh.run(f"python3 {AGENT_DIR}/gntagent.py", timeout_s=timeout_s, input=payload, digest=True)
    results = []
    for line in res.stdout.splitlines():
        try:
            results.append(json.loads(line))
        except ValueError:
            raise InfraError(f"the dom0 grant agent printed a line that is not JSON: {line[:200]!r}") from None
    errors = [r for r in results if "error" in r]
    if res.exit_status != 0 or errors:
        detail = errors[0]["error"] if errors else (res.stderr.strip() or f"exit status {res.exit_status}")
        raise InfraError(f"the dom0 grant agent failed: {detail}")
    return results


def to_event(result: dict) -> dict | None:
    op = result["op"]
    if op not in HYPERCALLS:
        return None
    ev = {"t_ns": result["t_ns"], "dom": 0, "src": "dom0", "kind": f"gnttab.{op}"}
    for f in _FIELDS[op]:
        if f in result:
            ev[f] = result[f]
    return ev


def to_events(results: list[dict]) -> list[dict]:
    return [e for e in (to_event(r) for r in results) if e is not None]


class AgentSession:
    """One gntagent process for a whole scenario, so mappings made by one
    step are still held at a later step (and at a Xen dump); at close the
    agent unmaps what it still holds and those unmaps are returned too."""

    def __init__(self, xen: XenHost, timeout_s: float = 1800):
        self.chan = xen.ssh.stream(f"python3 {AGENT_DIR}/gntagent.py", timeout_s)
        self.dead = xen.ssh.dead
        self._buf = b""
        self._err = b""           # the agent's last stderr, for an error message

    def _line(self, timeout_s: float) -> str | None:
        """Blocks in select() on the channel (QEMU needs the CPU more than a
        poll loop), waking each second to ask whether dom0 is dead."""
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self._buf:
            if self.chan.recv_ready():
                self._buf += self.chan.recv(65536)
                continue
            if self.chan.recv_stderr_ready():
                # Its stderr wakes select() too: read it, or the wait spins.
                self._err = (self._err + self.chan.recv_stderr(65536))[-4096:]
                continue
            if self.chan.exit_status_ready() and not self.chan.recv_ready():
                return None
            left = deadline - time.monotonic()
            if left <= 0:
                raise StageTimeout(f"the dom0 grant agent gave no answer within {timeout_s:.0f}s")
            died = self.dead()
            if died:
                raise InfraError(f"the dom0 grant agent cannot answer: {died}")
            select.select([self.chan], [], [], min(left, 1.0))
        line, self._buf = self._buf.split(b"\n", 1)
        return line.decode(errors="replace")

    def call(self, op: dict, timeout_s: float = 60) -> dict:
        self.chan.sendall((json.dumps(op) + "\n").encode())
        line = self._line(timeout_s)
        if line is None:
            if self.chan.recv_stderr_ready():
                self._err += self.chan.recv_stderr(65536)
            err = self._err.decode(errors="replace")
            raise InfraError(f"the dom0 grant agent exited unexpectedly: {err.strip()[-400:]}")
        try:
            result = json.loads(line)
        except ValueError:
            raise InfraError(f"the dom0 grant agent printed a line that is not JSON: {line[:200]!r}") from None
        if "error" in result:
            raise InfraError(f"the dom0 grant agent failed on {op}: {result['error']}")
        return result

    def close(self, timeout_s: float = 60) -> list[dict]:
        """End the agent; return the clean-up results it printed."""
        out = []
        try:
            self.chan.shutdown_write()
            while True:
                line = self._line(timeout_s)
                if line is None:
                    break
                if line.strip():
                    try:
                        out.append(json.loads(line))
                    except ValueError:
                        raise InfraError(f"the dom0 grant agent printed a line that is not JSON: {line[:200]!r}") from None
        finally:
            self.chan.close()
        return out
