import json
import os
import sys
from pathlib import Path

import pytest

from harness.errors import UsageError
from harness.nightly.cells import FAIL, FLAKY, INFRA, PASS, SubprocessCellRunner, run_cell, run_shard
from harness.nightly.shard import Shard

from .fakes import ScriptedRunner

FAKE = Path(__file__).with_name("fakes.py")


def cell(matrix, cid):
    return next(c for c in matrix.cells if c.id == cid)


@pytest.mark.parametrize("plan,status,attempts,category", [
    (["pass"], PASS, 1, None),
    (["fail", "pass"], FAIL, 1, "product"),                 # a product failure is never retried away
    (["oops", "pass"], FAIL, 1, "product"),
    (["infra-boot", "pass"], FLAKY, 2, "infrastructure"),   # passed only on the retry
    (["infra-boot", "infra-ssh", "pass"], INFRA, 2, "infrastructure"),   # retried once, not twice
    (["infra-download", "hang"], FAIL, 2, "product"),       # the retry found a product failure
    (["crash", "pass"], FLAKY, 2, "infrastructure"),
])
def test_retry_policy(tmp_path, matrix, plan, status, attempts, category):
    c = cell(matrix, "smoke/qdisk/default")
    runner = ScriptedRunner({c.id: plan})
    result = run_cell(c, tmp_path, runner, retries=1)
    assert result.status == status
    assert [n for _, n in runner.calls] == list(range(1, attempts + 1))
    d = result.to_dict()
    assert d["classification"] == category and len(d["attempts"]) == attempts
    assert d["run_dir"] == c.id and (tmp_path / c.id / "report.json").is_file()
    for a in d["attempts"][:-1]:
        # an earlier attempt's folder is kept inside the cell's folder
        assert a["run_dir"] == f"{c.id}/attempt-{a['number']}"
        assert (tmp_path / a["run_dir"] / ("report.json" if a["outcome"] else ".")).exists()
    assert not any(p.name.startswith("attempt-") for p in (tmp_path / c.id / "attempt-1").iterdir()) \
        if attempts > 1 else True


def test_a_pass_the_run_made_on_its_own_second_try_is_flaky(tmp_path, matrix):
    c = cell(matrix, "smoke/qdisk/default")
    result = run_cell(c, tmp_path, ScriptedRunner({c.id: ["pass-second-in-run"]}), retries=1)
    assert result.status == FLAKY and len(result.attempts) == 2
    first = result.to_dict()["attempts"][0]
    assert first["category"] == "infrastructure"
    assert first["run_dir"] == f"{c.id}/first-attempt" and "Triple fault" in first["reason"]


def test_no_retry_when_retries_is_zero(tmp_path, matrix):
    c = cell(matrix, "smoke/qdisk/default")
    result = run_cell(c, tmp_path, ScriptedRunner({c.id: ["infra-boot", "pass"]}), retries=0)
    assert result.status == INFRA and len(result.attempts) == 1


def test_a_cell_folder_that_holds_a_run_is_refused(tmp_path, matrix):
    c = cell(matrix, "smoke/phy/default")
    run_cell(c, tmp_path, ScriptedRunner(), retries=1)
    with pytest.raises(UsageError, match="already holds a run"):
        run_cell(c, tmp_path, ScriptedRunner(), retries=1)


def test_shard_summary(tmp_path, matrix):
    runner = ScriptedRunner({"smoke/qdisk/default": ["infra-boot", "pass"]})
    path = run_shard(matrix, Shard(2, 2), tmp_path, runner)
    assert path.name == "shard-2-of-2.json"
    data = json.loads(path.read_text())
    assert data["schema"] == "xenrig-nightly-shard/1" and data["complete"] is True
    assert data["shard"] == {"index": 2, "total": 2} and data["matrix"]["digest"] == matrix.digest
    assert [c["id"] for c in data["cells"]] == [c.id for c in Shard(2, 2).pick(matrix.cells)]
    flaky = next(c for c in data["cells"] if c["id"] == "smoke/qdisk/default")
    assert flaky["status"] == FLAKY and flaky["outcome"] == "PASS" and "boot before dom0" in flaky["reason"]
    for c in data["cells"]:
        assert set(c) >= {"id", "status", "outcome", "classification", "attempts", "duration_s", "run_dir"}
        # the variant the runner built is the cell's: every disk on its backend, its parameters
        info = json.loads((tmp_path / c["run_dir"] / "report.json").read_text())["info"]["variant"]
        assert set(info["backends"]) == {c["backend"]}
    with pytest.raises(UsageError, match="already ran"):
        run_shard(matrix, Shard(2, 2), tmp_path, runner)


