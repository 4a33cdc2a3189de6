"""Kernel modules: find them in a module tree and order them with their
dependencies (from the tree's modules.dep), so an initramfs can insmod them
in a plain loop without modprobe."""

from __future__ import annotations

from pathlib import Path

from harness.errors import InfraError


def _norm(name: str) -> str:
    return name.replace("-", "_")


def read_deps(moddir: Path) -> dict[str, list[str]]:
    """relpath -> dependency relpaths, as modules.dep says."""
    deps: dict[str, list[str]] = {}
    for line in (moddir / "modules.dep").read_text().splitlines():
        if ":" not in line:
            continue
        mod, rest = line.split(":", 1)
        deps[mod] = rest.split()
    return deps


def resolve(moddir: Path, names: list[str]) -> list[str]:
    """Relative paths of `names` and everything they need, dependencies first."""
    deps = read_deps(moddir)
    by_name = {}
    for rel in deps:
        base = Path(rel).name
        for suffix in (".ko", ".ko.xz", ".ko.zst", ".ko.gz"):
            if base.endswith(suffix):
                by_name[_norm(base[: -len(suffix)])] = rel
    order: list[str] = []

    def visit(rel: str, trail: tuple[str, ...]) -> None:
        if rel in order or rel in trail:
            return
        # modules.dep lists the full closure; visiting each keeps the order
        # right even if a tree lists it in an unusual order.
        for dep in deps.get(rel, []):
            visit(dep, trail + (rel,))
        order.append(rel)

    for name in names:
        rel = by_name.get(_norm(name))
        if rel is None:
            raise InfraError(f"image build: kernel module '{name}' is not in {moddir}",
                             hint="Check the module names in the image recipe under images/")
        visit(rel, ())
    return order
