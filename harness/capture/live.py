"""A capture session on a running stack: arms the tracer in the guest before
blkfront loads, drains the guest's records between steps, runs dom0's grant
operations through one long-lived agent, takes Xen's dumps at quiet points,
and writes one trace (schema v1) that the model then replays.
"""

from __future__ import annotations

import re
import shlex
import time
from pathlib import Path

from harness.build import BuiltModule
from harness.capture import dom0_agent, exerciser_log, xen_dump
from harness.capture.session import TraceAssembly
from harness.checks import parsers
from harness.config import Scenario
from harness.errors import InfraError, XenrigError
from harness.guest import HvmGuest
from harness.guest import modules as guest_modules
from harness.host import XenHost
from harness.model.ring import blkif_ring_entries

TRACE_DIR = "/sys/kernel/debug/xenrig_trace"
EXERCISER_DIR = "/sys/kernel/debug/xenrig_gnttab"
DEFAULT_MAX_GRANT_FRAMES = 64   # xl's default max_grant_frames for a domU (Xen 4.17)


def _parse_stats(text: str) -> dict[str, str]:
    """The tracer's stats file: `key: value` or `key=value` lines."""
    stats = {}
    for line in text.splitlines():
        sep = "=" if "=" in line.split(":")[0] else ":"
        if sep in line:
            k, v = line.split(sep, 1)
            stats[k.strip()] = v.strip()
    return stats


# The xenstore nodes blkif.features records (drivers/block/xen-blkfront.c
# talk_to_blkback and blkfront_gather_backend_features; blkback's xenbus.c).
FRONT_NODES = ("state", "feature-persistent", "multi-queue-num-queues", "ring-page-order", "protocol", "trusted")
BACK_NODES = ("feature-persistent", "feature-max-indirect-segments", "multi-queue-max-queues",
              "max-ring-page-order", "feature-flush-cache", "feature-barrier", "feature-discard",
              "discard-granularity", "discard-alignment", "discard-secure", "sector-size",
              "physical-sector-size", "sectors", "info")
NEGOTIATION_PARAMS = ("feature_persistent", "max_indirect_segments", "max_queues", "max_ring_page_order",
                      "trusted")


MAX_RING_ORDER = 4    # XENBUS_MAX_RING_GRANT_ORDER: 16 pages


def _node_values(out: str, count: int) -> list[str | None]:
    """The values of `count` two-line blocks ("@", then "=value" or an empty
    line for an absent node), in order; None where absent or unreadable."""
    lines = out.split("\n")
    values: list[str | None] = []
    for i in range(count):
        pair = lines[2 * i:2 * i + 2]
        ok = len(pair) == 2 and pair[0] == "@" and pair[1].startswith("=")
        values.append(pair[1][1:] if ok else None)
    return values


def _param_value(text: str | None) -> int | None:
    """A module parameter as sysfs or insmod spells it: an integer, or a
    boolean as kstrtobool reads one (y/n, t/f, 1/0 by the first letter;
    on/off)."""
    text = (text or "").strip()
    if re.fullmatch(r"-?[0-9]+", text):
        return int(text)
    low = text.lower()
    if low.startswith("on"):
        return 1
    if low.startswith("of"):
        return 0
    return {"y": 1, "t": 1, "n": 0, "f": 0}.get(low[:1])


def _connect_facts(front: dict[str, str], back: dict[str, str]) -> dict:
    """blkif.connect's facts from both ends' nodes: persistent grants when
    both ends wrote feature-persistent 1, the backend's indirect maximum."""
    indirect = back.get("feature-max-indirect-segments", "")
    return {"persistent": front.get("feature-persistent") == back.get("feature-persistent") == "1",
            "max_indirect": int(indirect) if indirect.isdigit() else 0}


