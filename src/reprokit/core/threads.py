"""The thread budget: every prediction and fit runs under a fixed number of OpenMP and BLAS
threads (`base.n_threads` for tables, `serve.n_threads` for the service). Unbounded OpenMP
threads make single-row predictions many times slower on a busy machine, and a parallel sum
rounds differently with another thread count."""

from __future__ import annotations

import contextlib
from typing import Iterator

from reprokit.core.errors import StageError


@contextlib.contextmanager
def thread_budget(n_threads: int, exact: bool = False) -> Iterator[None]:
    """Limit OpenMP and BLAS thread pools to `n_threads` for the duration of the block.

    scikit-learn's OpenMP code runs min(limit, cores) threads unless `OMP_NUM_THREADS` is
    set. `exact` sets it for the block, so a fit runs exactly `n_threads` threads on any
    machine: gradient boosting stores that count in its bytes, and its root gradient sum is
    a parallel reduction whose rounding depends on it. Predictions need no `exact`: each
    row's probability is computed by one thread, whatever their number."""
    from threadpoolctl import threadpool_limits

    if isinstance(n_threads, bool) or not isinstance(n_threads, int) or n_threads < 1:
        raise StageError(f"params.yaml: base.n_threads must be a whole number of at least 1, got {n_threads!r}")

    with threadpool_limits(limits=n_threads), _omp_num_threads(n_threads if exact else None):
        yield


@contextlib.contextmanager
def _omp_num_threads(n_threads: int | None) -> Iterator[None]:
    """`OMP_NUM_THREADS` set to `n_threads` for the block; unchanged when None or 1 (one
    thread is one thread on any machine). The environment is the whole process's: only a
    fit that runs alone in its process (the train stage's `estimators.fit`) may use it."""
    import os

    previous = os.environ.get("OMP_NUM_THREADS")
    if n_threads is None or n_threads == 1 or previous == str(n_threads):
        yield
        return
    os.environ["OMP_NUM_THREADS"] = str(n_threads)
    try:
        yield
    finally:
        if previous is None:
            del os.environ["OMP_NUM_THREADS"]
        else:
            os.environ["OMP_NUM_THREADS"] = previous


def limit_threads(n_threads: int) -> None:
    """The thread budget for the whole process (OpenMP and BLAS pools)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=n_threads)
