"""What every benchmark report records about where it ran: the machine, the package versions, the source commit."""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def machine_info() -> dict:
    """Platform, CPU model, core count and the load average when the run started (machines here are shared)."""
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "load_average_at_start": [round(v, 2) for v in load] if load else None,
    }


def versions(dists: tuple[str, ...]) -> dict:
    """Python's version and each distribution's installed version (None where it is not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for dist in dists:
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = None
    return out


def source_state() -> str | None:
    """The checkout's commit, and which library files differ from it (others may edit them while a run measures)."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "runtime", "convert", "train"], cwd=ROOT, capture_output=True,
            text=True, check=False,
        )
    except OSError:
        return None
    if head.returncode != 0:
        return None
    changed = [line[3:] for line in dirty.stdout.splitlines()]
    return head.stdout.strip() + (f" with uncommitted changes in {', '.join(changed)}" if changed else "")
