"""`--set KEY=VALUE`: change one setting of a loaded scenario.

The nightly matrix runs each scenario with other backends and module
parameters; rather than writing modified copies of its YAML, it names the
change on the command line (`xenrig run FILE --set guest.disks[*].backend=qdisk
--set modules.blkfront.params.feature_persistent=0`), so a cell's command is
also the command a person types to rerun it.

KEY is a path into the Scenario's typed fields: dotted names, `[N]` for one
list entry, `[*]` for every entry, and for a mapping (module params) the
entry's name.  VALUE is YAML and goes through the same conversion as the
file (types, ranges, choices); afterwards every object on the path is
validated again, as when the file was loaded.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import re
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

import yaml

from harness.config.loader import _convert
from harness.config.schema import Scenario
from harness.errors import ConfigError

_SEGMENT = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)((?:\[(?:\d+|\*)\])*)$")


class _SetContext:
    """The loader's error context for a value given on the command line:
    relative paths are taken from the working directory."""

    def __init__(self, assignment: str):
        self.assignment = assignment
        self.path = Path.cwd() / "--set"

    def fail(self, node, key: str, problem: str, hint: str = "") -> ConfigError:
        return ConfigError(f"--set {self.assignment}: key '{key}': {problem}", hint=hint)


def parse(assignment: str) -> tuple[list[str | int], str]:
    """'guest.disks[*].backend=qdisk' -> (['guest', 'disks', '*', 'backend'], 'qdisk')."""
    key, eq, value = assignment.partition("=")
    if not eq or not key.strip():
        raise ConfigError(f"--set {assignment}: expected KEY=VALUE, e.g. guest.disks[*].backend=qdisk")
    path: list[str | int] = []
    for part in key.strip().split("."):
        m = _SEGMENT.match(part)
        if not m:
            raise ConfigError(f"--set {assignment}: '{part}' is not a setting name (letters, digits, _; "
                              "then [N] or [*] for list entries)")
        path.append(m.group(1))
        for index in re.findall(r"\[(\d+|\*)\]", m.group(2)):
            path.append("*" if index == "*" else int(index))
    return path, value


def _value_node(text: str, assignment: str) -> yaml.Node:
    try:
        node = yaml.compose(text) if text.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {assignment}: '{text}' is not a valid YAML value "
                          f"({getattr(exc, 'problem', None) or exc})") from None
    return node if node is not None else yaml.ScalarNode("tag:yaml.org,2002:str", "")


def _key_text(path: list[str | int]) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) or p == "*" else (f".{p}" if out else p)
    return out


def _assign(obj: Any, tp: Any, path: list[str | int], done: list[str | int], node: yaml.Node, ctx: _SetContext,
            fld: dataclasses.Field | None, touched: list[tuple[Any, str]]) -> Any:
    """Return `obj` with the value at `path` replaced; record every dataclass
    passed through (and the key it was reached by) for revalidation."""
    key = _key_text(done)
    if not path:
        return _convert(tp, node, ctx, key, fld)
    head, rest = path[0], path[1:]
    origin = get_origin(tp)
    if origin is not None and type(None) in get_args(tp):     # Optional[...]
        inner = next(a for a in get_args(tp) if a is not type(None))
        if obj is None:
            raise ctx.fail(None, key, "is not set in the scenario, so nothing inside it can be changed",
                           hint=f"Set '{key}' in the file first")
        return _assign(obj, inner, path, done, node, ctx, fld, touched)
    if dataclasses.is_dataclass(tp):
        if not isinstance(head, str):
            raise ctx.fail(None, key, "is a group of settings, not a list")
        fields = {f.name: f for f in dataclasses.fields(tp) if f.init}
        if head not in fields:
            close = difflib.get_close_matches(head, fields, n=1)
            raise ctx.fail(None, _key_text(done + [head]), "is not a known setting",
                           hint=f"Did you mean '{close[0]}'?" if close else f"Known keys: {', '.join(sorted(fields))}")
        hint_tp = get_type_hints(tp)[head]
        new = _assign(getattr(obj, head), hint_tp, rest, done + [head], node, ctx, fields[head], touched)
        setattr(obj, head, new)
        touched.append((obj, key))
        return obj
    if origin is list:
        (item_tp,) = get_args(tp)
        if isinstance(head, str) and head != "*":
            raise ctx.fail(None, key, "is a list: name an entry as [N] or every entry as [*]")
        if head == "*":
            indexes = range(len(obj))
        elif head >= len(obj):
            raise ctx.fail(None, key, f"has {len(obj)} entries; there is no [{head}]")
        else:
            indexes = [head]
        for i in indexes:
            obj[i] = _assign(obj[i], item_tp, rest, done + [i], node, ctx, None, touched)
        return obj
    if origin is dict:
        _, val_tp = get_args(tp)
        if not isinstance(head, str) or head == "*":
            raise ctx.fail(None, key, "is a mapping: name the entry to set")
        obj[head] = _assign(obj.get(head), val_tp, rest, done + [head], node, ctx, None, touched)
        return obj
    raise ctx.fail(None, key, "is a single value: it has no settings inside it")


def apply(scenario: Scenario, assignments: list[str]) -> Scenario:
    """A copy of `scenario` with every assignment made, validated as a file is."""
    result = copy.deepcopy(scenario)
    for assignment in assignments:
        path, text = parse(assignment)
        ctx = _SetContext(assignment)
        touched: list[tuple[Any, str]] = []
        _assign(result, Scenario, path, [], _value_node(text, assignment), ctx, None, touched)
        for obj, key in touched:      # innermost first, the scenario last
            check = getattr(obj, "validate", None)
            problem = check() if check else None
            if problem:
                bad_key, message = problem
                raise ctx.fail(None, f"{key}.{bad_key}" if key else bad_key, message)
    return result
