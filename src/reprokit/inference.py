"""The inference pipeline every stage and command that predicts shares.

Model inputs are the contract's raw feature columns; the pipeline is the fitted
transformer followed by the fitted model; every prediction runs under a fixed thread
budget: `base.n_threads` for tables (the limit training uses), `serve.n_threads` for
the service's single rows. Unbounded OpenMP threads make single-row predictions many
times slower on a busy machine, and a model
whose prediction is parallel across estimators (a random forest with `n_jobs > 1`)
sums in a varying order, so its probabilities would differ from call to call.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from reprokit.stage import StageError
from reprokit.trust import load_skops


def inputs_of(frame: pd.DataFrame, contract) -> pd.DataFrame:
    """The model's raw input columns, in contract order, with nullable ints as floats."""
    missing = [name for name in contract.feature_names if name not in frame.columns]
    if missing:
        raise StageError(f"input table lacks the contract's feature column(s) {missing}")
    features = frame[contract.feature_names].copy()
    for name in contract.names_of("integer", "binary"):
        if pd.api.types.is_integer_dtype(features[name]):
            features[name] = features[name].astype("float64")
    return features


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


def load_pipeline(transformer_path: str | Path, model_path: str | Path):
    """The inference pipeline: fitted transformer then fitted model."""
    from sklearn.pipeline import Pipeline

    return Pipeline([("features", load_skops(transformer_path)), ("model", load_skops(model_path))])


def predict_proba(pipeline, inputs: pd.DataFrame, n_threads: int) -> np.ndarray:
    """Positive-class probabilities of the fitted pipeline, under the thread budget."""
    with thread_budget(n_threads):
        return pipeline.predict_proba(inputs)[:, 1]


def served_proba(model, inputs: pd.DataFrame, n_threads: int) -> np.ndarray:
    """Positive-class probabilities of a packaged model loaded with `mlflow.pyfunc`
    (its `predict` returns both columns), under the thread budget."""
    with thread_budget(n_threads):
        return np.asarray(model.predict(inputs))[:, 1]
