"""Member offsets from DWARF (harness/capture/layout.py).

Build-independent: a small object compiled here from structs shaped like
blkfront's, checked against offsetof() printed by a program built from the
same source.  When a built xen-blkfront.ko is in the cache, it is checked
too.
"""

import shutil
import subprocess
from pathlib import Path

import pytest

from harness.capture.layout import (
    MODULE_PARAMS, WANTED, LayoutError, blkfront_offsets, insmod_args, struct_offsets,
)
from harness.paths import cache_dir

STRUCTS = r"""
#include <stddef.h>
#include <stdio.h>
typedef unsigned int RING_IDX;
struct blkif_sring;
struct blkif_front_ring { RING_IDX req_prod_pvt, rsp_cons; unsigned int nr_ents; struct blkif_sring *sring; };
typedef struct { unsigned int lock; } spinlock_t;
struct blkfront_info;
struct blkfront_ring_info {
	spinlock_t ring_lock;
	struct blkif_front_ring ring;
	unsigned int ring_ref[16];
	unsigned int evtchn, irq;
	char work[32];
	struct blkfront_info *dev_info;
};
struct blkfront_info {
	char mutex[32];
	void *xbdev;
	unsigned short sector_size;
	unsigned int feature_flush:1, feature_fua:1;
	char tag_set[200];
	struct blkfront_ring_info *rinfo;
	unsigned int nr_rings;
	unsigned int rinfo_size;
};
struct blkfront_ring_info ring_info_instance;
struct blkfront_info info_instance;
#ifdef PRINT
int main(void)
{
	printf("%zu %zu %zu %zu %zu\n", offsetof(struct blkfront_ring_info, ring),
	       offsetof(struct blkfront_ring_info, ring_ref), offsetof(struct blkfront_ring_info, irq),
	       offsetof(struct blkfront_info, rinfo), offsetof(struct blkfront_info, rinfo_size));
	return 0;
}
#endif
"""

KEYS = ("ring", "ring_ref", "irq", "info_rinfo", "info_rinfo_size")

needs_gcc = pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is not installed")


def build(tmp_path: Path, *flags: str) -> tuple[Path, dict[str, int]]:
    src = tmp_path / "structs.c"
    src.write_text(STRUCTS)
    obj = tmp_path / "structs.o"
    subprocess.run(["gcc", "-c", "-O2", *flags, "-o", str(obj), str(src)], check=True)
    exe = tmp_path / "print_offsets"
    subprocess.run(["gcc", "-DPRINT", "-o", str(exe), str(src)], check=True)
    printed = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout.split()
    return obj, dict(zip(KEYS, map(int, printed)))


@needs_gcc
@pytest.mark.parametrize("flags", [("-g",), ("-gdwarf-4",)], ids=["default-dwarf", "dwarf4"])
def test_offsets_match_offsetof(tmp_path, flags):
    obj, expected = build(tmp_path, *flags)
    assert struct_offsets(obj, WANTED) == expected


@needs_gcc
def test_missing_struct_or_member_is_named(tmp_path):
    obj, _ = build(tmp_path, "-g")
    with pytest.raises(LayoutError, match="no definition of struct nowhere"):
        struct_offsets(obj, {"nowhere": {"x": "x"}})
    with pytest.raises(LayoutError, match="struct blkfront_info has no member 'ring_lock'"):
        struct_offsets(obj, {"blkfront_info": {"x": "ring_lock"}})


@needs_gcc
def test_object_without_debug_info(tmp_path):
    obj, _ = build(tmp_path)
    with pytest.raises(LayoutError, match="no DWARF"):
        struct_offsets(obj, WANTED)


def test_insmod_args_name_every_parameter():
    args = insmod_args(dict.fromkeys(MODULE_PARAMS, 7))
    assert args == [f"{param}=7" for param in MODULE_PARAMS.values()]


def built_blkfront() -> Path | None:
    found = sorted(cache_dir().glob("images/module-blkfront-*/xen-blkfront.ko"))
    return found[-1] if found else None


