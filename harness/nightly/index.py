"""index.html of a night: the matrix as a grid (scenarios down, backend x
parameter set across) with each cell's status linking to its run's
report.html, the failures with their classification and evidence, and,
given earlier nights, a trend.  Static like report.html (no script), in its
style and with its helpers."""

from __future__ import annotations

from pathlib import Path

from harness.nightly.cells import FAIL, FLAKY, INFRA, MISSING, PASS, SKIP
from harness.report.html import _CSS, _badge, _e, _plot, _table

_NIGHTLY_CSS = """
.INFRA{background:#9a6700}.FLAKY{background:#7b4fb8}.MISSING{background:#777}
table.grid td,table.grid th{text-align:center} table.grid td:first-child,table.grid th:first-child{text-align:left}
table.grid .badge{min-width:4.5em} .small{font-size:.8em} a .badge{text-decoration:none}
table.trend td{text-align:center;white-space:nowrap} table.trend .badge{font-size:.75em;padding:.05em .35em}
"""
_COLOURS = {PASS: "#3a7d44", FLAKY: "#7b4fb8", FAIL: "#b3261e", INFRA: "#9a6700", SKIP: "#999999", MISSING: "#cccccc"}
_MEANING = {PASS: "passed", FLAKY: "passed only on a retry after an infrastructure failure",
            FAIL: "product failure (never retried)", INFRA: "infrastructure failure, also on the retry",
            SKIP: "skipped", MISSING: "no shard reported it"}


def _link(href: str | None, inner: str) -> str:
    return f"<a href='{_e(href)}'>{inner}</a>" if href else inner


def _report_href(cell: dict) -> str | None:
    return f"{cell['run_dir']}/report.html" if cell.get("run_dir") else None


def grid_html(night: dict) -> str:
    grid = night["grid"]
    by_id = {c["id"]: c for c in night["cells"]}
    backends: list[tuple[str, int]] = []
    for col in grid["columns"]:
        backend = col.split("/")[0]
        if backends and backends[-1][0] == backend:
            backends[-1] = (backend, backends[-1][1] + 1)
        else:
            backends.append((backend, 1))
    head1 = "<th rowspan='2'>scenario</th>" + "".join(f"<th colspan='{n}'>{_e(b)}</th>" for b, n in backends)
    head2 = "".join(f"<th>{_e(col.split('/', 1)[1])}</th>" for col in grid["columns"])
    rows = []
    for scenario in grid["rows"]:
        tds = [f"<td><b>{_e(scenario)}</b></td>"]
        for col in grid["columns"]:
            cid = f"{scenario}/{col}"
            cell = by_id.get(cid)
            if cell is None:
                reason = grid["excluded"].get(cid, "")
                tds.append(f"<td class='muted small' title='{_e(reason)}'>excluded</td>")
                continue
            tries = len(cell["attempts"])
            note = f"{tries} attempts, " if tries > 1 else ""
            note += f"{cell['duration_s']:.0f}s" if cell["attempts"] else ""
            badge = _link(_report_href(cell), _badge(cell["status"]))
            tds.append(f"<td title='{_e(cell.get('reason') or cell['status'])}'>{badge}<br>"
                       f"<span class='muted small'>{_e(note)}</span></td>")
        rows.append("<tr>" + "".join(tds) + "</tr>")
    return f"<table class='grid'><tr>{head1}</tr><tr>{head2}</tr>{''.join(rows)}</table>"


def _failures(night: dict) -> str:
    rows = []
    for c in night["cells"]:
        if c["status"] in (PASS, SKIP):
            continue
        attempts = "<br>".join(
            _link(f"{a['run_dir']}/report.html", f"attempt {a['number']}") + f" {_e(a['outcome'] or 'no report')}"
            + (f" <span class='muted'>({_e(a['category'])})</span>" if a.get("category") else "")
            for a in c["attempts"]) or "none"
        evidence = "\n".join(c.get("evidence") or [])
        why = _e(c.get("reason", "")) + (f"<details><summary>evidence</summary><pre>{_e(evidence)}</pre></details>"
                                          if evidence else "")
        command = f"<details><summary>rerun</summary><pre>{_e(c['command'])}</pre></details>" if c.get("command") else ""
        rows.append([_badge(c["status"]), _e(c["id"]), _e(c.get("classification") or ""), why + command, attempts])
    if not rows:
        return "<p>Every cell passed on its first attempt.</p>"
    return _table(["status", "cell", "class", "why", "attempts"], rows)


