"""Joining the shards of one night into one report: nightly.json (the grid
and every cell), junit.xml (one testsuite per cell, its test cases under the
cell's id), summary.md (the grid as text) and index.html.

Shards are found as `shard-I-of-N.json` in the folders given, or one level
below them (CI systems unpack each job's artifacts into a folder of its
own).  They must come from the same matrix (same cell list and variants,
by digest) and the same split; a cell no shard reported is MISSING.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from xml.etree import ElementTree as ET

from harness import outcome
from harness.errors import UsageError
from harness.nightly.cells import FAIL, FLAKY, INFRA, MISSING, PASS, SHARD_SCHEMA, SKIP

NIGHTLY_SCHEMA = "xenrig-nightly/1"
STATUSES = (PASS, FLAKY, FAIL, INFRA, SKIP, MISSING)


def find_shards(folders: list[Path]) -> list[Path]:
    found: list[Path] = []
    for folder in folders:
        if not folder.is_dir():
            raise UsageError(f"{folder} is not a folder")
        here = sorted(folder.glob("shard-*-of-*.json"))
        if not here:
            here = sorted(folder.glob("*/shard-*-of-*.json"))
        found += here
    return found


def _load_shard(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: not a readable shard summary ({exc})") from None
    if data.get("schema") != SHARD_SCHEMA:
        raise UsageError(f"{path}: schema is {data.get('schema')!r}, not {SHARD_SCHEMA}")
    data["_path"] = path
    return data


def combine(shard_files: list[Path], link_base: Path) -> dict:
    """The night as one dict; run folders are given relative to `link_base`."""
    if not shard_files:
        raise UsageError("no shard summaries (shard-I-of-N.json) found in the folders given",
                         hint="Point merge at the nightly's --out folders")
    shards = [_load_shard(p) for p in shard_files]
    warnings: list[str] = []
    first = shards[0]
    for s in shards[1:]:
        if s["matrix"]["digest"] != first["matrix"]["digest"]:
            raise UsageError(f"{s['_path']} and {first['_path']} ran different matrices "
                             f"(digest {s['matrix']['digest']} vs {first['matrix']['digest']})",
                             hint="Merge only the shards of one nightly run")
        if s["shard"]["total"] != first["shard"]["total"]:
            raise UsageError(f"{s['_path']} is shard {s['shard']['index']}/{s['shard']['total']} but {first['_path']} "
                             f"is {first['shard']['index']}/{first['shard']['total']}: two different splits")
    by_index: dict[int, dict] = {}
    for s in sorted(shards, key=lambda s: s["started_at"]):
        i = s["shard"]["index"]
        if i in by_index:
            warnings.append(f"shard {i}/{s['shard']['total']} appears twice ({by_index[i]['_path']}, {s['_path']}); "
                            "the later one is used")
        by_index[i] = s
    shards = [by_index[i] for i in sorted(by_index)]
    total = first["shard"]["total"]
    absent = [i for i in range(1, total + 1) if i not in by_index]
    if absent:
        warnings.append(f"no summary from shard(s) {', '.join(f'{i}/{total}' for i in absent)}: their cells are MISSING")
    for s in shards:
        if not s.get("complete", True):
            warnings.append(f"shard {s['shard']['index']}/{total} stopped before its last cell: the rest are MISSING")
    commits = sorted({s.get("commit") for s in shards if s.get("commit")})
    if len(commits) > 1:
        warnings.append(f"the shards ran different commits: {', '.join(c[:12] for c in commits)}")

    matrix = first["matrix"]
    reported: dict[str, dict] = {}
    for s in shards:
        for c in s["cells"]:
            cell = dict(c)
            base = s["_path"].parent
            cell["run_dir"] = _rel(base / c["run_dir"], link_base)
            cell["attempts"] = [{**a, "run_dir": _rel(base / a["run_dir"], link_base)} for a in c["attempts"]]
            cell["shard"] = s["shard"]["index"]
            reported[c["id"]] = cell
    cells = []
    for cell_id in matrix["cells"]:
        if cell_id in reported:
            cells.append(reported[cell_id])
        else:
            scenario, backend, params = cell_id.split("/")
            cells.append({"id": cell_id, "scenario": scenario, "backend": backend, "params": params,
                          "status": MISSING, "outcome": None, "classification": None,
                          "reason": "no shard reported this cell", "evidence": [], "attempts": [],
                          "duration_s": 0, "run_dir": None, "command": ""})
    counts = Counter(c["status"] for c in cells)
    return {
        "schema": NIGHTLY_SCHEMA,
        "started_at": min(s["started_at"] for s in shards),
        "outcome": outcome_of(counts),
        "counts": {k: counts.get(k, 0) for k in STATUSES},
        "matrix": {k: v for k, v in matrix.items() if k != "cells"},
        "grid": grid_of(matrix, cells),
        "shards": [{"index": s["shard"]["index"], "total": total, "host": s.get("host"), "commit": s.get("commit"),
                    "started_at": s["started_at"], "duration_s": s.get("duration_s"),
                    "complete": s.get("complete", True), "cells": len(s["cells"]),
                    "file": _rel(s["_path"], link_base)} for s in shards],
        "warnings": warnings,
        "cells": cells,
    }


def _rel(path: Path, base: Path) -> str:
    return os.path.relpath(path.resolve(), base.resolve())


def grid_of(matrix: dict, cells: list[dict]) -> dict:
    """Rows: scenarios; columns: backend/params, both in the matrix file's order."""
    return {"rows": matrix["scenarios"], "columns": matrix["columns"],
            "cells": {c["id"]: c["status"] for c in cells},
            "excluded": {e["id"]: e["reason"] for e in matrix.get("excluded", [])}}


