"""Fixtures for the end-to-end suite."""

from __future__ import annotations

import pytest
from dvcclone import copy_clone, new_clone, ran_stages
from servers import moto_s3
from synthetic import make_loans


@pytest.fixture(scope="module")
def make_clone(tmp_path_factory, repo):
    """Clone the committed state of this repository; stage code runs from the clone's src/."""
    return lambda name: new_clone(repo, tmp_path_factory.mktemp(name) / "repo")


@pytest.fixture()
def copy_of(tmp_path_factory, reproduced):
    return lambda name: copy_clone(reproduced, tmp_path_factory.mktemp(name) / "repo")


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory):
    """A real moto S3 server on 127.0.0.1 for the whole session."""
    with moto_s3(log=tmp_path_factory.mktemp("moto") / "moto.log") as endpoint:
        yield endpoint


def readme_contract(root) -> str:
    """The `dataset.yaml` the README's "Use your own data" section shows, as written."""
    section = (root / "README.md").read_text().split("## Use your own data", 1)[1]
    return section.split("```yaml\n", 1)[1].split("```", 1)[0]


@pytest.fixture(scope="session")
def own_data():
    """The README's own-data flow on a clone, as written: the synthetic loans table, the
    README's `dataset.yaml`, `dvc repro`, which runs every stage (or `ran`, those the run-cache
    does not serve)."""

    def run(
        clone, ran: tuple[str, ...] = ("prepare", "featurize", "train", "evaluate", "package", "batches", "monitor")
    ):
        (clone.root / "data/raw").mkdir(parents=True, exist_ok=True)
        make_loans(600).to_csv(clone.root / "data/raw/loans.csv", index=False)
        (clone.root / "dataset.yaml").write_text(readme_contract(clone.root))
        done = clone.dvc("repro")
        assert tuple(ran_stages(done.stdout)) == ran

    return run
