"""Import libvirt once, with its logging sent to a file.

libvirt prints its own warnings and errors to stderr, and the embedded
driver has much to say; the harness reports errors itself, so libvirt's go
to <state>/libvirt.log.  The variable is read when libvirt initializes, so
every module imports libvirt through here.
"""

import os

from harness import paths

paths.state_dir().mkdir(parents=True, exist_ok=True)
os.environ.setdefault("LIBVIRT_LOG_OUTPUTS", f"3:file:{paths.state_dir() / 'libvirt.log'}")

import libvirt  # noqa: E402

__all__ = ["libvirt"]
