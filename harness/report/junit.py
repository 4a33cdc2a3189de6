"""JUnit XML: one <testcase> per check, the form every CI system reads."""

from __future__ import annotations

import re
from pathlib import Path
from xml.etree import ElementTree as ET

from harness.checks.result import ERROR, FAIL, SKIP, CheckResult


# Characters XML 1.0 cannot hold at all (C0 controls but tab, newline and
# carriage return; surrogates; U+FFFE/U+FFFF).  Guest output is the
# subject's: one escape byte in it must not make the whole file unreadable
# to GitLab or Jenkins (and drop the cell from a nightly merge).
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def clean(text: str | None) -> str:
    """`text` with what XML forbids shown as \\xNN, so it still reads."""
    return _NOT_XML.sub(lambda m: f"\\x{ord(m.group(0)):02x}", text or "")


def render(suite: str, results: list[CheckResult], stage_times: dict[str, float], hostname: str = "xenrig") -> str:
    counts = {k: sum(1 for r in results if r.outcome == k) for k in (FAIL, ERROR, SKIP)}
    total_time = sum(r.duration_s for r in results)
    root = ET.Element("testsuites")
    ts = ET.SubElement(root, "testsuite", name=suite, tests=str(len(results)), failures=str(counts[FAIL]),
                       errors=str(counts[ERROR]), skipped=str(counts[SKIP]), time=f"{total_time:.3f}", hostname=hostname)
    props = ET.SubElement(ts, "properties")
    for name, secs in stage_times.items():
        ET.SubElement(props, "property", name=f"stage:{name}", value=f"{secs:.3f}")
    for r in results:
        classname, _, name = r.id.partition(".")
        tc = ET.SubElement(ts, "testcase", classname=clean(f"{suite}.{classname}"), name=clean(name or r.id),
                           time=f"{r.duration_s:.3f}")
        body = r.evidence
        if r.expected is not None or r.actual is not None:
            body = f"expected: {r.expected}\nactual:   {r.actual}\n\n{body}"
        body, message = clean(body), clean(r.message)
        if r.outcome == FAIL:
            ET.SubElement(tc, "failure", message=message).text = body
        elif r.outcome == ERROR:
            ET.SubElement(tc, "error", message=message).text = body
        elif r.outcome == SKIP:
            ET.SubElement(tc, "skipped", message=message)
        elif body:
            ET.SubElement(tc, "system-out").text = body
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True)


def write(path: Path, suite: str, results: list[CheckResult], stage_times: dict[str, float]) -> None:
    path.write_text(render(suite, results, stage_times))
