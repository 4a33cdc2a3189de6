"""`xenrig run SCENARIO`: build what the scenario names, boot (or reach) a
Xen host, start the HVM guest with the built modules, run the checks,
collect the evidence, write the reports.

The verdict follows DESIGN.md: PASS, FAIL (the subject is wrong), ERROR
(the harness or infrastructure failed).  A run that produced no result is
an ERROR, never a PASS.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import shlex
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from harness import outcome as outcome_mod
from harness import aftermath, booted, build, canary, config, deathwatch, faults, guest, images, logfile, paths, report
from harness.checks import backend_model, guest_death, reach, smoke
from harness.capture.live import CaptureSession
from harness.check import stepwise
from harness.checks.result import ERROR, FAIL, PASS, CheckResult, overall
from harness.config import HostConfig, Scenario
from harness.capture import hang
from harness.errors import DiskFull, HangDetected, InfraError, InternalError, XenrigError
from harness.guest import modules as guest_modules
from harness.host import XenHost, scripted_backend
from harness.machine import tools as host_tools
from harness.stages import ConsoleProgress, Timeline
from harness.steps import StepRunner

log = logging.getLogger(__name__)


def _brief(result: dict) -> str:
    keys = ("op", "ret", "status", "ref", "handle", "exit", "entries", "nr_frames", "connected", "gone", "seconds")
    return " ".join(f"{k}={result[k]}" for k in keys if k in result)


@dataclass
class RunOutcome:
    outcome: str
    report: report.RunReport
    error: XenrigError | None = None

    @property
    def exit_code(self) -> int:
        return outcome_mod.exit_code(self.outcome, self.error.kind if self.error else None)


def _disk_full(exc: OSError, run_dir: Path) -> XenrigError | None:
    """No space where the run writes: the machine's trouble, not a bug."""
    if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
        return None
    return DiskFull(f"no space left where the run writes its files ({run_dir}): {exc.strerror}",
                      hint="Free space there (old runs: runs/) or give --run-dir another filesystem; "
                           "what was written before is kept")


def _internal(exc: BaseException, run_dir: Path) -> InternalError:
    path = run_dir / "internal-error.txt"
    with contextlib.suppress(OSError):
        path.write_text("".join(traceback.format_exception(exc)))
    return InternalError(f"internal error of xenrig: {type(exc).__name__}: {exc}",
                         log=str(path), hint="This is a bug of the harness; the traceback is in that file")


def new_run_dir(name: str, base: Path | None = None) -> Path:
    base = base or paths.runs_dir()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    d = base / f"{stamp}-{name}"
    n = 1
    while d.exists():
        n += 1
        d = base / f"{stamp}-{name}-{n}"
    d.mkdir(parents=True)
    logfile.attach(d)
    return d


def load(scenario_path: Path, host_path: Path | None = None) -> tuple[Scenario, HostConfig]:
    scenario = config.load_scenario(scenario_path)
    return scenario, config.load_host(host_path or scenario.host)


def collect_xen_logs(xen: XenHost, run_dir: Path) -> None:
    """Xen's own log (and the grant dumps it holds) into the run folder."""
    with contextlib.suppress(XenrigError):
        (run_dir / "xl-dmesg.txt").write_text(xen.dmesg())


def prepare(scenario: Scenario, timeline: Timeline, run_dir: Path,
            remote: bool = False) -> tuple[images.Images, list[build.BuiltModule]]:
    """Everything that needs no VM: images and the guest modules.  Done
    first so a patch that does not apply fails in seconds, not after a boot.
    A real (remote) Xen host needs only the guest's image."""
    built_images = images.ensure(timeline, run_dir, guest_only=remote)
    built_modules = build.ensure(scenario.modules, built_images.guest.meta, timeline, run_dir,
                                 capture=scenario.capture)
    return built_images, built_modules


