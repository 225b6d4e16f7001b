"""dvc.lock is the same on every CPython 3.11 this machine has, Debian's own `python3.11`
package (3.11.2) and the one first on PATH (3.11.7, whose `uv sync` the pipeline workflow's
reproducibility job makes in test_pipeline_reproducibility.py), and whichever installer made the
environment: `uv sync` (no pip, setuptools or wheel of its own) or a plain `python -m venv`
and `pip install` of the exported runtime lock (pip, and a venv's own setuptools). Each builds
its own venv in a fresh clone and reproduces the pipeline from scratch, in a shell where
nothing is activated."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from commands import uv  # noqa: E402
from github import RUNNER_PATH, base_interpreter, machine_settings, without_bytecode  # noqa: E402

from reprokit.core.lockfile import RUNTIME_LOCK  # noqa: E402

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


def runner_env() -> dict[str, str]:
    env = machine_settings() | {"PATH": RUNNER_PATH, "HOME": os.environ["HOME"], "LANG": "C.UTF-8"}
    return env | {"DVC_NO_ANALYTICS": "1", "AWS_EC2_METADATA_DISABLED": "true"}


def fresh_clone(repo: Path, tmp_path: Path) -> Path:
    workspace = tmp_path / "repo"
    subprocess.run(["git", "clone", "-q", str(repo), str(workspace)], check=True)
    return workspace


def assert_reproduces_the_committed_lock(workspace: Path, env: dict[str, str]) -> None:
    """`.venv/bin/dvc repro` from scratch writes exactly the committed dvc.lock, package included."""
    committed = (workspace / "dvc.lock").read_text()
    done = subprocess.run([".venv/bin/dvc", "repro"], cwd=workspace, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (workspace / "dvc.lock").read_text() == committed
    assert subprocess.run(["git", "status", "--porcelain"], cwd=workspace, capture_output=True, text=True).stdout == ""
    lock = yaml.safe_load(committed)
    assert lock["stages"]["package"]["outs"]  # the package, which embeds the Python version and its environment


def test_this_machine_has_two_patch_releases_to_compare():
    # Skipped on a GitHub runner image without Debian's python3.11 (.ci/run installs it), and
    # where uv made the test venv from Debian's python3.11 itself.
    if len(interpreters()) < 2:
        pytest.skip("one interpreter to compare: the test venv's base, and Debian's python3.11 is it or missing")
    versions = {version(p) for p in interpreters()}
    assert len(versions) >= 2, versions


def other_interpreters() -> list[Path]:
    """Those besides setup-python's: the pipeline workflow's reproducibility job, run step by step
    in test_pipeline_reproducibility.py, already makes a fresh clone's venv with that one and reproduces the
    committed lock in it."""
    return [p for p in interpreters() if p != base_interpreter()] or [
        pytest.param(None, marks=pytest.mark.skip(reason="no CPython 3.11 here besides setup-python's"))
    ]


@pytest.mark.parametrize("python", other_interpreters(), ids=lambda p: version(p) if p else "none")
def test_a_fresh_clone_reproduces_the_committed_lock_on(python, repo, tmp_path):
    workspace = fresh_clone(repo, tmp_path)
    env = runner_env() | without_bytecode(workspace, tmp_path / "uv-config", os.environ["HOME"])
    synced = subprocess.run(
        [uv(repo), "sync", "--locked", "--python", str(python)], cwd=workspace, env=env, capture_output=True, text=True
    )
    assert synced.returncode == 0, synced.stderr
    assert version(workspace / ".venv" / "bin" / "python") == version(python)
    assert_reproduces_the_committed_lock(workspace, env)


def test_a_pip_made_venv_reproduces_the_committed_lock(repo, tmp_path):
    """The environment a user without uv makes: `python -m venv`, then pip installs the exported
    runtime lock and the project. It has pip (uv's has none) and a venv's setuptools before
    the lock's replaces it; the package's python_env.yaml must not see either."""
    workspace = fresh_clone(repo, tmp_path)
    env = runner_env()
    subprocess.run([str(base_interpreter()), "-m", "venv", ".venv"], cwd=workspace, env=env, check=True)
    # --no-compile: bytecode is not under test; compiling every installed module was 30 of pip's 120 CPU-seconds.
    pip = [".venv/bin/python", "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-compile"]
    for args in (["-r", RUNTIME_LOCK], ["--no-deps", "-e", "."]):
        installed = subprocess.run([*pip, *args], cwd=workspace, env=env, capture_output=True, text=True)
        assert installed.returncode == 0, installed.stdout[-3000:] + installed.stderr[-3000:]
    has_pip = subprocess.run(
        [".venv/bin/python", "-c", "from importlib.metadata import version; print(version('pip'))"],
        cwd=workspace,
        capture_output=True,
        text=True,
    )
    assert has_pip.returncode == 0 and has_pip.stdout.strip(), "a pip-made venv has pip: the case under test"
    assert_reproduces_the_committed_lock(workspace, env)
