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
    """The commit measured: HEAD, `-dirty` when the working tree differs from it in a tracked
    file other than the benches' own results (a previous run's figures change nothing that is
    measured; the measuring code and everything a clone would miss do)."""
    head = ["git", "rev-parse", "--short=7", "HEAD"]
    changed = ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)bench/*results*"]
    done = subprocess.run(head, cwd=REPO, capture_output=True, text=True, check=True)
    dirty = subprocess.run(changed, cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
    return done.stdout.strip() + ("-dirty" if dirty else "")
