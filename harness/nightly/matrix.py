"""The nightly matrix (configs/nightly.yaml): scenarios x backends x blkfront
parameter sets, minus the excluded combinations, expanded into cells.

A cell is one scenario run with every disk on one backend and a set of
blkfront parameters on top of the scenario's own.  Its id names the three,
`blkfront-io/qdisk/no-persistent`, and is stable: it is the cell's folder
in the output, its JUnit suite, its row in the trend.  The variant is the
scenario's typed object changed by `--set` assignments (no YAML copies);
the same assignments are what `xenrig run` is given to run the cell.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

from harness import config
from harness.config import Scenario, overrides
from harness.config.loader import load, read_yaml_node
from harness.errors import ConfigError

BACKENDS = ("phy", "qdisk")
GUEST_VCPUS = "vcpus"   # the one key of a parameter set that is the guest's, not blkfront's
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass
class Exclude:
    """Leave out every cell that matches all the names given here."""

    scenario: str | None = None
    backend: str | None = None
    params: str | None = None         # a parameter set's name
    reason: str = ""

    def validate(self):
        if self.scenario is None and self.backend is None and self.params is None:
            return "scenario", "an exclude names at least one of scenario, backend, params"
        return None

    def matches(self, scenario: str, backend: str, params: str) -> bool:
        return all(want is None or want == have for want, have in
                   ((self.scenario, scenario), (self.backend, backend), (self.params, params)))


@dataclass
class NightlyMatrix:
    """What the nightly job runs.  Scenario paths are relative to this file."""

    scenarios: list[Path]
    backends: list[Literal["phy", "qdisk"]] = field(default_factory=lambda: list(BACKENDS))
    # name -> blkfront module parameters put over the scenario's own; {} runs
    # the scenario as written.  One more key, `vcpus`, sets the guest's
    # vCPUs (blkfront's queues follow the CPUs, so they belong together).
    param_sets: dict[str, dict[str, str]] = field(default_factory=lambda: {"default": {}})
    exclude: list[Exclude] = field(default_factory=list)
    host: Path | None = None          # host config for every cell (default: each scenario's own)
    retries: int = field(default=1, metadata={"min": 0, "max": 3})   # for infrastructure failures only
    cell_timeout_s: int = field(default=7200, metadata={"min": 60, "max": 86400})

    def validate(self):
        if not self.scenarios:
            return "scenarios", "names no scenario"
        if not self.backends:
            return "backends", "names no backend"
        if len(set(self.backends)) != len(self.backends):
            return "backends", f"names a backend twice: {self.backends}"
        if not self.param_sets:
            return "param_sets", "needs at least one set (use 'default: {}' for the scenario as written)"
        for name, params in self.param_sets.items():
            if not _NAME.match(name):
                return "param_sets", f"'{name}' is not a usable name (letters, digits, '.', '_', '-'; it is a folder name)"
            for key, value in params.items():
                if key == GUEST_VCPUS:
                    if not (str(value).isdigit() and 1 <= int(value) <= 64):
                        return "param_sets", f"set '{name}': vcpus must be a number from 1 to 64, got {value!r}"
                elif not key.replace("_", "").isalnum():
                    return "param_sets", f"set '{name}': '{key}' is not a module parameter name"
        for path in self.scenarios:
            if not path.is_file():
                return "scenarios", f"names {path}, which is not a file"
        if len(set(self.scenarios)) != len(self.scenarios):
            return "scenarios", "names a scenario file twice"
        return None


@dataclass(frozen=True)
class Cell:
    scenario: str                     # the scenario's name
    scenario_path: Path
    backend: str
    params: str                       # the parameter set's name
    sets: tuple[str, ...]             # the --set assignments that make the variant

    @property
    def id(self) -> str:
        return f"{self.scenario}/{self.backend}/{self.params}"

    @property
    def column(self) -> str:
        return f"{self.backend}/{self.params}"

    def variant(self, scenario: Scenario) -> Scenario:
        return overrides.apply(scenario, list(self.sets))


@dataclass
class Matrix:
    """The expanded matrix: every cell to run, in id order, and what was left out."""

    path: Path
    spec: NightlyMatrix
    scenarios: list[str]              # names, in the file's order (the grid's rows)
    columns: list[str]                # backend/params, in the file's order (the grid's columns)
    cells: list[Cell]
    excluded: list[dict]

    @property
    def digest(self) -> str:
        """Same digest, same cells: shards of one matrix agree on it."""
        text = json.dumps([[c.id, list(c.sets)] for c in self.cells], sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def describe(self, root: Path | None = None) -> dict:
        return {"path": _display(self.path, root), "digest": self.digest, "scenarios": self.scenarios,
                "columns": self.columns, "cells": [c.id for c in self.cells], "excluded": self.excluded,
                "scenario_files": {c.scenario: _display(c.scenario_path, root) for c in self.cells}}


def _display(path: Path, root: Path | None) -> str:
    try:
        return str(path.relative_to(root)) if root else str(path)
    except ValueError:
        return str(path)


def _where(path: Path, *keys: str | int) -> str:
    """'file:line' of a key in the matrix file, for errors found after loading."""
    node = read_yaml_node(path)
    for key in keys:
        if isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
        elif isinstance(node, yaml.MappingNode):
            node = next((v for k, v in node.value if k.value == key), node)
    return f"{path}:{node.start_mark.line + 1}"


def cell_sets(scenario: Scenario, backend: str, params: dict[str, str]) -> tuple[str, ...]:
    sets = [f"guest.disks[*].backend={backend}"] if scenario.guest.disks else []
    sets += [f"guest.vcpus={v}" if k == GUEST_VCPUS else f"modules.blkfront.params.{k}={v}"
             for k, v in params.items()]
    return tuple(sets)


def load_matrix(path: Path | str) -> Matrix:
    """Load and expand the matrix; every scenario is loaded and every cell's
    variant built, so a bad name fails here, before anything boots."""
    path = Path(path)
    spec: NightlyMatrix = load(path, NightlyMatrix)
    if spec.host is not None:
        config.load_host(spec.host)
    loaded: dict[str, tuple[Path, Scenario]] = {}
    for sp in spec.scenarios:
        scenario = config.load_scenario(sp)
        if not _NAME.match(scenario.name):
            raise ConfigError(f"{sp}: scenario name '{scenario.name}' cannot be part of a cell id "
                              "(letters, digits, '.', '_', '-')")
        if scenario.name in loaded:
            raise ConfigError(f"{_where(path, 'scenarios')}: key 'scenarios': {loaded[scenario.name][0]} and {sp} "
                              f"are both named '{scenario.name}'; cell ids need distinct scenario names")
        loaded[scenario.name] = (sp, scenario)
    for i, ex in enumerate(spec.exclude):
        for what, value, known in (("scenario", ex.scenario, list(loaded)), ("backend", ex.backend, spec.backends),
                                   ("params", ex.params, list(spec.param_sets))):
            if value is not None and value not in known:
                raise ConfigError(f"{_where(path, 'exclude', i, what)}: key 'exclude[{i}].{what}': '{value}' "
                                  f"is not in the matrix (known: {', '.join(known)})")
    cells, excluded = [], []
    for name, (sp, scenario) in loaded.items():
        for backend in spec.backends:
            for set_name, params in spec.param_sets.items():
                hits = [i for i, ex in enumerate(spec.exclude) if ex.matches(name, backend, set_name)]
                cell = Cell(name, sp, backend, set_name, cell_sets(scenario, backend, params))
                if hits:
                    excluded.append({"id": cell.id, "reason": spec.exclude[hits[0]].reason})
                    continue
                if params and not scenario.modules.blkfront.enabled:
                    raise ConfigError(f"{path}: cell {cell.id}: {sp} does not load blkfront, so parameter set "
                                      f"'{set_name}' would change nothing", hint="Exclude that combination")
                try:
                    cell.variant(scenario)
                except ConfigError as exc:
                    raise ConfigError(f"{path}: cell {cell.id}: {exc.message}", hint=exc.hint) from None
                cells.append(cell)
    if not cells:
        raise ConfigError(f"{path}: every combination is excluded: nothing to run")
    # A column (or row) every cell of which is excluded is left out of the grid.
    columns = [f"{b}/{p}" for b in spec.backends for p in spec.param_sets if any(c.column == f"{b}/{p}" for c in cells)]
    rows = [name for name in loaded if any(c.scenario == name for c in cells)]
    return Matrix(path, spec, rows, columns, sorted(cells, key=lambda c: c.id), excluded)
