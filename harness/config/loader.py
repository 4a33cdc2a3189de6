"""YAML -> typed dataclasses, with errors that name file, line and key.

Validation happens once, where configuration enters; the rest of the library
only sees typed objects.  pyyaml's node marks give the line and column of
every key and value, so a bad file gets one paragraph a person can act on.
"""

from __future__ import annotations

import dataclasses
import os
import difflib
import types
import typing
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

import yaml

from harness.errors import ConfigError


class _Ctx:
    def __init__(self, path: Path):
        self.path = path

    def fail(self, node: yaml.Node | None, key: str, problem: str, hint: str = "") -> ConfigError:
        where = str(self.path)
        # An empty file's mapping was made here, with no position in the file.
        if node is not None and node.start_mark is not None:
            where += f":{node.start_mark.line + 1}"
        key_part = f" key '{key}':" if key else ""
        return ConfigError(f"{where}:{key_part} {problem}", hint=hint)


def read_yaml_node(path: Path) -> yaml.Node:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such configuration file", hint="Check the path; configs live under configs/") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it ({exc.strerror})") from None
    try:
        node = yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}{line}: not valid YAML ({problem})", hint="Fix the syntax at that line") from None
    if node is None:
        node = yaml.MappingNode("tag:yaml.org,2002:map", [])
    return node


def load(path: Path | str, cls: type) -> Any:
    path = Path(path)
    return build(cls, read_yaml_node(path), _Ctx(path), "")


def build(cls: type, node: yaml.Node, ctx: _Ctx, key: str) -> Any:
    """Build a dataclass `cls` from a mapping node."""
    if not isinstance(node, yaml.MappingNode):
        raise ctx.fail(node, key, f"expected a mapping of settings, got {_describe(node)}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    values: dict[str, Any] = {}
    for key_node, value_node in node.value:
        name = key_node.value
        full = f"{key}.{name}" if key else name
        if name not in fields:
            close = difflib.get_close_matches(name, fields, n=1)
            hint = f"Did you mean '{close[0]}'?" if close else f"Known keys: {', '.join(sorted(fields))}"
            raise ctx.fail(key_node, full, "is not a known setting", hint)
        if name in values:
            raise ctx.fail(key_node, full, "appears twice")
        values[name] = _convert(hints[name], value_node, ctx, full, fields[name])
    for name, f in fields.items():
        if name not in values and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            full = f"{key}.{name}" if key else name
            raise ctx.fail(node, full, "is required but missing", f"Add '{name}:' to this mapping")
    obj = cls(**values)
    check = getattr(obj, "validate", None)
    if check:
        problem = check()
        if problem:
            bad_key, message = problem
            bad_node = next((v for k, v in node.value if k.value == bad_key), node)
            raise ctx.fail(bad_node, f"{key}.{bad_key}" if key else bad_key, message)
    return obj


def _describe(node: yaml.Node) -> str:
    if isinstance(node, yaml.ScalarNode):
        return repr(node.value)
    return "a list" if isinstance(node, yaml.SequenceNode) else "a mapping"


def _scalar(node: yaml.Node) -> Any:
    return yaml.safe_load(yaml.serialize(node))


def _convert(tp: Any, node: yaml.Node, ctx: _Ctx, key: str, f: dataclasses.Field | None = None) -> Any:
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null"):
            return None
        return _convert(args[0], node, ctx, key, f)
    if origin is Literal:
        choices = get_args(tp)
        value = _scalar(node) if isinstance(node, yaml.ScalarNode) else None
        if value not in choices:
            raise ctx.fail(node, key, f"must be one of {', '.join(map(str, choices))}; got {_describe(node)}")
        return value
    if origin is list:
        if not isinstance(node, yaml.SequenceNode):
            raise ctx.fail(node, key, f"expected a list, got {_describe(node)}")
        (item,) = get_args(tp)
        return [_convert(item, n, ctx, f"{key}[{i}]") for i, n in enumerate(node.value)]
    if origin is dict:
        if not isinstance(node, yaml.MappingNode):
            raise ctx.fail(node, key, f"expected a mapping, got {_describe(node)}")
        _, val_tp = get_args(tp)
        return {k.value: _convert(val_tp, v, ctx, f"{key}.{k.value}") for k, v in node.value}
    if dataclasses.is_dataclass(tp):
        return build(tp, node, ctx, key)
    if not isinstance(node, yaml.ScalarNode):
        raise ctx.fail(node, key, f"expected a single value, got {_describe(node)}")
    value = _scalar(node)
    if tp is bool:
        if not isinstance(value, bool):
            raise ctx.fail(node, key, f"expected true or false, got {_describe(node)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ctx.fail(node, key, f"expected a whole number, got {_describe(node)}")
        lo = f.metadata.get("min") if f else None
        hi = f.metadata.get("max") if f else None
        if lo is not None and value < lo or hi is not None and value > hi:
            raise ctx.fail(node, key, f"must be between {lo} and {hi}; got {value}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ctx.fail(node, key, f"expected a number, got {_describe(node)}")
        return float(value)
    if tp is str:
        if value is None or isinstance(value, (dict, list)):
            raise ctx.fail(node, key, f"expected text, got {_describe(node)}")
        return str(value)
    if tp is Path:
        if not isinstance(value, str):
            raise ctx.fail(node, key, f"expected a path, got {_describe(node)}")
        p = Path(value).expanduser()
        return p if p.is_absolute() else Path(os.path.normpath(ctx.path.parent / p))
    raise TypeError(f"config loader: unsupported type {tp!r} for {key}")
