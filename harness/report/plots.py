"""Plots for the HTML report, drawn with matplotlib as inline SVG: static,
no JavaScript, readable offline and in any browser."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("svg")  # no display, no GUI toolkit
import matplotlib.pyplot as plt  # noqa: E402

plt.rcParams.update({"svg.fonttype": "none", "font.size": 9, "figure.dpi": 96})

_OUTCOME_COLOURS = {"ok": "#3a7d44", "failed": "#b3261e", "interrupted": "#9a6700", "running": "#777777"}


def _svg(fig) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):]


def stage_timeline(stages: list[dict]) -> str:
    """Horizontal bars: when each stage ran and for how long."""
    fig, ax = plt.subplots(figsize=(8, 0.35 * max(3, len(stages)) + 0.8))
    for i, st in enumerate(stages):
        ax.barh(i, max(st["duration_s"], 0.05), left=st["start_s"], color=_OUTCOME_COLOURS.get(st["outcome"], "#777"))
        ax.text(st["start_s"] + st["duration_s"] + 0.3, i, f"{st['duration_s']:.1f}s", va="center", fontsize=8)
    ax.set_yticks(range(len(stages)), [s["name"] for s in stages])
    ax.invert_yaxis()
    ax.set_xlabel("seconds since the run started")
    ax.set_title("Stages")
    ax.grid(axis="x", alpha=0.3)
    return _svg(fig)


def step_series(series: dict[str, list], title: str, ylabel: str, t0: int) -> str:
    """One step line per key (value held until it changes)."""
    fig, ax = plt.subplots(figsize=(8, 2.6))
    for key, points in sorted(series.items()):
        if not points:
            continue
        xs = [(t - t0) / 1e9 for t, _ in points]
        ys = [v for _, v in points]
        ax.step(xs, ys, where="post", label=key)
    ax.set_xlabel("seconds (trace time)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize=8)
    return _svg(fig)


def event_timeline(points: list[tuple[int, str, str]], t0: int) -> str:
    """Every event as a tick on its kind's row, coloured by who observed it."""
    kinds = sorted({k for _, k, _ in points})
    row = {k: i for i, k in enumerate(kinds)}
    colours = {"guest": "#1f77b4", "dom0": "#ff7f0e", "xen": "#2ca02c"}
    fig, ax = plt.subplots(figsize=(8, 0.28 * max(4, len(kinds)) + 0.8))
    for src, colour in colours.items():
        xs = [(t - t0) / 1e9 for t, k, s in points if s == src]
        ys = [row[k] for t, k, s in points if s == src]
        if xs:
            ax.scatter(xs, ys, s=6, marker="|", color=colour, label=src)
    ax.set_yticks(range(len(kinds)), kinds)
    ax.invert_yaxis()
    ax.set_xlabel("seconds (trace time)")
    ax.set_title("Events by kind (guest / dom0 / Xen)")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return _svg(fig)
