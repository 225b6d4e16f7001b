"""What every bench records beside its figures: the machine it ran on and the commit it
measured. Standard library only: `bench/test_suite.py` runs under the system `python3`."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def machine() -> dict[str, object]:
    """Cores, memory, Python and platform of this machine."""
    return {
        "cores": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def commit(cloned: bool = False) -> str:
    """The commit a bench measured. A bench that clones the repository measures HEAD itself
    (`cloned`): local changes, such as a previous run's results, do not reach the clone. The
    others measure this checkout: HEAD, `-dirty` when the working tree differs from it."""
    command = (
        ["git", "rev-parse", "--short=7", "HEAD"]
        if cloned
        else ["git", "describe", "--always", "--dirty", "--abbrev=7"]
    )
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=True)
    return done.stdout.strip()
