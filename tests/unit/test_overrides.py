"""`xenrig run --set KEY=VALUE`: a setting of the loaded scenario changed,
converted and validated as the file's own values are."""

from pathlib import Path

import pytest

from harness import config, runner
from harness.cli import main
from harness.config import overrides
from harness.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "configs" / "scenarios" / "smoke.yaml"


@pytest.fixture
def smoke():
    return config.load_scenario(SMOKE)


def test_every_disk_one_entry_and_module_params(smoke):
    s = overrides.apply(smoke, ["guest.disks[*].backend=qdisk", "modules.blkfront.params.feature_persistent=0",
                                "guest.disks[1].size_mib=128", "guest.max_grant_frames=8", "io_mib=8"])
    assert [(d.backend, d.size_mib) for d in s.guest.disks] == [("qdisk", 64), ("qdisk", 128)]
    assert s.modules.blkfront.params == {"feature_persistent": "0"}      # a module parameter is text, as in the file
    assert s.guest.max_grant_frames == 8 and s.io_mib == 8
    assert [d.backend for d in smoke.guest.disks] == ["phy", "qdisk"]     # a copy: the loaded one is unchanged


def test_null_empty_and_paths(smoke, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s = overrides.apply(smoke, ["guest.max_grant_frames=null", "description=", "host=hosts/x.yaml"])
    assert s.guest.max_grant_frames is None and s.description == ""
    assert s.host == tmp_path / "hosts" / "x.yaml"                       # relative to where the command runs


@pytest.mark.parametrize("assignment,words", [
    ("guest.disks[*].backend=nbd", "key 'guest.disks[0].backend': must be one of phy, qdisk; got 'nbd'"),
    ("guest.disk[0].backend=phy", "key 'guest.disk': is not a known setting. Did you mean 'disks'?"),
    ("guest.disks[5].backend=phy", "has 2 entries; there is no [5]"),
    ("guest.disks.backend=phy", "is a list: name an entry as [N] or every entry as [*]"),
    ("guest.disks[*].vdev=xvda", "key 'guest.disks': two disks share a vdev"),            # revalidated
    ("modules.blkfront.params.feature-persistent=0", "is not a setting name"),
    ("guest.memory_mib=lots", "expected a whole number"),
    ("guest.memory_mib=1", "must be between 64 and"),
    ("io_mib=1000", "key 'io_mib': is 1000 MiB but disk xvda has only 64 MiB"),
    ("name.x=1", "is a single value"),
    ("repro.bug=x", "is not set in the scenario"),
    ("guest.memory_mib", "expected KEY=VALUE"),
    ("capture=[1", "not a valid YAML value"),
])
def test_errors_name_the_assignment_and_key(smoke, assignment, words):
    with pytest.raises(ConfigError) as err:
        overrides.apply(smoke, [assignment])
    text = err.value.paragraph()
    assert text.startswith(f"--set {assignment}")
    assert words in text, text


def test_xenrig_run_takes_set(monkeypatch, tmp_path, capsys):
    seen = {}

    def fake_run(scenario, host, *, run_dir=None, console=False, cold=False):
        seen["scenario"] = scenario
        raise ConfigError("stop here: nothing boots in a unit test")

    monkeypatch.setattr(runner, "run_scenario", fake_run)
    code = main(["run", str(SMOKE), "--run-dir", str(tmp_path / "r"), "--set", "guest.disks[*].backend=qdisk",
                 "--set", "modules.blkfront.params.max_indirect_segments=0"])
    assert code == 4 and "stop here" in capsys.readouterr().err   # a config error: exit 4
    s = seen["scenario"]
    assert [d.backend for d in s.guest.disks] == ["qdisk", "qdisk"]
    assert s.modules.blkfront.params == {"max_indirect_segments": "0"}


def test_xenrig_run_refuses_a_bad_set_before_booting(monkeypatch, capsys):
    monkeypatch.setattr(runner, "run_scenario", lambda *a, **k: pytest.fail("must not run"))
    assert main(["run", str(SMOKE), "--set", "guest.disks[*].backend=nbd"]) == 4
    assert "xenrig: ERROR (config): --set guest.disks[*].backend=nbd: key 'guest.disks[0].backend'" in capsys.readouterr().err
