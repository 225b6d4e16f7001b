"""dvc.lock is the same on every CPython 3.11 this machine has: Debian's own `python3.11`
package (3.11.2) and the one first on PATH (3.11.7). Each builds its own venv from uv.lock in
a fresh clone and reproduces the pipeline from scratch, in a shell where nothing is activated."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from github import RUNNER_PATH, base_interpreter, machine_settings  # noqa: E402

pytestmark = pytest.mark.runner

DEBIAN_PYTHON = Path("/usr/bin/python3.11")


def interpreters() -> list[Path]:
    found = {base_interpreter()}
    if DEBIAN_PYTHON.exists():  # .ci/run installs Debian's python3.11 where it is missing
        found.add(DEBIAN_PYTHON.resolve())
    return sorted(found)


def version(python: Path) -> str:
    return subprocess.run(
        [str(python), "-c", "import platform; print(platform.python_version())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def uv(repo: Path) -> str:
    found = shutil.which("uv") or str(repo / ".tools" / "bin" / "uv")
    assert Path(found).exists(), "uv is installed by `make setup`"
    return found


def test_this_machine_has_two_patch_releases_to_compare():
    if not DEBIAN_PYTHON.exists():  # e.g. a GitHub runner image; .ci/run installs it here
        pytest.skip("only one CPython 3.11 on this machine: Debian's python3.11 is not installed")
    versions = {version(p) for p in interpreters()}
    assert len(versions) >= 2, versions


@pytest.mark.parametrize("python", interpreters(), ids=lambda p: version(p))
def test_a_fresh_clone_reproduces_the_committed_lock_on(python, repo, tmp_path):
    workspace = tmp_path / "repo"
    subprocess.run(["git", "clone", "-q", str(repo), str(workspace)], check=True)
    env = machine_settings() | {"PATH": RUNNER_PATH, "HOME": os.environ["HOME"], "LANG": "C.UTF-8"}
    env |= {"DVC_NO_ANALYTICS": "1", "AWS_EC2_METADATA_DISABLED": "true"}
    synced = subprocess.run(
        [uv(repo), "sync", "--locked", "--python", str(python)], cwd=workspace, env=env, capture_output=True, text=True
    )
    assert synced.returncode == 0, synced.stderr
    assert version(workspace / ".venv" / "bin" / "python") == version(python)
    committed = (workspace / "dvc.lock").read_text()
    done = subprocess.run([".venv/bin/dvc", "repro"], cwd=workspace, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (workspace / "dvc.lock").read_text() == committed
    assert subprocess.run(["git", "status", "--porcelain"], cwd=workspace, capture_output=True, text=True).stdout == ""
    lock = yaml.safe_load(committed)
    assert lock["stages"]["package"]["outs"]  # the package, which embeds the Python version, is among them
