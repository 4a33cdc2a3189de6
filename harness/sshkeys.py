"""SSH keys: the harness's client key and the host keys baked into images.

Keys are generated with `cryptography` (already a paramiko dependency), so no
ssh-keygen is needed on the host.  dom0's host key is made at image build and
its public half travels in the image manifest: the harness pins it and never
accepts an unknown host key.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


def generate_ed25519(private_path: Path, comment: str) -> str:
    """Write an OpenSSH private key (0600) and its .pub; return the public line."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    private_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(private)
    line = f"{public.decode()} {comment}"
    Path(f"{private_path}.pub").write_text(line + "\n")
    return line


def client_key(state: Path) -> tuple[Path, str]:
    """The harness's own login key (created once per user)."""
    path = state / "ssh" / "id_ed25519"
    pub = Path(f"{path}.pub")
    if not path.exists() or not pub.exists():
        generate_ed25519(path, "xenrig-harness")
    return path, pub.read_text().strip()
