"""Steps as test cases: named by what they are, not where they stand, and
the ones an error kept from running reported as skipped."""

import pytest

from harness.checks.result import ERROR, PASS, SKIP
from harness.config.schema import Step
from harness.errors import InfraError, XenrigError
from harness.host.ssh import Result
from harness.steps import StepRunner


class _Guest:
    domid = 3

    def __init__(self, fail_on: str):
        self.fail_on = fail_on

    def run(self, command, timeout_s=None):
        if command == self.fail_on:
            raise InfraError("guest xenrig-guest: guestctl: the guest agent did not answer in time")
        return Result(command, 0, "ok", "", 0.0, b"ok")


class _Capture:
    exerciser_events: list = []

    def __init__(self, fail_on: str):
        self.guest = _Guest(fail_on)
        self.checkpoints = 0

    def checkpoint(self):
        self.checkpoints += 1


def test_names_come_from_the_steps_and_an_error_skips_the_rest():
    steps = [Step(name="write", shell="true"), Step(shell="sync"), Step(name="write", shell="boom"),
             Step(id="after", shell="true"), Step(shell="echo last")]
    runner = StepRunner(_Capture(fail_on="boom"))
    runner.run(steps)
    results = runner.judge({}, None)
    assert [(r.id, r.outcome) for r in results] == [
        ("step write", PASS), ("step shell sync", PASS), ("step write (2)", ERROR),
        ("step after", SKIP), ("step shell echo last", SKIP)]
    assert "not run: 'step write (2)' errored" in results[3].message
    # The capture was fetched after each step that completed, none after the error.
    assert runner.capture.checkpoints == 2


def test_a_hang_is_found_once_and_the_steps_after_it_are_skipped():
    import contextlib

    from harness.checks.result import FAIL
    from harness.errors import HangDetected

    class Guest(_Guest):
        def run(self, command, timeout_s=None):
            if command.startswith("xr-io"):
                return Result(command, 143, "xr-io: waiting\n", "", 0.0, b"")   # the agent's timeout(1)
            return super().run(command, timeout_s)

    capture = _Capture(fail_on="")
    capture.guest = Guest("")
    examined = []

    @contextlib.contextmanager
    def watch(what):
        try:
            yield
        except XenrigError:
            examined.append(what)
            raise HangDetected(f"block I/O stopped while {what}: xvda: 3 request(s) pushed and not answered", "ev")

    steps = [Step(name="io", shell="xr-io /dev/xvda rw 131072 64 32 0", timeout_s=300),
             Step(name="more io", shell="xr-io /dev/xvda r 4096 8 1 0"), Step(name="sync", shell="sync")]
    runner = StepRunner(capture, watch=watch)
    runner.run(steps)
    assert examined == ["step io"]                      # at the first step, not after each one's timeout
    assert runner.hang is not None and "not answered" in runner.hang.message
    results = runner.judge({}, None)
    assert [(r.id, r.outcome) for r in results] == [("step io", FAIL), ("step more io", SKIP), ("step sync", SKIP)]
    assert "hung" in results[1].message


def test_lifecycle_steps_load_and_need_capture(tmp_path):
    from harness.config import load_scenario
    from harness.errors import ConfigError

    path = tmp_path / "s.yaml"
    path.write_text("name: s\ncapture: true\nsteps:\n  - {vbd: {op: attach, vdev: xvdb, size_mib: 8}}\n"
                    "  - {vbd: {op: detach, vdev: xvdb}}\n  - {module: {op: unload}}\n")
    sc = load_scenario(path)
    assert [st.vbd.op if st.vbd else st.module.op for st in sc.steps] == ["attach", "detach", "unload"]
    path.write_text("name: s\nsteps:\n  - {vbd: {op: attach, vdev: xvdb}}\n")
    with pytest.raises(ConfigError, match="capture"):
        load_scenario(path)
    path.write_text("name: s\ncapture: true\nsteps:\n  - {vbd: {op: attach, vdev: sda}}\n")
    with pytest.raises(ConfigError, match="xvda"):
        load_scenario(path)


def test_domain_steps_are_save_restore_or_migrate_and_nothing_else(tmp_path):
    from harness.config import load_scenario
    from harness.errors import ConfigError

    path = tmp_path / "s.yaml"
    path.write_text("name: s\ncapture: true\nsteps:\n  - {domain: {op: save-restore}}\n  - {domain: {op: migrate}}\n")
    assert [st.domain.op for st in load_scenario(path).steps] == ["save-restore", "migrate"]
    path.write_text("name: s\ncapture: true\nsteps:\n  - {domain: {op: 'migrate; reboot'}}\n")
    with pytest.raises(ConfigError, match="op"):
        load_scenario(path)
