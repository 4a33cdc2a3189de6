"""What a kernel module says about itself: build id, srcversion, vermagic.

The build id (an ELF note the linker writes) is also exposed by the running
kernel at /sys/module/<name>/notes/.note.gnu.build-id, which is how the
harness proves that the module loaded in the guest is the one it built.
"""

from __future__ import annotations

from pathlib import Path

from elftools.elf.elffile import ELFFile
from elftools.elf.sections import NoteSection


def build_id(ko: Path) -> str | None:
    with open(ko, "rb") as fh:
        for section in ELFFile(fh).iter_sections():
            if isinstance(section, NoteSection):
                for note in section.iter_notes():
                    if note["n_type"] == "NT_GNU_BUILD_ID":
                        return note["n_desc"]
    return None


def modinfo(ko: Path) -> dict[str, str]:
    """The .modinfo key=value strings (vermagic, srcversion, parm, ...)."""
    with open(ko, "rb") as fh:
        sec = ELFFile(fh).get_section_by_name(".modinfo")
        data = sec.data() if sec else b""
    info: dict[str, str] = {}
    for item in data.split(b"\0"):
        if b"=" in item:
            k, v = item.decode(errors="replace").split("=", 1)
            info[k] = v if k not in info else info[k] + "; " + v
    return info


def parse_note_blob(blob: bytes) -> str | None:
    """Decode the build id from the raw note file the kernel exposes in
    /sys/module/<name>/notes/.note.gnu.build-id (namesz, descsz, type,
    name padded to 4, desc)."""
    if len(blob) < 12:
        return None
    namesz = int.from_bytes(blob[0:4], "little")
    descsz = int.from_bytes(blob[4:8], "little")
    ntype = int.from_bytes(blob[8:12], "little")
    name_end = 12 + ((namesz + 3) & ~3)
    if ntype != 3 or blob[12:12 + namesz].rstrip(b"\0") != b"GNU":
        return None
    return blob[name_end:name_end + descsz].hex()
