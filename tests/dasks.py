"""Real Dask clusters for tests: a `LocalCluster` of worker processes on 127.0.0.1."""

from __future__ import annotations

import contextlib
from typing import Iterator


@contextlib.contextmanager
def local_cluster(workers: int = 2, env: dict[str, str] | None = None) -> Iterator:
    """`workers` worker processes of one thread each (with `env` in their environment), no
    dashboard; closing it stops the workers and the scheduler."""
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        env=env or {},
    ) as cluster:
        yield cluster


def executed(cluster) -> dict[str, int]:
    """Tasks each worker of the cluster has executed so far."""
    from distributed import Client

    with Client(cluster) as client:
        return client.run(lambda dask_worker: dask_worker.state.executed_count)


def worker_state(cluster, function) -> dict[str, object]:
    """`function()` run in each worker process."""
    from distributed import Client

    with Client(cluster) as client:
        return client.run(function)
