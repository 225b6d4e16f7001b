"""Fixtures for the end-to-end suite."""

from __future__ import annotations

import pytest

from dvcclone import new_clone


@pytest.fixture(scope="module")
def make_clone(tmp_path_factory, repo):
    """Clone the committed state of this repository; stage code runs from the clone's src/."""
    return lambda name: new_clone(repo, tmp_path_factory.mktemp(name) / "repo")
