"""The plugin's verdict per test: a divergence fails the test that caused
it, and only that one."""

from harness.check.verdict import Divergent, Verdict
from harness.pytest_plugin import judge_test


def _div(seq):
    return Divergent("gnttab.map.status", "Xen's status for a map", "grant_table.c", "expected okay", seq, None, {}, {})


def test_a_divergence_fails_the_test_whose_events_hold_it():
    failed, why = judge_test(Verdict("FAIL", "linux-6.1", 40, divergence=_div(31)), start_seq=30)
    assert failed and "gnttab.map.status" in why


def test_an_earlier_tests_divergence_does_not_fail_the_next_one():
    failed, why = judge_test(Verdict("FAIL", "linux-6.1", 60, divergence=_div(31)), start_seq=45)
    assert not failed and "earlier test's divergence at seq 31" in why


def test_a_capture_the_model_could_not_judge_is_never_a_pass():
    failed, why = judge_test(Verdict("ERROR", "linux-6.1", 3, error="the capture missed 2 events"), start_seq=0)
    assert failed and "could not be judged" in why and "missed 2 events" in why


def test_a_pass_passes():
    assert judge_test(Verdict("PASS", "linux-6.1", 9), start_seq=0) == (False, "")