@pytest.mark.skipif(built_blkfront() is None, reason="no xen-blkfront.ko built in the cache yet")
def test_built_blkfront():
    offsets = blkfront_offsets(built_blkfront())
    assert set(offsets) == set(KEYS) | {"push", "queue_unlock", "irq_unlock"}
    assert offsets["push"] > 0
    # The normal path of blkif_queue_rq releases the lock after its push;
    # the busy and error paths release it without one.
    assert any(site > offsets["push"] for site in offsets["queue_unlock"])
    assert offsets["irq_unlock"] > 0
    # Linux 6.1's struct blkfront_ring_info: ring (struct blkif_front_ring,
    # 24 bytes on x86_64), ring_ref[XENBUS_MAX_RING_GRANTS = 16], evtchn, irq.
    assert offsets["ring_ref"] - offsets["ring"] == 24
    assert offsets["irq"] - offsets["ring_ref"] == 16 * 4 + 4
    # struct blkfront_info: rinfo, nr_rings, rinfo_size.
    assert offsets["info_rinfo_size"] - offsets["info_rinfo"] == 8 + 4


def test_push_site_is_the_store_before_the_full_barrier(tmp_path):
    """The shape RING_PUSH_REQUESTS_AND_CHECK_NOTIFY compiles to in
    blkif_queue_rq: store req_prod, `lock addl $0,-4(%rsp)`, read req_event."""
    import subprocess

    from harness.capture import layout

    src = tmp_path / "push.c"
    src.write_text(r"""
struct sring { unsigned int req_prod, req_event; };
int blkif_queue_rq(struct sring *s, unsigned int v)
{
    int x = v * 3;
    asm volatile("movl %1, (%0)\n\tlock addl $0, -4(%%rsp)" :: "r"(s), "r"(v) : "memory");
    return x + s->req_event;
}
int other(struct sring *s, unsigned int v)
{
    asm volatile("movl %1, (%0)\n\tlock addl $0, -4(%%rsp)" :: "r"(s), "r"(v) : "memory");
    return 0;
}
""")
    obj = tmp_path / "push.o"
    subprocess.run(["gcc", "-O2", "-c", "-o", obj, src], check=True)
    dis = subprocess.run(["objdump", "-d", "--no-show-raw-insn", obj], capture_output=True, text=True).stdout
    func = next(line for line in dis.splitlines() if line.endswith("<blkif_queue_rq>:"))
    start = int(func.split()[0], 16)
    store = next(line for line in dis.splitlines()[dis.splitlines().index(func):]
                 if "mov" in line and ",(%r" in line)
    assert layout.push_site(obj) == int(store.split(":")[0], 16) - start
    with pytest.raises(layout.LayoutError, match="no function"):
        layout.push_site(obj, function="missing")


@needs_gcc
def test_unlock_sites_are_the_calls_that_release_the_lock(tmp_path):
    """The offsets of every call to _raw_spin_unlock_irqrestore in the
    function, found through the call's relocation, and none elsewhere."""
    import subprocess

    from harness.capture import layout

    src = tmp_path / "unlock.c"
    src.write_text(r"""
void _raw_spin_lock_irqsave(void *l);
void _raw_spin_unlock_irqrestore(void *l, unsigned long f);
void other_call(void);
int blkif_queue_rq(void *lock, int busy)
{
    _raw_spin_lock_irqsave(lock);
    if (busy) { other_call(); _raw_spin_unlock_irqrestore(lock, 1); return 1; }
    other_call();
    _raw_spin_unlock_irqrestore(lock, 0);
    return 0;
}
int blkif_interrupt(void *lock) { other_call(); return 2; }
""")
    obj = tmp_path / "unlock.o"
    subprocess.run(["gcc", "-O2", "-fno-optimize-sibling-calls", "-c", "-o", obj, src], check=True)
    dis = subprocess.run(["objdump", "-dr", "--no-show-raw-insn", obj], capture_output=True, text=True).stdout
    lines = dis.splitlines()
    head = next(i for i, line in enumerate(lines) if line.endswith("<blkif_queue_rq>:"))
    start = int(lines[head].split()[0], 16)
    want = [int(lines[i - 1].split(":")[0], 16) - start for i in range(head, len(lines))
            if lines[i].strip().endswith("_raw_spin_unlock_irqrestore-0x4") and "<blkif_interrupt>:" not in lines[i]]
    assert len(want) == 2
    assert layout.unlock_sites(obj, "blkif_queue_rq") == want
    with pytest.raises(layout.LayoutError, match="at 0 sites"):
        layout.unlock_sites(obj, "blkif_interrupt")
