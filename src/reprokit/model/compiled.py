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

A gradient-boosting model is compiled too (`CompiledTrees`): scikit-learn calls its
predictor once per tree, a fixed 2.2 ms for 200 trees whatever the rows; walking every tree
at once costs 0.2 ms for one row. It is used for small batches (the service's), only after
`verify` has shown it gives the same probabilities on the probes one by one and together.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Callable, Mapping, Union

import numpy as np
import pandas as pd

Inputs = Union[pd.DataFrame, Mapping[str, Any]]  # a frame, or the checked columns (`scoring.columns_of`)


def rows_of(inputs: Inputs) -> int:
    """How many records `inputs` holds (a mapping: its columns' length)."""
    if isinstance(inputs, pd.DataFrame):
        return len(inputs)
    return len(next(iter(inputs.values()))) if inputs else 0


def columns_form(frame: pd.DataFrame) -> dict[str, Any]:
    """`frame` as the service scores checked records: one numpy array per column."""
    return {name: frame[name].to_numpy() for name in frame.columns}


@dataclasses.dataclass
class CompiledTrees:
    """A fitted binary `HistGradientBoostingClassifier` as flat node arrays, every tree walked
    at once, one level per step, for a small batch of rows.

    scikit-learn calls its predictor once per tree: about 11 us a tree whatever the rows, so
    2.2 ms for 200 trees and one row, ten times the rest of a request. Here a batch costs a
    few array operations per level (0.2 ms for that row). The walk is scikit-learn's: a null
    goes where the node's `missing_go_to_left` says, else `x <= threshold` goes left. The raw
    score is the baseline, then each tree's leaf value added in tree order (a cumulative sum,
    the float64 additions scikit-learn makes), and the model's own loss turns it into
    probabilities. Past `MAX_STEPS` row-levels the per-tree calls win and are used."""

    MAX_STEPS = 400  # rows x levels: measured break-even about 550 (200 trees, 13 levels, 2 cores)
    MAX_VALUES = 1 << 20  # rows x trees: a leaf value each, 8 MiB

    feature: np.ndarray  # per node of every tree; a leaf's children are itself
    threshold: np.ndarray
    missing_left: np.ndarray
    left: np.ndarray
    right: np.ndarray
    value: np.ndarray
    roots: np.ndarray  # per tree, in the order scikit-learn adds them
    levels: int  # the longest root-to-leaf path
    baseline: float
    loss: Any

    def suits(self, rows: int) -> bool:
        """Whether a batch of `rows` is cheaper here (and small: rows x trees values at most)."""
        return rows * max(self.levels, 1) <= self.MAX_STEPS and rows * len(self.roots) <= self.MAX_VALUES

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        rows = np.arange(len(features))[:, None]
        node = np.broadcast_to(self.roots, (len(features), len(self.roots)))
        for _ in range(self.levels):
            x = features[rows, self.feature[node]]
            go_left = np.where(np.isnan(x), self.missing_left[node], x <= self.threshold[node])
            node = np.where(go_left, self.left[node], self.right[node])
        raw = np.empty((len(features), len(self.roots) + 1), dtype="float64")
        raw[:, 0] = self.baseline
        raw[:, 1:] = self.value[node]
        return self.loss.predict_proba(np.cumsum(raw, axis=1)[:, -1:])


@dataclasses.dataclass
class CompiledPipeline:
    """Features as one float64 matrix, then the fitted model's `predict_proba` on it (its
    compiled trees for a small batch, where they were shown to give the same probabilities).
    It reads a frame or the checked columns as they are (`Inputs`): the service scores a
    micro-batch without building a pandas frame (about 0.5 ms a request)."""

    steps: list[Callable[[Inputs, np.ndarray, int], int]]
    width: int
    model: Any
    trees: CompiledTrees | None = None

    def features(self, inputs: Inputs) -> np.ndarray:
        # Column-major, as scikit-learn gets it from the transformer's pandas output: a linear
        # model's matrix product then sums in the same order, to the last bit.
        out = np.empty((rows_of(inputs), self.width), dtype="float64", order="F")
        start = 0
        for step in self.steps:
            start = step(inputs, out, start)
        return out

    def uses_trees(self, rows: int) -> bool:
        """Whether a batch of `rows` is scored by the compiled trees rather than the model."""
        return self.trees is not None and self.trees.suits(rows)

    def predict_proba(self, inputs: Inputs) -> np.ndarray:
        if self.uses_trees(rows_of(inputs)):
            return self.trees.predict_proba(self.features(inputs))
        with warnings.catch_warnings():  # the model was fitted on named columns; these are the same, in order
            warnings.filterwarnings("ignore", message="X does not have valid feature names")
            return self.model.predict_proba(self.features(inputs))


def _numbers(columns: list[str], fill: np.ndarray, mean: np.ndarray | None, scale: np.ndarray | None):
    def step(inputs: Inputs, out: np.ndarray, start: int) -> int:
        for j, name in enumerate(columns):
            column = inputs[name]
            if not (isinstance(column, np.ndarray) and column.dtype == np.float64):
                column = pd.Series(column, copy=False).to_numpy(dtype="float64", na_value=np.nan)
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

    def step(inputs: Inputs, out: np.ndarray, start: int) -> int:
        for i, name in enumerate(columns):
            values = inputs[name]
            if fill is not None:
                nulls = pd.isna(values)
                if nulls.any():  # the imputer's most frequent value; the check's NaN, None or pandas' NA
                    values = np.where(np.asarray(nulls), fill[i], np.asarray(values, dtype=object))
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


def compile_trees(model) -> CompiledTrees | None:
    """The flat form of a fitted binary HistGradientBoostingClassifier without categorical
    splits (as `train` fits it), or None. Its node indices were checked on loading
    (`reprokit.model.structure`): children follow their parent, inside the tree."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    if type(model) is not HistGradientBoostingClassifier:
        return None
    try:
        if model.n_trees_per_iteration_ != 1 or model.is_categorical_ is not None:
            return None
        nodes = [iteration[0].nodes for iteration in model._predictors]
        baseline = np.asarray(model._baseline_prediction, dtype="float64").reshape(-1)
        loss = model._loss
    except (AttributeError, IndexError, TypeError):
        return None
    if len(baseline) != 1 or not nodes or any(np.any(n["is_categorical"]) for n in nodes):
        return None
    sizes = np.asarray([len(n) for n in nodes])
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.intp)
    flat = np.concatenate(nodes)
    offsets, own = np.repeat(starts, sizes), np.arange(len(flat))
    is_leaf = flat["is_leaf"].astype(bool)
    left = np.where(is_leaf, own, flat["left"].astype(np.intp) + offsets)
    right = np.where(is_leaf, own, flat["right"].astype(np.intp) + offsets)
    ends = offsets + np.repeat(sizes, sizes)
    if sizes.min() < 1 or np.any((left < offsets) | (left >= ends) | (right < offsets) | (right >= ends)):
        return None  # a child outside its own tree: not a model `train` fits
    levels, frontier = 0, starts  # children follow their parent (checked on loading): this ends
    while not is_leaf[frontier].all():
        inner = frontier[~is_leaf[frontier]]
        frontier, levels = np.concatenate([left[inner], right[inner]]), levels + 1
        if levels > sizes.max() or len(frontier) > len(flat):  # not a tree: the model's own prediction
            return None
    return CompiledTrees(
        feature=np.where(is_leaf, 0, flat["feature_idx"]).astype(np.intp),
        threshold=flat["num_threshold"].astype("float64"),
        missing_left=flat["missing_go_to_left"].astype(bool),
        left=left,
        right=right,
        value=flat["value"].astype("float64"),
        roots=starts,
        levels=levels,
        baseline=float(baseline[0]),
        loss=loss,
    )


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
    return CompiledPipeline(steps=steps, width=width, model=model, trees=compile_trees(model))


def verify(compiled: CompiledPipeline | None, pipeline, probes: pd.DataFrame) -> bool:
    """Whether `compiled` gives exactly the pipeline's features and probabilities on `probes`
    (given as a frame, and as the checked columns the service scores: numbers as float64
    arrays, text as object arrays with NaN for null); its compiled trees are dropped (the
    model's own prediction used) where they differ."""
    if compiled is None:
        return False
    try:
        expected = pipeline.named_steps["features"].transform(probes)
        features = compiled.features(probes)
        if not np.array_equal(np.asarray(expected, dtype="float64"), features, equal_nan=True):
            return False
        if not np.array_equal(compiled.features(columns_form(probes)), features, equal_nan=True):
            return False
        probabilities = pipeline.predict_proba(probes)
        if compiled.trees is not None:
            try:
                same = all(
                    np.array_equal(
                        probabilities[start : start + 1], compiled.trees.predict_proba(features[start : start + 1])
                    )
                    for start in range(len(features))
                ) and np.array_equal(probabilities, compiled.trees.predict_proba(features))
            except Exception:  # noqa: BLE001 - any failure means: the model's own prediction
                same = False
            if not same:
                compiled.trees = None
        return np.array_equal(probabilities, compiled.predict_proba(probes))
    except Exception:  # noqa: BLE001 - any failure means: use the scikit-learn pipeline
        return False
