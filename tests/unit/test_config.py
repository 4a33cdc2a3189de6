from pathlib import Path

import pytest

from harness import config
from harness.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path, text, name="s.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_shipped_configs_load():
    s = config.load_scenario(REPO / "configs" / "smoke.yaml")
    assert s.name == "smoke"
    assert [(d.vdev, d.backend) for d in s.guest.disks] == [("xvda", "phy"), ("xvdb", "qdisk")]
    assert s.host == REPO / "configs" / "hosts" / "local.yaml"
    for host in (REPO / "configs" / "hosts").glob("*.yaml"):
        assert config.load_host(host).name


def test_defaults_fill_missing_keys(tmp_path):
    s = config.load_scenario(write(tmp_path, "name: x\n"))
    assert s.guest.memory_mib == 256 and s.io_mib == 4 and s.guest.disks[0].vdev == "xvda"


@pytest.mark.parametrize("text,line,key,words", [
    ("name: x\nguest:\n  memory_mib: lots\n", 3, "guest.memory_mib", "whole number"),
    ("name: x\nguest:\n  memry_mib: 3\n", 3, "guest.memry_mib", "Did you mean 'memory_mib'"),
    ("name: x\nguest:\n  disks:\n   - vdev: xvda\n     backend: nbd\n", 5, "guest.disks[0].backend", "one of phy, qdisk"),
    ("guest: {}\n", 1, "name", "required"),
    ("name: x\nio_mib: 0\n", 2, "io_mib", "between 1 and"),
    ("name: x\nchecks: [guest.nonsense]\n", 2, "checks", "unknown check"),
    ("name: x\nio_mib: 100\n", 2, "io_mib", "only 64 MiB"),
    ("name: x\nguest:\n  disks:\n   - {vdev: xvda}\n   - {vdev: xvda}\n", 4, "guest.disks", "share a vdev"),
    ("name: x\nguest:\n  disks:\n   - {vdev: sda}\n", 4, "guest.disks[0].vdev", "xvda..xvdz"),
    ("name: x\nname: y\n", 2, "name", "twice"),
    ("name: x\nmodules:\n  blkfront:\n    params: {max_queues: '1; reboot'}\n", 4, "modules.blkfront.params",
     "may hold only letters"),
    ("name: x\nsteps:\n  - {name: wait, idle_s: 200}\n", 3, "steps[0].idle_s", "raise timeout_s"),
    ("name: x\nsteps:\n  - {name: wait, idle_s: 20, shell: true}\n", 3, "steps[0].name", "exactly one of"),
])
def test_errors_name_file_line_and_key(tmp_path, text, line, key, words):
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as ei:
        config.load_scenario(p)
    msg = ei.value.paragraph()
    assert f"{p}:{line}:" in msg
    assert f"'{key}'" in msg
    assert words in msg
    assert "\n" not in msg  # one paragraph


def test_syntax_error_gives_line(tmp_path):
    p = write(tmp_path, "name: x\nguest: [1,\n")
    with pytest.raises(ConfigError) as ei:
        config.load_scenario(p)
    assert f"{p}:" in ei.value.paragraph() and "not valid YAML" in ei.value.paragraph()


@pytest.mark.parametrize("text", ["", "# only a comment\n"])
def test_an_empty_file_says_what_is_missing(tmp_path, text):
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as ei:
        config.load_scenario(p)
    assert ei.value.paragraph().startswith(f"{p}: key 'name': is required but missing")


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="no such configuration file"):
        config.load_scenario(tmp_path / "nope.yaml")


def test_remote_host_requires_pinned_key(tmp_path):
    p = write(tmp_path, "kind: remote\naddress: 192.0.2.1\nkey: k\n", "h.yaml")
    with pytest.raises(ConfigError, match="'host_key'.*required for a remote host"):
        config.load_host(p)


def test_dom0_memory_must_fit(tmp_path):
    p = write(tmp_path, "memory_mib: 1024\ndom0_mem_mib: 1024\n", "h.yaml")
    with pytest.raises(ConfigError, match="dom0_mem_mib"):
        config.load_host(p)


def test_relative_paths_resolve_against_the_file(tmp_path):
    p = write(tmp_path, "name: x\nhost: hosts/h.yaml\n")
    assert config.load_scenario(p).host == tmp_path / "hosts" / "h.yaml"


def test_host_cpu_model_and_features_are_validated(tmp_path):
    h = config.load_host(write(tmp_path, "name: h\ncpu_model: qemu64\ncpu_features: [+svm, -xsave]\n"))
    assert (h.cpu_model, h.cpu_features) == ("qemu64", ["+svm", "-xsave"])
    for bad in ("cpu_model: 'max;x'\n", "cpu_features: [svm]\n"):
        with pytest.raises(ConfigError, match="cpu_"):
            config.load_host(write(tmp_path, "name: h\n" + bad, "bad.yaml"))
