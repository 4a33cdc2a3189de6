from xml.etree import ElementTree as ET

from harness.checks.result import ERROR, FAIL, PASS, SKIP, CheckResult, overall
from harness.report import junit


def test_overall_verdict():
    assert overall([]) == ERROR   # no result is never a PASS
    assert overall([CheckResult("a", PASS, "")]) == PASS
    assert overall([CheckResult("a", PASS, ""), CheckResult("b", FAIL, "")]) == FAIL
    # A proven FAIL stands over a later ERROR...
    assert overall([CheckResult("a", FAIL, ""), CheckResult("b", ERROR, "")]) == FAIL
    # ...unless the stack corrupted data: then nothing the run saw is evidence.
    assert overall([CheckResult("a", FAIL, ""),
                    CheckResult("stack.dom0-canary", ERROR, "", extra={"kind": "corruption"})]) == ERROR
    assert overall([CheckResult("a", SKIP, "")]) == SKIP


def test_junit_one_testcase_per_check():
    results = [CheckResult("xen.hvm-enabled", PASS, "ok", "line"),
               CheckResult("guest.io-roundtrip[xvda]", FAIL, "differ", "sums", expected="aa", actual="bb"),
               CheckResult("harness", ERROR, "boot timed out")]
    root = ET.fromstring(junit.render("smoke", results, {"boot": 12.5}).encode())
    suite = root.find("testsuite")
    assert suite.get("tests") == "3" and suite.get("failures") == "1" and suite.get("errors") == "1"
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == ["hvm-enabled", "io-roundtrip[xvda]", "harness"]
    assert "expected: aa" in cases[1].find("failure").text
    assert cases[2].find("error").get("message") == "boot timed out"
    assert suite.find("properties/property").get("name") == "stage:boot"


def test_junit_parses_whatever_bytes_the_guest_printed(tmp_path):
    from xml.etree import ElementTree as ET

    from harness.report import junit

    hostile = "".join(chr(c) for c in range(0, 32)) + "\x7f\ud800\udfff\ufffe\uffff]]><![CDATA[<x>&amp;"
    results = [CheckResult("step01 shell", FAIL, hostile, evidence=hostile, expected=hostile, actual="\x1b[0m"),
               CheckResult("guest." + hostile, ERROR, hostile), CheckResult("x", SKIP, hostile)]
    path = tmp_path / "junit.xml"
    junit.write(path, "s", results, {})
    root = ET.parse(path).getroot()                       # GitLab and Jenkins read it too
    failure = root.find("testsuite/testcase/failure")
    assert "\\x1b" in failure.get("message") and "<x>&amp;" in failure.text


def test_the_summary_and_html_say_how_the_stack_came_up():
    from harness.report.start import start_line

    assert start_line({"restored": True, "name": "stack-ab", "restore_s": 0.7, "restore_to_guest_cmd_s": 8.0}) == \
        "restored stack-ab in 0.7s (first guest command 8.0s after the restore began)"
    assert "saved as stack-cd (306 MiB)" in start_line({"restored": False, "made": True, "name": "stack-cd",
                                                         "size_bytes": 306 * 2**20})
    assert start_line({"restored": False, "mode": "cold"}).startswith("booted cold")
    assert start_line({"restored": False, "mode": "remote"}) == ""


def test_only_drawing_imports_matplotlib_and_only_booting_the_stack():
    """matplotlib costs a process half a second, the stack (runner, paramiko)
    a third: `xenrig check`, --help, the nightly's run, merge and grid, and
    whatever reads or writes reports without drawing must pay neither (a
    fresh interpreter: this one has loaded both already).  That a page that
    draws still does: tests/nightly/test_merge.py, in the runs' report.html."""
    import subprocess
    import sys
    from pathlib import Path

    probe = ("import sys\n"
             "import harness.nightly.index, harness.report\n"
             "from harness.cli import build_parser\n"
             "build_parser()\n"
             "print(sorted({m.split('.')[0] for m in sys.modules} & {'matplotlib', 'numpy', 'paramiko'}))\n"
             "print('harness.runner' in sys.modules)\n")
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60,
                         cwd=Path(__file__).resolve().parents[2])
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == ["[]", "False"]


def test_the_trace_section_says_per_ring_what_was_negotiated_and_used(tmp_path):
    import json

    from harness.report import html

    feats = {"front": {"multi-queue-num-queues": "2", "ring-page-order": "1", "feature-persistent": "1"},
             "back": {"multi-queue-max-queues": "4", "max-ring-page-order": "4", "feature-persistent": "1",
                      "feature-max-indirect-segments": "256"},
             "asked": {"max_queues": 2, "max_ring_page_order": 1}, "vcpus": 2}
    events = [{"seq": 1, "t_ns": 1, "dom": 1, "src": "harness", "kind": "blkif.features", "ring": "xvda/0", **feats},
              {"seq": 2, "t_ns": 2, "dom": 1, "src": "harness", "kind": "blkif.features", "ring": "xvda/1", **feats}]
    events += [{"seq": 3 + i, "t_ns": 3 + i, "dom": 1, "src": "guest", "kind": "blkif.req", "ring": ring}
               for i, ring in enumerate(["xvda/0", "xvda/1", "xvda/1"])]
    trace = tmp_path / "trace.jsonl"
    trace.write_text("\n".join(json.dumps(e) for e in [{"v": 1}, *events]) + "\n")
    page = html._trace_section(trace, {}, {"outcome": "PASS"})
    table = page[page.index("Negotiation per ring"):]
    rows = table.split("<tr>")[2:]
    assert "xvda/0" in rows[0] and "xvda/1" in rows[1]
    assert "2 / 4 / 2" in rows[0]          # queues: asked 2, backend offers 4, frontend chose 2
    assert "1 / 4 / 1" in rows[0]          # ring page order
    assert "default / 256 / -" in rows[0]  # indirect segments: not asked, offered, no frontend node
    assert "<td>1</td></tr>" in rows[0] and "<td>2</td></tr>" in rows[1]   # requests each ring carried