@contextlib.contextmanager
def guest_with_modules(xen: XenHost, scenario: Scenario, built: list[build.BuiltModule], timeline: Timeline,
                       run_dir: Path, info: dict, keep: bool = False, capture: bool = False,
                       booted: guest.HvmGuest | None = None,
                       live: dict | None = None) -> Iterator[tuple[guest.HvmGuest, CaptureSession | None]]:
    """The HVM guest with the built modules copied in and loaded; with
    `capture`, the tracer is armed before blkfront loads, so the ring's
    set-up and its first requests are in the trace.  `booted`: a guest at
    the shared point already (harness.booted, which also destroys it);
    without it one is started here.  `live` gets the guest and the capture
    session as soon as they exist, for judging a run that breaks later."""
    live = {} if live is None else live
    by_role = {m.role: m for m in built}
    with (contextlib.nullcontext(booted) if booted is not None
          else guest.start(xen, scenario.guest, timeline, artifacts=run_dir, keep=keep)) as g:
        info["guest"] = {"name": g.name, "domid": g.domid}
        live["guest_name"], live["guest"] = g.name, g
        session = None
        with timeline.stage("load guest modules"):
            loaded = []
            scratch = run_dir / "guest-modules"
            scratch.mkdir(exist_ok=True)
            guest_modules.push(g, built, scratch)

            def load(module: build.BuiltModule) -> None:
                lm = guest_modules.insmod(g, module, xen.cfg.timeouts.command_s)
                timeline.note(f"loaded {module.name} ({lm.load_s:.1f}s), build id {lm.loaded_build_id[:12]} matches")
                loaded.append(lm)

            if "exerciser" in by_role:
                aftermath.mark_subject(xen, g, info, by_role["exerciser"].name)
                load(by_role["exerciser"])
            if capture or scenario.steps:
                session = live["session"] = CaptureSession(xen, g, scenario, run_dir)
                session.blkfront = by_role.get("blkfront")
            if capture and "tracer" in by_role:
                lm = session.arm(by_role["tracer"], by_role.get("blkfront"))
                timeline.note(f"tracer armed: {by_role['tracer'].insmod_args()}")
                loaded.append(lm)
            if "blkfront" in by_role:
                vdevs = [d.vdev for d in scenario.guest.disks]
                window = scenario.hang_after_s or xen.cfg.timeouts.command_s
                aftermath.mark_subject(xen, g, info, by_role["blkfront"].name)
                with hang_watch(xen, g, vdevs, "loading blkfront and connecting its devices"):
                    lm = guest_modules.insmod(g, by_role["blkfront"], window)
                    timeline.note(f"loaded {lm.module.name} ({lm.load_s:.1f}s), build id {lm.loaded_build_id[:12]} matches")
                    loaded.append(lm)
                    if vdevs:
                        connect_s = guest_modules.wait_disks(g, vdevs, window, "load guest modules")
                        info["blkfront_connect_s"] = round(connect_s, 2)
            params = guest_modules.read_params(g, [lm.module.name for lm in loaded])
            info["modules"] = [{**lm.module.to_dict(), "load_s": round(lm.load_s, 2),
                                "loaded_build_id": lm.loaded_build_id,
                                "running_params": params.get(lm.module.name, {})} for lm in loaded]
            # Where each loaded module sits: a guest that dies later is placed
            # inside one of them (a FAIL of a subject) or outside every one.
            with contextlib.suppress(XenrigError):
                info["module_text"] = {n: [f"{a:#x}", size] for n, (a, size) in guest_modules.text_ranges(
                    g, [lm.module.name for lm in loaded]).items()}
        yield g, session
        # The guest's kernel log (the console shows only errors): evidence for
        # guest_log signatures and for a person.
        with contextlib.suppress(XenrigError):
            (run_dir / "guest-dmesg.txt").write_text(g.run("dmesg", timeout_s=30).stdout)


@contextlib.contextmanager
def hang_watch(xen: XenHost, g: guest.HvmGuest, vdevs: list[str], doing: str) -> Iterator[None]:
    """A guest operation that waits on blkfront ran out of time: ask dom0
    whether the rings are stuck; if so that is the verdict (a hang)."""
    try:
        yield
    except HangDetected:
        raise
    except XenrigError as exc:
        if _guest_gone(xen, g):
            # A guest that died (crashed, destroyed) is not a stuck ring; its
            # console or Xen's log says why (aftermath's guest.kernel-log and
            # guest.crash).  What the operation itself got is kept.
            why = _guest_died(xen, g) or "its domain no longer exists"
            raise InfraError(f"guest {g.name} is gone while {doing}: {why} (the operation got: "
                             f"{exc.message.splitlines()[0][:200]})") from exc
        report = hang.examine(xen, g, vdevs)
        if report.stuck:
            # The guest may have died during the watch (a triple fault takes
            # its devices with it): that is no hang of the driver.
            died = _guest_died(xen, g)
            if died:
                raise InfraError(f"guest {g.name} died while {doing}: {died}") from exc
            raise HangDetected(f"block I/O stopped while {doing}: {report.summary}", report.evidence(),
                               rule=report.rule) from None
        raise exc


