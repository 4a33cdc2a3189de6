"""report.html: what a person opens first.  A static page (no server, no
script): the verdict, every check, the divergence if any, the stage
timeline, the trace's timeline and plots, the model's ledger and Xen's
dumps, and links to every raw artifact in the folder."""

from __future__ import annotations

import html
import json
from pathlib import Path

from harness.report.start import retry_line, start_line

# harness.report.plots is imported where a page draws: it brings in
# matplotlib (half a second), which `xenrig check`, the nightly's grid and
# everything else that only imports this module's helpers do not need.

_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:72em;color:#1d1d1f;padding:0 1em}
h1{margin-bottom:.2em} h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
.badge{display:inline-block;padding:.15em .6em;border-radius:.3em;color:#fff;font-weight:600}
.PASS{background:#3a7d44}.FAIL{background:#b3261e}.ERROR{background:#9a6700}.SKIP{background:#777}
table{border-collapse:collapse;width:100%;font-size:.9em} td,th{border:1px solid #ddd;padding:.3em .5em;text-align:left;vertical-align:top}
th{background:#f4f4f6} pre{background:#f7f7f9;padding:.6em;overflow:auto;font-size:.85em;max-height:30em}
details>summary{cursor:pointer} .plot svg{max-width:100%;height:auto} .muted{color:#666}
"""


def _e(text) -> str:
    return html.escape(str(text))


def _badge(outcome: str) -> str:
    return f'<span class="badge {_e(outcome)}">{_e(outcome)}</span>'


def _table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _plot(svg: str, name: str) -> str:
    return f'<div class="plot" data-plot="{_e(name)}">{svg}</div>'


def render(report: dict, run_dir: Path) -> str:
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>xenrig {_e(report['scenario'])}: "
             f"{_e(report['outcome'])}</title><style>{_CSS}</style></head><body>"]
    parts.append(f"<h1>{_badge(report['outcome'])} {_e(report['scenario'])}</h1>")
    info = report.get("info", {})
    host = info.get("host", {})
    counts = {o: sum(1 for c in report["checks"] if c["outcome"] == o) for o in ("PASS", "FAIL", "ERROR", "SKIP")}
    parts.append(f"<p class='muted'>{_e(report['started_at'])} &middot; {report['duration_s']:.1f}s &middot; "
                 f"host {_e(host.get('kind', '?'))} ({_e(host.get('accel', host.get('address', '')))}) &middot; "
                 + " &middot; ".join(f"{n} {o}" for o, n in counts.items() if n) + "</p>")
    start = start_line(info.get("snapshot") or {})
    if start:
        parts.append(f"<p class='muted'>stack: {_e(start)}</p>")
    retry = retry_line(info.get("retried") or {})
    if retry:
        parts.append(f"<p><b>{_e(retry)}</b></p>")
    if report.get("error"):
        err = report["error"]
        what = (f"Error after {_e(err['after_subject'])} was loaded (product-suspect, {_e(err['kind'])})"
                if err.get("after_subject") else f"Infrastructure error ({_e(err['kind'])})")
        parts.append(f"<p><b>{what}:</b> {_e(err['message'])}</p>")
    for source, text in (info.get("last_console") or {}).items():
        parts.append(f"<details open><summary>last console lines: {_e(source)}</summary><pre>{_e(text)}</pre></details>")

    # Checks
    rows = []
    for c in report["checks"]:
        ev = f"<details><summary>evidence</summary><pre>{_e(c['evidence'])}</pre></details>" if c.get("evidence") else ""
        exp = f"expected {_e(c['expected'])}<br>actual {_e(c['actual'])}" if c.get("expected") is not None or c.get("actual") is not None else ""
        rows.append([_badge(c["outcome"]), _e(c["id"]), _e(c["message"]) + ev, exp, f"{c.get('duration_s', 0):.2f}s"])
    parts.append("<h2>Checks</h2>" + _table(["outcome", "check", "what it says", "expected / actual", "time"], rows))

    verdict = info.get("verdict") or {}
    div = verdict.get("divergence")
    if div:
        parts.append("<h2>First divergence</h2>")
        parts.append(f"<p><b>rule {_e(div['rule'])}</b>: {_e(div['meaning'])}<br>{_e(div['message'])}<br>"
                     f"<span class='muted'>source: {_e(div['source'])}; trace line {_e(div.get('line'))}, seq {_e(div['seq'])}</span></p>")
        parts.append(f"<h3>Event</h3><pre>{_e(json.dumps(div['event'], indent=1))}</pre>")
        parts.append(f"<h3>Model state</h3><pre>{_e(json.dumps(div['state'], indent=1, default=str))}</pre>")
        before = "\n".join(json.dumps(b["event"]) for b in div.get("before", []))
        parts.append(f"<h3>Events before it</h3><pre>{_e(before)}</pre>")

    from harness.report import plots

    parts.append("<h2>Stages</h2>" + _plot(plots.stage_timeline(report["stages"]), "stages"))

    model_state = _load_json(run_dir / "model-state.json")
    trace_path = run_dir / "trace.jsonl"
    if trace_path.exists():
        parts.append(_trace_section(trace_path, model_state, verdict))

    modules = info.get("modules") or []
    if modules:
        rows = []
        for m in modules:
            patches = "<br>".join(f"{_e(p['name'])} <span class='muted'>{_e(p['sha256'][:12])}</span>" for p in m.get("patches", [])) or "none"
            src = m.get("source", {})
            rows.append([_e(m["name"]), _e(f"{src.get('kind')} {src.get('package', src.get('path', ''))} {src.get('version', '')}"),
                         patches, f"<code>{_e(m['build_id'])}</code>" + (" (loaded: matches)" if m.get("loaded_build_id") == m["build_id"] else ""),
                         _e(", ".join(f"{k}={v}" for k, v in (m.get("running_params") or {}).items()))])
        parts.append("<h2>Guest modules</h2>" + _table(["module", "source", "patches", "build id", "parameters in the guest"], rows))

    links = [f"<li><a href='{_e(n)}'>{_e(n)}</a></li>" for n in report.get("artifacts", []) if n != "report.html"]
    parts.append("<h2>Artifacts</h2><ul>" + "".join(links) + "</ul>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _load_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _trace_section(trace_path: Path, model_state: dict, verdict: dict) -> str:
    points, dumps, features = [], [], {}
    requests: dict[str, int] = {}
    t0 = None
    with open(trace_path) as fh:
        next(fh, None)  # header
        for line in fh:
            ev = json.loads(line)
            t0 = ev["t_ns"] if t0 is None else t0
            points.append((ev["t_ns"], ev["kind"], ev["src"]))
            if ev["kind"] == "xen.gnttab":
                dumps.append(ev)
            elif ev["kind"] == "blkif.features":
                features[ev["ring"]] = ev
            elif ev["kind"] == "blkif.req":
                requests[ev["ring"]] = requests.get(ev["ring"], 0) + 1
    out = [f"<h2>Trace</h2><p>{len(points)} events in <a href='trace.jsonl'>trace.jsonl</a>; "
           f"the model's verdict: {_badge(verdict.get('outcome', '?'))}</p>"]
    if not points:
        return "".join(out)
    from harness.report import plots

    out.append(_plot(plots.event_timeline(points, t0), "events"))
    series = model_state.get("series") or {}
    if series.get("ring_occupancy"):
        out.append(_plot(plots.step_series(series["ring_occupancy"], "Ring occupancy (requests in flight)", "requests", t0), "ring"))
    if features:
        out.append(_negotiation_table(features, requests))
    grants = {f"granted d{k}": v for k, v in (series.get("granted") or {}).items()}
    grants.update({f"mapped d{k}": v for k, v in (series.get("mapped") or {}).items()})
    if grants:
        out.append(_plot(plots.step_series(grants, "Active grants (granted and not ended / mapped by another domain)", "entries", t0), "grants"))
    if series.get("table_frames"):
        out.append(_plot(plots.step_series({f"d{k}": v for k, v in series["table_frames"].items()},
                                           "Grant table size", "frames", t0), "frames"))
    if dumps:
        rows = []
        for d in dumps:
            entries = ", ".join(f"[{e['ref']}] d{e['mapdom']} pin {e['pin']:#x}" for e in d["entries"])
            rows.append([_e(d["seq"]), f"d{d['rdom']}", f"{d['nr_frames']} of {d['max_frames']}", _e(entries or "none mapped")])
        out.append("<h3>Xen's view at quiet points (<code>xl debug-keys g</code>)</h3>"
                   "<p class='muted'>Each dump is checked by the model against the grants it says another domain holds mapped "
                   "(guest trace + dom0 agent); a mismatch would be the first divergence above.</p>"
                   + _table(["seq", "domain", "frames", "mapped entries"], rows))
    ledger = model_state.get("ledger") or {}
    for dom, led in ledger.items():
        rows = [[_e(r["ref"]), _e(r["to"]), f"{r['frame']:#x}", "ro" if r["ro"] else "rw", _e(r["state"]),
                 _e("" if r["mapped_by"] is None else f"d{r['mapped_by']} pin {r['pin']:#x}")] for r in led.get("granted", [])]
        out.append(f"<h3>Ledger of d{_e(dom)} at the end: entries granted and not ended</h3>"
                   f"<p class='muted'>{led.get('nr_frames')} frames, {led.get('free_count')} free refs known to the model, "
                   f"{led.get('leaked')} leaked, {led.get('deferred')} deferred</p>"
                   + (_table(["ref", "to", "frame", "access", "state", "mapped"], rows) if rows else "<p>none</p>"))
    return "".join(out)


# (frontend parameter, backend node, frontend node) for each column pair of
# the negotiation table: what was asked, offered and chosen.
NEGOTIATED = (
    ("max_queues", "multi-queue-max-queues", "multi-queue-num-queues"),
    ("max_ring_page_order", "max-ring-page-order", "ring-page-order"),
    ("feature_persistent", "feature-persistent", "feature-persistent"),
    ("max_indirect_segments", "feature-max-indirect-segments", None),
)


def _negotiation_table(features: dict[str, dict], requests: dict[str, int]) -> str:
    """Per ring: what the frontend was asked, what each end wrote, and how
    many requests the ring carried (which queues and ring orders were used)."""
    rows = []
    for ring, ev in sorted(features.items()):
        cells = [_e(ring), _e(ev.get("vcpus") if ev.get("vcpus") is not None else "?")]
        for param, back_node, front_node in NEGOTIATED:
            asked = ev.get("asked", {}).get(param, "default")
            back = ev.get("back", {}).get(back_node, "absent")
            front = ev.get("front", {}).get(front_node, "absent") if front_node else "-"
            cells.append(_e(f"{asked} / {back} / {front}"))
        cells.append(_e(requests.get(ring, 0)))
        rows.append(cells)
    return ("<h3>Negotiation per ring (asked / backend offered / frontend chose)</h3>"
            "<p class='muted'>From both ends' xenstore nodes when the ring connected; the last column is the "
            "number of requests the ring carried in this run. The model holds each pair to what Linux 6.1 "
            "blkfront must choose (rules negotiate.*).</p>"
            + _table(["ring", "vCPUs", "queues", "ring page order", "persistent", "indirect segments", "requests"],
                     rows))


def write(report: dict, run_dir: Path) -> Path:
    path = run_dir / "report.html"
    path.write_text(render(report, run_dir))
    return path
