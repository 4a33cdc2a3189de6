"""The issue's done-when, without VMs: shards 1/2 and 2/2 then merge give
the same grid as one unsharded run; plus what merge does with missing,
foreign and duplicated shards, JUnit, and the history."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest

from harness import nightly
from harness.errors import UsageError
from harness.nightly import index
from harness.nightly.shard import WHOLE, Shard

from .conftest import REPO
from .fakes import ScriptedRunner

FAKE = Path(__file__).with_name("fakes.py")
# One of everything: pass, product failures (model, guest oops, hang), a
# flaky infrastructure failure, an infrastructure failure twice.
SCRIPT = {
    "blkfront-io/phy/no-persistent": ["fail"],
    "smoke/phy/no-indirect": ["oops"],
    "blkfront-io/qdisk/default": ["hang"],
    "smoke/qdisk/default": ["infra-boot", "pass"],
    "gnttab-conformance/qdisk/default": ["infra-ssh", "infra-download"],
}
EXPECTED = {
    "blkfront-io/phy/default": "PASS", "blkfront-io/phy/no-indirect": "PASS", "blkfront-io/phy/no-persistent": "FAIL",
    "blkfront-io/qdisk/default": "FAIL", "gnttab-conformance/phy/default": "PASS",
    "gnttab-conformance/qdisk/default": "INFRA", "smoke/phy/default": "PASS", "smoke/phy/no-indirect": "FAIL",
    "smoke/phy/no-persistent": "PASS", "smoke/qdisk/default": "FLAKY",
    "blkfront-lifecycle/phy/default": "PASS", "blkfront-lifecycle/phy/no-indirect": "PASS",
    "blkfront-lifecycle/phy/no-persistent": "PASS", "blkfront-lifecycle/qdisk/default": "PASS",
    "blkfront-io/phy/ring-order-4": "PASS", "blkfront-io/qdisk/ring-order-4": "PASS",
    **{f"blkfront-smp/{col}": "PASS" for col in (
        "phy/default", "phy/no-indirect", "phy/no-persistent", "phy/ring-order-0", "phy/ring-order-4", "phy/smp4",
        "qdisk/default", "qdisk/ring-order-0", "qdisk/ring-order-4", "qdisk/smp4")},
    **{f"blkfront-resume/{col}": "PASS" for col in (
        "phy/default", "phy/no-indirect", "phy/no-persistent", "phy/ring-order-4", "qdisk/default", "qdisk/ring-order-4")},
    # The trusted axis.
    "blkfront-io/phy/untrusted": "PASS", "blkfront-io/qdisk/untrusted": "PASS",
    "blkfront-lifecycle/phy/untrusted": "PASS", "smoke/phy/untrusted": "PASS",
}


def comparable(night: dict) -> dict:
    """What must not depend on the split: the grid and each cell's verdict."""
    return {"grid": night["grid"], "outcome": night["outcome"], "counts": night["counts"],
            "cells": [{k: c[k] for k in ("id", "status", "outcome", "classification", "reason", "run_dir", "set")}
                      | {"attempts": [(a["number"], a["outcome"], a["category"], a["run_dir"]) for a in c["attempts"]]}
                      for c in night["cells"]]}


def grid_section(html: str) -> str:
    return html[html.index("<table class='grid'>"):html.index("</table>", html.index("<table class='grid'>"))]


def test_two_shards_merged_give_the_grid_of_one_unsharded_run(tmp_path, matrix, still_clock):
    _, whole = nightly.run(matrix, WHOLE, tmp_path / "whole", ScriptedRunner(SCRIPT))
    for i in (1, 2):
        summary, night = nightly.run(matrix, Shard(i, 2), tmp_path / "sharded", ScriptedRunner(SCRIPT))
        assert night is None and summary.name == f"shard-{i}-of-2.json"
    merged = nightly.merge_folders([tmp_path / "sharded"], tmp_path / "sharded")

    assert whole["grid"]["cells"] == EXPECTED
    assert comparable(merged) == comparable(whole)
    assert merged["outcome"] == "FAIL" and merged["counts"] == {"PASS": 31, "FLAKY": 1, "FAIL": 3, "INFRA": 1,
                                                                "SKIP": 0, "MISSING": 0}
    assert [s["index"] for s in merged["shards"]] == [1, 2] and not merged["warnings"]
    html_whole = (tmp_path / "whole" / "index.html").read_text()
    html_merged = (tmp_path / "sharded" / "index.html").read_text()
    assert grid_section(html_whole) == grid_section(html_merged)
    for name in ("index.html", "junit.xml", "nightly.json", "summary.md"):
        assert (tmp_path / "sharded" / name).is_file()