def outcome_of(counts) -> str:
    """A product failure anywhere is the night's headline (FAIL); otherwise
    infrastructure trouble or a missing cell makes it an ERROR."""
    if counts.get(FAIL):
        return "FAIL"
    if counts.get(INFRA) or counts.get(MISSING):
        return "ERROR"
    return "PASS"


EXIT_CODES = outcome.EXIT_CODES       # one table for runs and nights (harness.outcome)


# -- JUnit -------------------------------------------------------------------

def junit(night: dict, base: Path) -> str:
    """One testsuite per cell, named by the cell's id; each test case's
    classname starts with the cell id, so the same check in two cells stays
    two tests in a CI's history."""
    root = ET.Element("testsuites", name=f"xenrig nightly {night['started_at']}")
    for cell in sorted(night["cells"], key=lambda c: c["id"]):
        for suite in _cell_suites(cell, base):
            props = suite.find("properties")
            if props is None:
                props = ET.Element("properties")
                suite.insert(0, props)
            for key in ("status", "classification", "reason"):
                if cell.get(key):
                    ET.SubElement(props, "property", name=f"nightly:{key}", value=str(cell[key]))
            ET.SubElement(props, "property", name="nightly:attempts", value=str(len(cell["attempts"])))
            if cell.get("run_dir"):
                ET.SubElement(props, "property", name="nightly:run_dir", value=cell["run_dir"])
            root.append(suite)
    for attr in ("tests", "failures", "errors", "skipped"):
        root.set(attr, str(sum(int(s.get(attr, "0")) for s in root.findall("testsuite"))))
    root.set("time", f"{sum(float(s.get('time', '0')) for s in root.findall('testsuite')):.3f}")
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True)


def _cell_suites(cell: dict, base: Path) -> list[ET.Element]:
    cid = cell["id"]
    suites: list[ET.Element] = []
    if cell.get("run_dir"):
        try:
            suites = list(ET.parse(base / cell["run_dir"] / "junit.xml").getroot().iter("testsuite"))
        except (OSError, ET.ParseError):
            pass
    for suite in suites:
        scenario = suite.get("name", "")
        suite.set("name", cid)
        for tc in suite.iter("testcase"):
            cls = tc.get("classname", "")
            rest = cls[len(scenario) + 1:] if cls.startswith(scenario + ".") else cls
            tc.set("classname", f"{cid}.{rest}")
    if not suites:      # the cell never ran, or its run died before reporting
        suites = [ET.Element("testsuite", name=cid, tests="0", failures="0", errors="0", skipped="0", time="0.000")]
    _add_verdict(suites[0], cell)
    return suites


