"""Replaying traces through the model: verdicts with the first divergence."""

from harness.check.checker import Checker
from harness.check.replay import check_file, replay
from harness.check.verdict import ERROR, FAIL, PASS, Divergent, Verdict

__all__ = ["Checker", "Divergent", "ERROR", "FAIL", "PASS", "Verdict", "check_file", "replay"]