# A matrix of four cells, one of each status, for what runs every cell as a
# real process: one process per attempt is what such a test costs.
SMALL = "scenarios: [scenarios/smoke.yaml, scenarios/blkfront-io.yaml]\nbackends: [phy, qdisk]\nparam_sets: {default: {}}\n"
SMALL_SCRIPT = {
    "smoke/qdisk/default": ["infra-boot", "pass"],                  # FLAKY
    "blkfront-io/phy/default": ["infra-ssh", "infra-download"],     # INFRA
    "blkfront-io/qdisk/default": ["hang"],                          # FAIL
}


def cli(tmp_path, script: dict):
    """`python -m harness nightly ...` as ci/nightly calls it, each cell a
    real `run` subprocess (a fake xenrig) scripted by `script`."""
    path = tmp_path / "script.json"
    path.write_text(json.dumps(script))
    env = {**os.environ, "FAKE_NIGHTLY_SCRIPT": str(path)}
    cell_command = f"{sys.executable} {FAKE}"

    def xenrig(action, *args):
        extra = ["--cell-command", cell_command] if action == "run" else []
        return subprocess.run([sys.executable, "-m", "harness", "nightly", action, *map(str, args), *extra], cwd=REPO,
                              env=env, capture_output=True, text=True, timeout=300)
    return xenrig


def test_the_same_through_the_command_line(tmp_path, matrix_file):
    """`xenrig nightly run --shard 1/2`, `--shard 2/2`, `merge` into another
    folder give the grid that the library gives for the whole matrix."""
    path = matrix_file(SMALL)
    _, whole = nightly.run(nightly.load_matrix(path), WHOLE, tmp_path / "whole", ScriptedRunner(SMALL_SCRIPT))
    assert whole["counts"] == {"PASS": 1, "FLAKY": 1, "FAIL": 1, "INFRA": 1, "SKIP": 0, "MISSING": 0}
    xenrig = cli(tmp_path, SMALL_SCRIPT)
    for i, code in ((1, 2), (2, 1)):      # shard 1: the INFRA cell and the PASS; shard 2: the FAIL and the FLAKY
        shard = xenrig("run", "--matrix", path, "--shard", f"{i}/2", "--out", tmp_path / "sh")
        assert shard.returncode == code and f"shard {i}/2" in shard.stdout, shard.stderr
    merged = xenrig("merge", tmp_path / "sh", "--out", tmp_path / "merged")
    assert merged.returncode == 1, merged.stderr          # a product failure
    assert "xenrig nightly: FAIL: 1 PASS, 1 FLAKY, 1 FAIL, 1 INFRA" in merged.stdout
    b = json.loads((tmp_path / "merged" / "nightly.json").read_text())
    assert b["grid"] == whole["grid"]
    assert [c["status"] for c in b["cells"]] == [c["status"] for c in whole["cells"]]
    assert [len(c["attempts"]) for c in b["cells"]] == [len(c["attempts"]) for c in whole["cells"]] == [2, 1, 1, 2]
    # merged elsewhere: its links lead back into the shards' folder
    flaky = next(c for c in b["cells"] if c["id"] == "smoke/qdisk/default")
    assert flaky["run_dir"] == "../sh/smoke/qdisk/default"
    assert (tmp_path / "merged" / flaky["run_dir"] / "report.html").is_file()
    assert grid_section((tmp_path / "merged" / "index.html").read_text()).count("report.html") == 4


