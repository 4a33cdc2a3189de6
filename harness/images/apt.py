"""Debian packages from the host's own apt configuration.

The images are built from the same Debian mirror the host already uses: the
mirror is read from the host's apt sources at build time, never written into
the repository, so xenrig works behind whatever mirror a site has.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path

from harness import paths, proc
from harness.errors import HostSetupError

APT_DIR = Path("/etc/apt")
LISTS_DIR = Path("/var/lib/apt/lists")


def _apt_state() -> str:
    """What apt's answers depend on: its package lists and configuration.
    Any 'apt-get update' or sources change changes some file's mtime here."""
    h = hashlib.sha256()
    for d in (LISTS_DIR, APT_DIR, APT_DIR / "sources.list.d", APT_DIR / "preferences.d"):
        try:
            entries = sorted(os.scandir(d), key=lambda e: e.name)
        except OSError:
            continue
        for e in entries:
            with_stat = e.stat(follow_symlinks=True) if e.is_file() else None
            if with_stat:
                h.update(f"{d}/{e.name}:{with_stat.st_size}:{with_stat.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _ask(cmd: list[str], what: str) -> str:
    """apt-cache's answer, remembered while apt's state is unchanged: each
    call loads apt's whole cache (about a second), and every run asks the
    same questions to compute the images' keys."""
    memo = paths.cache_dir() / "apt-answers.json"
    state = _apt_state()
    try:
        saved = json.loads(memo.read_text())
    except (OSError, ValueError):
        saved = {}
    if saved.get("state") != state:
        saved = {"state": state, "answers": {}}
    key = "\0".join(cmd)
    if key in saved["answers"]:
        return saved["answers"][key]
    out = proc.run(cmd, timeout_s=60, what=what).stdout.decode()
    saved["answers"][key] = out
    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=memo.parent, prefix=".apt-answers.")
        with os.fdopen(fd, "w") as fh:
            json.dump(saved, fh)
        os.replace(tmp, memo)
    except OSError:
        pass        # only a memo
    return out


def debian_source_lines(suite: str, apt_dir: Path = APT_DIR) -> list[str]:
    """One-line `deb ...` entries for `suite` (and its -updates/-security) that
    the host's apt configuration points at a Debian archive."""
    entries: list[tuple[str, str, str, str]] = []  # (options, uri, suite, components)
    files = sorted((apt_dir / "sources.list.d").glob("*")) if (apt_dir / "sources.list.d").is_dir() else []
    if (apt_dir / "sources.list").exists():
        files.insert(0, apt_dir / "sources.list")
    for path in files:
        try:
            text = path.read_text()
        except OSError:
            continue
        if path.suffix == ".sources":
            entries += _parse_deb822(text)
        elif path.suffix == ".list" or path.name == "sources.list":
            entries += _parse_one_line(text)
    lines = []
    for options, uri, dist, comps in entries:
        if not dist.split("/")[0].split("-")[0] == suite:
            continue
        if "debian" not in uri:
            continue
        line = f"deb {options + ' ' if options else ''}{uri} {dist} {comps}"
        if line not in lines:
            lines.append(line)
    if not lines:
        raise HostSetupError(
            f"no Debian '{suite}' archive found in the host's apt sources ({apt_dir}/sources.list, sources.list.d/)",
            hint=f"Add the Debian {suite} mirror your site uses to the host's apt sources, then run 'apt-get update'",
        )
    return lines


def _parse_one_line(text: str) -> list[tuple[str, str, str, str]]:
    out = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line.startswith("deb "):
            continue
        options = ""
        m = re.match(r"deb\s+(\[[^\]]*\])\s+(.*)", line)
        rest = line[4:].split()
        if m:
            options, rest = m.group(1), m.group(2).split()
        if len(rest) >= 3:
            out.append((options, rest[0], rest[1], " ".join(rest[2:])))
    return out


def _parse_deb822(text: str) -> list[tuple[str, str, str, str]]:
    out = []
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for raw in stanza.splitlines():
            if raw.startswith("#") or ":" not in raw:
                continue
            k, v = raw.split(":", 1)
            fields[k.strip().lower()] = v.strip()
        if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes") == "no":
            continue
        opts = []
        if "signed-by" in fields:
            opts.append(f"signed-by={fields['signed-by']}")
        options = f"[{' '.join(opts)}]" if opts else ""
        for uri in fields.get("uris", "").split():
            for dist in fields.get("suites", "").split():
                out.append((options, uri, dist, fields.get("components", "main")))
    return out


def candidate_versions(packages: list[str]) -> dict[str, str]:
    """The version apt would install now for each package (one apt-cache call)."""
    out = _ask(["apt-cache", "policy", *packages], "asking apt for package versions")
    versions: dict[str, str] = {}
    current = None
    for line in out.splitlines():
        if line and not line.startswith(" ") and line.endswith(":"):
            current = line[:-1]
        elif current and line.strip().startswith("Candidate:"):
            versions[current] = line.split(":", 1)[1].strip()
    missing = [p for p in packages if versions.get(p) in (None, "(none)")]
    if missing:
        raise HostSetupError(
            f"apt knows no installable version of {', '.join(missing)}",
            hint="Run 'apt-get update' (the package lists may be missing or stale)",
        )
    return versions


def resolve_kernel(metapackage: str) -> str:
    """The concrete linux-image-ABI package a metapackage such as
    linux-image-amd64 depends on now (e.g. linux-image-6.1.0-56-amd64)."""
    out = _ask(["apt-cache", "depends", metapackage], f"resolving {metapackage}")
    for line in out.splitlines():
        m = re.match(r"\s*Depends:\s*(linux-image-\S+)", line)
        if m:
            return m.group(1)
    raise HostSetupError(f"apt could not resolve {metapackage} to a kernel package", hint="Run 'apt-get update'")


def download(packages: list[str], dest: Path, log: Path | None = None) -> list[Path]:
    """Fetch .deb files into `dest` without installing them on the host."""
    dest.mkdir(parents=True, exist_ok=True)
    proc.run(["apt-get", "download", *packages], cwd=dest, timeout_s=900, log=log,
             what=f"downloading {', '.join(packages)}", hint="Check the apt mirror; 'apt-get update' may help")
    debs = []
    for pkg in packages:
        found = sorted(dest.glob(f"{pkg}_*.deb"))
        if not found:
            raise HostSetupError(f"apt-get download reported success but left no {pkg}_*.deb in {dest}")
        debs.append(found[-1])
    return debs


def extract(deb: Path, dest: Path, log: Path | None = None) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    proc.run(["dpkg-deb", "-x", deb, dest], timeout_s=300, log=log, what=f"unpacking {deb.name}")
