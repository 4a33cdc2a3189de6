"""Guest modules built from source: blkfront (the guest kernel's own
xen-blkfront.c, plus the scenario's patches) and our grant-table exerciser.

Builds are out of tree against the guest kernel's headers and cached by the
hash of source + patches (in order) + headers version + build recipe; the
report names the source, the patches and the build id of what was loaded.
"""

from __future__ import annotations

import shlex

import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from harness import paths
from harness.build import elfinfo, kbuild, kernel_source, patches
from harness.config import ModulesConfig, ModuleSpec
from harness.errors import ConfigError, InfraError
from harness.images.cache import Store, builder_parts, key_of, sha256_file
from harness.images.recipes import tree_parts
from harness.stages import Timeline

BLKFRONT_FILE = "drivers/block/xen-blkfront.c"
# Our own modules: role -> (source folder, kernel module name)
OWN_MODULES = {
    "exerciser": (paths.repo_root() / "guest-kernel" / "xenrig_gnttab", "xenrig_gnttab"),
    "tracer": (paths.repo_root() / "guest-kernel" / "xenrig_trace", "xenrig_trace"),
}


@dataclass
class BuiltModule:
    role: str                 # blkfront | exerciser | tracer
    name: str                 # as the kernel calls it (/sys/module/<name>)
    ko: Path
    build_id: str
    srcversion: str | None
    vermagic: str
    source: dict
    patches: list[dict] = field(default_factory=list)
    params: dict[str, str] = field(default_factory=dict)
    reused: bool = False
    build_s: float = 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ko"] = str(self.ko)
        return d

    def insmod_args(self) -> str:
        return " ".join(shlex.quote(f"{k}={v}") for k, v in sorted(self.params.items()))


def _blkfront_source(spec: ModuleSpec, store: Store, guest_meta: dict, log: Path) -> tuple[Path, dict]:
    """(a tree holding drivers/block/xen-blkfront.c, a description of it)."""
    if spec.source in ("default", "debian"):
        kver = guest_meta["kernel_version"]
        pkg_version = guest_meta["versions"][guest_meta["kernel_package"]]
        art = kernel_source.ensure(store, kver, pkg_version, [BLKFRONT_FILE], log)
        f = art.file(f"tree/{BLKFRONT_FILE}")
        return art.path / "tree", {"kind": "debian", "package": art.meta["package"], "version": art.meta["version"],
                                   "file": BLKFRONT_FILE, "sha256": sha256_file(f)}
    p = Path(spec.source).expanduser()
    if p.is_dir():
        if not (p / BLKFRONT_FILE).is_file():
            raise ConfigError(f"modules.blkfront.source: {p} is a folder without {BLKFRONT_FILE}",
                              hint="Give a kernel tree, the .c file itself, or 'debian'")
        return p, {"kind": "tree", "path": str(p), "file": BLKFRONT_FILE, "sha256": sha256_file(p / BLKFRONT_FILE)}
    if p.is_file():
        return p, {"kind": "file", "path": str(p), "sha256": sha256_file(p)}
    raise ConfigError(f"modules.blkfront.source: '{spec.source}' is neither 'debian' nor an existing file or folder")


def module_key(source_parts: list[tuple[str, bytes]], patch_files: list[Path], kver: str,
               headers_version: str, kbuild_text: str) -> str:
    """The cache key of a module build: its sources, its patches in order,
    the headers it builds against, the Kbuild recipe and this builder."""
    parts = list(source_parts)
    parts += [(f"patch{i}", p.read_bytes()) for i, p in enumerate(patch_files)]
    parts += [("headers", f"{kver} {headers_version}".encode()), ("kbuild", kbuild_text.encode())]
    parts += builder_parts(Path(__file__))
    return key_of(parts)


def _build_one(role: str, spec: ModuleSpec, store: Store, guest_meta: dict, log: Path) -> BuiltModule:
    kver = guest_meta["kernel_version"]
    headers_version = guest_meta["versions"][guest_meta["kernel_package"]]
    if role == "blkfront":
        src, desc = _blkfront_source(spec, store, guest_meta, log)
        src_file = src / BLKFRONT_FILE if src.is_dir() else src
        parts = [("source", src_file.read_bytes())]
        kbuild_text, modname, ko_name = "obj-m := xen-blkfront.o\n", "xen_blkfront", "xen-blkfront.ko"
    else:
        default_dir, modname = OWN_MODULES[role]
        src = default_dir if spec.source in ("default", "builtin") else Path(spec.source).expanduser()
        if not (src / "Kbuild").is_file():
            raise ConfigError(f"modules.{role}.source: {src} has no Kbuild file")
        desc = {"kind": "builtin" if src == default_dir else "folder", "path": str(src)}
        parts = tree_parts(src, role)
        parts = [(n, d) for n, d in parts if n.endswith((".c", ".h", "Kbuild"))]
        desc["sha256"] = key_of(parts)
        kbuild_text, ko_name = None, f"{modname}.ko"
    patch_desc = [{"name": str(p), "sha256": sha256_file(p)} for p in spec.patches]
    key = module_key(parts, spec.patches, kver, headers_version, kbuild_text or "")

    def build(out: Path) -> dict:
        started = time.monotonic()
        headers = kbuild.headers_dir(kver, log)
        work = out / "scratch" / "tree"
        if role == "blkfront":
            target = work / BLKFRONT_FILE
            target.parent.mkdir(parents=True)
            shutil.copy(src_file, target)
            patches.apply(work, spec.patches)
            build_dir = target.parent
            (build_dir / "Kbuild").write_text(kbuild_text)
        else:
            shutil.copytree(src, work)
            patches.apply(work, spec.patches)
            build_dir = work
        kbuild.make_modules(headers, build_dir, log, f"{role} ({ko_name})")
        shutil.copy(build_dir / ko_name, out / ko_name)
        return {"build_s": round(time.monotonic() - started, 2)}

    art = store.ensure(f"module-{role}", key, build)
    ko = art.file(ko_name)
    info = elfinfo.modinfo(ko)
    bid = elfinfo.build_id(ko)
    if not bid:
        raise InfraError(f"the built {ko_name} has no GNU build id note; cannot prove what gets loaded")
    return BuiltModule(role=role, name=modname, ko=ko, build_id=bid, srcversion=info.get("srcversion"),
                       vermagic=info.get("vermagic", ""), source=desc, patches=patch_desc, params=dict(spec.params),
                       reused=art.reused, build_s=art.meta.get("build_s", 0.0))


def ensure(cfg: ModulesConfig, guest_meta: dict, timeline: Timeline, log_dir: Path,
           capture: bool = False) -> list[BuiltModule]:
    """Build (or reuse) the scenario's modules; the tracer only when it captures."""
    store = Store(paths.cache_dir())
    log_dir.mkdir(parents=True, exist_ok=True)
    built = []
    with timeline.stage("build guest modules"):
        for role in ("blkfront", "exerciser", "tracer"):
            spec: ModuleSpec = getattr(cfg, role)
            if not spec.enabled or (role == "tracer" and not capture):
                continue
            m = _build_one(role, spec, store, guest_meta, log_dir / f"build-{role}.log")
            timeline.note(f"{role}: {m.name} build id {m.build_id[:12]} "
                          f"({'cached' if m.reused else f'built in {m.build_s:.1f}s'}; "
                          f"{len(m.patches)} patch{'es' if len(m.patches) != 1 else ''})")
            built.append(m)
    return built
