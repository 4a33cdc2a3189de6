"""Render a report.html in Debian's headless Chromium, as a person would
open it, and return what a test needs: the DOM after rendering and any
console errors."""

import re
import subprocess
import tempfile
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--enable-logging=stderr", "--v=0"]


def render(html: Path) -> tuple[str, list[str]]:
    with tempfile.TemporaryDirectory(prefix="xenrig-chromium-") as profile:
        proc = subprocess.run(["chromium", *FLAGS, f"--user-data-dir={profile}", "--dump-dom", html.resolve().as_uri()],
                              capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    console = [line for line in proc.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    return proc.stdout, console


def plots(dom: str) -> dict[str, bool]:
    """data-plot name -> whether it holds a drawn SVG."""
    out = {}
    for m in re.finditer(r'<div class="plot" data-plot="([^"]+)">(.*?)</div>', dom, re.S):
        out[m.group(1)] = "<svg" in m.group(2) and "<path" in m.group(2)
    return out
