"""JUnit XML: one <testcase> per check, the form every CI system reads."""

from __future__ import annotations

from pathlib import Path
from xml.etree import ElementTree as ET

from harness.checks.result import ERROR, FAIL, SKIP, CheckResult


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
        tc = ET.SubElement(ts, "testcase", classname=f"{suite}.{classname}", name=name or r.id, time=f"{r.duration_s:.3f}")
        body = r.evidence
        if r.expected is not None or r.actual is not None:
            body = f"expected: {r.expected}\nactual:   {r.actual}\n\n{body}"
        if r.outcome == FAIL:
            ET.SubElement(tc, "failure", message=r.message).text = body
        elif r.outcome == ERROR:
            ET.SubElement(tc, "error", message=r.message).text = body
        elif r.outcome == SKIP:
            ET.SubElement(tc, "skipped", message=r.message)
        elif body:
            ET.SubElement(tc, "system-out").text = body
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True)


def write(path: Path, suite: str, results: list[CheckResult], stage_times: dict[str, float]) -> None:
    path.write_text(render(suite, results, stage_times))
