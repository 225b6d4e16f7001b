"""Enlarge a prepared split to many rows, for measuring how the pipeline scales
(`params.yaml: scale`, applied by `prepare` after the split; off by default).

Each split grows on its own, so no copy of a test row lands in train. Every original row
is kept once; the extra rows are copies of the split's rows drawn with replacement within
each class, so the class balance stays what it was (to one row). A copy's `numeric`
features move by Gaussian noise of `jitter` times the column's standard deviation, kept
within the contract's range and rounded to the column's decimals; `integer` features move
the same way, rounded to whole numbers; categories, binaries and nulls stay as they were.
A copy's key is its original's followed by `#<n>`, or, for row numbers, the next numbers
after the data's last row (train's copies first, then test's).
Everything comes from one seeded generator per split, so the rows are the same at every
run, on every machine.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from reprokit.core.contract import Contract
from reprokit.core.errors import StageError

MAX_DECIMALS = 6


def grown_sizes(train: pd.DataFrame, test: pd.DataFrame, rows: int) -> tuple[int, int]:
    """The rows of train and test once the data is `rows` long: each keeps its share."""
    total = len(train) + len(test)
    if rows < total:
        raise StageError(f"params.yaml: scale.rows must be 0 (off) or at least the data's {total} rows, got {rows}")
    test_rows = round(rows * len(test) / total)
    return rows - test_rows, test_rows


def enlarge(
    split: pd.DataFrame, rows: int, contract: Contract, jitter: float, seed: tuple[int, ...], first_key: int = 0
) -> pd.DataFrame:
    """`split` grown to `rows` rows: itself, then jittered copies drawn within each class
    (row-number keys from `first_key` on, when the split is keyed by row numbers)."""
    if rows <= len(split):
        return split
    target = contract.target.column
    rng = np.random.default_rng(list(seed))
    classes = split[target].to_numpy()
    extra = rows - len(split)
    positives, negatives = np.flatnonzero(classes == 1), np.flatnonzero(classes == 0)
    extra_positives = round(extra * len(positives) / len(split))
    drawn = np.concatenate(
        [
            positives[rng.integers(0, len(positives), size=extra_positives)],
            negatives[rng.integers(0, len(negatives), size=extra - extra_positives)],
        ]
    )
    drawn = np.sort(drawn, kind="stable")  # copies in their originals' order
    copies = split.iloc[drawn].copy()
    for feature in contract.features:
        if feature.type in ("numeric", "integer"):
            copies[feature.name] = _jittered(split[feature.name], copies[feature.name], feature, jitter, rng)
    copies.index = _copy_keys(split.index, drawn, first_key)
    return pd.concat([split, copies])


def _jittered(column: pd.Series, drawn: pd.Series, feature, jitter: float, rng: np.random.Generator) -> pd.Series:
    values = column.to_numpy(dtype="float64", na_value=np.nan)
    spread = float(np.nanstd(values)) if np.isfinite(values).any() else 0.0
    moved = drawn.to_numpy(dtype="float64", na_value=np.nan) + rng.normal(0.0, 1.0, len(drawn)) * (jitter * spread)
    low = -np.inf if feature.min is None else float(feature.min)
    high = np.inf if feature.max is None else float(feature.max)
    moved = np.clip(moved, low, high)
    moved = np.round(moved, 0 if feature.type == "integer" else _decimals(values))
    return pd.Series(moved, index=drawn.index, name=drawn.name).astype(column.dtype)


def _decimals(values: np.ndarray) -> int:
    """The fewest decimals (up to `MAX_DECIMALS`) that every value of the column is written with."""
    finite = values[np.isfinite(values)]
    for decimals in range(MAX_DECIMALS + 1):
        if np.array_equal(np.round(finite, decimals), finite):
            return decimals
    return MAX_DECIMALS


def _copy_keys(index: pd.Index, drawn: np.ndarray, first_key: int) -> pd.Index:
    if pd.api.types.is_integer_dtype(index.dtype):
        return pd.Index(np.arange(first_key, first_key + len(drawn), dtype=index.dtype), name=index.name)
    originals = index.to_numpy().astype(str)[drawn]
    return pd.Index([f"{key}#{n}" for n, key in enumerate(originals, 1)], name=index.name, dtype=index.dtype)
