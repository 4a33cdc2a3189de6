"""ci/nightly and the example pipelines: the script dispatches as documented
(with a stand-in virtualenv, so nothing is installed and nothing boots), and
the examples call it with options that exist and shard consistently."""

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from harness.cli import build_parser

from .conftest import REPO

FAKE = Path(__file__).with_name("fakes.py")


@pytest.fixture
def stub_venv(tmp_path):
    """A virtualenv stand-in for ./xenrig: `xenrig doctor` says the host is
    ready, everything else is the real harness on this interpreter."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    calls = tmp_path / "xenrig-calls"
    (venv / "bin" / "xenrig").write_text(f"#!/bin/sh\necho \"$@\" >> {calls}\nexit 0\n")
    (venv / "bin" / "python").write_text(f"#!/bin/sh\nPYTHONPATH={REPO} exec {sys.executable} \"$@\"\n")
    for f in ("xenrig", "python"):
        (venv / "bin" / f).chmod(0o755)
    (venv / ".xenrig-installed").touch()        # newer than pyproject.toml: ./xenrig installs nothing
    return venv, calls


@pytest.mark.skipif(os.geteuid() != 0, reason="./xenrig setup insists on root")
def test_ci_nightly_shards_then_merge(tmp_path, stub_venv, matrix_file):
    venv, calls = stub_venv
    # Two cells, one in each shard: every cell is a process, and the dispatch is the same for ten.
    matrix = matrix_file("scenarios: [scenarios/smoke.yaml]\nbackends: [phy, qdisk]\nparam_sets: {default: {}}\n")
    script = tmp_path / "script.json"
    script.write_text(json.dumps({"smoke/qdisk/default": ["infra-boot", "pass"]}))
    env = {**os.environ, "XENRIG_VENV": str(venv), "FAKE_NIGHTLY_SCRIPT": str(script)}
    cell = f"{sys.executable} {FAKE}"

    def ci(*args):
        return subprocess.run([str(REPO / "ci" / "nightly"), *map(str, args)], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=300)

    for i in (1, 2):
        res = ci("--shard", f"{i}/2", "--out", "out", "--matrix", matrix, "--cell-command", cell)
        assert res.returncode == 0 and f"shard {i}/2: PASS: 1 {('PASS', 'FLAKY')[i - 1]}" in res.stdout, res.stderr
    res = ci("merge", "out")
    assert res.returncode == 0, res.stderr
    assert "xenrig nightly: PASS: 1 PASS, 1 FLAKY" in res.stdout
    assert (tmp_path / "out" / "index.html").is_file()
    # `run` set the host up first (./xenrig setup -> doctor); merge only needed the virtualenv
    assert calls.read_text().splitlines() == ["doctor", "doctor", "nightly --help"]
    listing = ci("list", "--shard", "2/2")
    assert listing.returncode == 0 and listing.stdout.count("shard 2/2") == 18


def _ci_nightly_lines(text: str) -> list[str]:
    return [m.group(0) for m in re.finditer(r"ci/nightly [^\n|]*?(?=\s*(\|\||$))", text, re.M)]


def _parse(line: str, env: dict) -> object:
    words = shlex.split(line)[1:]
    words = [re.sub(r"\$\{?(\w+)\}?", lambda m: env[m.group(1)], w) for w in words]
    action = words.pop(0) if words[0] in ("run", "merge", "list") else "run"
    return build_parser().parse_args(["nightly", action, *words])


def test_gitlab_example():
    text = (REPO / "ci" / "gitlab-ci.example.yml").read_text()
    doc = yaml.safe_load(text)
    shards, report = doc["nightly"], doc["nightly-report"]
    n = shards["parallel"]
    run, = _ci_nightly_lines("\n".join(shards["script"]))
    merge, = _ci_nightly_lines("\n".join(report["script"]))
    for i in range(1, n + 1):
        args = _parse(run, {"CI_NODE_INDEX": str(i), "CI_NODE_TOTAL": str(n)})
        assert (args.shard.index, args.shard.total) == (i, n)
    assert shards["artifacts"]["when"] == "always" and str(args.out) + "/" in shards["artifacts"]["paths"]
    assert report["needs"] == [{"job": "nightly", "artifacts": True}]
    assert all(rule["when"] == "always" for rule in report["rules"]) and "when" not in report
    margs = _parse(merge, {})
    assert [str(f) for f in margs.folders] == [str(args.out)] and margs.out == args.out
    assert report["artifacts"]["reports"]["junit"] == f"{margs.out}/junit.xml"
    assert report["cache"]["paths"] == [f"{margs.history[0]}/"]


def test_github_example():
    text = (REPO / "ci" / "github-actions.example.yml").read_text()
    doc = yaml.safe_load(text)
    shard_job, report = doc["jobs"]["shard"], doc["jobs"]["report"]
    shards = shard_job["strategy"]["matrix"]["shard"]
    n = doc["env"]["SHARDS"]
    assert shards == list(range(1, n + 1)) and shard_job["strategy"]["fail-fast"] is False
    run_step = next(s for s in shard_job["steps"] if "ci/nightly" in s.get("run", ""))
    for i in shards:
        line = run_step["run"].replace("${{ matrix.shard }}", str(i))
        args = _parse(_ci_nightly_lines(line)[0], {"SHARDS": str(n)})
        assert (args.shard.index, args.shard.total) == (i, n)
    upload = next(s for s in shard_job["steps"] if s.get("uses", "").startswith("actions/upload-artifact"))
    assert upload["if"] == "always()" and upload["with"]["path"] == f"{args.out}/"
    assert report["needs"] == "shard" and report["if"] == "always()"
    download = next(s for s in report["steps"] if s.get("uses", "").startswith("actions/download-artifact"))
    prefix = upload["with"]["name"].split("${{")[0]
    assert download["with"]["pattern"] == prefix + "*" and download["with"]["merge-multiple"] is True
    merge_step = next(s for s in report["steps"] if "ci/nightly merge" in s.get("run", ""))
    margs = _parse(_ci_nightly_lines(merge_step["run"])[0], {})
    assert [str(f) for f in margs.folders] == [download["with"]["path"]] == [str(args.out)]
    restore = next(s for s in report["steps"] if s.get("uses", "").startswith("actions/cache/restore"))
    assert restore["with"]["path"] == str(margs.history[0])


def test_ci_nightly_is_executable_bash():
    path = REPO / "ci" / "nightly"
    assert os.access(path, os.X_OK)
    subprocess.run(["bash", "-n", str(path)], check=True)
