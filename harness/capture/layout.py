"""Where xen-blkfront keeps its rings: member offsets from the module's DWARF.

xenrig_trace (guest-kernel/xenrig_trace) reads blkfront's private structs
(`struct blkfront_ring_info`, `struct blkfront_info`, defined inside
drivers/block/xen-blkfront.c, so in no header) to find each ring's shared
page, its first ring-ref and its irq.  The offsets depend on the exact build,
so the harness reads them from the very xen-blkfront.ko it loads and passes
them to insmod.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from elftools.dwarf.die import DIE
from elftools.elf.elffile import ELFFile

# struct -> {key: member}: what xenrig_trace's module parameters need.
WANTED = {
    "blkfront_ring_info": {"ring": "ring", "ring_ref": "ring_ref", "irq": "irq"},
    "blkfront_info": {"info_rinfo": "rinfo", "info_rinfo_size": "rinfo_size"},
}

# insmod parameter of xenrig_trace for each key.
MODULE_PARAMS = {
    "ring": "off_ring",
    "ring_ref": "off_ring_ref",
    "irq": "off_irq",
    "info_rinfo": "off_info_rinfo",
    "info_rinfo_size": "off_info_rinfo_size",
    "push": "off_push",
    "queue_unlock": "off_queue_unlock",
    "irq_unlock": "off_irq_unlock",
}


class LayoutError(Exception):
    """The object has no usable definition of a struct or member we need."""


def _name(die: DIE) -> str | None:
    attr = die.attributes.get("DW_AT_name")
    if attr is None:
        return None
    value = attr.value
    return value.decode() if isinstance(value, bytes) else str(value)


def _member_offset(member: DIE) -> int:
    attr = member.attributes.get("DW_AT_data_member_location")
    if attr is None:
        # A union member, or the first member in some producers: offset 0.
        return 0
    if isinstance(attr.value, int):
        return attr.value
    # DWARF 2/3 location expression: DW_OP_plus_uconst <n>.
    expr = attr.value
    if len(expr) >= 2 and expr[0] == 0x23:
        value, shift = 0, 0
        for byte in expr[1:]:
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value
    raise LayoutError(f"member {_name(member)!r}: unsupported location {expr!r}")


def struct_offsets(path: str | Path, wanted: dict[str, dict[str, str]]) -> dict[str, int]:
    """Offsets of the members `wanted` ({struct: {key: member}}) in object `path`."""
    found: dict[str, int] = {}
    todo = {name: dict(members) for name, members in wanted.items()}
    with open(path, "rb") as f:
        elf = ELFFile(f)
        if not elf.has_dwarf_info():
            raise LayoutError(f"{path}: no DWARF debug info (build with debug info)")
        dwarf = elf.get_dwarf_info()
        for cu in dwarf.iter_CUs():
            for die in cu.iter_DIEs():
                if die.tag != "DW_TAG_structure_type" or "DW_AT_declaration" in die.attributes:
                    continue
                name = _name(die)
                if name not in todo:
                    continue
                members = {_name(child): child for child in die.iter_children()
                           if child.tag == "DW_TAG_member"}
                for key, member in todo.pop(name).items():
                    if member not in members:
                        raise LayoutError(f"{path}: struct {name} has no member {member!r}")
                    found[key] = _member_offset(members[member])
            if not todo:
                break
    if todo:
        raise LayoutError(f"{path}: no definition of struct {', struct '.join(sorted(todo))} "
                          "in its DWARF")
    return found


def blkfront_offsets(ko_path: str | Path) -> dict[str, int | list[int]]:
    """Offsets in xen-blkfront.ko: ring, ring_ref, irq (struct blkfront_ring_info)
    and info_rinfo, info_rinfo_size (struct blkfront_info); push, the offset
    in blkif_queue_rq of the store that publishes requests (push_site);
    queue_unlock and irq_unlock, where blkif_queue_rq and blkif_interrupt
    release the ring lock (unlock_sites)."""
    offsets: dict[str, int | list[int]] = dict(struct_offsets(ko_path, WANTED))
    functions = _disassemble(ko_path, ("blkif_queue_rq", "blkif_interrupt"))
    offsets["push"] = push_site(ko_path, body=functions["blkif_queue_rq"])
    offsets["queue_unlock"] = unlock_sites(ko_path, "blkif_queue_rq", body=functions["blkif_queue_rq"])
    irq_sites = unlock_sites(ko_path, "blkif_interrupt", body=functions["blkif_interrupt"])
    if len(irq_sites) != 1:
        raise LayoutError(f"blkif_interrupt in {ko_path} releases a lock at {len(irq_sites)} call sites, "
                          "not exactly one (the tracer orders its responses there)")
    offsets["irq_unlock"] = irq_sites[0]
    return offsets


# A store of a 32-bit register through a pointer register, with no
# displacement: sring->req_prod is the first member of the shared ring.
_STORE = re.compile(r"^\s*([0-9a-f]+):\s+mov\s+%e[a-z0-9]+d?,\(%r[a-z0-9]+\)\s*$|^\s*([0-9a-f]+):\s+mov\s+%r[0-9]+d,\(%r[a-z0-9]+\)\s*$")
_FULL_BARRIER = re.compile(r"^\s*[0-9a-f]+:\s+(lock addl \$0x0,-0x4\(%rsp\)|lock orq \$0x0,\(%rsp\)|mfence)\s*$")
_FUNC = re.compile(r"^([0-9a-f]+) <([^>]+)>:$")
_CALL = re.compile(r"^\s*([0-9a-f]+):\s+call\s")
_RELOC = re.compile(r"^\s*[0-9a-f]+:\s+R_X86_64_(?:PLT32|PC32)\s+(\S+?)(?:[-+]0x[0-9a-f]+)?\s*$")
# Where a ring lock is released: blkfront takes rinfo->ring_lock with
# spin_lock_irqsave in both functions.
UNLOCK = "_raw_spin_unlock_irqrestore"


def _disassemble(ko_path: str | Path, functions: tuple[str, ...]) -> dict[str, tuple[int, list[str]]]:
    """Each function's start address and instruction lines (with relocations)."""
    try:
        out = subprocess.run(["objdump", "-dr", "--no-show-raw-insn", str(ko_path)], capture_output=True,
                             text=True, timeout=120, check=True).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise LayoutError(f"cannot disassemble {ko_path}: {exc}") from None
    found: dict[str, tuple[int, list[str]]] = {}
    body: list[str] | None = None
    for line in out.splitlines():
        m = _FUNC.match(line)
        if m:
            body = None
            if m.group(2) in functions:
                body = []
                found[m.group(2)] = (int(m.group(1), 16), body)
            continue
        if body is not None and line.strip():
            body.append(line)
    for function in functions:
        if function not in found:
            raise LayoutError(f"{ko_path} has no function {function}")
    return found


