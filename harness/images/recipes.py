"""Image recipes (images/*.yaml) as typed objects, and their cache keys."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from harness.config.loader import load
from harness.images.cache import builder_parts, key_of
from harness.paths import repo_root


@dataclass
class XenRecipe:
    package: str
    file: str


@dataclass
class Dom0Recipe:
    suite: str
    kernel: str
    packages: list[str]
    initramfs_modules: list[str]
    free_space_mib: int = field(default=256, metadata={"min": 16, "max": 65536})


@dataclass
class GuestRecipe:
    kernel: str
    busybox: str
    modules: list[str] = field(default_factory=list)


def images_dir() -> Path:
    return repo_root() / "images"


def load_recipe(name: str, cls: type):
    return load(images_dir() / f"{name}.yaml", cls)


def tree_parts(root: Path, prefix: str) -> list[tuple[str, bytes]]:
    """(name, content) of every file under `root`, modes included: an init
    script that loses its executable bit must change the key too."""
    parts = []
    for p in sorted(root.rglob("*")):
        if p.is_file():
            mode = oct(p.stat().st_mode & 0o777).encode()
            parts.append((f"{prefix}/{p.relative_to(root)}", p.read_bytes() + b"\0" + mode))
    return parts


def cache_key(name: str, *, files: list[Path], trees: list[Path], builder: Path, extra: dict[str, str]) -> str:
    parts: list[tuple[str, bytes]] = builder_parts(builder)
    for f in files:
        parts.append((f"file/{f.name}", f.read_bytes()))
    for t in trees:
        parts += tree_parts(t, f"tree/{t.name}")
    for k, v in extra.items():
        parts.append((f"extra/{k}", v.encode()))
    return key_of(parts)
