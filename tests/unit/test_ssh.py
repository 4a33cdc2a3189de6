"""SSH trust: the harness refuses a host whose key is not the pinned one."""

import socket
import threading

import paramiko
import pytest

from harness import sshkeys
from harness.errors import InfraError
from harness.host.ssh import SshSession, parse_public_key


def _server(host_key: paramiko.PKey) -> int:
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)

    def serve():
        conn, _ = lsock.accept()
        transport = paramiko.Transport(conn)
        transport.add_server_key(host_key)
        try:
            transport.start_server(server=paramiko.ServerInterface())
        except (paramiko.SSHException, EOFError, OSError):
            pass

    threading.Thread(target=serve, daemon=True).start()
    return lsock.getsockname()[1]


def test_a_changed_host_key_is_refused(tmp_path):
    sshkeys.generate_ed25519(tmp_path / "server", "server")
    port = _server(paramiko.Ed25519Key.from_private_key_file(str(tmp_path / "server")))
    key_file, _ = sshkeys.client_key(tmp_path / "state")
    pinned = sshkeys.generate_ed25519(tmp_path / "other", "someone-else")
    with pytest.raises(InfraError, match="not the pinned one"):
        SshSession("127.0.0.1", port, "root", key_file, pinned).connect(timeout_s=10)


def test_public_key_lines_parse_and_garbage_is_refused(tmp_path):
    line = sshkeys.generate_ed25519(tmp_path / "k", "c")
    assert parse_public_key(line).get_name() == "ssh-ed25519"
    with pytest.raises(InfraError):
        parse_public_key("nonsense")
