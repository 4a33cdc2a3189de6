"""Reading and writing traces as JSON Lines, with errors that name the line.

Reading is built for size: a trace of ten million events is read in blocks of
a few MiB, each block decoded in one call into typed records
(msgspec's `decode_lines`), so no per-line Python work happens unless a line
is bad.  Then the block is decoded again line by line, only to name the first
bad line.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import msgspec

from harness.errors import UsageError
from harness.trace.schema import KINDS, SCHEMA_VERSION, AnyEvent, Event, Header

BLOCK_BYTES = 4 << 20

_event_decoder = msgspec.json.Decoder(AnyEvent)
_header_decoder = msgspec.json.Decoder(Header)
_plain_decoder = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()


class TraceFormatError(UsageError):
    """A trace line that is not valid JSON or does not fit schema v1."""

    def __init__(self, path: str, line: int, problem: str):
        super().__init__(
            f"{path}:{line}: {problem}",
            hint="docs/trace-schema.md lists every event kind and its fields",
        )
        self.path = path
        self.line = line
        self.problem = problem


@dataclass(slots=True)
class Block:
    """Events decoded from consecutive lines starting at `first_line`."""

    events: list[Event]
    first_line: int
    # Line number of each event, only when the block had blank lines (else
    # event i sits on first_line + i).
    line_map: list[int] | None = None

    def line_of(self, index: int) -> int:
        if self.line_map is None:
            return self.first_line + index
        return self.line_map[index]


def _describe(exc: Exception, raw_line: bytes) -> str:
    text = str(exc)
    if "$.kind" in text or "`kind`" in text:
        try:
            kind = _plain_decoder.decode(raw_line).get("kind")
        except Exception:  # noqa: BLE001 - the line is already known bad
            kind = None
        if kind is None:
            return "event has no `kind` field"
        if kind == "header":
            return "a second header line; the header must be the first line only"
        return f"unknown event kind {kind!r} (schema v{SCHEMA_VERSION} knows {len(KINDS)} kinds)"
    if isinstance(exc, msgspec.ValidationError):
        return f"event does not fit the schema: {text}"
    return f"not valid JSON: {text}"


def _locate_bad_line(path: str, raw: bytes, first_line: int) -> TraceFormatError:
    for offset, line in enumerate(raw.split(b"\n")):
        if not line.strip():
            continue
        try:
            _event_decoder.decode(line)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            return TraceFormatError(path, first_line + offset, _describe(exc, line))
    # decode_lines failed but no single line does: the block itself is bad.
    return TraceFormatError(path, first_line, "unreadable block of lines")


def parse_header(path: str, line: bytes) -> Header:
    try:
        header = _header_decoder.decode(line)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        try:
            first = _plain_decoder.decode(line)
        except msgspec.DecodeError:
            first = None
        if not isinstance(first, dict) or first.get("kind") != "header":
            raise TraceFormatError(
                path, 1, 'the first line must be the header {"v": 1, "kind": "header", ...}'
            ) from None
        raise TraceFormatError(path, 1, f"header does not fit the schema: {exc}") from None
    if header.v != SCHEMA_VERSION:
        raise TraceFormatError(
            path, 1, f"trace schema v{header.v}; this xenrig reads v{SCHEMA_VERSION}"
        )
    return header


class TraceReader:
    """A trace file opened for reading: `.header`, then iterate `blocks()`."""

    def __init__(self, path: str | os.PathLike[str], block_bytes: int = BLOCK_BYTES):
        self.path = str(path)
        self.block_bytes = block_bytes
        try:
            self._file = open(self.path, "rb")  # noqa: SIM115 - closed in close()
        except OSError as exc:
            raise UsageError(f"cannot read trace {self.path}: {exc.strerror}") from None
        first = self._file.readline()
        if not first.strip():
            self._file.close()
            raise TraceFormatError(self.path, 1, "empty trace: no header line")
        self.header = parse_header(self.path, first)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> TraceReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def blocks(self) -> Iterator[Block]:
        """Decode the rest of the file a block of whole lines at a time.

        One buffer is reused: each read lands behind the partial line the last
        block left over, so no block is copied before decoding.
        """
        size = self.block_bytes
        buf = bytearray(size)
        view = memoryview(buf)
        readinto = self._file.readinto
        next_line = 2
        held = 0  # bytes of an unfinished line at the front of buf
        try:
            while True:
                if held == len(buf):  # one line longer than the buffer
                    view.release()
                    buf.extend(bytes(len(buf)))
                    view = memoryview(buf)
                got = readinto(view[held:])
                end = held + got
                if not got:
                    if held and bytes(buf[:held]).strip():
                        yield self._decode(bytes(buf[:held]), next_line, 1)
                    return
                cut = buf.rfind(b"\n", 0, end) + 1
                if not cut:
                    held = end
                    continue
                nlines = buf.count(b"\n", 0, cut)
                yield self._decode(view[:cut], next_line, nlines)
                next_line += nlines
                held = end - cut
                buf[:held] = buf[cut:end]
        finally:
            view.release()

    def _decode(self, raw, first_line: int, nlines: int) -> Block:
        try:
            events = _event_decoder.decode_lines(raw)
        except (msgspec.DecodeError, msgspec.ValidationError):
            raise _locate_bad_line(self.path, bytes(raw), first_line) from None
        block = Block(events, first_line)
        if nlines != len(events):
            block.line_map = [
                first_line + i for i, line in enumerate(bytes(raw).split(b"\n")) if line.strip()
            ]
        return block


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic GC while millions of (acyclic) records come and go.

    Records hold no reference cycles, so the collector finds nothing, yet its
    generation-0 passes over the decoded lists cost a large share of a run.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def encode_line(record: Event | Header) -> bytes:
    return _encoder.encode(record) + b"\n"


def write_trace(path: str | os.PathLike[str], header: Header, events: Iterable[Event]) -> None:
    with open(path, "wb") as out:
        out.write(encode_line(header))
        for event in events:
            out.write(encode_line(event))


def read_trace(path: str | os.PathLike[str]) -> tuple[Header, list[Event]]:
    """Whole trace in memory: for tests and small traces."""
    with TraceReader(path) as reader:
        events: list[Event] = []
        for block in reader.blocks():
            events.extend(block.events)
        return reader.header, events


def parse_lines(lines: Iterable[str | bytes], name: str = "<trace>") -> tuple[Header, list[Event]]:
    """Header and events from lines held in memory (tests, generators)."""
    raw = [line.encode() if isinstance(line, str) else line for line in lines]
    raw = [line.rstrip(b"\n") for line in raw]
    if not raw:
        raise TraceFormatError(name, 1, "empty trace: no header line")
    header = parse_header(name, raw[0])
    events: list[Event] = []
    for number, line in enumerate(raw[1:], start=2):
        if not line.strip():
            continue
        try:
            events.append(_event_decoder.decode(line))
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise TraceFormatError(name, number, _describe(exc, line)) from None
    return header, events


__all__ = [
    "Block", "TraceFormatError", "TraceReader", "encode_line", "gc_paused", "parse_header",
    "parse_lines", "read_trace", "write_trace",
]
