"""Where xenrig keeps things on the host.

- cache: built images, content-addressed; safe to delete, rebuilt on demand.
- state: the embedded libvirt root, the lock, the record of a stack left up
  by `xenrig up`; small, per user.
- runs: one folder per run with the report, logs and trace (in the working
  directory by default, so CI keeps them as artifacts).
"""

from __future__ import annotations

import os
from pathlib import Path


def _xdg(var: str, default: str) -> Path:
    value = os.environ.get(var)
    return Path(value) if value else Path.home() / default


def cache_dir() -> Path:
    override = os.environ.get("XENRIG_CACHE")
    return Path(override) if override else _xdg("XDG_CACHE_HOME", ".cache") / "xenrig"


def state_dir() -> Path:
    override = os.environ.get("XENRIG_STATE")
    return Path(override) if override else _xdg("XDG_STATE_HOME", ".local/state") / "xenrig"


def runs_dir() -> Path:
    override = os.environ.get("XENRIG_RUNS")
    return Path(override) if override else Path.cwd() / "runs"


def repo_root() -> Path:
    """The checkout this package runs from: recipes and guest sources live there."""
    return Path(__file__).resolve().parent.parent
