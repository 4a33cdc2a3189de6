"""The trace contract between capture and model: schema v1 records and JSONL I/O."""

from harness.trace.io import (
    Block,
    TraceFormatError,
    TraceReader,
    encode_line,
    parse_lines,
    read_trace,
    write_trace,
)
from harness.trace.schema import KINDS, SCHEMA_VERSION, Event, Header

__all__ = [
    "Block", "Event", "Header", "KINDS", "SCHEMA_VERSION", "TraceFormatError",
    "TraceReader", "encode_line", "parse_lines", "read_trace", "write_trace",
]
