"""The documentation says what the code does: rule table and schema example."""

from __future__ import annotations

import re
from pathlib import Path

from harness.check import replay
from harness.model.rules import RULES
from harness.trace import KINDS, parse_lines

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_model_doc_lists_every_rule_with_its_policy():
    text = (DOCS / "model.md").read_text()
    rows = dict(re.findall(r"^\| `([a-z0-9_.-]+)` \| .* \| (both|seed|linux-6\.1) \|$", text, re.M))
    expected = {rule.id: "both" if len(rule.policies) == 2 else rule.policies[0] for rule in RULES.values()}
    assert rows == expected


def test_schema_doc_names_every_kind_and_its_example_passes():
    text = (DOCS / "trace-schema.md").read_text()
    for kind in KINDS:
        assert f"`{kind}`" in text, kind
    example = re.search(r"## Example\n\n```json\n(.*?)```", text, re.S).group(1)
    header, events = parse_lines(example.splitlines(), name="docs/trace-schema.md")
    assert replay(events, header=header).outcome == "PASS"
