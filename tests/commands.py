"""Run the project's commands as a user does: `python -m MODULE ARGS` in a project folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

# A subprocess's limit only catches a hang: the verdict never depends on how busy the machine
# is. A full `dvc repro` takes about 30 s alone and several minutes beside a second test run on
# these two cores; 30 minutes is far beyond both and inside the 90 minutes the project's CI
# gives `.ci/run` (the GitHub workflow's test job allows 60: there a hang late in the run meets
# the job's limit first).
HANG_S = 1800


def run(cwd: Path, module: str, *args, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m MODULE ARGS` in `cwd`, with `env` added to this environment."""
    return subprocess.run(
        [sys.executable, "-m", module, *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=HANG_S,
        env={**os.environ, **(env or {})},
    )


def uv(repo: Path) -> str:
    """The uv binary `make setup` uses: the one on PATH, else the one it put in `.tools/`."""
    found = shutil.which("uv") or str(repo / ".tools" / "bin" / "uv")
    assert Path(found).exists(), "uv is installed by `make setup`"
    return found
