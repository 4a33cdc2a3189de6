"""The exerciser's own C code, run on the host.

guest-kernel/xenrig_gnttab/xenrig_gnttab.c is compiled unchanged (its
#include lines swapped for tests/unit/exerciser_sim/kstub.h) together with
exerciser_sim/sim.c, which simulates Linux 6.1's grant allocator, Xen's
GNTTABOP answers, a dom0 that maps grants, xenstore and debugfs.  The
simulated API checks ownership the kernel does not check: a call on a ref the
module does not hold, or one that frees a live grant, makes the program exit
with "VIOLATION".  Built with AddressSanitizer/UBSan where the compiler has
them.  What this cannot show (real locking, real Xen) the end-to-end test in
the guest does."""

import json
import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODULE = ROOT / "guest-kernel" / "xenrig_gnttab" / "xenrig_gnttab.c"
SIM_DIR = Path(__file__).resolve().parent / "exerciser_sim"
ENOSPC, EPERM, EINVAL, EBUSY, ENOENT = 28, 1, 22, 16, 2
REFS_PER_FRAME, RESERVED = 512, 8
BAR1_GFN = 0xF0000000 >> 12


@pytest.fixture(scope="module")
def sim_binary(tmp_path_factory) -> Path:
    cc = shutil.which("gcc") or shutil.which("cc")
    if not cc:
        pytest.skip("no C compiler on this host")
    out = tmp_path_factory.mktemp("exerciser_sim")
    lines, placed = [], False
    for line in MODULE.read_text().splitlines(keepends=True):
        if line.startswith("#include <"):
            if not placed:
                lines.append('#include "kstub.h"\n')
                placed = True
            continue
        lines.append(line)
    (out / "module.c").write_text("".join(lines))
    base = [cc, "-std=gnu11", "-O1", "-g", "-Wall", "-Werror", f"-I{SIM_DIR}",
            '-DKBUILD_MODNAME="xenrig_gnttab"', str(out / "module.c"), str(SIM_DIR / "sim.c"),
            "-o", str(out / "sim")]
    sanitize = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-fno-sanitize-recover=all"]
    built = subprocess.run(base + sanitize, capture_output=True, text=True)
    if built.returncode:
        built = subprocess.run(base, capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    return out / "sim"


class Run:
    """The answers of one simulator run, in order."""

    def __init__(self, stdout: str):
        self.records = []
        lines = iter(stdout.splitlines())
        for line in lines:
            tag, _, rest = line.partition(" ")
            if tag in ("LOG-BEGIN", "R-BEGIN"):
                body = []
                for inner in lines:
                    if inner == tag.replace("BEGIN", "END"):
                        break
                    body.append(inner)
                self.records.append((tag[:-6], body))
            elif tag == "STATE":
                self.records.append((tag, json.loads(rest)))
            elif tag == "PAGE":
                self.records.append((tag, bytes.fromhex(rest)))
            else:
                self.records.append((tag, rest))

    def all(self, tag):
        return [v for t, v in self.records if t == tag]

    def writes(self):
        return [int(v) for v in self.all("W")]

    def log(self, index=-1) -> list[dict]:
        return [json.loads(line) for line in self.all("LOG")[index]]

    def ctl(self, index=-1) -> dict:
        return json.loads(self.all("R")[index][0])

    def state(self, index=-1) -> dict:
        return self.all("STATE")[index]


def run(sim_binary, script: list[str], max_frames=4) -> Run:
    proc = subprocess.run([str(sim_binary), str(max_frames)], input="\n".join(script) + "\n",
                          capture_output=True, text=True, timeout=120)
    assert "VIOLATION" not in proc.stdout, proc.stdout[proc.stdout.index("VIOLATION"):][:300]
    assert proc.returncode == 0, proc.stderr[-3000:]
    return Run(proc.stdout)


def ops(log, op):
    return [e for e in log if e["op"] == op]


def check_log_shape(log):
    seqs = [e["seq"] for e in log]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "seq must grow by one"
    assert all(a["t_ns"] <= b["t_ns"] for a, b in zip(log, log[1:]))
    for e in log:
        assert set(e) >= {"seq", "t_ns", "op"}
        if e["op"] != "log_overflow":
            assert isinstance(e["ret"], int), e
        for k, v in e.items():
            assert re.fullmatch(r"[a-z][a-z0-9_]*", k), k
            assert isinstance(v, (int, str)) or (isinstance(v, list) and all(isinstance(x, int) for x in v)), (k, v)


CLEAN_UNLOAD = {"state_out": 0, "state_chain": 0, "granted": 0, "deferred": 0, "live_pages": 0,
                "live_allocs": 0, "xs_keys": 0, "callbacks_listed": 0}


def test_reserve_claim_grant_end_free_and_page_layout(sim_binary):
    # ref 8 is the head of a fresh 4-ref chain in the simulation; the test
    # looks the claimed ref up in the log rather than assuming it.
    r = run(sim_binary, ["load", "state", "c alloc 4", "c claim 0", "r"])
    ref = r.ctl()["ref"]
    script = ["load", "state", "c alloc 4", "c claim 0", f"c grant {ref} 0 ro", f"page {ref}",
              f"map {ref} rw", f"map {ref} ro", f"c end {ref}", f"unmap {ref}", f"c end {ref}",
              f"c free_ref {ref}", "c free_chain 0", "log", "unload", "state"]
    r = run(sim_binary, script)
    log = r.log()
    check_log_shape(log)
    assert log[0]["op"] == "load" and log[0]["seq"] == 0 and log[0]["max_grant_frames"] == 4
    alloc, claim, grant = ops(log, "alloc")[0], ops(log, "claim")[0], ops(log, "grant")[0]
    assert alloc == {**alloc, "count": 4, "ret": 0, "chain": 0} and alloc["head"] == ref
    assert claim["remaining"] == 3 and claim["head"] != ref
    assert grant["ret"] == 0 and grant["readonly"] == 1 and grant["new_page"] == 1 and grant["domid"] == 0

    page = r.all("PAGE")[0]
    assert page[:4] == b"XRGT"
    assert struct.unpack_from("<IIHBB", page, 4) == (ref, grant["pattern"], 0, 1, 0)
    words = struct.unpack_from("<1020I", page, 16)
    assert words == tuple((grant["pattern"] + i) & 0xFFFFFFFF for i in range(4, 1024))
    assert zlib.crc32(page) == grant["csum"]

    assert r.all("MAP")[:2] == ["-8", "0"]          # a read-only grant is not mappable writable
    ends = ops(log, "end")
    assert [e["ret"] for e in ends] == [0, 1]        # refused while mapped, then ended
    assert ops(log, "free_ref")[0]["ret"] == 0
    assert ops(log, "free_chain")[0] == {**ops(log, "free_chain")[0], "remaining": 3, "ret": 0}
    before, after = r.state(0), r.state(-1)
    assert after["free_count"] == before["free_count"]
    assert after.items() >= CLEAN_UNLOAD.items()


def test_refs_it_does_not_own_are_refused_without_touching_them(sim_binary):
    # 'hold' gives refs 8.. to another driver; every command aimed at one of
    # them must be refused by the module (the simulation exits on a call).
    script = ["load", "hold 3", "c alloc 2"]
    script += [f"c {cmd}" for cmd in (
        "end 8", "try_end 8", "end_page 8", "free_ref 8", "free_page 8", "readback 8",
        "grant 8 0 rw", "release 0 8", "end 3", "free_ref 0", "end 99999999999999999999999",
        "claim 64", "claim 5", "release 9 8", "free_chain 63", "alloc 0", "alloc 65536",
        "callback 16 1", "callback 0 65536", "cancel_callback 99", "grant_access 65536 ro",
        "query_size 70000", "setup_table 4097", "set_version 2", "handoff bad/key 0 ro",
        "handoff ok 65536 rw")]
    script += ["log", "state"]
    r = run(sim_binary, script)
    log = r.log()
    check_log_shape(log)
    assert all(w > 0 for w in r.writes())            # understood lines, refused in the log
    refused = log[2:]
    assert len(refused) == 26
    reasons = [(e["op"], e["ret"], e["reason"]) for e in refused]
    assert reasons[:11] == [(op, -EPERM, "ref_not_owned") for op in (
        "end", "try_end", "end_page", "free_ref", "free_page", "readback", "grant", "release",
        "end", "free_ref", "end")]
    assert [x[2] for x in reasons[11:]] == [
        "bad_chain", "bad_chain", "bad_chain", "bad_chain", "count_out_of_range", "count_out_of_range",
        "bad_callback_id", "count_out_of_range", "bad_callback_id", "bad_domid", "bad_domid",
        "too_many_frames", "v1_only_guest", "bad_key", "bad_domid"]
    assert refused[10]["ref"] == 2**64 - 1           # too big is a refusal, not a parse error
    assert r.state()["state_other"] == 3 and r.state()["granted"] == 0


def test_exhaust_grows_frame_by_frame_to_enospc_and_free_all_returns_everything(sim_binary):
    script = ["load", "hold 2", "state", "c callback 0 100", "c exhaust", "r", "c alloc 1",
              "c grant_access 0 ro", "state", "c free_all", "log", "c alloc 1", "c status", "r", "state"]
    r = run(sim_binary, script, max_frames=4)
    log = r.log()
    check_log_shape(log)
    total = 4 * REFS_PER_FRAME - RESERVED - 2
    grows = ops(log, "exhaust_grow")
    assert [g["frame"] for g in grows] == [1, 2, 3]
    assert [g["nr_frames"] for g in grows] == [2, 3, 4]
    assert all(g["ref"] == g["frame"] * REFS_PER_FRAME and g["status"] == 0 for g in grows)
    ex = r.ctl(0)
    assert ex["op"] == "exhaust" and ex == ops(log, "exhaust")[0]
    assert (ex["ret"], ex["obtained"], ex["bounded"], ex["nr_frames"], ex["max_nr_frames"]) == (
        -ENOSPC, total, 0, 4, 4)
    assert ops(log, "alloc")[0]["ret"] == -ENOSPC and ops(log, "alloc")[0]["chain"] == -1
    assert ops(log, "grant_access")[0]["ret"] == -ENOSPC
    assert r.state(1)["free_count"] == 0 and r.state(1)["live_pages"] == 0

    # the callback armed before exhaust fires inside free_all, from the
    # kernel's locked path, before free_all's own line
    fired = ops(log, "callback_fired")
    assert len(fired) == 1 and fired[0]["id"] == 0 and fired[0]["irqs_disabled"] == 1
    free_all = ops(log, "free_all")[0]
    assert fired[0]["seq"] < free_all["seq"]
    assert (free_all["refs_freed"], free_all["still_in_use"], free_all["ret"]) == (total, 0, 0)
    assert r.state(2)["free_count"] == total - 1     # after free_all and one more alloc
    assert r.ctl()["owned_refs"] == 0 and r.ctl()["chains"] == [0]


def test_callbacks_fire_at_once_refuse_rearming_and_cancel(sim_binary):
    script = ["load", "c callback 1 0", "c callback 2 60000", "c callback 2 5", "c cancel_callback 2",
              "c cancel_callback 2", "c callback 3 60000", "c status", "r", "log", "unload", "state"]
    r = run(sim_binary, script)
    log = r.log()
    check_log_shape(log)
    cb = ops(log, "callback")
    assert cb[0]["fired_during_request"] == 1 and ops(log, "callback_fired")[0]["id"] == 1
    assert ops(log, "callback_fired")[0]["seq"] < cb[0]["seq"]
    assert cb[1]["fired_during_request"] == 0 and cb[1]["ret"] == 0
    assert (cb[2]["ret"], cb[2]["reason"]) == (-EBUSY, "already_armed")
    assert [c["was_armed"] for c in ops(log, "cancel_callback")] == [1, 0]
    assert r.ctl()["callbacks_armed"] == [3]
    assert r.state()["callbacks_listed"] == 0        # unload cancelled callback 3


def test_handoff_dom0_write_readback_and_free_all_keeps_a_mapped_grant(sim_binary):
    r = run(sim_binary, ["load", "c handoff w1 0 rw", "r"])
    ref = r.ctl()["ref"]
    script = ["load", "c handoff w1 0 rw", "state", f"map {ref} rw", f"poke {ref} 100 7",
              f"c readback {ref}", f"c end {ref}", "c free_all", "r", "state", f"unmap {ref}",
              "c free_all", "log", "unload", "state"]
    r = run(sim_binary, script)
    log = r.log()
    check_log_shape(log)
    h = ops(log, "handoff")[0]
    assert (h["ref"], h["xs_rc"], h["xs_dir"], h["readonly"]) == (ref, 0, "data/xenrig", 0)
    assert r.state(0)[f"xs:data/xenrig/w1"] == str(ref)
    rb = ops(log, "readback")[0]
    assert rb["changed"] == 1 and rb["csum_at_grant"] == h["csum"] and rb["head_hex"][:8] == "58524754"
    assert ops(log, "end")[0]["ret"] == 0
    first, second = ops(log, "free_all")
    assert (first["still_in_use"], first["ret"], first["keys_removed"]) == (1, -EBUSY, 0)
    assert r.state(1)["xs_keys"] == 1 and r.state(1)["live_pages"] == 1
    assert (second["grants_ended"], second["keys_removed"], second["ret"]) == (1, 1, 0)
    assert r.state().items() >= CLEAN_UNLOAD.items()


def test_unload_leaves_a_mapped_grant_to_the_kernel_which_frees_it_after_unmap(sim_binary):
    r = run(sim_binary, ["load", "c grant_access 0 rw", "r"])
    ref = r.ctl()["ref"]
    script = ["load", "state", "c grant_access 0 rw", f"map {ref} rw", "c alloc 3", "c claim 0",
              "unload", "state", "tick", "state", f"unmap {ref}", "tick", "state"]
    r = run(sim_binary, script)
    before, unloaded, still, done = (r.state(i) for i in range(4))
    assert (unloaded["deferred"], unloaded["live_pages"], unloaded["state_out"]) == (1, 1, 0)
    assert unloaded["live_allocs"] == 0
    assert still["deferred"] == 1                    # the kernel waits for the unmap
    assert done["deferred"] == 0 and done["live_pages"] == 0
    assert done["free_count"] == before["free_count"]


def test_end_page_hands_ref_and_page_to_the_kernel(sim_binary):
    r = run(sim_binary, ["load", "c grant_access 0 ro", "r"])
    ref = r.ctl()["ref"]
    script = ["load", "c grant_access 0 ro", f"map {ref} ro", f"c end_page {ref}", f"c readback {ref}",
              "state", f"unmap {ref}", "tick", "log", "unload", "state"]
    r = run(sim_binary, script)
    log = r.log()
    assert ops(log, "end_page")[0]["ret"] == 0 and ops(log, "end_page")[0]["was_granted"] == 1
    assert ops(log, "readback")[0]["reason"] == "ref_not_owned"
    assert r.state(0)["deferred"] == 1
    assert r.state(1).items() >= CLEAN_UNLOAD.items()


def test_hypercalls_setup_table_query_size_versions(sim_binary):
    script = ["load", "c setup_table 2", "c query_size", "c frames", "c setup_table 5", "c setup_table 0",
              "c query_size 0", "c query_size 77", "c query_size self", "c get_version",
              "c set_version 1", "c set_version 3 force", "c get_version 9", "log"]
    r = run(sim_binary, script, max_frames=4)
    log = r.log()
    check_log_shape(log)
    st = ops(log, "setup_table")
    assert (st[0]["rc"], st[0]["status"], st[0]["gfns"]) == (0, 0, [BAR1_GFN, -1])
    assert (st[0]["frames_in_bar"], st[0]["frames_unmapped"], st[0]["bar1_len"]) == (1, 1, 16 << 20)
    assert st[1]["status"] == -1 and st[1]["gfns"] == []     # past max_nr_frames
    assert st[2]["status"] == 0 and st[2]["gfns"] == []
    qs = ops(log, "query_size")
    assert (qs[0]["nr_frames"], qs[0]["max_nr_frames"], qs[0]["dom"]) == (2, 4, 0x7FF0)
    assert [q["status"] for q in qs[1:]] == [-8, -2, 0]
    fr = ops(log, "frames")[0]
    assert (fr["nr_frames"], fr["gfns"], fr["frames_in_bar"]) == (2, [BAR1_GFN, -1], 1)
    gv = ops(log, "get_version")
    assert (gv[0]["rc"], gv[0]["version"]) == (0, 1) and gv[1]["version"] == -1
    sv = ops(log, "set_version")
    assert (sv[0]["rc"], sv[0]["version"]) == (0, 1)
    assert (sv[1]["rc"], sv[1]["version"], sv[1]["force"]) == (-EINVAL, 1, 1)


def test_unparsable_lines_return_einval_and_are_logged(sim_binary):
    long_line = "status " + "x" * 600
    script = ["load", "c ", "c frobnicate", "c alloc", "c alloc x", "c alloc -1", "c grant 8 0 rx",
              'c status "quoted\\and"', f"c {long_line}", "cbytes 616c6c6f6300310a", "cbytes 7374617475730a7374617475730a",
              "c set_version 2 please", "c alloc 1 2 3 4 5 6 7 8 9", "r", "c alloc 0x10", "c alloc 010", "log"]
    r = run(sim_binary, script)
    log = r.log()
    check_log_shape(log)
    assert r.writes()[:12] == [-EINVAL] * 12 and r.writes()[12:] == [11, 10]
    bad = ops(log, "bad_command")
    assert [b["reason"] for b in bad] == [
        "empty_line", "unknown_command", "argument_count", "bad_argument", "bad_argument", "bad_argument",
        "argument_count", "line_too_long", "embedded_nul", "not_one_line", "bad_argument", "too_many_arguments"]
    assert bad[6]["line"] == 'status "quoted\\and"'       # escaped in JSON, intact after parsing
    assert r.ctl()["reason"] == "too_many_arguments"
    assert [a["count"] for a in ops(log, "alloc")] == [16, 8]   # 0x hex; a leading 0 is octal


def test_full_log_is_a_prefix_plus_one_overflow_line_and_clear_starts_over(sim_binary):
    script = ["load 64"] + ["c status"] * 400 + ["r", "log", "c clear", "c query_size", "log"]
    r = run(sim_binary, script)
    full = r.log(0)
    check_log_shape(full)
    assert full[-1]["op"] == "log_overflow"
    kept = full[:-1]
    assert sum(len(json.dumps(e, separators=(",", ":"))) + 1 for e in kept) <= 64 * 1024
    over = full[-1]
    assert over["seq"] == kept[-1]["seq"] + 1
    assert over["dropped"] == 401 - len(kept) and over["last_dropped_seq"] == 400
    assert over["log_bytes"] == 64 * 1024
    assert r.ctl()["seq"] == 400                     # ctl still answers with the newest line
    after = r.log(1)
    check_log_shape(after)
    assert [e["op"] for e in after] == ["clear", "query_size"]
    assert after[0]["seq"] == 401 and after[0]["dropped_cleared"] == over["dropped"]
