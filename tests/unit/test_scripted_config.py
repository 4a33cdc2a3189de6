"""A scripted vbd in a scenario: what its schema accepts and refuses, and
the script as the backend (harness/remote/xrback.py) reads it."""

import json
from types import SimpleNamespace

import pytest

from harness import config
from harness.errors import ConfigError, InfraError
from harness.host import scripted_backend

HEAD = "name: s\nhost: h.yaml\ncapture: {capture}\nsteps:\n"


def load(tmp_path, step, capture="true"):
    (tmp_path / "h.yaml").write_text("name: h\n")
    p = tmp_path / "s.yaml"
    p.write_text(HEAD.format(capture=capture) + f"  - {step}\n")
    return config.load_scenario(p)


def test_a_script_becomes_the_json_the_backend_reads(tmp_path):
    s = load(tmp_path, "{name: a, vbd: {op: attach, vdev: xvdc, backend: scripted, trusted: false, "
                       "script: {features: {feature-persistent: '0'}, rules: [{do: duplicate, sector_from: 2048, count: 1}]}}}")
    vbd = s.steps[0].vbd
    assert vbd.backend == "scripted" and vbd.trusted is False
    payload = scripted_backend.script_payload(vbd.script)
    assert payload == {"features": {"feature-persistent": "0"},
                       "rules": [{"do": "duplicate", "after": 0, "sector_from": 2048, "count": 1, "value": 0}]}
    json.dumps(payload)


@pytest.mark.parametrize("step, words", [
    ("{name: a, vbd: {op: attach, vdev: xvdc, backend: phy, script: {rules: []}}}", "only a vbd with backend: scripted"),
    ("{name: a, vbd: {op: attach, vdev: xvdc, backend: qdisk, trusted: false}}", "written by the scripted backend only"),
    ("{name: a, vbd: {op: attach, vdev: xvdc, backend: scripted, target: missing}}", "serves an image file"),
    ("{name: a, vbd: {op: attach, vdev: xvdc, backend: scripted, script: {features: {state: '4'}}}}",
     "not a backend feature node"),
    ("{name: a, vbd: {op: attach, vdev: xvdc, backend: scripted, script: {rules: [{do: lie-a-lot}]}}}", "do"),
    ("{name: a, vbd: {op: attach, vdev: xvdc, backend: scripted, script: {rules: [{do: bad-status, value: 40000}]}}}",
     "16 bits signed"),
])
def test_what_a_scripted_vbd_refuses_is_named(tmp_path, step, words):
    with pytest.raises(ConfigError) as ei:
        load(tmp_path, step)
    assert words in ei.value.paragraph()


def test_without_capture_only_a_scripted_vbd_may_be_attached(tmp_path):
    assert load(tmp_path, "{name: a, vbd: {op: attach, vdev: xvdc, backend: scripted}}", capture="false")
    with pytest.raises(ConfigError) as ei:
        load(tmp_path, "{name: a, vbd: {op: attach, vdev: xvdc, backend: phy}}", capture="false")
    assert "other than a scripted backend's" in ei.value.paragraph()


class FakeXen:
    def __init__(self, alive):
        self.alive, self.commands, self.put = alive, [], []
        self.ssh = SimpleNamespace(put=lambda src, dst: self.put.append((src.read_text(), dst)))

    def run(self, command, **kw):
        self.commands.append(command)
        if "setsid python3" in command:
            out = "4242\nalive\n" if self.alive else "4242\n"
            return SimpleNamespace(stdout=out, ok=True, exit_status=0)
        return SimpleNamespace(stdout="Traceback: boom\n" if "cat" in command else "", ok=True, exit_status=0)


def test_a_backend_is_started_from_a_spec_file_with_no_guest_value_in_a_command(tmp_path):
    xen = FakeXen(alive=True)
    vbd = scripted_backend.start(xen, domid=3, vdev="xvdc", image="/r/vbd-xvdc.img", script={"rules": []},
                                 run_dir=tmp_path)
    assert vbd.pid == 4242 and vbd.devid == 51744
    spec = json.loads(xen.put[0][0])
    assert spec["frontend"] == "/local/domain/3/device/vbd/51744"
    assert spec["backend"] == "/local/domain/0/backend/xrvbd/3/51744"
    assert (tmp_path / "xrback-xvdc.spec.json").exists()
    # The script travels in the file only.
    assert not any("rules" in c for c in xen.commands)


def test_a_backend_that_dies_at_start_is_an_error_with_its_words(tmp_path):
    with pytest.raises(InfraError) as ei:
        scripted_backend.start(FakeXen(alive=False), domid=3, vdev="xvdc", image="/r/i.img", script={},
                               run_dir=tmp_path)
    assert "did not start" in ei.value.message and "boom" in ei.value.message


def test_a_rule_without_ms_leaves_the_behaviours_own_default_to_the_backend():
    from harness.config.schema import BackendRule, BackendScript

    payload = scripted_backend.script_payload(BackendScript(rules=[BackendRule(do="reorder"),
                                                                   BackendRule(do="delay", ms=300)]))
    assert [r.get("ms") for r in payload["rules"]] == [None, 300]


def test_a_vdev_attached_again_keeps_the_first_backends_log(tmp_path):
    xen = FakeXen(alive=True)
    first = scripted_backend.start(xen, domid=3, vdev="xvdt", image="/r/i.img", script={}, run_dir=tmp_path)
    second = scripted_backend.start(xen, domid=3, vdev="xvdt", image="/r/i.img", script={}, run_dir=tmp_path)
    assert (first.name, second.name) == ("xrback-xvdt", "xrback-xvdt.2")
    xen.run = lambda command, **kw: SimpleNamespace(stdout='{"ev": "nodes"}\n' if "log" in command else "",
                                                    exit_status=0)
    scripted_backend.fetch_log(xen, first, tmp_path)
    scripted_backend.fetch_log(xen, second, tmp_path)
    assert {p.name for p in tmp_path.glob("*.jsonl")} == {"xrback-xvdt.jsonl", "xrback-xvdt.2.jsonl"}