def test_a_killed_shard_leaves_what_it_finished(tmp_path, matrix):
    class Dies(ScriptedRunner):
        def __call__(self, cell, run_dir, attempt):
            if len(self.calls) == 2:
                raise KeyboardInterrupt
            return super().__call__(cell, run_dir, attempt)

    with pytest.raises(KeyboardInterrupt):
        run_shard(matrix, Shard(1, 1), tmp_path, Dies())
    data = json.loads((tmp_path / "shard-1-of-1.json").read_text())
    assert data["complete"] is False and len(data["cells"]) == 2


# -- the subprocess runner: the real process handling, with a fake xenrig --

@pytest.fixture
def fake_command(tmp_path, monkeypatch):
    def script(plan: dict) -> list[str]:
        p = tmp_path / "script.json"
        p.write_text(json.dumps(plan))
        monkeypatch.setenv("FAKE_NIGHTLY_SCRIPT", str(p))
        return [sys.executable, str(FAKE)]
    return script


def test_subprocess_runner_runs_xenrig_run_with_the_cells_sets(tmp_path, matrix, fake_command):
    c = cell(matrix, "blkfront-io/phy/no-persistent")
    runner = SubprocessCellRunner(command=fake_command({}), host=Path("configs/hosts/local-tcg.yaml"))
    argv = runner.argv(c, tmp_path / c.id)
    assert argv[2:5] == ["run", str(c.scenario_path), "--run-dir"]
    assert argv[-6:] == ["--host", str(Path("configs/hosts/local-tcg.yaml").resolve()),
                         "--set", "guest.disks[*].backend=phy", "--set", "modules.blkfront.params.feature_persistent=0"]
    result = run_cell(c, tmp_path / "out", runner, retries=1)
    assert result.status == PASS and result.attempts[0].exit_code == 0
    run = tmp_path / "out" / c.id
    variant = json.loads((run / "report.json").read_text())["info"]["variant"]
    assert variant == {"backends": ["phy"],
                       "blkfront_params": {"feature_persistent": "0", "max_indirect_segments": "32", "max_queues": "1"}}
    log = (run / "xenrig-run.log").read_text()
    assert log.startswith(f"# nightly cell {c.id}, attempt 1\n# ") and "--set modules.blkfront.params.feature_persistent=0" in log
    assert "attempt 1: pass" in log
    assert "--cold" not in argv     # cells restore the stack's snapshot by default
    assert SubprocessCellRunner(command=fake_command({}), cold=True).argv(c, tmp_path / c.id)[-1] == "--cold"


def test_subprocess_runner_a_crash_is_retried(tmp_path, matrix, fake_command):
    c = cell(matrix, "smoke/phy/default")
    runner = SubprocessCellRunner(command=fake_command({c.id: ["crash", "pass"]}))
    result = run_cell(c, tmp_path, runner, retries=1)
    assert result.status == FLAKY
    assert result.attempts[0].exit_code == -11
    assert result.attempts[0].reason == "no report: xenrig run died of SIGSEGV"
    assert (tmp_path / c.id / "attempt-1" / "xenrig-run.log").is_file()


def test_subprocess_runner_stops_a_cell_at_its_time_limit(tmp_path, matrix, fake_command):
    c = cell(matrix, "smoke/phy/default")
    runner = SubprocessCellRunner(command=fake_command({c.id: ["sleep", "sleep"]}), timeout_s=0.25, grace_s=5)
    result = run_cell(c, tmp_path, runner, retries=1)
    assert result.status == INFRA and len(result.attempts) == 2
    assert result.attempts[0].exit_code == -15                     # SIGTERM, as xenrig run expects
    assert "killed at the cell's time limit of 0.25 s" in result.attempts[1].reason
    assert os.path.isdir(tmp_path / c.id / "attempt-1")
