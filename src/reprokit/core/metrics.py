"""Classification and subgroup metrics, and how every metrics file rounds a figure (`rounded`,
`finite`): shared by `evaluate`, the release gate and the monitor.

The gate scores the package under test itself, with the same functions evaluate uses,
so no figure it checks comes from a file someone could edit.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

DIGITS = 6


def rounded(value: float) -> float:
    """A figure as the metrics files keep it: six decimals."""
    return round(float(value), DIGITS)


def finite(value: float) -> float:
    """`rounded`, and 0.0 for NaN or infinity: the monitor's figures, which alert rules compare."""
    value = float(value)
    return rounded(value) if math.isfinite(value) else 0.0


def classification_metrics(y: np.ndarray, proba: np.ndarray, threshold: float) -> dict[str, float]:
    """Ranking, threshold and probability-quality metrics for binary labels."""
    from sklearn import metrics as m

    pred = (proba >= threshold).astype(int)
    both = len(np.unique(y)) == 2
    return {
        "roc_auc": rounded(m.roc_auc_score(y, proba)) if both else None,
        "average_precision": rounded(m.average_precision_score(y, proba)) if both else None,
        "accuracy": rounded(m.accuracy_score(y, pred)),
        "precision": rounded(m.precision_score(y, pred, zero_division=0)),
        "recall": rounded(m.recall_score(y, pred, zero_division=0)),
        "f1": rounded(m.f1_score(y, pred, zero_division=0)),
        "log_loss": rounded(m.log_loss(y, proba, labels=[0, 1])),
        "brier": rounded(m.brier_score_loss(y, proba)),
        "positive_rate": rounded(y.mean()),
        "predicted_positive_rate": rounded(pred.mean()),
        "n": int(len(y)),
    }


NULL_GROUP = "null"


def edge_text(value: float) -> str:
    """A bin edge as written: 120, 0.5, 1000000 (never 1e+06)."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def subgroup_labels(values: pd.Series, bins: tuple[float, ...] | None) -> pd.Series:
    """Each row's group: its value (binary, categorical), or its bin `lo_to_hi` (numeric, left
    edge included, the last bin its right edge too) with `below_<first>` / `above_<last>`
    outside the edges; blanks are `null`."""
    if bins is None:
        labels = values.astype(str)
    else:
        numbers = values.astype("float64")
        edges = list(bins)
        names = [f"{edge_text(lo)}_to_{edge_text(hi)}" for lo, hi in zip(edges[:-1], edges[1:], strict=True)]
        labels = pd.cut(numbers, edges, right=False, labels=names).astype(object)
        labels = labels.where(~(numbers == edges[-1]), names[-1])
        labels = labels.where(~(numbers < edges[0]), f"below_{edge_text(edges[0])}")
        labels = labels.where(~(numbers > edges[-1]), f"above_{edge_text(edges[-1])}")
    return labels.where(values.notna(), NULL_GROUP)


def subgroup_metrics(
    frame: pd.DataFrame,
    y: np.ndarray,
    proba: np.ndarray,
    features: list,
    threshold: float,
    min_size: int = 1,
) -> dict[str, Any]:
    """Metrics for each group of each subgroup feature, and each feature's AUC gap.

    Every group is reported, blanks as their own `null` group. A group smaller than
    `min_size` rows, or with one class only (no AUC), is left out of the gap and listed
    under `left_out_of_gap` with its row count: a handful of rows must not drive the gap.
    A feature with fewer than two groups left has no gap (None), and then neither has the
    whole (`max_auc_gap`): a gap that cannot be measured is not a gap of zero."""
    result: dict[str, Any] = {"groups": {}, "auc_gap": {}, "left_out_of_gap": {}, "min_group_size": min_size}
    for feature in features:
        labels = subgroup_labels(frame[feature.name], feature.subgroup_bins).to_numpy()
        groups, left_out, aucs = {}, {}, []
        for label in sorted(set(labels), key=str):
            mask = labels == label
            groups[label] = classification_metrics(y[mask], proba[mask], threshold)
            if groups[label]["n"] < min_size:
                left_out[label] = f"{groups[label]['n']} rows, fewer than {min_size}"
            elif groups[label]["roc_auc"] is None:
                left_out[label] = f"{groups[label]['n']} rows of one class: no AUC"
            else:
                aucs.append(groups[label]["roc_auc"])
        result["groups"][feature.name] = groups
        result["left_out_of_gap"][feature.name] = left_out
        result["auc_gap"][feature.name] = rounded(max(aucs) - min(aucs)) if len(aucs) > 1 else None
    gaps = list(result["auc_gap"].values())
    result["max_auc_gap"] = max(gaps) if gaps and None not in gaps else None
    return result
