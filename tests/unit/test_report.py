from xml.etree import ElementTree as ET

from harness.checks.result import ERROR, FAIL, PASS, SKIP, CheckResult, overall
from harness.report import junit


def test_overall_verdict():
    assert overall([]) == ERROR   # no result is never a PASS
    assert overall([CheckResult("a", PASS, "")]) == PASS
    assert overall([CheckResult("a", PASS, ""), CheckResult("b", FAIL, "")]) == FAIL
    assert overall([CheckResult("a", FAIL, ""), CheckResult("b", ERROR, "")]) == ERROR
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