def judge_capture(session: CaptureSession, steps: StepRunner | None, timeline: Timeline,
                  info: dict) -> list[CheckResult]:
    """Write the trace, replay it through the model, judge every step.
    Without the tracer the trace would lack the guest's grant calls, so only
    the steps' own expectations are judged."""
    if not session.armed:
        if session.agent is not None:
            session.agent.close()
        return steps.judge({}, None) if steps else []
    with timeline.stage("check trace"):
        path = session.finish()
        header, events = session.assembly.parsed(str(path))
        verdict, expectations = stepwise.judge(header, events, name=path.name)
        info["trace"] = {"path": path.name, "events": len(events), "tracer_stats": session.stats,
                         "kinds": verdict.kinds}
        full = verdict.to_dict()
        # The time series and the ledger are for the HTML report; keep report.json lean.
        (session.run_dir / "model-state.json").write_text(json.dumps(
            {"series": full.pop("series", None), "ledger": full.pop("ledger", None)}, default=str))
        info["verdict"] = full
        results = steps.judge(expectations, verdict.divergence, cannot_judge=verdict.outcome == ERROR) if steps else []
        guest_events = sum(1 for e in events if e.src == "guest")
        if verdict.outcome == "PASS" and not guest_events:
            # A capture that recorded nothing of the guest cannot vouch for it.
            results.append(CheckResult("trace.model", ERROR, "the trace holds no guest event: the capture saw nothing",
                                       json.dumps(session.stats, indent=1)))
        elif verdict.outcome == "PASS":
            results.append(CheckResult("trace.model", PASS, f"the model accepts all {len(events)} events of the trace",
                                       f"kinds: {dict(sorted(verdict.kinds.items()))}" if verdict.kinds else ""))
            # A trace the model accepts vouches only for the paths it went through.
            results += reach.rings_filled(session.scenario.fill_rings, verdict.rings)
        elif verdict.outcome == FAIL and verdict.divergence is not None:
            d = verdict.divergence
            results.append(CheckResult("trace.model", FAIL, f"first divergence at seq {d.seq}: {d.rule}: {d.message}",
                                       json.dumps({"event": d.event, "state": d.state, "before": d.before}, indent=1,
                                                  default=str),
                                       expected=str(d.expected), actual=str(d.actual), extra={"rule": d.rule}))
        else:
            # ERROR: a path the model does not cover (Unsupported) is no verdict, never a FAIL.
            d = verdict.divergence
            results.append(CheckResult("trace.model", ERROR, verdict.error or (d.message if d is not None else
                                       "the model could not judge the trace")))
    return results


def _note_domids(info: dict, g: guest.HvmGuest | None) -> None:
    """A save-restore or migrate step makes the guest another domain: a
    death after it is under the id the guest has now, one before it under
    the first.  (A domain in between was ended by the next step, not died.)"""
    if g is not None and "guest" in info and g.domid != info["guest"]["domid"]:
        info["guest"]["domids"] = [info["guest"]["domid"], g.domid]


def _guest_gone(xen: XenHost, g: guest.HvmGuest) -> bool:
    """xl says the guest's domain does not exist (a failing or slow xl, or a
    busy dom0, is no proof of that)."""
    try:
        res = xen.run(f"xl domid {shlex.quote(g.name)}", timeout_s=30)
    except XenrigError:
        return False
    return res.exit_status == 1 and "does not exist" in (res.stdout + res.stderr)


def _guest_died(xen: XenHost, g: guest.HvmGuest) -> str | None:
    """Why the guest's domain is gone, when it is: Xen's line for its triple
    fault or crash, else xl's word that it no longer exists."""
    with contextlib.suppress(XenrigError):
        found = guest_death.deaths(xen.dmesg(), g.domid)
        if found:
            return found[-1].line
    return "its domain no longer exists" if _guest_gone(xen, g) else None


