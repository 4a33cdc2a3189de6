"""A scenario against a Xen host reached over SSH as a real one would be:
here the nested host left up by `xenrig up`, addressed by its forwarded
port, pinned host key and key file, with kind: remote."""

import json

import pytest

from harness import paths

from .conftest import REPO, xenrig


@pytest.mark.timeout(1800)
def test_conformance_against_a_remote_host(tmp_path, no_stack_left):
    p = xenrig("up", "--no-guest")
    out, _ = p.communicate(timeout=900)
    assert p.returncode == 0, out
    try:
        rec = json.loads((paths.state_dir() / "stack.json").read_text())
        host = tmp_path / "remote.yaml"
        host.write_text(
            "name: pretend-remote\nkind: remote\naddress: 127.0.0.1\n"
            f"port: {rec['ssh_port']}\nuser: root\nkey: {rec['client_key']}\nhost_key: \"{rec['host_key']}\"\n")
        p = xenrig("run", REPO / "configs" / "scenarios" / "gnttab-conformance.yaml", "--host", host,
                   "--run-dir", tmp_path / "run")
        out, _ = p.communicate(timeout=1200)
        assert p.returncode == 0, out
        report = json.loads((tmp_path / "run" / "report.json").read_text())
        assert report["info"]["host"]["kind"] == "remote"
        assert all(c["outcome"] == "PASS" for c in report["checks"])
    finally:
        xenrig("down").communicate(timeout=300)

