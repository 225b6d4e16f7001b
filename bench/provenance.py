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


def commit() -> str:
    """The repository's HEAD, `-dirty` when the working tree differs from it: the benches that
    clone the repository measure HEAD, the others this checkout."""
    done = subprocess.run(
        ["git", "describe", "--always", "--dirty", "--abbrev=7"], cwd=REPO, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()
