"""pytest plugin: write your own conformance tests against real Xen.

Fixtures (module scope: one stack per test module, torn down after it):

- `xen_host`: a Xen host from --xenrig-host (nested in QEMU by default, or a
  real one with `kind: remote`), as a harness.host.XenHost;
- `hvm_guest`: the HVM guest of --xenrig-scenario with the built frontends
  loaded and the tracer armed, as a harness.guest.HvmGuest;
- `trace` (function scope): the capture of that guest.  `trace.guest(cmd)`
  runs an exerciser command, `trace.dom0(op)` a GNTTABOP from dom0,
  `trace.dump()` takes Xen's view, `trace.expected(op)`... see XenrigTrace.
  When each test's body ends, the whole trace so far is replayed through
  the model; a divergence among the events since that test began fails it
  with the rule and the event (a capture the model cannot judge fails it
  too, saying so).

    def test_readonly_grant_cannot_be_mapped_writable(trace):
        ref = trace.guest("handoff t 0 ro")["ref"]
        assert trace.dom0({"op": "map", "ref": ref, "flags": 1})["status"] == -1

The shipped scenarios run on the same library calls (harness.runner), and
are pytest items themselves: `pytest configs/scenarios/` collects each
scenario file named (or lying directly in a folder named) on the command
line, one item per check its run reports (harness.pytest_scenarios).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest

from harness.paths import repo_root


def pytest_addoption(parser):
    group = parser.getgroup("xenrig")
    group.addoption("--xenrig-host", type=Path, default=None,
                    help="host config for the xen_host fixture (default: the scenario's)")
    group.addoption("--xenrig-scenario", type=Path, default=repo_root() / "configs" / "scenarios" / "smoke.yaml",
                    help="scenario whose guest, modules and capture the fixtures use")
    group.addoption("--xenrig-runs", type=Path, default=None, help="where the fixtures' run folders go")


class XenrigTrace:
    """The capture of the running guest, for a test to drive and check."""

    def __init__(self, session):
        self.session = session
        self.start_seq = 0          # the first trace seq of the current test

    def next_seq(self) -> int:
        """The seq the next captured event will get."""
        self.session.drain()
        _, events = self.session.assembly.parsed()
        return events[-1].seq + 1 if events else 0

    def guest(self, command: str, timeout_s: float = 120) -> dict:
        """Run an exerciser command (docs/exerciser.md); its result line."""
        return self.session.exerciser(command, timeout_s)

    def dom0(self, op: dict) -> dict:
        """A GNTTABOP (or gntalloc/read_grant) from dom0's agent; rdom
        defaults to the guest."""
        return self.session.dom0(op)

    def dump(self) -> dict:
        return self.session.dump()

    def verdict(self):
        """Replay everything captured so far through the model."""
        from harness.check import replay

        self.session.drain()
        header, events = self.session.assembly.parsed()
        return replay(events, header=header)

    def expected(self, op: str, **inputs):
        """What the model says Xen answers `op` now (as dom0)."""
        from harness.check.stepwise import Checker, _Run

        self.session.drain()
        header, events = self.session.assembly.parsed()
        checker = Checker(header)
        _Run(checker, "fixture").run_block(events, lambda i: i + 2)
        return checker.expected_status(op, 0, **inputs)


def pytest_configure(config):
    config.addinivalue_line("markers", "e2e: boots the real stack (Xen in QEMU); minutes, needs the host packages")
    config.addinivalue_line("markers", "xenrig_scenario(name): an item of the scenario file `name` "
                                       "(one run of the scenario per file)")


def pytest_collect_file(file_path, parent):
    if file_path.suffix not in (".yaml", ".yml"):
        return None
    from harness import pytest_scenarios

    return pytest_scenarios.collect_file(file_path, parent)


def embed_root_for_pytest() -> Path:
    """The libvirt root the stacks this process boots use: XENRIG_PYTEST_EMBED_ROOT,
    or one beside the CLI's.  A pytest run started by a test that booted a
    stack itself needs a root of its own: the parent keeps its root locked."""
    from harness import paths

    override = os.environ.get("XENRIG_PYTEST_EMBED_ROOT")
    return Path(override) if override else paths.state_dir() / "libvirt-pytest"


@contextlib.contextmanager
def _embed_root(root: Path):
    old = os.environ.get("XENRIG_EMBED_ROOT")
    os.environ["XENRIG_EMBED_ROOT"] = str(root)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("XENRIG_EMBED_ROOT", None)
        else:
            os.environ["XENRIG_EMBED_ROOT"] = old


@pytest.fixture(scope="module")
def _xenrig_stack(request):
    from harness import booted, canary, config, runner
    from harness.stages import ConsoleProgress, Timeline

    opts = request.config.option
    scenario = config.load_scenario(opts.xenrig_scenario)
    host_cfg = config.load_host(opts.xenrig_host or scenario.host)
    scenario.capture = True
    run_dir = runner.new_run_dir(f"pytest-{request.module.__name__.rsplit('.', 1)[-1]}", opts.xenrig_runs)
    timeline = Timeline([ConsoleProgress()])
    with contextlib.ExitStack() as es:
        # This process outlives the stack and would keep the CLI's embedded
        # libvirt root locked: boot from a root of its own, and give the
        # variable back afterwards so `xenrig` subprocesses use the usual one.
        es.enter_context(_embed_root(embed_root_for_pytest()))
        built_images, built_modules = runner.prepare(scenario, timeline, run_dir)
        # From the stack's snapshot when there is one (harness.booted).
        xen, at_point = es.enter_context(booted.stack_and_guest(host_cfg, scenario.guest, timeline, run_dir,
                                                                built=built_images, info={}))
        es.callback(runner.collect_xen_logs, xen, run_dir)
        canary.start_dom0(xen)
        yield {"xen": xen, "guest": at_point, "scenario": scenario, "modules": built_modules, "timeline": timeline,
               "run_dir": run_dir}
        # A stack that damaged dom0's memory makes every result above suspect.
        held = canary.stop_dom0(xen)
        if held.outcome != "PASS":
            pytest.fail(f"{held.id}: {held.message}", pytrace=False)


@pytest.fixture(scope="module")
def xen_host(_xenrig_stack):
    return _xenrig_stack["xen"]


@pytest.fixture(scope="module")
def _xenrig_guest(_xenrig_stack):
    from harness import runner

    s = _xenrig_stack
    with runner.guest_with_modules(s["xen"], s["scenario"], s["modules"], s["timeline"], s["run_dir"], {},
                                   capture=True, booted=s["guest"]) as (guest, session):
        yield guest, session
        # An incomplete capture (lost or dropped events) is an error of the
        # whole module's tests, not something to swallow.
        from harness.errors import XenrigError

        try:
            session.finish()
        except XenrigError as exc:
            pytest.fail(f"xenrig: the capture is incomplete or unreadable: {exc.paragraph()}", pytrace=False)


@pytest.fixture(scope="module")
def hvm_guest(_xenrig_guest):
    return _xenrig_guest[0]


@pytest.fixture
def trace(_xenrig_guest):
    """Judged when the test's body ends (pytest_runtest_makereport below): a
    divergence fails the test whose events caused it, not the teardown."""
    t = XenrigTrace(_xenrig_guest[1])
    t.start_seq = t.next_seq()
    yield t


def judge_test(verdict, start_seq: int) -> tuple[bool, str]:
    """(failed, why) for a test whose events begin at `start_seq`.  A
    capture the model could not judge is a failure that says so, never a
    pass; a divergence before this test began is the earlier test's, and the
    model judges nothing after it."""
    if verdict.outcome == "PASS":
        return False, ""
    d = verdict.divergence
    if d is None:
        return True, "xenrig: the capture could not be judged (an ERROR, not a pass):\n" + verdict.summary()
    if d.seq >= start_seq:
        return True, verdict.summary()
    return False, (f"xenrig: not judged by the model: an earlier test's divergence at seq {d.seq} "
                   f"({d.rule}) ends what the model can judge")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    if call.when != "call":
        return
    t = getattr(item, "funcargs", {}).get("trace")
    if not isinstance(t, XenrigTrace):
        return
    rep = outcome.get_result()
    try:
        failed, why = judge_test(t.verdict(), t.start_seq)
    except Exception as exc:  # noqa: BLE001 - a capture that cannot be read is not a pass
        failed, why = True, f"xenrig: the capture could not be read: {type(exc).__name__}: {exc}"
    if failed:
        rep.outcome, rep.longrepr = "failed", why
    elif why:
        rep.sections.append(("xenrig", why))
