import io
import time

import pytest

from harness.errors import StageTimeout
from harness.stages import ConsoleProgress, Timeline, wait_for


def test_stage_records_outcomes_and_progress():
    out = io.StringIO()
    t = Timeline([ConsoleProgress(out, tick=False)])
    with t.stage("one"):
        pass
    with pytest.raises(ValueError):
        with t.stage("two"):
            raise ValueError("bad thing\nmore")
    assert [(r.name, r.outcome) for r in t.records] == [("one", "ok"), ("two", "failed")]
    assert t.records[1].detail == "bad thing"
    text = out.getvalue()
    assert "one ..." in text and "one ok" in text and "two failed" in text


def test_wait_for_times_out_naming_stage_and_log():
    start = time.monotonic()
    with pytest.raises(StageTimeout) as ei:
        wait_for(lambda: None, timeout_s=0.3, what="the marker", stage="boot", log="/x/serial.log", interval_s=0.05)
    assert time.monotonic() - start < 2
    para = ei.value.paragraph()
    assert "stage 'boot'" in para and "the marker" in para and "/x/serial.log" in para


def test_wait_for_returns_value():
    vals = iter([None, 0, "yes"])
    assert wait_for(lambda: next(vals), timeout_s=5, what="x", stage="s", interval_s=0.01) == "yes"


def test_a_closed_progress_stream_cannot_break_a_stage_or_its_teardown():
    import io

    from harness.stages import ConsoleProgress, Timeline

    class Gone(io.StringIO):
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

    timeline = Timeline([ConsoleProgress(stream=Gone())])
    ran = []
    with timeline.stage("tear down L0 VM"):
        timeline.note("destroying")
        ran.append(True)
    assert ran == [True] and timeline.records[-1].outcome == "ok"
