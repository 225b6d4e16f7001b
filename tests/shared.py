"""What a test run builds once and its parallel workers share (pytest-xdist's recipe for costly
session fixtures): the first worker to ask builds it, the others wait for it, then read it."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from filelock import FileLock


def built_once(
    tmp_path_factory: pytest.TempPathFactory, worker_id: str, name: str, build: Callable[[Path], None]
) -> Path:
    """A folder `build(folder)` filled: this run's own, made by whichever worker comes first.

    Under xdist every worker's temporary folder sits in the run's folder, which no other run
    uses, so a second run beside this one builds its own. Without xdist it is the session's
    own folder. Users of the folder must not change it: copy it first."""
    if worker_id == "master":  # not under xdist
        folder = tmp_path_factory.mktemp(name)
        build(folder)
        return folder
    run = tmp_path_factory.getbasetemp().parent
    folder, done = run / name, run / f"{name}.done"
    with FileLock(run / f"{name}.lock"):  # released on leaving, or when the worker dies
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)  # what a worker that failed midway left
            folder.mkdir()
            build(folder)
            done.touch()
    return folder
