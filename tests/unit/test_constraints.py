"""constraints.txt pins every package of the venv, and agrees with the pins
in pyproject.toml: a nightly must not change because a library did."""

import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _pins(lines) -> dict[str, str]:
    out = {}
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if line:
            m = re.fullmatch(r"([A-Za-z0-9_.-]+)==([A-Za-z0-9_.+-]+)", line)
            assert m, f"not an exact pin: {line!r}"
            out[m.group(1).lower().replace("_", "-")] = m.group(2)
    return out


def test_every_direct_dependency_is_in_the_constraints_at_the_same_version():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    direct = project["dependencies"] + project["optional-dependencies"]["test"]
    constraints = _pins((REPO / "constraints.txt").read_text().splitlines())
    for dep in direct:
        name, version = re.split(r"\s*==\s*", dep.split(";")[0].strip())
        assert constraints.get(name.lower().replace("_", "-")) == version, dep


def test_the_transitive_ones_under_paramiko_are_pinned_too():
    constraints = _pins((REPO / "constraints.txt").read_text().splitlines())
    assert {"cryptography", "bcrypt", "pynacl", "cffi"} <= set(constraints)


def test_setup_installs_with_the_constraints():
    assert '-c "$here/constraints.txt"' in (REPO / "xenrig").read_text()
