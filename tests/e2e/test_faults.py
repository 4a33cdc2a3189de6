"""The fault campaign (harness.faultcampaign), one test per case: a run
broken for real at one point ends in the right classified verdict within
its time, keeps its evidence, leaves no QEMU once the next run has started,
and the next unbroken run passes."""

import pytest

from harness import faultcampaign


@pytest.fixture(scope="module")
def snapshot():
    faultcampaign.make_snapshot()


@pytest.mark.timeout(2400)
@pytest.mark.parametrize("case", faultcampaign.CASES, ids=[c.fault for c in faultcampaign.CASES])
def test_a_broken_run_is_classified_right_and_cleaned_up(case, snapshot, tmp_path, no_stack_left):
    result = faultcampaign.run_case(case, tmp_path)
    assert not result.problems, "\n".join(result.problems) + "\n--- the broken run said:\n" + result.broken.output[-3000:]
    assert result.classified_right and result.next_run_ok and result.orphans == 0
