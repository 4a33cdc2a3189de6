import pytest

from harness.capture import xen_dump

# Captured from Xen 4.17.7 (Debian) nested in QEMU: a guest d1 with a blkback
# ring (ref 9, also device-mapped twice by dom0), a qdisk ring (ref 10) and
# its console (ref 0).
DMESG = """(XEN) some earlier line
(XEN) gnttab_usage_print_all [ key 'g' pressed
(XEN)       -------- active --------       -------- shared --------
(XEN) [ref] localdom mfn      pin          localdom gmfn     flags
(XEN) grant-table for remote d0 (v1)
(XEN)   1 frames (64 max), 2 maptrack frames (1024 max)
(XEN) no active grant table entries
(XEN)       -------- active --------       -------- shared --------
(XEN) [ref] localdom mfn      pin          localdom gmfn     flags
(XEN) grant-table for remote d1 (v1)
(XEN)   1 frames (64 max), 0 maptrack frames (1024 max)
(XEN) [0x000]      0 0xbfea5 0x00000002          0 0x0fefff 0x19
(XEN) [0x009]      0 0xbcec9 0x01010001          0 0x002ec9 0x19
(XEN) [0x00a]      0 0xbcec7 0x00000002          0 0x002ec7 0x19
(XEN) gnttab_usage_print_all ] done
"""


def test_parse_domains_sizes_and_entries():
    parsed = xen_dump.parse(xen_dump.last_dump(DMESG))
    assert set(parsed) == {0, 1}
    assert parsed[0]["entries"] == [] and parsed[0]["nr_frames"] == 1
    d1 = parsed[1]
    assert (d1["nr_frames"], d1["max_frames"], d1["version"]) == (1, 64, 1)
    assert d1["entries"][1] == {"ref": 9, "mapdom": 0, "pin": 0x01010001, "gdom": 0, "frame": 0x2ec9, "flags": 0x19}
    assert [e["ref"] for e in d1["entries"]] == [0, 9, 10]


def test_newest_dump_wins():
    older = DMESG.replace("0x01010001", "0x00000001")
    parsed = xen_dump.parse(xen_dump.last_dump(older + DMESG))
    assert parsed[1]["entries"][1]["pin"] == 0x01010001


def test_events_shape_and_missing_domain():
    ev = xen_dump.events(xen_dump.last_dump(DMESG), [1], t_ns=5)
    assert ev[0]["kind"] == "xen.gnttab" and ev[0]["rdom"] == 1 and len(ev[0]["entries"]) == 3
    with pytest.raises(xen_dump.DumpParseError, match="no grant table for d7"):
        xen_dump.events(xen_dump.last_dump(DMESG), [7], t_ns=5)


def test_incomplete_dump_is_an_error():
    with pytest.raises(xen_dump.DumpParseError):
        xen_dump.last_dump(DMESG.replace("gnttab_usage_print_all ] done", ""))
