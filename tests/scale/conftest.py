"""The scale suite's Dask cluster: a real `LocalCluster` of two worker processes."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def cluster():
    """Two worker processes, one thread each, on 127.0.0.1; closed (workers stopped) after."""
    from dasks import local_cluster

    with local_cluster() as local:
        yield local