def _add_verdict(suite: ET.Element, cell: dict) -> None:
    """One test case per cell, `CELL.nightly verdict`, that says the night's
    word on it: a product failure fails, an infrastructure failure (or a
    missing cell) errs, a pass (also on a retry) passes."""
    status, why = cell["status"], cell.get("reason") or ""
    tc = ET.SubElement(suite, "testcase", classname=f"{cell['id']}.nightly", name="verdict",
                       time=f"{cell.get('duration_s') or 0:.3f}")
    body = "\n".join(cell.get("evidence") or []) or why
    if status == FAIL:
        ET.SubElement(tc, "failure", message=f"product: {why}").text = body
        suite.set("failures", str(int(suite.get("failures", "0")) + 1))
    elif status in (INFRA, MISSING):
        ET.SubElement(tc, "error", message=f"infrastructure: {why}" if status == INFRA else why).text = body
        suite.set("errors", str(int(suite.get("errors", "0")) + 1))
    elif status == SKIP:
        ET.SubElement(tc, "skipped", message=why or "skipped")
        suite.set("skipped", str(int(suite.get("skipped", "0")) + 1))
    elif status == FLAKY:
        ET.SubElement(tc, "system-out").text = f"passed on attempt {len(cell['attempts'])}; before: {why}"
    suite.set("tests", str(int(suite.get("tests", "0")) + 1))


# -- text ----------------------------------------------------------------------

def summary_markdown(night: dict) -> str:
    grid = night["grid"]
    lines = [f"# xenrig nightly {night['started_at']}: {night['outcome']}", "",
             " ".join(f"{k} {v}" for k, v in night["counts"].items() if v), ""]
    lines.append("| scenario | " + " | ".join(grid["columns"]) + " |")
    lines.append("|---" * (len(grid["columns"]) + 1) + "|")
    for row in grid["rows"]:
        entries = []
        for col in grid["columns"]:
            cid = f"{row}/{col}"
            entries.append(grid["cells"].get(cid) or ("excluded" if cid in grid["excluded"] else ""))
        lines.append(f"| {row} | " + " | ".join(entries) + " |")
    bad = [c for c in night["cells"] if c["status"] not in (PASS, SKIP)]
    if bad:
        lines += ["", "| cell | status | why | run folder |", "|---|---|---|---|"]
        for c in bad:
            why = (c.get("reason") or "").replace("|", "\\|")
            lines.append(f"| {c['id']} | {c['status']} | {why} | {c.get('run_dir') or ''} |")
    for w in night["warnings"]:
        lines.append(f"\nwarning: {w}")
    return "\n".join(lines) + "\n"


def write(night: dict, out: Path) -> Path:
    """nightly.json, junit.xml, summary.md and index.html into `out`."""
    from harness.nightly import index   # matplotlib only when writing the page

    out.mkdir(parents=True, exist_ok=True)
    (out / "nightly.json").write_text(json.dumps(night, indent=1))
    (out / "junit.xml").write_text(junit(night, out))
    (out / "summary.md").write_text(summary_markdown(night))
    return index.write(night, out)


def merge_folders(folders: list[Path], out: Path, history: list[dict] | None = None) -> dict:
    """Merge the shards found in `folders` into `out`; `history`: earlier
    nights (load_history) for the trend."""
    night = combine(find_shards(folders), out)
    night["history"] = [{k: h[k] for k in ("label", "started_at", "counts", "cells")} for h in history or []]
    write(night, out)
    return night


# -- history -------------------------------------------------------------------

def load_history(folders: list[Path], link_base: Path) -> list[dict]:
    """Earlier nights, oldest first: each folder is one night's output
    (nightly.json, or its shard summaries), or a folder of such folders."""
    nights = []
    for folder in folders:
        if not folder.is_dir():
            raise UsageError(f"--history {folder}: not a folder")
        if _is_night(folder):
            nights.append(_night(folder, link_base))
        else:
            nights += [_night(d, link_base) for d in sorted(folder.iterdir()) if d.is_dir() and _is_night(d)]
    return sorted(nights, key=lambda n: n["started_at"])


def _is_night(folder: Path) -> bool:
    return (folder / "nightly.json").is_file() or any(folder.glob("shard-*-of-*.json"))


def _night(folder: Path, link_base: Path) -> dict:
    path = folder / "nightly.json"
    if path.is_file():
        try:
            night = json.loads(path.read_text())
        except ValueError as exc:
            raise UsageError(f"{path}: not readable ({exc})") from None
    else:
        night = combine(sorted(folder.glob("shard-*-of-*.json")), folder)
    cells = {}
    for c in night["cells"]:
        report = folder / c["run_dir"] / "report.html" if c.get("run_dir") else None
        cells[c["id"]] = {"status": c["status"],
                          "link": _rel(report, link_base) if report is not None and report.is_file() else None}
    return {"label": folder.name, "started_at": night["started_at"], "counts": night["counts"], "cells": cells}
