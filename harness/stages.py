"""One stage mechanism for progress, logs and the report's timings.

Every long action runs inside `timeline.stage(name)`.  The timeline records
its start and duration and tells its subscribers (the live progress line, the
report), so the library never prints on its own.  `wait_for` is the one way
to wait for something: it always has a timeout, and its error names the stage
and the log a person should open.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Protocol, TypeVar

from harness.errors import StageTimeout

T = TypeVar("T")


log = logging.getLogger(__name__)

@dataclass
class StageRecord:
    name: str
    start_s: float          # seconds since the timeline began
    duration_s: float = 0.0
    outcome: str = "running"  # ok | failed | interrupted
    detail: str = ""


class Subscriber(Protocol):
    def stage_started(self, record: StageRecord) -> None: ...
    def stage_finished(self, record: StageRecord) -> None: ...
    def note(self, text: str, elapsed_s: float) -> None: ...


@dataclass
class Timeline:
    subscribers: list[Subscriber] = field(default_factory=list)
    records: list[StageRecord] = field(default_factory=list)
    t0: float = field(default_factory=time.monotonic)
    wall_start: float = field(default_factory=time.time)

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def note(self, text: str) -> None:
        for sub in self.subscribers:
            try:
                sub.note(text, self.elapsed())
            except Exception:  # noqa: BLE001
                log.exception("progress subscriber %r failed on a note", sub)

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[StageRecord]:
        record = StageRecord(name=name, start_s=self.elapsed())
        self.records.append(record)
        self._tell("stage_started", record)
        begun = time.monotonic()
        try:
            yield record
        except KeyboardInterrupt:
            record.outcome = "interrupted"
            raise
        except BaseException as exc:
            record.outcome = "failed"
            text = str(exc)
            record.detail = record.detail or (text.splitlines()[0][:200] if text else type(exc).__name__)
            raise
        else:
            record.outcome = "ok"
        finally:
            record.duration_s = time.monotonic() - begun
            self._tell("stage_finished", record)

    def _tell(self, what: str, record: StageRecord) -> None:
        """A subscriber that fails must not break the stage it watches (a
        teardown stage above all)."""
        for sub in self.subscribers:
            try:
                getattr(sub, what)(record)
            except Exception:  # noqa: BLE001
                log.exception("progress subscriber %r failed in %s", sub, what)


class ConsoleProgress:
    """Progress on stderr: one line per stage start/end, and on a terminal a
    ticking elapsed-seconds counter so a 40-second boot never looks hung."""

    def __init__(self, stream=None, tick: bool | None = None):
        self.stream = stream or sys.stderr
        self.tick = self.stream.isatty() if tick is None else tick
        self._current: StageRecord | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._t0 = time.monotonic()

    def _write(self, text: str) -> None:
        # Progress is for a person and best effort: when whoever reads it is
        # gone (a closed pipe, a killed parent), the run and above all its
        # teardown go on.  A BrokenPipeError here once left an L0 VM running.
        with self._lock, contextlib.suppress(OSError, ValueError):
            if self.tick:
                self.stream.write("\r\033[K")
            self.stream.write(text + "\n")
            self.stream.flush()

    def _ticker(self) -> None:
        while not self._stop.wait(1.0):
            with self._lock:
                rec = self._current
                if rec is None:
                    continue
                self.stream.write(f"\r\033[K[{time.monotonic() - self._t0:6.1f}s] {rec.name} ...")
                self.stream.flush()

    def stage_started(self, record: StageRecord) -> None:
        self._current = record
        self._write(f"[{record.start_s:6.1f}s] {record.name} ...")
        if self.tick and self._thread is None:
            self._thread = threading.Thread(target=self._ticker, daemon=True)
            self._thread.start()

    def stage_finished(self, record: StageRecord) -> None:
        self._current = None
        end = record.start_s + record.duration_s
        extra = f": {record.detail}" if record.detail and record.outcome != "ok" else ""
        self._write(f"[{end:6.1f}s] {record.name} {record.outcome} ({record.duration_s:.1f}s){extra}")

    def note(self, text: str, elapsed_s: float) -> None:
        self._write(f"[{elapsed_s:6.1f}s]   {text}")

    def close(self) -> None:
        self._stop.set()


def wait_for(
    probe: Callable[[], T | None],
    *,
    timeout_s: float,
    what: str,
    stage: str,
    log: str | None = None,
    interval_s: float = 0.5,
    hint: str = "",
) -> T:
    """Call `probe` until it returns something other than None/False.

    Raises StageTimeout naming the stage, what was awaited and the log."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise StageTimeout(
                f"stage '{stage}': timed out after {timeout_s:.0f}s waiting for {what}",
                log=log,
                hint=hint,
            )
        time.sleep(interval_s)
