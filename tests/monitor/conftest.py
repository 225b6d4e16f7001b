"""The monitor suite's shared project folder and command runner."""

from __future__ import annotations

import shutil

import pytest
from commands import run

from reprokit.core.artifacts import write_parquet


@pytest.fixture(scope="session")
def project(repo, tmp_path_factory, telco_splits, telco_package):
    """A project folder as `dvc repro` leaves it: contract, params, prepared splits, package,
    and the demo batches made by their command."""
    root = tmp_path_factory.mktemp("project")
    _, train, test, _ = telco_splits
    for name in ("dataset.yaml", "params.yaml"):
        shutil.copy(repo / name, root / name)
    (root / "data/prepared").mkdir(parents=True)
    write_parquet(train, root / "data/prepared/train.parquet")
    write_parquet(test, root / "data/prepared/test.parquet")
    shutil.copytree(telco_package, root / "models/package")
    done = run(root, "reprokit.stages.batches")
    assert done.returncode == 0, done.stderr
    return root