def _backend_kind(scenario: Scenario) -> str:
    # A scripted backend maps through gntdev as qdisk does (on a PV dom0
    # each map pins the entry twice: the process's page and the kernel's).
    kinds = {d.backend for d in scenario.guest.disks}
    kinds |= {"qdisk" for s in scenario.steps if s.vbd is not None and s.vbd.backend == "scripted"}
    if kinds == {"phy"}:
        return "blkback"
    if kinds == {"qdisk"}:
        return "qdisk"
    # Mixed: the model then infers only whether a mapping is writable.
    return "qdisk" if kinds else "none"


class CaptureSession:
    def __init__(self, xen: XenHost, guest: HvmGuest, scenario: Scenario, run_dir: Path):
        self.armed = False
        self.xen, self.guest, self.scenario, self.run_dir = xen, guest, scenario, run_dir
        # The guest's domain id in the trace, for the whole run: a restore
        # (xl save/restore) makes the same guest another domain, and the
        # model follows one guest (guest.resume says what changed).
        # Commands to Xen and dom0 use guest.domid, the one it has now.
        self.trace_dom = guest.domid
        # ring-ref -> name as they were before a restore, until the drain
        # that holds the guest.resume record (guest_trace.parse_guest_records).
        self.names_before_resume: dict[int, str] | None = None
        # Requests drained and not yet answered: their responses may come in a
        # later drain and must still go before the ends of their grants.
        self.unanswered: dict = {}
        max_frames = scenario.guest.max_grant_frames or DEFAULT_MAX_GRANT_FRAMES
        self.assembly = TraceAssembly(
            policy="linux-6.1", backend=_backend_kind(scenario), guest=guest.domid, backend_dom=0,
            max_grant_frames=max_frames,
            domains=[{"domid": guest.domid, "type": "hvm", "max_grant_frames": max_frames}],
            note="captured by xenrig: tracer kprobes in the guest, gntagent in dom0, xl debug-keys g, "
                 "the guest's whole grant table read by dom0 from Xen")
        self.agent: dom0_agent.AgentSession | None = None
        self.exerciser_seq = -1
        self.vdevs = [d.vdev for d in scenario.guest.disks]   # the vbds connected now
        self.attached: dict = {}                              # vdev -> DiskConfig of a vbd a step attached
        self.stalled: list[str] = []                          # vbds whose backend waits in InitWait for ever
        self.slow: dict[str, tuple[str, str]] = {}            # vdev -> (name, /dev path) of its slow disk in dom0
        self.scripted: dict = {}                              # vdev -> ScriptedVbd: our own backend serves it
        self.blkfront: BuiltModule | None = None              # the build loaded (for a reload)
        self.rings_stale = True                               # a ring may have been set up since
        self.ring_names: dict[int, str] = {}                  # ring-ref -> "xvda/0"
        self._ring_paths: dict[str, tuple[str, str, list[int]]] = {}   # ring -> (frontend, backend, ring-refs)
        self.rings_announced: set[str] = set()
        self._fresh_rings: set[str] = set()                   # learned since the last drain's announcements
        self.stats: dict = {}
        self.guest_records = 0     # binary records read so far, to number them in errors
        self.exerciser_events: dict[int, int] = {}   # exerciser log seq -> trace seq
        self.failure: str | None = None   # set once the capture lost data: never judged after that
        self.console_tail = ""            # the guest console's last lines at the last checkpoint
        self.dropped_seen: str | None = None   # the tracer's drop counter at the last drain
        self._asked: dict[str, int] | None = None   # blkfront's parameters in force (blkif.features)

    # -- arming --------------------------------------------------------------
    def tracer_params(self, blkfront: BuiltModule | None) -> dict[str, str]:
        from harness.capture import layout

        params: dict[str, str] = {}
        if blkfront is not None:
            try:
                offsets = layout.blkfront_offsets(blkfront.ko)
            except layout.LayoutError as exc:
                raise InfraError(f"cannot trace this blkfront build: {exc}",
                                 hint="The tracer needs the ring layout and the push site of the exact build") from None
            for key, value in offsets.items():
                params[layout.MODULE_PARAMS[key]] = layout.param_value(value)
        # Addresses the tracer checks against kallsyms itself at load: a wrong
        # one refuses the load, a missing one turns a feature off (stats say so).
        symbols = {"gnttab_free_callback_list": "sym_free_callback_list",
                   "gnttab_list_lock": "sym_gnttab_list_lock",
                   "_raw_spin_unlock_irqrestore": "sym_unlock_irqrestore"}
        res = self.guest.run("grep -E ' (" + "|".join(symbols) + ")$' /proc/kallsyms", timeout_s=30)
        found = {}
        for m in re.finditer(r"^([0-9a-f]{16}) [a-zA-Z] (\S+)$", res.stdout, re.M):
            if m.group(2) in symbols and int(m.group(1), 16):
                found.setdefault(symbols[m.group(2)], f"0x{m.group(1)}")
        # The free list's order under its lock needs both addresses (docs/capture.md).
        if "sym_gnttab_list_lock" in found and "sym_unlock_irqrestore" not in found:
            del found["sym_gnttab_list_lock"]
        params.update(found)
        return params

    def arm(self, tracer: BuiltModule, blkfront: BuiltModule | None) -> guest_modules.LoadedModule:
        tracer.params = {**self.tracer_params(blkfront), **tracer.params}
        # Optimized (jump) kprobes run their handlers with interrupts on: a
        # blkfront interrupt arriving during a handler in process context then
        # hits probes while one is running, and the kernel skips those hits
        # (measured: 462 gnttab_try_end_foreign_access calls lost in one smoke
        # run).  Plain int3 kprobes keep interrupts off in the handler.
        self.guest.run("echo 0 > /proc/sys/debug/kprobes-optimization", check=True, timeout_s=30,
                       what="turning kprobe optimization off for an exact capture")
        # (The tracer also masks interrupts in its handlers: see xr_pre/xr_exit.)
        loaded = guest_modules.insmod(self.guest, tracer, self.xen.cfg.timeouts.command_s)
        self.guest.run(f"echo start > {TRACE_DIR}/ctl", check=True, timeout_s=30, what="starting the tracer")
        self.armed = True
        return loaded

    # -- guest ---------------------------------------------------------------
    def _learn_rings(self) -> None:
        """ring-ref -> 'xvdX/Q' from the guest's xenstore (read in dom0), for
        the vbds connected now: one ring per queue (`queue-Q/` when blkfront
        negotiated several), each on one page (`ring-ref`) or several
        (`ring-ref0`..).  A ring-ref that named another ring before keeps
        its old name until this call: by then that ring's events have all
        been drained (it was torn down before its page was granted again,
        and a lifecycle step drains before it learns)."""
        self.rings_stale = False
        for vdev in self.vdevs + self.stalled:
            devid = parsers.vdev_number(vdev)
            base = f"/local/domain/{self.guest.domid}/device/vbd/{devid}"
            backend, queues, order = self._read_nodes(
                [f"{base}/backend", f"{base}/multi-queue-num-queues", f"{base}/ring-page-order"])
            # All of it comes from the guest's own xenstore directory: the
            # backend path is used in dom0 commands, so it must look like one
            # and name this guest's device (not another domain's backend);
            # counts are bounded decimals, or the device is not learned.
            if not (backend and parsers.backend_path(backend) and backend.endswith(f"/{self.guest.domid}/{devid}")):
                continue
            nq = parsers.bounded_decimal(queues, 1, parsers.MAX_QUEUES) if queues is not None else 1
            order_n = parsers.bounded_decimal(order, 0, MAX_RING_ORDER) if order is not None else 0
            if nq is None or order_n is None:
                continue
            pages = 1 << order_n
            dirs = [f"{base}/queue-{q}" for q in range(nq)] if queues is not None else [base]
            names = [[f"{d}/ring-ref"] if pages == 1 else [f"{d}/ring-ref{i}" for i in range(pages)] for d in dirs]
            values = self._read_nodes([n for group in names for n in group])
            at = 0
            for q, group in enumerate(names):
                refs = [parsers.bounded_decimal(v, 0, 0xFFFFFFFF) for v in values[at:at + len(group)]]
                at += len(group)
                if any(r is None for r in refs):
                    continue
                ring = f"{vdev}/{q}"
                self.ring_names[refs[0]] = ring
                self._ring_paths[ring] = (base, backend, refs)
                self._fresh_rings.add(ring)

    def _read_nodes(self, nodes: list[str]) -> list[str | None]:
        """Values of xenstore nodes, in one exchange with dom0; None where
        absent.  The guest writes most of them: each value is cut to 64
        bytes and to printable characters in dom0, so every node is exactly
        two lines: "@", then "=value" or nothing if absent."""
        script = "; ".join(f"echo @; if v=$(xenstore-read {shlex.quote(node)} 2>/dev/null); then "
                           "printf '=%s' \"$v\" | head -c 65 | tr -c '[:print:]' '?'; fi; echo" for node in nodes)
        return _node_values(self.xen.run(script, timeout_s=30).stdout, len(nodes))

    def _ring_nodes(self, ring: str) -> tuple[dict[str, str], dict[str, str]]:
        """Both ends' negotiation nodes of `ring`'s device (name -> value;
        absent nodes left out), in one exchange with dom0."""
        base, backend, _refs = self._ring_paths[ring]
        nodes = [d + "/" + name for d, names in ((base, FRONT_NODES), (backend, BACK_NODES)) for name in names]
        values = self._read_nodes(nodes)
        front = {n: v for n, v in zip(FRONT_NODES, values) if v is not None}
        back = {n: v for n, v in zip(BACK_NODES, values[len(FRONT_NODES):]) if v is not None}
        return front, back

    def _features(self, ring: str, front: dict[str, str], back: dict[str, str]) -> dict | None:
        """blkif.features for `ring`: both ends' nodes, the frontend's
        parameters in force and the guest's vCPUs; None when the frontend is
        no longer Connected (a ring announced only at its teardown: its
        nodes may be gone, so there is nothing to judge; the verdict's note
        names such rings)."""
        if front.get("state") != "4":
            return None
        return {"t_ns": 0, "dom": self.trace_dom, "src": "guest", "kind": "blkif.features", "ring": ring,
                "front": front, "back": back, "asked": self._asked_params(), "vcpus": self.scenario.guest.vcpus}

    def _asked_params(self) -> dict[str, int]:
        """blkfront's parameters as the loaded module reports them (after
        xlblk_init's clamps; a patch may change a default), the scenario's
        where sysfs has none."""
        if self._asked is None:
            res = self.guest.run("cd /sys/module/xen_blkfront/parameters 2>/dev/null && "
                                 "for f in *; do echo \"$f=$(cat \"$f\")\"; done", timeout_s=30)
            reported = dict(line.split("=", 1) for line in res.stdout.splitlines() if "=" in line)
            asked = {}
            for name in NEGOTIATION_PARAMS:
                value = _param_value(reported.get(name, self.scenario.modules.blkfront.params.get(name)))
                if value is not None:
                    asked[name] = value
            self._asked = asked
        return self._asked

    def _synthesize_rings(self, batch: list[dict]) -> list[dict]:
        """Insert ring.setup after the grant of each ring page and
        blkif.connect before the ring's first request (facts from xenstore)."""
        out = []
        freed = set()
        granted_after_free: set[int] = set()   # refs granted after some ring.free of this batch
        for ev in batch:
            ring = ev.get("ring")
            # A ring torn down before it carried a request is announced too:
            # its ring page is a grant the frontend must end.
            if ev["kind"] in ("blkif.req", "ring.free") and ring not in self.rings_announced \
                    and ring in self._ring_paths:
                out += self._announce(ring, ev["t_ns"])
            out.append(ev)
            if ev["kind"] == "ring.free":
                # Its next requests are a new ring under the same name.
                self.rings_announced.discard(ring)
                freed.add(ring)
            elif ev["kind"] == "gnt.grant" and freed:
                granted_after_free.add(ev["ref"])
        # A ring freed here and made anew in the same batch (blkfront's
        # resume frees every ring, then connects new ones): the new ring is
        # announced like a fresh one once its page was granted after the
        # free (so the ring-ref xenstore shows is the new ring's, not the
        # old one's).
        freed = {ring for ring in freed
                 if not (ring in self._ring_paths and self._ring_paths[ring][2][0] in granted_after_free)}
        # A ring learned now that has carried nothing yet (its backend never
        # connected): announced after this batch, so that a quiet point's
        # read, which finds the ring page mapped by the backend, knows it.
        # Only a frontend that is Initialised or Connected has its ring now
        # (a Closed one may still show the ring-ref of a ring long freed).
        last = max((ev["t_ns"] for ev in batch), default=0)
        for ring in sorted(self._fresh_rings - self.rings_announced - freed):
            front, back = self._ring_nodes(ring)
            if front.get("state") in ("3", "4"):
                out += self._announce(ring, last, (front, back))
        self._fresh_rings.clear()
        return out

    def _announce(self, ring: str, t_ns: int, nodes: tuple[dict, dict] | None = None) -> list[dict]:
        """ring.setup, blkif.connect and (when connected) blkif.features for
        `ring`, from its xenstore nodes (read now unless given)."""
        _, _, refs = self._ring_paths[ring]
        dom = self.trace_dom
        out = [{"t_ns": t_ns, "dom": dom, "src": "guest", "kind": "ring.setup", "ring": ring,
                "grefs": list(refs), "backend": 0, "nr_ents": blkif_ring_entries(len(refs)), "start": 0}]
        front, back = nodes or self._ring_nodes(ring)
        out.append({"t_ns": t_ns, "dom": dom, "src": "guest", "kind": "blkif.connect", "ring": ring,
                    **_connect_facts(front, back)})
        features = self._features(ring, front, back)
        if features is not None:
            out.append({**features, "t_ns": t_ns})
        self.rings_announced.add(ring)
        return out

    def drain(self, timeout_s: float = 120) -> int:
        """Move what the guest recorded since the last drain into the trace."""
        from harness.capture import guest_records, guest_trace

        # Ring names only label the trace: without the tracer there is none
        # (and reading each vbd's nodes costs a dom0 exchange per vbd).
        if self.rings_stale and self.armed:
            self._learn_rings()
        # dd with a 64 KiB buffer: the tracer hands out whole records only
        # and refuses a read smaller than its next one (busybox cat reads 4 KiB).
        trace_cmd = f"dd if={TRACE_DIR}/trace bs=65536 2>/dev/null; " if self.armed else ""
        # The tracer's counters right after its records: a drop counts there
        # at once, while its marker in the records waits for free space.
        stats_cmd = f"; echo '=====xs'; cat {TRACE_DIR}/stats 2>/dev/null" if self.armed else ""
        res = self.guest.run(f"{trace_cmd}echo '=====xr'; cat {EXERCISER_DIR}/log 2>/dev/null{stats_cmd}",
                             timeout_s=timeout_s)
        try:
            # Binary records first: split by their own lengths, not by text.
            records, nrecords, rest = guest_records.split(res.stdout_bytes, b"=====xr\n")
        except ValueError as exc:
            records, nrecords, rest = b"", 0, b""
            self.failure = self.failure or f"the guest trace cannot be used: {exc}"
        exer_text, _, stats_text = rest.decode(errors="replace").partition("=====xs\n")
        if stats_text:
            self.dropped_seen = _parse_stats(stats_text).get("dropped", self.dropped_seen)
        first = self.guest_records + 1
        self.guest_records += nrecords
        # The records as read, for a person or a later decoder: evidence even
        # when the run cannot be judged (guest_records.decode reads them back).
        with open(self.run_dir / "guest-records.bin", "ab") as fh:
            fh.write(records)
        if self.failure:
            raise InfraError(self.failure)
        try:
            batch = guest_trace.parse_guest_records(records, self.trace_dom, self.ring_names, first,
                                                    self.names_before_resume, self.unanswered)
            self.names_before_resume = None
        except ValueError as exc:
            self.failure = f"the guest trace cannot be used: {exc}"
            raise InfraError(f"the guest trace cannot be used: {exc}",
                             hint="An incomplete capture is never judged; the tracer's stats are in the run folder") from None
        for line in exerciser_log.parse(exer_text):
            if line["seq"] > self.exerciser_seq:
                self.exerciser_seq = line["seq"]
                batch += [{**ev, "_exseq": line["seq"]} for ev in exerciser_log.to_events(line, self.trace_dom)]
        batch.sort(key=lambda e: e["t_ns"])
        for ev in self.assembly.add(self._synthesize_rings(batch)):
            if "_exseq" in ev:
                self.exerciser_events.setdefault(ev["_exseq"], ev["seq"])
        return len(batch)

    def checkpoint(self) -> None:
        """After each step: what the guest recorded leaves it now (it is
        judged even if the guest, dom0 or the transport dies later), and the
        last lines of the guest's console are kept while dom0 still answers."""
        self.drain()
        try:
            res = self.xen.run(f"tail -n 30 {shlex.quote(self.guest.paths.console_log)}", timeout_s=30)
        except XenrigError:
            return
        self.console_tail = res.stdout

    def exerciser(self, line: str, timeout_s: float = 120) -> dict:
        """One exerciser command (docs/exerciser.md); its result line."""
        import json
        import shlex

        res = self.guest.run(f"echo {shlex.quote(line)} > {EXERCISER_DIR}/ctl; cat {EXERCISER_DIR}/ctl",
                             timeout_s=timeout_s)
        last = res.stdout.strip().splitlines()[-1] if res.stdout.strip() else ""
        try:
            return json.loads(last)
        except ValueError:
            raise InfraError(f"the exerciser did not answer '{line}' with a log line (got {last[:200]!r})") from None

    def _traced(self, events: list[dict]) -> list[dict]:
        """dom0's and Xen's events name the guest by the domain id it has
        now; the trace names it by its first (see trace_dom)."""
        now = self.guest.domid
        if now != self.trace_dom:
            for ev in events:
                for key in ("dom", "rdom"):
                    if ev.get(key) == now:
                        ev[key] = self.trace_dom
        return events

    # -- dom0 ----------------------------------------------------------------
    DOM0_OPS_ON_GUEST = ("query_size", "setup_table", "map", "transfer", "get_version", "read_grant")

    def dom0(self, op: dict) -> dict:
        """A GNTTABOP (or helper op) from dom0's agent; `rdom` defaults to
        the guest for the operations that name a domain."""
        op = dict(op)
        if op.get("op") in self.DOM0_OPS_ON_GUEST:
            op.setdefault("rdom", self.guest.domid)
        self.drain()
        if self.agent is None:
            self.agent = dom0_agent.AgentSession(self.xen)
        result = self.agent.call(op)
        placed = self.assembly.add(self._traced(dom0_agent.to_events([result])), own_clock=False)
        result["_seq"] = placed[0]["seq"] if placed else None
        return result

    # -- Xen -----------------------------------------------------------------
    def dump(self) -> dict:
        """A quiet point: Xen's grant dump of the guest into the trace."""
        self.drain()
        # Xen's log is never cleared (on a shared real host it is other
        # people's evidence too): the new dump is what follows the lines
        # there are now, told by its start and end markers.
        mark = self.xen.dmesg_lines()
        self.xen.debug_key("g")
        text = ""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:   # Xen prints the dump asynchronously, slowly under TCG
            text = self.xen.dmesg_since(mark)
            if xen_dump.complete(text):
                break
            time.sleep(0.5)
        else:
            # The ring (conring_size=4M) wrapped under us: line numbers moved.
            # The newest whole dump in the full log is this one.
            text = self.xen.dmesg()
        try:
            dump = xen_dump.last_dump(text)
            events = self._traced(xen_dump.events(dump, [self.guest.domid], t_ns=time.monotonic_ns()))
        except xen_dump.DumpParseError as exc:
            raise InfraError(f"Xen's grant dump could not be read: {exc}", log=str(self.run_dir / "xl-dmesg.txt")) from None
        with open(self.run_dir / "xen-grant-dumps.txt", "a") as fh:
            fh.write(dump + "\n")
        placed = self.assembly.add(events, own_clock=False)
        version = xen_dump.parse(dump)[self.guest.domid]["version"]
        table = self.read_table(events[0]["nr_frames"], version)
        return {"seq": placed[0]["seq"], **events[0], "table_entries": table}

    def read_table(self, nr_frames: int, version: int) -> int | None:
        """The oracle that does not trust the guest: dom0 reads the guest's
        whole grant table from Xen, the `nr_frames` the dump just counted
        (reading more would make Xen grow it), into the trace; the number
        of entries in use, or None for a v2 table (not covered)."""
        if version != 1:
            with open(self.run_dir / "xen-grant-tables.txt", "a") as fh:
                fh.write(f"# d{self.guest.domid}: a v{version} table, not read (the read covers v1 only)\n")
            return None
        if self.agent is None:
            self.agent = dom0_agent.AgentSession(self.xen)
        # The guest is not stopped for the read: blkfront's purge work (every
        # 10 s) may end grants between the drain before it and the read.  The
        # marker opens a window the model reads as concurrent with the read,
        # and the drain right after it closes the window.  The drain before
        # it keeps the window to the read itself (the dump before may have
        # waited for Xen's log for many seconds).
        self.drain()
        self.assembly.add([{"t_ns": time.monotonic_ns(), "dom": 0, "src": "xen", "kind": "xen.table.begin",
                            "rdom": self.trace_dom}], own_clock=False)
        result = self.agent.call({"op": "read_table", "rdom": self.guest.domid, "nr_frames": nr_frames})
        entries = result.get("entries")
        if not isinstance(entries, list) or not all(
                isinstance(e, list) and len(e) == 4 and all(isinstance(v, int) for v in e) for e in entries):
            raise InfraError("dom0's read of the guest's grant table came back malformed")
        with open(self.run_dir / "xen-grant-tables.txt", "a") as fh:
            fh.write(f"# d{self.guest.domid}, {nr_frames} frame(s): ref flags domid frame\n")
            fh.writelines(f"{r:#06x} {f:#06x} {d:5d} {fr:#x}\n" for r, f, d, fr in entries)
        self.drain()
        self.assembly.add([{"t_ns": result["t_ns"], "dom": 0, "src": "xen", "kind": "xen.table",
                            "rdom": self.trace_dom, "nr_frames": nr_frames,
                            "entries": [{"ref": r, "flags": f, "dom": d, "frame": fr} for r, f, d, fr in entries]}],
                          own_clock=False)
        return len(entries)

    # -- end -----------------------------------------------------------------
    def read_stats(self) -> dict:
        """The tracer's own counters (events, drops, misses per probe)."""
        if not self.armed:
            return {}
        text = self.guest.run(f"cat {TRACE_DIR}/stats", timeout_s=30).stdout
        (self.run_dir / "tracer-stats.txt").write_text(text)
        return _parse_stats(text)

    def finish(self) -> Path:
        """Close the agent (its clean-up unmaps are recorded), check the
        tracer lost nothing, write the trace."""
        self.stats = self.read_stats()
        self.drain()
        if self.agent is not None:
            cleanup = self.agent.close()
            self.assembly.add(dom0_agent.to_events(cleanup), own_clock=False)
            self.agent = None
        path = self.assembly.write(self.run_dir / "trace.jsonl")
        dropped = self.stats.get("dropped", "0")
        if dropped not in ("0", ""):
            raise InfraError(f"the tracer dropped {dropped} records: the trace is incomplete and cannot be judged",
                             log=str(path), hint="Raise the tracer's buffer (modules.tracer.params)")
        return path