def test_an_unsharded_run_through_the_command_line_merges_at_once(tmp_path, matrix_file):
    path = matrix_file("scenarios: [scenarios/blkfront-io.yaml]\nbackends: [phy]\nparam_sets: {default: {}}\n")
    res = cli(tmp_path, {"blkfront-io/phy/default": ["fail"]})("run", "--matrix", path, "--out", tmp_path / "n")
    assert res.returncode == 1, res.stderr
    assert res.stdout.endswith(f"xenrig nightly: FAIL: 1 FAIL; index: {tmp_path / 'n' / 'index.html'}\n")
    assert (tmp_path / "n" / "summary.md").read_text() in res.stdout
    night = json.loads((tmp_path / "n" / "nightly.json").read_text())
    assert [(c["id"], c["status"], c["classification"]) for c in night["cells"]] == [
        ("blkfront-io/phy/default", "FAIL", "product")]
    for name in ("index.html", "junit.xml", "shard-1-of-1.json", "blkfront-io/phy/default/report.html"):
        assert (tmp_path / "n" / name).is_file()


def test_merged_junit_has_one_suite_per_cell(tmp_path, matrix):
    nightly.run(matrix, WHOLE, tmp_path, ScriptedRunner(SCRIPT))
    root = ET.parse(tmp_path / "junit.xml").getroot()
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == sorted(EXPECTED)
    for s in suites:
        for tc in s.findall("testcase"):
            assert tc.get("classname").startswith(s.get("name") + ".")
        props = {p.get("name"): p.get("value") for p in s.find("properties")}
        assert props["nightly:status"] == EXPECTED[s.get("name")]
    io = next(s for s in suites if s.get("name") == "blkfront-io/phy/no-persistent")
    model = next(tc for tc in io.findall("testcase") if tc.get("name") == "model")
    assert model.get("classname") == "blkfront-io/phy/no-persistent.trace" and model.find("failure") is not None
    flaky = next(s for s in suites if s.get("name") == "smoke/qdisk/default")
    assert {p.get("name"): p.get("value") for p in flaky.find("properties")}["nightly:attempts"] == "2"
    assert int(root.get("tests")) == sum(int(s.get("tests")) for s in suites)
    # the runs' own: the model divergence and the hang fail, the oops run and the infra run err ...
    # ... and one verdict per cell: 3 product failures, 1 infrastructure
    assert (root.get("failures"), root.get("errors")) == ("5", "3")
    verdicts = {s.get("name"): s.find("testcase[@name='verdict']") for s in suites}
    assert all(v.get("classname") == f"{cid}.nightly" for cid, v in verdicts.items())
    assert verdicts["smoke/phy/no-indirect"].find("failure").get("message").startswith("product: guest kernel: BUG")
    assert verdicts["gnttab-conformance/qdisk/default"].find("error").get("message").startswith("infrastructure: ")
    assert "passed on attempt 2" in verdicts["smoke/qdisk/default"].find("system-out").text
    assert list(verdicts["smoke/phy/default"]) == []


def test_a_missing_shard_makes_its_cells_missing(tmp_path, matrix):
    nightly.run(matrix, Shard(1, 2), tmp_path, ScriptedRunner())
    night = nightly.merge_folders([tmp_path], tmp_path)
    missing = [c["id"] for c in night["cells"] if c["status"] == "MISSING"]
    assert missing == [c.id for c in Shard(2, 2).pick(matrix.cells)]
    assert night["outcome"] == "ERROR" and "shard(s) 2/2" in night["warnings"][0]
    suites = {s.get("name"): s for s in ET.parse(tmp_path / "junit.xml").getroot().findall("testsuite")}
    assert suites[missing[0]].find("testcase[@name='verdict']/error").get("message") == "no shard reported this cell"
    assert "MISSING" in (tmp_path / "index.html").read_text()


def test_shards_in_subfolders_as_ci_unpacks_them(tmp_path, matrix):
    for i in (1, 2):
        nightly.run(matrix, Shard(i, 2), tmp_path / "artifacts" / f"nightly-shard-{i}", ScriptedRunner())
    night = nightly.merge_folders([tmp_path / "artifacts"], tmp_path / "report")
    assert night["outcome"] == "PASS" and night["counts"]["PASS"] == len(matrix.cells)
    assert night["cells"][0]["run_dir"].startswith("../artifacts/nightly-shard-")