def push_site(ko_path: str | Path, function: str = "blkif_queue_rq", *,
              body: tuple[int, list[str]] | None = None) -> int:
    """Offset in `function` of the store that publishes new requests.

    RING_PUSH_REQUESTS_AND_CHECK_NOTIFY (xen/interface/io/ring.h) stores the
    new req_prod into the shared page and then issues a full barrier
    (virt_mb(): `lock addl $0,-4(%rsp)` on x86-64) before reading req_event.
    flush_requests is inlined into blkif_queue_rq, so the tracer probes that
    store by offset; the offset comes from this very build's machine code.
    """
    start, lines = body if body is not None else _disassemble(ko_path, (function,))[function]
    lines = [line for line in lines if not _RELOC.match(line)]
    sites = []
    for prev, line in zip(lines, lines[1:]):
        if _FULL_BARRIER.match(line):
            m = _STORE.match(prev)
            if m:
                sites.append(int(m.group(1) or m.group(2), 16) - start)
    if len(sites) != 1:
        raise LayoutError(f"{function} in {ko_path} has {len(sites)} candidate push sites (a 32-bit store "
                          "followed by a full barrier), not exactly one")
    return sites[0]


MAX_UNLOCK_SITES = 4   # xenrig_trace's off_queue_unlock array


def unlock_sites(ko_path: str | Path, function: str, *, body: tuple[int, list[str]] | None = None) -> list[int]:
    """Offsets in `function` of its calls to _raw_spin_unlock_irqrestore.

    A probe there runs while the ring lock is still held: a counter taken
    at that point orders the function's work on the ring against every
    other CPU's work on the same ring exactly as the lock did (the point of
    the tracer's per-ring order on several vCPUs; docs/capture.md)."""
    start, lines = body if body is not None else _disassemble(ko_path, (function,))[function]
    sites = []
    for call, reloc in zip(lines, lines[1:]):
        m, r = _CALL.match(call), _RELOC.match(reloc)
        if m and r and r.group(1) == UNLOCK:
            sites.append(int(m.group(1), 16) - start)
    if not 1 <= len(sites) <= MAX_UNLOCK_SITES:
        raise LayoutError(f"{function} in {ko_path} calls {UNLOCK} at {len(sites)} sites; "
                          f"the tracer takes 1 to {MAX_UNLOCK_SITES}")
    return sites


def insmod_args(offsets: dict[str, int | list[int]]) -> list[str]:
    """`off_ring=N ...` arguments for insmod xenrig_trace.ko (arrays comma-separated)."""
    return [f"{MODULE_PARAMS[key]}={param_value(offsets[key])}" for key in MODULE_PARAMS]


def param_value(value: int | list[int]) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


__all__ = ["LayoutError", "MODULE_PARAMS", "blkfront_offsets", "insmod_args", "param_value", "push_site",
           "struct_offsets", "unlock_sites"]
