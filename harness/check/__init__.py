"""Replaying traces through the model: verdicts with the first divergence."""

from harness.check.replay import Checker, check_file, replay
from harness.check.verdict import ERROR, FAIL, PASS, Divergent, Verdict

__all__ = ["Checker", "Divergent", "ERROR", "FAIL", "PASS", "Verdict", "check_file", "replay"]
