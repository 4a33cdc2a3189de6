"""docs/exerciser.md and the exerciser's C source must describe the same
interface: the same commands with the same usage, every refusal reason and
every event name the module can log.  Both are parsed as text; nothing is
built."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "guest-kernel" / "xenrig_gnttab" / "xenrig_gnttab.c"
DOC = ROOT / "docs" / "exerciser.md"


@pytest.fixture(scope="module")
def source() -> str:
    return SOURCE.read_text()


@pytest.fixture(scope="module")
def doc() -> str:
    return DOC.read_text()


def command_table(source: str) -> dict[str, str]:
    """name -> usage, from the XR_CMD / XR_REF_CMD entries of xr_commands[]."""
    body = re.search(r"xr_commands\[\]\s*=\s*\{(.*?)\n\};", source, re.S).group(1)
    table = {}
    for m in re.finditer(r'XR_(?:REF_)?CMD\("(\w+)",[^"]*"([^"]+)"\)', body):
        name, usage = m.groups()
        assert name not in table, f"{name} twice in the command table"
        table[name] = usage
    return table


def documented_commands(doc: str) -> dict[str, str]:
    """name -> usage, from the '### `usage`' headings of the Commands section."""
    section = doc.split("\n## Commands\n", 1)[1].split("\n## ", 1)[0]
    return {u.split()[0]: u for u in re.findall(r"^### `([^`]+)`$", section, re.M)}


def test_every_command_is_documented_with_its_usage(source, doc):
    code, documented = command_table(source), documented_commands(doc)
    assert len(code) >= 20
    assert set(code) == set(documented), (
        f"only in the code: {sorted(set(code) - set(documented))}; "
        f"only in the doc: {sorted(set(documented) - set(code))}")
    for name, usage in code.items():
        assert documented[name] == usage, name


def test_usage_argument_counts_match_the_table(source):
    """min/max argument counts of XR_CMD entries agree with their usage text
    ([X] optional, everything else required)."""
    body = re.search(r"xr_commands\[\]\s*=\s*\{(.*?)\n\};", source, re.S).group(1)
    for m in re.finditer(r'XR_CMD\("(\w+)",\s*(\d+),\s*(\d+),\s*\w+,\s*"([^"]+)"\)', body):
        name, lo, hi, usage = m.group(1), int(m.group(2)), int(m.group(3)), m.group(4)
        args = usage.split()[1:]
        optional = sum(a.startswith("[") for a in args)
        assert (lo, hi) == (len(args) - optional, len(args)), name
    for m in re.finditer(r'XR_REF_CMD\("(\w+)",\s*\w+,\s*"([^"]+)"\)', body):
        assert m.group(2).split()[1:] == ["REF"], m.group(1)


def test_every_refusal_reason_is_documented(source, doc):
    reasons = set(re.findall(r'refuse\([^;]*?"(\w+)"\)', source, re.S))
    reasons |= set(re.findall(r'log_bad_command\([^;]*?"(\w+)"\)', source))
    reasons |= set(re.findall(r'bad = "(\w+)"', source))
    assert {"ref_not_owned", "bad_chain", "unknown_command"} <= reasons
    missing = sorted(r for r in reasons if f"`{r}`" not in doc)
    assert not missing, f"reasons the module logs but the doc does not name: {missing}"


def test_every_logged_event_is_documented(source, doc):
    """ops other than the commands: jl_init(..., "op") and xr_step("op"), and
    the synthesized log_overflow line."""
    ops = set(re.findall(r'jl_init\([^;]*?"(\w+)"\)', source))
    ops |= set(re.findall(r'xr_step\("(\w+)"\)', source))
    ops |= set(re.findall(r'\\"op\\":\\"(\w+)\\"', source))
    assert {"callback_fired", "exhaust_grow", "log_overflow", "load"} <= ops
    missing = sorted(o for o in ops if f"`{o}`" not in doc)
    assert not missing, f"events the module logs but the doc does not name: {missing}"


def test_module_metadata_the_harness_relies_on(source):
    assert 'MODULE_LICENSE("GPL")' in source       # the grant API is EXPORT_SYMBOL_GPL
    assert re.search(r'MODULE_VERSION\("\d+"\)', source)   # gives the module a srcversion
    assert re.search(r'debugfs_create_dir\(KBUILD_MODNAME', source)
    kbuild = (SOURCE.parent / "Kbuild").read_text().split()
    assert kbuild == ["obj-m", ":=", "xenrig_gnttab.o"]
