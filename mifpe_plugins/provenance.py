"""Where a number came from: the one record every report and benchmark writes beside its results."""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import torch

__all__ = ["provenance", "git_commit", "cpu_model"]

#: Distributions whose versions change the numbers a report holds, when installed.
_LIBRARIES = ("torch", "numpy", "torchattacks", "foolbox", "adversarial-robustness-toolbox", "pyautoattack",
              "autoattack", "robustbench")


def provenance(command: str = "") -> dict:
    """The command, code, machine, libraries and date of a run, JSON-ready.

    ``commit`` carries ``+dirty`` when the checkout has uncommitted changes (the numbers are then
    not the commit's); it is ``None`` outside a git checkout (an installed wheel).
    """
    from . import __version__

    return {
        "command": command,
        "mifpe_plugins": __version__,
        "commit": git_commit(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{cpu_model()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, "
                   f"{platform.system()}",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "libraries": _library_versions(),
    }


def git_commit() -> str | None:
    """The short commit of the checkout this package runs from, ``+dirty`` if it has changes."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "-C", str(here), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=5, check=True)
        status = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+dirty" if status.stdout.strip() else "")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _library_versions() -> dict[str, str]:
    versions = {}
    for name in _LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions
