"""Guards against a stack that damages bytes: digests computed where output
is made, reconnect-and-retry for reads only, the memory canary's verdict."""

import hashlib
import shlex
import subprocess

import pytest

from harness import canary
from harness.checks.result import ERROR, PASS
from harness.errors import CorruptionError, TransportError
from harness.host import ssh
from harness.remote import canary as remote_canary


def _sh(script: str) -> tuple[bytes, str, int]:
    res = subprocess.run(["sh", "-c", script], capture_output=True, timeout=30)
    return res.stdout, res.stderr.decode(), res.returncode


def test_the_digest_wrapper_hashes_the_output_where_it_is_made(tmp_path):
    inner = shlex.quote("printf 'a\\0b'; echo oops >&2; exit 3")
    out, err, rc = _sh(ssh.digest_wrap(f"sh -c {inner}", str(tmp_path)))
    assert out == b"a\0b" and rc == 3
    assert ssh.check_digest(out, err, "test", "dom0") == "oops"
    assert list(tmp_path.iterdir()) == []            # the temp file is gone


def test_one_damaged_byte_is_a_corruption_error(tmp_path):
    out, err, _ = _sh(ssh.digest_wrap("head -c 100000 /dev/urandom", str(tmp_path)))
    bad = bytearray(out)
    bad[4242] ^= 0x40
    with pytest.raises(CorruptionError, match="sha256 other than"):
        ssh.check_digest(bytes(bad), err, "the blob", "dom0")


def test_output_without_its_digest_is_refused():
    with pytest.raises(CorruptionError, match="came without"):
        ssh.check_digest(b"x", "", "the blob", "dom0")


class _FlakySession(ssh.SshSession):
    """run() with the stream breaking under the first `breaks` attempts."""

    def __init__(self, breaks: int):
        super().__init__("127.0.0.1", 1, "root", None, "ssh-ed25519 AAAA")
        self.breaks, self.calls, self.reconnected = breaks, 0, 0

    def _run_once(self, command, **kw):
        self.calls += 1
        if self.calls <= self.breaks:
            raise TransportError("dom0: the SSH connection broke: SSHException: Mismatched MAC")
        return ssh.Result(command, 0, "ok", "", 0.0, b"ok")

    def connect(self, timeout_s, stage="ssh"):
        self.reconnected += 1
        return self


def test_a_read_is_retried_once_on_a_fresh_connection():
    s = _FlakySession(breaks=1)
    assert s.run("xl domid g", timeout_s=5, retry=True).stdout == "ok"
    assert (s.calls, s.reconnected, s.reconnects) == (2, 1, 1)
    assert "Mismatched MAC" in s.transport_events[0]


def test_a_command_that_changes_state_is_not_retried_but_the_link_is_restored():
    s = _FlakySession(breaks=1)
    with pytest.raises(TransportError, match="Mismatched MAC"):
        s.run("xl create cfg", timeout_s=5)
    assert (s.calls, s.reconnected, s.reconnects) == (1, 1, 1)


def test_a_canary_that_held_is_a_pass_and_a_damaged_one_an_error():
    clean = {"mib": 16, "checks": 30, "damaged_blocks": 0, "found": [], "alive_at_stop": True}
    assert canary.judge_dom0(clean).outcome == PASS
    hit = dict(clean, damaged_blocks=3, found=[{"where": "fresh", "offset": 630, "page_offset": 630, "got": "00"}])
    r = canary.judge_dom0(hit)
    assert r.outcome == ERROR and "corrupted dom0's memory" in r.message and "630" in r.evidence
    assert canary.judge_dom0(dict(clean, checks=0)).outcome == ERROR
    assert canary.judge_dom0(dict(clean, alive_at_stop=False)).outcome == ERROR


def test_the_remote_canary_finds_a_damaged_block():
    want = remote_canary.pattern(1)
    got = bytearray(want)
    got[5000:5010] = b"\xff" * 10
    found: list = []
    assert remote_canary.compare(want, got, "resident", found) == 1
    assert found[0]["offset"] == 4992 and found[0]["page_offset"] == 896
    assert remote_canary.compare(want, bytearray(want), "resident", []) == 0
    assert hashlib.sha256(want).hexdigest() == hashlib.sha256(remote_canary.pattern(1)).hexdigest()


def test_the_watcher_counts_a_damage_once_and_stops_by_itself(tmp_path, monkeypatch):
    import json

    monkeypatch.setattr(remote_canary.time, "sleep", lambda s: None)
    monkeypatch.setattr(remote_canary.signal, "signal", lambda *a: None)
    hit = []
    real_compare = remote_canary.compare

    def compare(want, got, where, found):
        if where == "resident" and not hit:     # damage the resident pattern once
            got[100] ^= 1
            hit.append(1)
        return real_compare(want, got, where, found)

    monkeypatch.setattr(remote_canary, "compare", compare)
    remote_canary.watch(str(tmp_path), 1, 0.5)   # returns: max_s ended it without a stop
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["damaged_blocks"] == 1 and status["checks"] > 1
