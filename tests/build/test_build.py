import shutil
import subprocess
from pathlib import Path

import pytest

from harness.build import elfinfo, module_key, patches

REPO = Path(__file__).resolve().parents[2]
PATCH = REPO / "guest-kernel" / "patches" / "blkfront-indirect-16.patch"
ORIGINAL_LINES = [
    " * by the backend driver.",
    " */",
    "",
    "static unsigned int xen_blkif_max_segments = 32;",
    "module_param_named(max_indirect_segments, xen_blkif_max_segments, uint, 0444);",
    "MODULE_PARM_DESC(max_indirect_segments,",
    '\t\t "Maximum amount of segments in indirect requests (default is 32)");',
]


def fake_tree(tmp_path: Path, lines=ORIGINAL_LINES) -> Path:
    """A kernel-tree-shaped folder whose blkfront holds the lines the example
    patch touches, at the line numbers it names (135-141)."""
    f = tmp_path / "tree" / "drivers" / "block" / "xen-blkfront.c"
    f.parent.mkdir(parents=True)
    f.write_text("\n".join([f"/* line {i} */" for i in range(1, 135)] + lines) + "\n")
    return tmp_path / "tree"



def test_patch_applies_in_order(tmp_path):
    tree = fake_tree(tmp_path)
    patches.apply(tree, [PATCH])
    text = (tree / "drivers/block/xen-blkfront.c").read_text()
    assert "xen_blkif_max_segments = 16;" in text and "= 32;" not in text


def test_patch_that_does_not_apply_names_itself_and_quotes_patch(tmp_path):
    tree = fake_tree(tmp_path, [line.replace("= 32;", "= 64;") for line in ORIGINAL_LINES])
    with pytest.raises(patches.PatchError) as ei:
        patches.apply(tree, [PATCH])
    msg = ei.value.paragraph()
    assert str(PATCH) in msg
    assert "FAILED" in msg or "failed" in msg  # patch(1)'s own words
    assert ei.value.exit_code == 4   # deterministic: never retried


def test_module_key_tracks_source_patches_order_and_headers(tmp_path):
    p1, p2 = tmp_path / "1.patch", tmp_path / "2.patch"
    p1.write_text("one")
    p2.write_text("two")
    src = [("source", b"int x;")]
    base = module_key(src, [p1, p2], "6.1.0-56-amd64", "6.1.192-2", "obj-m := a.o\n")
    assert base == module_key(src, [p1, p2], "6.1.0-56-amd64", "6.1.192-2", "obj-m := a.o\n")
    assert base != module_key(src, [p2, p1], "6.1.0-56-amd64", "6.1.192-2", "obj-m := a.o\n")
    assert base != module_key([("source", b"int y;")], [p1, p2], "6.1.0-56-amd64", "6.1.192-2", "obj-m := a.o\n")
    assert base != module_key(src, [p1, p2], "6.1.0-57-amd64", "6.1.193-1", "obj-m := a.o\n")
    p1.write_text("one, edited")
    assert base != module_key(src, [p1, p2], "6.1.0-56-amd64", "6.1.192-2", "obj-m := a.o\n")


def test_note_blob_and_build_id_of_a_real_object(tmp_path):
    if not shutil.which("gcc"):
        pytest.fail("gcc is required (xenrig doctor installs it)")
    src = tmp_path / "t.c"
    src.write_text('const char *modinfo_like = "x";\nint main(void){return 0;}\n')
    exe = tmp_path / "t"
    subprocess.run(["gcc", "-Wl,--build-id=sha1", "-o", exe, src], check=True)
    bid = elfinfo.build_id(exe)
    assert bid and len(bid) == 40
    readelf = subprocess.run(["readelf", "-n", exe], capture_output=True, text=True).stdout
    assert bid in readelf
    # The kernel's /sys/module/*/notes/.note.gnu.build-id holds the raw note.
    raw = (4).to_bytes(4, "little") + (20).to_bytes(4, "little") + (3).to_bytes(4, "little") + b"GNU\0" + bytes.fromhex(bid)
    assert elfinfo.parse_note_blob(raw) == bid
    assert elfinfo.parse_note_blob(raw[:8]) is None
    assert elfinfo.parse_note_blob(raw[:8] + (1).to_bytes(4, "little") + raw[12:]) is None