def _l0_alive(live: dict) -> bool:
    """The nested stack's QEMU still runs and was not stopped under it (the
    watch checks both; a real Xen host has no watch: assumed so).  Asked
    once, after the last wait on dom0 and before the teardown, which stops
    QEMU itself."""
    watch = live.get("watch")
    if watch is None:
        return True
    watch(force=True)
    return watch.cause != "l0"


def _last_drain(live: dict) -> None:
    session = live.get("session")
    if session is None or live.get("judged") or live["xen"].ssh.dead():
        return
    try:
        session.drain(timeout_s=30)
    except XenrigError as exc:
        log.info("the last drain of a broken run failed: %s", exc)


def _release_scripted(live: dict) -> None:
    """The scripted backends still serving a vbd: their logs join the
    evidence, then they are killed (the kernel unmaps what they held).  Not
    closed through xenstore: a device a lie disabled keeps a request that
    never completes, and its removal would hold the guest's xenbus thread."""
    session = live.get("session")
    if session is None or not getattr(session, "scripted", None) or live["xen"].ssh.dead():
        return
    for vdev, vbd in list(session.scripted.items()):
        try:
            scripted_backend.fetch_log(live["xen"], vbd, session.run_dir)
            scripted_backend.kill(live["xen"], vbd)
        except XenrigError as exc:
            log.info("releasing the scripted backend of %s failed: %s", vdev, exc)
        del session.scripted[vdev]


def _judge_broken(live: dict, info: dict, why: str) -> list[CheckResult]:
    """The run broke before judge_capture ran: judge what was captured."""
    if live.get("judge_done") or (live.get("judged") and "trace" in info):
        return []
    if "session" not in live and "steps" not in live:
        return []
    try:
        return aftermath.judge_partial(live.get("session"), live.get("steps"), info, why)
    except Exception as exc:  # noqa: BLE001 - judging the remains must not hide the error that broke the run
        return [CheckResult("trace.model", ERROR, f"the partial trace could not be judged: {type(exc).__name__}: {exc}")]


def keep_stack(xen: XenHost, host_cfg: HostConfig, run_dir: Path, guest_name: str | None) -> None:
    """Record a stack left running (xenrig up, repro --keep) for shell/down."""
    from harness import sshkeys
    from harness.machine import stackfile

    machine = xen.machine
    if machine is None:
        return
    state = paths.state_dir()
    key_file, _ = sshkeys.client_key(state)
    stackfile.save(state, stackfile.StackRecord(
        domain=machine.name, libvirt_uri=host_cfg.libvirt_uri, embed_root=str(state / "libvirt"),
        ssh_port=machine.ssh_port, host_key=machine.host_key, client_key=str(key_file), run_dir=str(run_dir),
        serial_log=str(machine.serial.path), guest=guest_name, pid=machine.qemu_pid() or 0))


FIRST_ATTEMPT = "first-attempt"   # not attempt-N: the nightly keeps its own retries under those names


def run_scenario(scenario: Scenario, host_cfg: HostConfig, *, run_dir: Path | None = None,
                 timeline: Timeline | None = None, console: bool = False, keep: bool = False,
                 cold: bool = False) -> RunOutcome:
    """`keep`: leave the stack and the guest up afterwards (xenrig repro --keep).
    `cold`: boot from nothing rather than restore a snapshot (harness.booted).

    A run whose only trouble is the guest dying outside every module (the
    nested-TCG triple fault, harness.checks.guest_death) is made once more
    from the start: its folder moves to first-attempt/ inside the run folder,
    and the second run's report says so.  A FAIL, a death inside a module,
    Ctrl-C or a second death are never retried."""
    run_dir = run_dir or new_run_dir(scenario.name)
    timeline = timeline or Timeline([ConsoleProgress()])
    first = _attempt(scenario, host_cfg, run_dir, timeline, console=console, keep=keep, cold=cold)
    why = None if keep else retry_reason(first)
    if why is None:
        return first
    kept = _set_aside(run_dir)
    timeline.note(f"the guest died outside every module ({why}); the first attempt is kept in "
                  f"{FIRST_ATTEMPT}/ and the run is made once more from the start")
    return _attempt(scenario, host_cfg, run_dir, Timeline(list(timeline.subscribers)), console=console, keep=keep,
                    cold=cold, retried={"reason": why, "first_attempt": kept.name,
                                        "first_outcome": first.outcome})


