"""The packaged pipeline's feature transformation, compiled to a few array operations.

scikit-learn's `ColumnTransformer` with pandas output costs about 9 ms per call whatever
the number of rows (per-column pandas work, validation, output wrapping), five times the
gradient boosting's own cost for one row. A scoring service pays that on every request.
`compile_pipeline` reads the fitted parameters of the transformer `featurize` builds
(median/mean imputation and standardization of numbers, one-hot encoding of categories,
most-frequent imputation and optional encoding of binaries) and applies the same float64
operations in the same order, so the features and then the probabilities are bit-for-bit
those of `pipeline.predict_proba`. It is used only after `verify` has shown that on probe
records (the contract's every value, nulls, unknown categories, out-of-range numbers);
anything it does not recognise compiles to None and the scikit-learn pipeline is used.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Callable

import numpy as np
import pandas as pd


@dataclasses.dataclass
class CompiledPipeline:
    """Features as one float64 matrix, then the fitted model's `predict_proba` on it."""

    steps: list[Callable[[pd.DataFrame, np.ndarray, int], int]]
    width: int
    model: Any

    def features(self, inputs: pd.DataFrame) -> np.ndarray:
        # Column-major, as scikit-learn gets it from the transformer's pandas output: a linear
        # model's matrix product then sums in the same order, to the last bit.
        out = np.empty((len(inputs), self.width), dtype="float64", order="F")
        start = 0
        for step in self.steps:
            start = step(inputs, out, start)
        return out

    def predict_proba(self, inputs: pd.DataFrame) -> np.ndarray:
        with warnings.catch_warnings():  # the model was fitted on named columns; these are the same, in order
            warnings.filterwarnings("ignore", message="X does not have valid feature names")
            return self.model.predict_proba(self.features(inputs))


def _numbers(columns: list[str], fill: np.ndarray, mean: np.ndarray | None, scale: np.ndarray | None):
    def step(inputs: pd.DataFrame, out: np.ndarray, start: int) -> int:
        for j, name in enumerate(columns):
            column = inputs[name].to_numpy(dtype="float64", na_value=np.nan)
            column = np.where(np.isnan(column), fill[j], column)
            if mean is not None:
                column = column - mean[j]
            if scale is not None:
                column = column / scale[j]
            out[:, start + j] = column
        return start + len(columns)

    return step


def _one_hot(columns: list[str], categories: list[np.ndarray], drop_first: bool, fill: np.ndarray | None):
    indexes = [pd.Index(cats, dtype=object) for cats in categories]
    lookups = [{cat: code for code, cat in enumerate(cats)} for cats in categories]

    def step(inputs: pd.DataFrame, out: np.ndarray, start: int) -> int:
        for i, name in enumerate(columns):
            values = inputs[name]
            if fill is not None and values.isna().any():
                values = values.astype(object).where(values.notna(), fill[i])
            # Category codes: the exact matches OneHotEncoder makes; unknown and null are -1 (all zeros).
            if len(values) < 256:
                lookup = lookups[i]
                codes = np.fromiter((lookup.get(v, -1) for v in values), dtype=np.intp, count=len(values))
            else:
                codes = indexes[i].get_indexer(values)
            for code in range(1 if drop_first else 0, len(categories[i])):
                out[:, start] = codes == code
                start += 1
        return start

    return step


def compile_pipeline(pipeline) -> CompiledPipeline | None:
    """The compiled form of a fitted `Pipeline[features ColumnTransformer, model]` as
    `featurize` and `train` build it, or None when its shape is not that one."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    try:
        transformer, model = pipeline.named_steps["features"], pipeline.named_steps["model"]
    except (AttributeError, KeyError):
        return None
    if type(transformer) is not ColumnTransformer or transformer.remainder != "drop":
        return None
    steps, width = [], 0
    for name, step, columns in transformer.transformers_:
        if name == "remainder":
            continue
        parts = step.steps if type(step) is Pipeline else [("only", step)]
        kinds = [type(part) for _, part in parts]
        if name == "num" and kinds in ([SimpleImputer], [SimpleImputer, StandardScaler]):
            imputer = parts[0][1]
            scaler = parts[1][1] if len(parts) == 2 else None
            if imputer.strategy not in ("median", "mean") or (scaler and not (scaler.with_mean and scaler.with_std)):
                return None
            fill = np.asarray(imputer.statistics_, dtype="float64")
            steps.append(_numbers(list(columns), fill, scaler and scaler.mean_, scaler and scaler.scale_))
            width += len(columns)
        elif name == "cat" and kinds == [OneHotEncoder]:
            encoder = parts[0][1]
            if encoder.drop is not None or encoder.handle_unknown != "ignore" or encoder.sparse_output:
                return None
            steps.append(_one_hot(list(columns), list(encoder.categories_), False, None))
            width += sum(len(c) for c in encoder.categories_)
        elif name == "bin" and kinds == [SimpleImputer]:
            imputer = parts[0][1]
            if imputer.strategy != "most_frequent" or np.asarray(imputer.statistics_).dtype.kind not in "if":
                return None
            fill = np.asarray(imputer.statistics_, dtype="float64")
            steps.append(_numbers(list(columns), fill, None, None))
            width += len(columns)
        elif name == "bin" and kinds == [SimpleImputer, OneHotEncoder]:
            imputer, encoder = parts[0][1], parts[1][1]
            if imputer.strategy != "most_frequent" or not isinstance(encoder.drop, str) or encoder.drop != "first":
                return None
            steps.append(_one_hot(list(columns), list(encoder.categories_), True, np.asarray(imputer.statistics_)))
            width += sum(len(c) - 1 for c in encoder.categories_)
        else:
            return None
    return CompiledPipeline(steps=steps, width=width, model=model)


def verify(compiled: CompiledPipeline | None, pipeline, probes: pd.DataFrame) -> bool:
    """Whether `compiled` gives exactly the pipeline's features and probabilities on `probes`."""
    if compiled is None:
        return False
    try:
        expected = pipeline.named_steps["features"].transform(probes)
        features = compiled.features(probes)
        if not np.array_equal(np.asarray(expected, dtype="float64"), features, equal_nan=True):
            return False
        return np.array_equal(pipeline.predict_proba(probes), compiled.predict_proba(probes))
    except Exception:  # noqa: BLE001 - any failure means: use the scikit-learn pipeline
        return False
