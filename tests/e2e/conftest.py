"""Fixtures for the end-to-end suite."""

from __future__ import annotations

import pytest

from dvcclone import copy_clone, new_clone
from servers import moto_s3


@pytest.fixture(scope="module")
def make_clone(tmp_path_factory, repo):
    """Clone the committed state of this repository; stage code runs from the clone's src/."""
    return lambda name: new_clone(repo, tmp_path_factory.mktemp(name) / "repo")


@pytest.fixture(scope="session")
def reproduced(tmp_path_factory, repo):
    """A fresh clone after a full `dvc repro`: copy it with `copy_of` instead of reproducing again."""
    clone = new_clone(repo, tmp_path_factory.mktemp("reproduced") / "repo")
    clone.dvc("repro")
    return clone


@pytest.fixture()
def copy_of(tmp_path_factory, reproduced):
    return lambda name: copy_clone(reproduced, tmp_path_factory.mktemp(name) / "repo")


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory):
    """A real moto S3 server on 127.0.0.1 for the whole session."""
    with moto_s3(log=tmp_path_factory.mktemp("moto") / "moto.log") as endpoint:
        yield endpoint
