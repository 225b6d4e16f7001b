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

from pathlib import Path

import numpy as np
import pandas as pd

from reprokit.core.errors import StageError
from reprokit.core.threads import thread_budget
from reprokit.model.trust import load_skops


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