def trend_plot(nights: list[dict]) -> str:
    """Stacked bars per night: passed at the bottom, then flaky, failed, infra."""
    from harness.report import plots   # matplotlib: only a page with a trend draws

    fig, ax = plots.plt.subplots(figsize=(8, 2.8))
    labels = [n["started_at"][:16].replace("T", " ") for n in nights]
    xs = range(len(nights))
    bottom = [0] * len(nights)
    for status in (PASS, FLAKY, FAIL, INFRA, MISSING):
        values = [n["counts"].get(status, 0) for n in nights]
        if any(values):
            ax.bar(xs, values, bottom=bottom, color=_COLOURS[status], label=status, width=0.6)
            bottom = [b + v for b, v in zip(bottom, values)]
    ax.set_xticks(list(xs), labels, rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("cells")
    ax.set_title("Cells per night (passed at the bottom)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return plots._svg(fig)


def _trend(night: dict) -> str:
    history = night.get("history") or []
    if not history:
        return ""
    tonight = {"label": "this night", "started_at": night["started_at"], "counts": night["counts"],
               "cells": {c["id"]: {"status": c["status"], "link": _report_href(c)} for c in night["cells"]}}
    nights = history + [tonight]
    out = ["<h2>Trend</h2>", _plot(trend_plot(nights), "trend")]
    ids = [c["id"] for c in night["cells"]]
    ids += sorted({cid for n in history for cid in n["cells"]} - set(ids))     # cells since dropped
    head = "".join(f"<th title='{_e(n['label'])}'>{_e(n['started_at'][5:16].replace('T', ' '))}</th>" for n in nights)
    rows = []
    for cid in ids:
        tds = []
        for n in nights:
            entry = n["cells"].get(cid)
            if entry:
                tds.append(f"<td>{_link(entry.get('link'), _badge(entry['status']))}</td>")
            else:
                tds.append("<td class='muted'>&ndash;</td>")
        rows.append(f"<tr><td style='text-align:left'>{_e(cid)}</td>{''.join(tds)}</tr>")
    out.append(f"<table class='trend'><tr><th>cell</th>{head}</tr>{''.join(rows)}</table>")
    return "".join(out)


def render(night: dict) -> str:
    counts = " &middot; ".join(f"{n} {_e(s)}" for s, n in night["counts"].items() if n)
    commits = sorted({s["commit"][:12] for s in night["shards"] if s.get("commit")})
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>xenrig nightly "
             f"{_e(night['started_at'])}: {_e(night['outcome'])}</title><style>{_CSS}{_NIGHTLY_CSS}</style></head><body>",
             f"<h1>{_badge(night['outcome'])} xenrig nightly</h1>",
             f"<p class='muted'>{_e(night['started_at'])} &middot; {counts} &middot; matrix "
             f"{_e(night['matrix'].get('path', ''))} ({_e(night['matrix']['digest'])}) &middot; "
             f"{len(night['shards'])} shard(s)"
             + (f" &middot; commit {_e(', '.join(commits))}" if commits else "") + "</p>"]
    for w in night.get("warnings", []):
        parts.append(f"<p><b>Warning:</b> {_e(w)}</p>")
    parts.append("<h2>Matrix</h2>" + grid_html(night))
    parts.append("<p class='muted small'>" + " &middot; ".join(f"{_badge(s)} {_e(m)}" for s, m in _MEANING.items())
                 + "</p>")
    parts.append("<h2>Failures</h2>" + _failures(night))
    parts.append(_trend(night))
    rows = [[_e(f"{s['index']}/{s['total']}"), _e(s.get("host") or ""), _e((s.get("commit") or "")[:12]),
             _e(s["started_at"]), f"{s.get('duration_s') or 0:.0f}s", _e(s["cells"]),
             "yes" if s.get("complete", True) else "<b>no</b>", _link(s["file"], _e(Path(s["file"]).name))]
            for s in night["shards"]]
    headers = ["shard", "host", "commit", "started", "took", "cells", "complete", "summary"]
    parts.append("<h2>Shards</h2>" + _table(headers, rows))
    parts.append("<h2>Files</h2><ul><li><a href='junit.xml'>junit.xml</a> (one testsuite per cell)</li>"
                 "<li><a href='nightly.json'>nightly.json</a></li><li><a href='summary.md'>summary.md</a></li></ul>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write(night: dict, out: Path) -> Path:
    path = out / "index.html"
    path.write_text(render(night))
    return path
