"""The scripted blkif backend (harness/remote/xrback.py) started and stopped
in dom0 for one vbd of the guest.

The backend is a process of ours in dom0, not the kernel's blkback or
QEMU's qdisk: it makes the vbd's xenstore directories itself, under
`backend/xrvbd/<domid>/<devid>` (a type neither blkback, which watches
`backend/vbd`, nor libxl knows), so nothing else ever claims the device;
`xl` does not know the vbd either, which is why a scripted vbd cannot be
saved, restored or migrated.  What it is told travels as a JSON file
(no value of it reaches a shell), and what it did comes back as JSON lines,
kept in the run folder as evidence.

A backend left behind by a killed run exits by itself once its guest's
frontend directory is gone (the domain destroyed); `SWEEP` kills the ones
whose domain no longer exists before a new one starts.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
import time
from dataclasses import dataclass
from pathlib import Path

from harness.checks import parsers
from harness.errors import InfraError
from harness.host.xen_host import AGENT_DIR

SCRIPT = "xrback.py"
STATE_DIR = "/run/xenrig/xrback"


@dataclass
class ScriptedVbd:
    vdev: str
    domid: int
    devid: int
    pid: int
    spec: str        # the spec file in dom0
    log: str         # its JSON-lines log in dom0
    stderr: str
    name: str = ""   # its files in the run folder: <name>.jsonl, <name>.spec.json


def _names(domid: int, devid: int) -> tuple[str, str, str]:
    base = f"{STATE_DIR}/d{domid}-{devid}"
    return base + ".json", base + ".log.jsonl", base + ".stderr"


# Kills the scripted backends whose domain no longer exists (a run killed
# before it could stop its own); run before each new backend starts.
SWEEP = (f"live=\" $(xl list | awk 'NR > 1 {{print $2}}' | tr '\\n' ' ') \"; "
         f"for f in {STATE_DIR}/d*.pid; do [ -e \"$f\" ] || continue; "
         "n=${f##*/d}; d=${n%%-*}; case $d in *[!0-9]*|'') continue;; esac; "
         "case $live in *\" $d \"*) continue;; esac; "
         "kill -9 \"$(cat \"$f\")\" 2>/dev/null; rm -f \"$f\"; done")


def start(xen, *, domid: int, vdev: str, image: str, script: dict, run_dir: Path,
          trusted: bool = True) -> ScriptedVbd:
    """Write the spec (a copy stays in the run folder), start the backend
    detached from this SSH session, and return once it is running (it then
    makes the vbd's nodes)."""
    devid = parsers.vdev_number(vdev)
    if not (isinstance(domid, int) and domid > 0 and devid):
        raise InfraError(f"scripted backend: bad domain {domid!r} or vdev {vdev!r}")
    spec_path, log, stderr = _names(domid, devid)
    spec = {"domid": domid, "devid": devid, "vdev": vdev, "image": image, "log": log, "trusted": trusted,
            "frontend": f"/local/domain/{domid}/device/vbd/{devid}",
            "backend": f"/local/domain/0/backend/xrvbd/{domid}/{devid}", "script": script}
    # A vdev attached again after a detach gets files of its own: the
    # first backend's log stays the evidence of its lie.
    name, n = f"xrback-{vdev}", 1
    while (run_dir / f"{name}.spec.json").exists():
        n += 1
        name = f"xrback-{vdev}.{n}"
    local = run_dir / f"{name}.spec.json"
    local.write_text(json.dumps(spec, indent=1) + "\n")
    # The sweep and the folder in one exchange with dom0 (a round trip
    # costs a few hundred ms under TCG, and a hostile run attaches dozens).
    xen.run(f"{SWEEP}; mkdir -p {STATE_DIR} && rm -f {shlex.quote(log)} {shlex.quote(stderr)}", check=True,
            timeout_s=30, what="preparing the scripted backend's folder")
    xen.ssh.put(local, spec_path)
    pidfile = f"{STATE_DIR}/d{domid}-{devid}.pid"
    res = xen.run(f"setsid python3 {AGENT_DIR}/{SCRIPT} {shlex.quote(spec_path)} "
                  f"</dev/null >/dev/null 2>{shlex.quote(stderr)} & echo $! > {shlex.quote(pidfile)}; "
                  # Alive once it has made the vbd's nodes (its log's first line).
                  f"for i in $(seq 50); do [ -s {shlex.quote(log)} ] && break; sleep 0.1; done; "
                  f"cat {shlex.quote(pidfile)}; kill -0 $(cat {shlex.quote(pidfile)}) && echo alive",
                  timeout_s=30)
    lines = res.stdout.split()
    if not lines or not lines[0].isdigit() or "alive" not in lines:
        err = xen.run(f"cat {shlex.quote(stderr)}", timeout_s=30).stdout.strip()[-600:]
        raise InfraError(f"the scripted backend for {vdev} did not start: {err or 'no output'}",
                         hint=f"Its spec is {spec_path} in dom0")
    return ScriptedVbd(vdev, domid, devid, int(lines[0]), spec_path, log, stderr, name)


def stop(xen, vbd: ScriptedVbd, timeout_s: float = 60) -> dict:
    """SIGTERM: the backend unmaps, says Closing, waits for the frontend's
    Closed and removes the vbd's nodes.  Killed if it takes longer."""
    pid = vbd.pid
    xen.run(f"kill -TERM {pid} 2>/dev/null", timeout_s=30)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if xen.run(f"kill -0 {pid} 2>/dev/null", timeout_s=30).exit_status != 0:
            break
        time.sleep(0.5)
    else:
        xen.run(f"kill -9 {pid} 2>/dev/null", timeout_s=30)
        return {"backend_exit": "killed"}
    xen.run(f"rm -f {STATE_DIR}/d{vbd.domid}-{vbd.devid}.pid", timeout_s=30)
    return {"backend_exit": "stopped"}


def kill(xen, vbd: ScriptedVbd) -> None:
    """SIGKILL, and the vbd's backend directory removed (the frontend's
    goes with the guest)."""
    xen.run(f"kill -9 {vbd.pid} 2>/dev/null; rm -f {STATE_DIR}/d{vbd.domid}-{vbd.devid}.pid; "
            f"xenstore-rm /local/domain/0/backend/xrvbd/{vbd.domid}/{vbd.devid} 2>/dev/null", timeout_s=30)


def fetch_log(xen, vbd: ScriptedVbd, run_dir: Path) -> list[dict]:
    """The backend's log, copied into the run folder; its events as dicts
    (lines that do not parse are kept in the copy and skipped here)."""
    text = xen.run(f"cat {shlex.quote(vbd.log)} 2>/dev/null", timeout_s=60).stdout
    err = xen.run(f"cat {shlex.quote(vbd.stderr)} 2>/dev/null", timeout_s=30).stdout
    name = vbd.name or f"xrback-{vbd.vdev}"
    (run_dir / f"{name}.jsonl").write_text(text)
    if err.strip():
        (run_dir / f"{name}.stderr").write_text(err)
    events = []
    for line in text.splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    return events


def script_payload(script) -> dict:
    """The scenario's BackendScript as the JSON the backend reads."""
    if script is None:
        return {}
    data = dataclasses.asdict(script)
    data["rules"] = [{k: v for k, v in rule.items() if v is not None} for rule in data["rules"]]
    return data
