"""Reading and writing traces: round trips, blocks, and errors that name the line."""

from __future__ import annotations

import pytest

from harness.check import check_file
from harness.trace import TraceFormatError, TraceReader, parse_lines, read_trace, write_trace
from harness.trace.schema import BlkifReq, DumpEntry, GntGrant, Header, XenGnttab

HEADER = '{"v":1,"kind":"header","policy":"seed"}'


def event(seq: int, kind: str = "gnt.free", **fields) -> str:
    body = ",".join(f'"{k}":{v}' for k, v in fields.items()) or '"ref":8'
    return f'{{"seq":{seq},"t_ns":{seq},"dom":1,"src":"guest","kind":"{kind}",{body}}}'


def test_round_trip(tmp_path):
    events = [
        GntGrant(seq=1, t_ns=10, dom=1, src="guest", ref=8, to=0, frame=0x1000, ro=True),
        BlkifReq(seq=2, t_ns=20, dom=1, src="guest", ring="xvda/0", idx=0, id=3, op=0,
                 segs=[(8, 0, 7)]),
        XenGnttab(seq=3, t_ns=30, dom=0, src="xen", rdom=1, nr_frames=1, max_frames=64,
                  entries=[DumpEntry(ref=8, mapdom=0, pin=1, gdom=0, frame=0x1000, flags=0x19)]),
    ]
    path = tmp_path / "t.jsonl"
    write_trace(path, Header(v=1, policy="seed", guest=1), events)
    header, back = read_trace(path)
    assert header.policy == "seed" and header.guest == 1
    assert back == events


def test_blocks_keep_line_numbers_across_boundaries_and_blank_lines(tmp_path):
    lines = [HEADER] + [event(i) for i in range(1, 200)]
    lines.insert(50, "")  # a blank line shifts everything after it
    path = tmp_path / "t.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with TraceReader(path, block_bytes=700) as reader:
        seen = {}
        for block in reader.blocks():
            for index, ev in enumerate(block.events):
                seen[ev.seq] = block.line_of(index)
    assert len(seen) == 199
    assert seen[1] == 2 and seen[49] == 50 and seen[50] == 52 and seen[199] == 201


@pytest.mark.parametrize("bad_line,problem", [
    ('{"seq":2,"t_ns":2,"dom":1,"src":"guest","kind":"gnt.nope","ref":8}', "unknown event kind 'gnt.nope'"),
    ('{"seq":2,"t_ns":2,"dom":1,"src":"guest","kind":"gnt.free","ref":"8"}', "Expected `int`, got `str`"),
    ('{"seq":2,"t_ns":2,"dom":1,"src":"guest","kind":"gnt.free","ref":8,"x":1}', "unknown field"),
    ('{"seq":2,"t_ns":2,"dom":1,"src":"nobody","kind":"gnt.free","ref":8}', "$.src"),
    ('{"seq":2,"t_ns":2,"dom":1,"src":"guest","ref":8}', "no `kind` field"),
    ('{"seq":2,"t_ns":2,"dom":1,', "not valid JSON"),
    ('{"v":1,"kind":"header"}', "second header"),
])
def test_bad_line_is_named_with_its_number(tmp_path, bad_line, problem):
    lines = [HEADER] + [event(i) for i in range(1, 40)]
    lines[30] = bad_line
    path = tmp_path / "t.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(TraceFormatError) as err, TraceReader(path, block_bytes=256) as reader:
        for _ in reader.blocks():
            pass
    assert err.value.line == 31
    assert problem.lower() in err.value.problem.lower()
    assert f"{path}:31:" in err.value.paragraph()


@pytest.mark.parametrize("first,problem", [
    ("", "empty trace"),
    (event(1), "first line must be the header"),
    ('{"v":2,"kind":"header"}', "schema v2"),
    ('{"v":1,"kind":"header","policy":"linux-9"}', "header does not fit"),
])
def test_bad_header(tmp_path, first, problem):
    path = tmp_path / "t.jsonl"
    path.write_text(first + "\n")
    with pytest.raises(TraceFormatError) as err:
        TraceReader(path)
    assert err.value.line == 1 and problem in err.value.problem


def test_checker_reports_bad_line_in_a_later_block(tmp_path):
    lines = [HEADER] + [event(i, "gnt.cb_request", cb=i, count=1) for i in range(1, 40)]
    lines[30] = "{oops"
    path = tmp_path / "t.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(TraceFormatError) as err:
        check_file(path, block_bytes=256)
    assert err.value.line == 31


def test_parse_lines_in_memory():
    header, events = parse_lines([HEADER, event(1), "", event(2)])
    assert header.policy == "seed" and [e.seq for e in events] == [1, 2]
    with pytest.raises(TraceFormatError) as err:
        parse_lines([HEADER, event(1), "{"])
    assert err.value.line == 3


def test_a_line_longer_than_the_block_and_no_final_newline(tmp_path):
    long_segs = ",".join("[9,0,7]" for _ in range(300))
    lines = [HEADER, event(1), event(2, "blkif.req", ring='"r"', idx=0, id=1, op=6,
                                     segs=f"[{long_segs}]"), event(3)]
    path = tmp_path / "t.jsonl"
    path.write_text("\n".join(lines))  # no newline after the last line
    with TraceReader(path, block_bytes=64) as reader:
        got = [(ev.seq, block.line_of(i)) for block in reader.blocks()
               for i, ev in enumerate(block.events)]
    assert got == [(1, 2), (2, 3), (3, 4)]