def retry_reason(result: RunOutcome) -> str | None:
    """The one trouble worth a second run: ERROR, no FAIL anywhere, and a
    guest death placed outside every module."""
    if result.outcome != ERROR:
        return None
    checks = result.report.checks
    if any(c.outcome == FAIL for c in checks):
        return None
    died = [c for c in checks if c.id == guest_death.CHECK_ID and c.outcome == ERROR
            and c.extra.get("kind") == guest_death.OUTSIDE]
    return died[0].extra.get("line") if died else None


def _set_aside(run_dir: Path) -> Path:
    """Move what the first attempt wrote into run_dir/first-attempt."""
    kept = run_dir / FIRST_ATTEMPT
    kept.mkdir()
    for item in list(run_dir.iterdir()):
        if item != kept:
            item.rename(kept / item.name)
    return kept


def _attempt(scenario: Scenario, host_cfg: HostConfig, run_dir: Path, timeline: Timeline, *, console: bool,
             keep: bool, cold: bool, retried: dict | None = None) -> RunOutcome:
    run_dir.mkdir(parents=True, exist_ok=True)
    logfile.attach(run_dir)
    # Until the final report replaces it: a run killed on the way says so.
    report.mark_started(run_dir, scenario.name)
    results: list[CheckResult] = []
    info: dict = {"run_dir": str(run_dir)}
    if retried is not None:
        info["retried"] = retried
    error: XenrigError | None = None
    interrupted = False
    live: dict = {}       # the stack, guest, capture and steps, while they exist
    try:
        fault = faults.configured()
        if fault is not None and fault.stage:
            timeline.subscribers.append(faults.StageFault(fault))
        built_images, built_modules = prepare(scenario, timeline, run_dir, remote=host_cfg.kind == "remote")
        info["modules"] = [m.to_dict() for m in built_modules]
        info["host_tools"] = host_tools.versions()
        with booted.stack_and_guest(host_cfg, scenario.guest, timeline, run_dir, built=built_images, info=info,
                                    cold=cold, console=console, keep=keep, replace_kept=keep) as (xen, at_point):
            live["xen"] = xen
            if xen.machine is not None:
                # From here on a crashed dom0 or Xen, or a vanished QEMU, ends
                # every wait on dom0 at once instead of at its timeout.
                xen.ssh.dead = live["watch"] = deathwatch.DeathWatch(
                    xen.machine.serial.path, deathwatch.l0_qemu_pid(xen.machine),
                    stopped=deathwatch.libvirt_stopped(xen.machine.domain))
            canary.start_dom0(xen)
            try:
                with guest_with_modules(xen, scenario, built_modules, timeline, run_dir, info,
                                        capture=scenario.capture, keep=keep, booted=at_point,
                                        live=live) as (g, session):
                    guest_canary = canary.start_guest(g)
                    if keep:
                        keep_stack(xen, host_cfg, run_dir, g.name)
                    note = lambda r: timeline.note(f"{r.outcome} {r.id}: {r.message}")  # noqa: E731
                    with timeline.stage("checks"):
                        results = smoke.run(xen, g, scenario, on_result=note)
                    if session is not None:
                        steps = None
                        if scenario.steps:
                            # session.vdevs, the live list: a step that times out on a
                            # vbd an earlier step attached is watched on that vbd too.
                            steps = live["steps"] = StepRunner(
                                session, watch=lambda what: hang_watch(xen, g, session.vdevs, what),
                                before=lambda index: faults.before_step(fault, index, xen, g, run_dir))
                            with timeline.stage("steps"):
                                steps.run(scenario.steps, on_record=lambda r: timeline.note(
                                    f"{r.label}: {'ERROR ' + r.error if r.error else _brief(r.result)}"))
                        live["judged"] = True     # from here on, judge_capture speaks for the trace
                        for r in judge_capture(session, steps, timeline, info):
                            note(r)
                            results.append(r)
                        live["judge_done"] = True
                        if steps is not None and steps.hang is not None:
                            results.append(CheckResult("hang", FAIL, steps.hang.message, steps.hang.evidence,
                                                       extra={"rule": steps.hang.rule}))
                            note(results[-1])
                    r = canary.check_guest(g, guest_canary)
                    note(r)
                    results.append(r)
            except XenrigError:
                # The run broke while the stack may still answer (a hang, a
                # step's error): what the guest recorded since the last step
                # leaves it now, before the teardown destroys it.
                _last_drain(live)
                raise
            finally:
                _release_scripted(live)
                # Every scripted backend's log is in the run folder now.
                for r in backend_model.check(run_dir):
                    timeline.note(f"{r.outcome} {r.id}: {r.message}")
                    results.append(r)
                r = canary.stop_dom0(xen)
                timeline.note(f"{r.outcome} {r.id}: {r.message}")
                results.append(r)
                info["transport"] = {"reconnects": xen.ssh.reconnects, "events": xen.ssh.transport_events}
                collect_xen_logs(xen, run_dir)
                # Before anything tears it down: is the L0 VM itself still there?
                live["l0_alive"] = _l0_alive(live)
    except HangDetected as exc:
        results.append(CheckResult("hang", FAIL, exc.message, exc.evidence, extra={"rule": exc.rule}))
        results += _judge_broken(live, info, "a hang was proven")
    except XenrigError as exc:
        error = exc
        results += _judge_broken(live, info, f"the run errored: {exc.message.splitlines()[0][:200]}")
    except KeyboardInterrupt:
        interrupted = True
        error = XenrigError("interrupted by the user (Ctrl-C); everything started was stopped")
    except OSError as exc:
        error = _disk_full(exc, run_dir) or _internal(exc, run_dir)
    except Exception as exc:   # noqa: BLE001 - a harness bug must not leave the checks that passed as a PASS
        error = _internal(exc, run_dir)
    finally:
        if "xen" in live and not interrupted:
            _note_domids(info, live.get("guest"))
            try:
                crashes = aftermath.crash_checks(live["xen"], run_dir, info, live.get("guest_name"))
            except Exception as exc:  # noqa: BLE001 - reading the logs must not hide the run's results
                crashes = [CheckResult("stack.crash", ERROR, f"the consoles could not be read: {exc}")]
            for r in crashes:
                timeline.note(f"{r.outcome} {r.id}: {r.message}")
                results.append(r)
        if error is not None:
            # The innermost stage that failed is where the trouble began.
            failed = [r.name for r in timeline.records if r.outcome == "failed"]
            where = f"in stage '{failed[-1]}': " if failed else ""
            results.append(CheckResult("harness", ERROR, where + error.paragraph(), extra={"kind": error.kind}))
        verdict = overall(results)
        if verdict != PASS and "xen" in live:
            with contextlib.suppress(Exception):
                info["last_console"] = aftermath.last_console(live["xen"], run_dir, live.get("guest_name"),
                                                              live.get("session"))
        error_info = None
        if error is not None:
            error_info = {"kind": error.kind, "message": error.paragraph()}
            # Not asked again here: the teardown has stopped QEMU by now.
            l0_fine = live.get("l0_alive", True)
            machine_trouble = error.kind in ("internal", "corruption", DiskFull.kind)
            if "subject" in info and not interrupted and l0_fine and not machine_trouble:
                # A dom0 or transport failure after the driver under test was
                # loaded may be the driver's doing: product-suspect.  Not when
                # the L0 VM itself (QEMU) is gone: the guest cannot do that.
                error_info["after_subject"] = info["subject"]["module"]
        rep = report.RunReport(scenario.name, verdict, run_dir, timeline.wall_start, timeline.elapsed(),
                               timeline.records, results, info=info, error=error_info)
        try:
            report.write(rep)
        except Exception as exc:  # noqa: BLE001 - the report writer failing is ours, and must say so
            error = (_disk_full(exc, run_dir) if isinstance(exc, OSError) else None) or _internal(exc, run_dir)
            rep.outcome = verdict = ERROR if verdict != FAIL else FAIL
            rep.error = {"kind": error.kind, "message": error.paragraph()}
            with contextlib.suppress(Exception):
                (run_dir / "report.json").write_text(json.dumps(
                    {"schema": "xenrig-run/1", "scenario": scenario.name, "outcome": verdict, "complete": False,
                     "error": rep.error}, indent=1))
    if interrupted:
        raise KeyboardInterrupt
    return RunOutcome(verdict, rep, error)