def test_merge_refuses_shards_of_different_matrices_or_splits(tmp_path, matrix_file, matrix):
    other = nightly.load_matrix(matrix_file("scenarios: [scenarios/smoke.yaml]\n"))
    nightly.run(matrix, Shard(1, 2), tmp_path / "a", ScriptedRunner())
    nightly.run(other, Shard(2, 2), tmp_path / "b", ScriptedRunner())
    nightly.run(matrix, Shard(2, 3), tmp_path / "c", ScriptedRunner())
    with pytest.raises(UsageError, match="different matrices"):
        nightly.merge_folders([tmp_path / "a", tmp_path / "b"], tmp_path)
    with pytest.raises(UsageError, match="two different splits"):
        nightly.merge_folders([tmp_path / "a", tmp_path / "c"], tmp_path)
    with pytest.raises(UsageError, match="no shard summaries"):
        nightly.merge_folders([tmp_path / "a" / "smoke"], tmp_path)


def test_a_shard_given_twice_uses_the_later_and_says_so(tmp_path, matrix):
    nightly.run(matrix, Shard(1, 2), tmp_path / "a", ScriptedRunner())
    nightly.run(matrix, Shard(2, 2), tmp_path / "a", ScriptedRunner())
    shutil.copytree(tmp_path / "a", tmp_path / "again")
    night = nightly.merge_folders([tmp_path / "a", tmp_path / "again"], tmp_path / "out")
    assert sum("appears twice" in w for w in night["warnings"]) == 2
    assert len(night["cells"]) == len(matrix.cells)


def test_history_gives_a_trend(tmp_path, matrix):
    nights = tmp_path / "history"
    nightly.run(matrix, WHOLE, nights / "n1", ScriptedRunner())
    nightly.run(matrix, WHOLE, nights / "n2", ScriptedRunner({"smoke/phy/default": ["infra-boot", "infra-boot"]}))
    history = nightly.load_history([nights], tmp_path / "tonight")
    assert [h["label"] for h in history] == ["n1", "n2"]
    _, night = nightly.run(matrix, WHOLE, tmp_path / "tonight", ScriptedRunner(SCRIPT), history=history)
    assert [h["counts"]["PASS"] for h in night["history"]] == [36, 35]
    assert night["history"][1]["cells"]["smoke/phy/default"] == {
        "status": "INFRA", "link": "../history/n2/smoke/phy/default/report.html"}
    html = (tmp_path / "tonight" / "index.html").read_text()
    trend = html[html.index("<h2>Trend</h2>"):]
    assert "data-plot=\"trend\"><svg" in trend
    assert "../history/n2/smoke/phy/default/report.html" in trend
    # a night is also its shard summaries, before anyone merged them
    nightly.run(matrix, Shard(1, 1), nights / "n3", ScriptedRunner())
    (nights / "n3" / "nightly.json").unlink()
    assert len(nightly.load_history([nights], tmp_path)) == 3
    with pytest.raises(UsageError, match="not a folder"):
        nightly.load_history([tmp_path / "nope"], tmp_path)


def test_index_is_static_and_links_every_run(tmp_path, matrix):
    _, night = nightly.run(matrix, WHOLE, tmp_path, ScriptedRunner(SCRIPT))
    html = (tmp_path / "index.html").read_text()
    assert "<script" not in html.lower()
    grid = grid_section(html)
    # rows: scenarios in the file's order; columns: backend, then parameter set
    assert grid.index("smoke") < grid.index("gnttab-conformance") < grid.index("blkfront-io")
    assert "<th colspan='7'>phy</th><th colspan='5'>qdisk</th>" in grid
    for status in ("PASS", "FAIL", "INFRA", "FLAKY"):
        assert f'class="badge {status}"' in grid
    # every slot of the 6 x 12 grid that runs no cell says so (36 cells run)
    assert grid.count("excluded") == 6 * 12 - len(matrix.cells) == 36
    for c in night["cells"]:
        assert f"href='{c['run_dir']}/report.html'" in grid
        assert (tmp_path / c["run_dir"] / "report.html").is_file()
    assert "attempt-1/report.html" in html        # earlier attempts are linked from the failures table
    run_page = (tmp_path / night["cells"][0]["run_dir"] / "report.html").read_text()
    stages = run_page[run_page.index('data-plot="stages">'):]
    assert stages.startswith('data-plot="stages"><svg')        # the runs' own pages are drawn, by matplotlib
    assert "boot xen + dom0" in stages[:stages.index("</svg>")]
    assert index.render(night) == html
