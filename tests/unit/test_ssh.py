"""SSH trust: the harness refuses a host whose key is not the pinned one."""

import socket
import threading
import time

import paramiko
import pytest

from harness import sshkeys
from harness.errors import InfraError
from harness.host.ssh import SshSession, parse_public_key


def _listen(host_key: paramiko.PKey, serve) -> int:
    """A one-connection SSH server on loopback: `serve(transport)` runs in a
    thread once a client connects; the port is returned."""
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)

    def accept():
        conn, _ = lsock.accept()
        transport = paramiko.Transport(conn)
        transport.add_server_key(host_key)
        serve(transport)

    threading.Thread(target=accept, daemon=True).start()
    return lsock.getsockname()[1]


def _server(host_key: paramiko.PKey) -> int:
    def serve(transport):
        try:
            transport.start_server(server=paramiko.ServerInterface())
        except (paramiko.SSHException, EOFError, OSError):
            pass

    return _listen(host_key, serve)


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


class _ExecServer(paramiko.ServerInterface):
    """Answers every exec with `payload` on stdout, but sends the exit status
    first: sshd may do just that when a large output still waits for window
    space, and a reader that stops at the exit status loses the tail."""

    def __init__(self, payload: bytes):
        self.payload = payload

    def check_auth_publickey(self, username, key):
        return paramiko.AUTH_SUCCESSFUL

    def get_allowed_auths(self, username):
        return "publickey"

    def check_channel_request(self, kind, chanid):
        return paramiko.OPEN_SUCCEEDED

    def check_channel_exec_request(self, channel, command):
        def answer():
            time.sleep(0.3)                      # after the exec request's reply
            channel.send_exit_status(0)
            channel.sendall(self.payload)
            channel.sendall_stderr(b"done\n")
            channel.shutdown_write()
            channel.close()
        threading.Thread(target=answer, daemon=True).start()
        return True


def _exec_server(host_key: paramiko.PKey, payload: bytes) -> int:
    def serve(transport):
        transport.start_server(server=_ExecServer(payload))
        held = []                                # a dropped Channel closes itself
        while transport.is_active():
            held.append(transport.accept(1))

    return _listen(host_key, serve)


def test_output_sent_after_the_exit_status_is_read_to_the_last_byte(tmp_path):
    pinned = sshkeys.generate_ed25519(tmp_path / "server", "server")
    payload = bytes(range(256)) * 16384          # 4 MiB: many windows' worth
    port = _exec_server(paramiko.Ed25519Key.from_private_key_file(str(tmp_path / "server")), payload)
    key_file, _ = sshkeys.client_key(tmp_path / "state")
    with SshSession("127.0.0.1", port, "root", key_file, pinned).connect(timeout_s=10) as s:
        res = s.run("cat blob", timeout_s=30)
    assert res.exit_status == 0 and res.stdout_bytes == payload and res.stderr == "done\n"
