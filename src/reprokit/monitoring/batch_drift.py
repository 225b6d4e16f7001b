"""Drift of one batch against the reference: the figures, comparisons and verdict the monitor
reports (`reprokit.monitoring.monitor` has the method in its docstring), on one machine; the
Dask engine (`reprokit.monitoring.monitor_dask`) counts the same figures partition by partition
with the helpers here."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from reprokit.core.errors import StageError
from reprokit.core.figures import drawing, save_png
from reprokit.core.metrics import finite

log = logging.getLogger("reprokit.monitor")


LEVELS = ("ok", "warn", "alert")


def read_batch(path: str, contract, allow_empty: bool = False, read_as=None) -> pd.DataFrame:
    """The batch's columns (CSV or Parquet, a path or an fsspec URL) after checking their
    names by the input policy's column rule (`column_problems`: every required feature present,
    nothing the contract does not know; a nullable feature absent is all null). A CSV is read with
    `read_as` (a contract `Source`; default: the contract's own). No rows is an error unless
    `allow_empty` (a partition of a larger batch)."""

    from reprokit.core.batchfiles import chunks, column_names
    from reprokit.core.redaction import redact
    from reprokit.model.scoring import column_error, column_problems, is_text

    shown = redact(path)  # a URL's credentials never reach a message
    read_as = read_as or contract.source
    try:
        names = column_names(path, read_as)
    except StageError as exc:
        raise StageError(str(exc).replace(path, shown)) from None
    problems = column_problems(names, contract)
    if problems:
        raise StageError(f"{shown}: {column_error(problems)}")
    wanted = contract.feature_names + [name for name in (contract.target.column,) if name in names]
    numeric = {f.name for f in contract.features if not is_text(f)}
    frames = list(chunks(path, wanted, numeric, 1_000_000, read_as))
    batch = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0] if frames else None
    if (batch is None or len(batch) == 0) and not allow_empty:
        raise StageError(f"{shown}: the batch has no rows: nothing to compare")
    if batch is None:
        present = [name for name in wanted if name in names]
        batch = pd.DataFrame({name: pd.Series(dtype="float64" if name in numeric else object) for name in present})
    for name in contract.feature_names:  # a nullable feature the batch lacks: all null, as scoring reads it
        if name not in batch.columns:
            batch[name] = pd.Series(np.nan, index=batch.index, dtype="float64" if name in numeric else object)
    return batch[[name for name in wanted if name in batch.columns]]


def label_values(values: pd.Series, target) -> tuple[np.ndarray, np.ndarray]:
    """0/1 labels and a mask of the rows that have one: the contract's positive and negative
    labels, however the file typed them (`Yes`, `1`, `1.0`, `True` for a positive label of 1),
    or 1 and 0; anything else is no label."""

    def spellings(label, number: int) -> set[str]:
        texts = {str(label).strip(), str(number), f"{number}.0"}
        if isinstance(label, (bool, np.bool_)) or label in (0, 1):
            texts |= {str(bool(label)), str(int(label)), f"{int(label)}.0"}
        return texts

    positive, negative = spellings(target.positive, 1), spellings(target.negative, 0)
    text = np.array([str(v).strip() for v in values], dtype=object)
    is_positive = np.isin(text, list(positive))
    is_negative = np.isin(text, list(negative)) & ~is_positive
    return is_positive.astype("int8"), is_positive | is_negative


def auc_standard_error(auc: float, positives: int, negatives: int) -> float:
    """Hanley and McNeil's standard error of a ROC AUC."""
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    variance = (auc * (1 - auc) + (positives - 1) * (q1 - auc * auc) + (negatives - 1) * (q2 - auc * auc)) / max(
        positives * negatives, 1
    )
    return math.sqrt(max(variance, 0.0))


def level_of(psi: float, significant: bool, params) -> str:
    if not significant or psi < params.psi_warn:
        return "ok"
    return "alert" if psi >= params.psi_alert else "warn"


def monitor(model, reference: pd.DataFrame, holdout: pd.DataFrame | None, batch: pd.DataFrame, params, seed: int):
    """The monitor's figures (a JSON-ready mapping), each column's comparison, and the
    reference scores.

    `model` is a `ScoringModel`; `reference` (the train split) is the features' reference;
    `holdout` (the test split), when given, is the scores' reference (scores of rows the
    model never saw, as a batch's are) and the AUC's; `batch` holds the feature columns and
    maybe the target. Call under the thread budget."""
    contract = model.contract
    ref, ref_ok, held, ref_scores = reference_side(model, reference, holdout)
    cur, ok = checked_records(batch, contract)
    rows = sample_rows(np.flatnonzero(ok), params.max_score_rows, seed)
    cur_scores = model.probabilities(cur.inputs.iloc[rows].reset_index(drop=True))
    figures, comparisons = drift_figures(contract, ref.inputs, ref_ok, cur.inputs, ok, ref_scores, cur_scores, params)
    reasons: dict[str, int] = {}
    for reason in cur.rejected[~ok]:
        reasons[reason] = reasons.get(reason, 0) + 1
    figures["rejected_reasons"] = dict(sorted(reasons.items()))
    if contract.target.column in batch.columns:
        add_labels(
            figures,
            comparisons,
            contract.target,
            reference,
            held,
            batch[contract.target.column].iloc[rows],
            cur_scores,
            params,
        )
    figures.update(verdict_of(figures, params))
    return figures, comparisons, ref_scores


def checked_records(frame: pd.DataFrame, contract):
    """`check_records` of a table's features, and the mask of its scorable rows."""
    from reprokit.model.scoring import InputError, check_records

    try:
        result = check_records({c: frame[c] for c in contract.feature_names}, len(frame), contract)
    except InputError as exc:
        raise StageError(str(exc)) from None
    return result, np.equal(result.rejected, None)


def reference_side(model, reference: pd.DataFrame, holdout: pd.DataFrame | None):
    """The reference's checked inputs and scorable rows, the held-out split's (labels,
    scores) when given, and the reference scores (the held-out split's, else the train
    split's)."""
    contract = model.contract
    ref, ref_ok = checked_records(reference, contract)
    held = None
    if holdout is not None:
        hold, hold_ok = checked_records(holdout, contract)
        held = (
            holdout[contract.target.column].to_numpy()[hold_ok],
            model.probabilities(hold.inputs[hold_ok].reset_index(drop=True)),
        )
    ref_scores = held[1] if held else model.probabilities(ref.inputs[ref_ok].reset_index(drop=True))
    return ref, ref_ok, held, ref_scores


def sample_rows(rows: np.ndarray, max_rows: int, seed: int) -> np.ndarray:
    """The batch's scored rows: all scorable `rows`, or a seeded sample of `max_rows` of them."""
    if len(rows) <= max_rows:
        return rows
    return np.sort(np.random.default_rng(seed).choice(rows, max_rows, replace=False))


def add_labels(figures, comparisons, target, reference, held, labels: pd.Series, scores, params) -> None:
    """The label figures of the scored rows' `labels` (`label_drift`), when any is known."""
    result = label_drift(target, reference[target.column].to_numpy(), held, labels, scores, params)
    if result is None:
        log.warning(
            "%s: no scored row has a label the contract knows (%s or %s)",
            target.column,
            target.positive,
            target.negative,
        )
    else:
        comparisons[target.column] = result.pop("comparison")
        figures["labels"] = result


def is_number(feature) -> bool:
    return feature.type in ("numeric", "integer")


def known_values(feature) -> list:
    """A categorical or binary feature's values as the checked inputs hold them."""
    from reprokit.model.scoring import is_text

    return list(feature.values) if is_text(feature) else [float(v) for v in feature.values]


def numbers(column: pd.Series) -> np.ndarray:
    return column.to_numpy(dtype="float64", na_value=np.nan)


def drift_figures(contract, ref: pd.DataFrame, ref_ok, cur: pd.DataFrame, ok, ref_scores, cur_scores, params):
    """Figures and comparisons of every column, its null rate and the scores: `ref` and
    `cur` are checked model inputs (`reprokit.model.scoring.check_records`), `ref_ok` and `ok`
    their scorable rows (the others count for null rates only), the scores those of the
    scorable rows (or a sample of them)."""
    from reprokit.core.drift import compare_categories, compare_numbers

    comparisons: dict[str, Any] = {}
    nulls: dict[str, tuple[int, int]] = {}
    for feature in contract.features:
        r, c = ref[feature.name][ref_ok], cur[feature.name][ok]
        if is_number(feature):
            comparisons[feature.name] = compare_numbers(numbers(r), numbers(c), params.bins)
        else:
            comparisons[feature.name] = compare_categories(r, c, known_values(feature))
        nulls[feature.name] = (int(ref[feature.name].isna().sum()), int(cur[feature.name].isna().sum()))
    rows = (len(ref), len(cur), int(np.count_nonzero(ok)))
    return figures_of(contract, comparisons, nulls, rows, ref_scores, cur_scores, params)


def figures_of(
    contract, comparisons: dict[str, Any], nulls: dict[str, tuple[int, int]], rows, ref_scores, cur_scores, params
):
    """`drift_figures` from each feature's comparison and (reference, batch) null count, and
    the (reference, batch, scorable batch) rows: however the batch was counted."""
    from reprokit.core.drift import adjust, compare_rates, compare_scores
    from reprokit.model.scoring import SCORE_BINS

    ref_rows, cur_rows, ok_rows = rows
    p_values, null_p_values, rates = [], [], []
    for feature in contract.features:
        p_values.append(comparisons[feature.name].p_value)
        ref_nulls, cur_nulls = nulls[feature.name]
        null_p_values.append(compare_rates(ref_nulls, ref_rows, cur_nulls, cur_rows).p_value)
        rates.append((ref_nulls / max(ref_rows, 1), cur_nulls / max(cur_rows, 1)))
    adjusted = adjust(p_values, params.correction)
    null_adjusted = adjust(null_p_values, params.correction)

    features: dict[str, Any] = {}
    missing: dict[str, Any] = {}
    for i, feature in enumerate(contract.features):
        comparison = comparisons[feature.name]
        features[feature.name] = {
            "test": comparison.test,
            "p_value": finite(comparison.p_value),
            "p_adjusted": finite(adjusted[i]),
            "psi": finite(comparison.psi),
            "level": level_of(comparison.psi, bool(adjusted[i] < params.alpha), params),
        }
        ref_rate, cur_rate = rates[i]
        change = abs(cur_rate - ref_rate) if null_adjusted[i] < params.alpha else 0.0
        missing[feature.name] = {
            "reference_rate": finite(ref_rate),
            "current_rate": finite(cur_rate),
            "p_adjusted": finite(null_adjusted[i]),
            "level": "alert"
            if change >= params.missing_rate_alert
            else "warn"
            if change >= params.missing_rate_warn
            else "ok",
        }
    scores = compare_scores(ref_scores, cur_scores, SCORE_BINS)
    comparisons["prediction"] = scores
    prediction = {
        "test": scores.test,
        "p_value": finite(scores.p_value),
        "psi": finite(scores.psi),
        "mean_reference": finite(ref_scores.mean()) if len(ref_scores) else 0.0,
        "mean_current": finite(cur_scores.mean()) if len(cur_scores) else 0.0,
        "scored_rows": int(len(cur_scores)),
        "level": level_of(scores.psi, scores.p_value < params.alpha, params),
    }
    drifted = [name for name, entry in features.items() if entry["level"] != "ok"]
    figures = {
        "rows": int(cur_rows),
        "rejected_rows": int(cur_rows - ok_rows),
        "rejected_reasons": {},
        "drifted_columns": drifted,
        "drifted_share": finite(len(drifted) / max(len(features), 1)),
        "missing_changed": [name for name, entry in missing.items() if entry["level"] != "ok"],
        "features": features,
        "missing": missing,
        "prediction": prediction,
        "labels": None,
    }
    return figures, comparisons


def verdict_of(figures: dict[str, Any], params) -> dict[str, Any]:
    """The overall verdict: the worst level of any column, null rate, the scores and the
    labels (and at least `warn` when `rejected_share_warn` of the rows break the contract), raised to `alert` when the
    share of drifted columns reaches its threshold."""
    components = [entry["level"] for entry in figures["features"].values()]
    components += [entry["level"] for entry in figures["missing"].values()] + [figures["prediction"]["level"]]
    labels = figures["labels"]
    components += [labels["label_level"], labels["auc_level"]] if labels else []
    if figures["rows"] and figures["rejected_rows"] / figures["rows"] >= params.rejected_share_warn:
        components.append("warn")  # rows that break the contract
    verdict = max(components, key=LEVELS.index, default="ok")
    if figures["drifted_share"] >= params.drifted_share_alert:
        verdict = "alert"
    return {"verdict": verdict, "level": LEVELS.index(verdict)}


def label_drift(target, ref_y: np.ndarray, held, labels: pd.Series, scores, params) -> dict[str, Any] | None:
    """The positive rate against the reference's (`ref_y`), and the ROC AUC against the
    held-out split's (`held`: its labels and scores; significant by Hanley and McNeil's
    standard errors), on the batch's labelled scored rows; None when none has a label."""
    from sklearn.metrics import roc_auc_score

    from reprokit.core.drift import compare_rates

    if len(labels) == 0:
        return None
    y, has = label_values(labels.reset_index(drop=True), target)
    if not has.any():
        return None
    y, scores = y[has], scores[has]
    rate = compare_rates(int(ref_y.sum()), len(ref_y), int(y.sum()), len(y))
    result: dict[str, Any] = {
        "labelled_rows": int(has.sum()),
        "positive_rate_reference": finite(ref_y.mean()),
        "positive_rate_current": finite(y.mean()),
        "p_value": finite(rate.p_value),
        "psi": finite(rate.psi),
        "label_level": level_of(rate.psi, rate.p_value < params.alpha, params),
        "auc_level": "ok",
        "comparison": rate,
    }
    if held is not None and 0 < y.sum() < len(y):
        hold_y, hold_scores = held
        ref_auc, auc = roc_auc_score(hold_y, hold_scores), roc_auc_score(y, scores)
        se = math.hypot(
            auc_standard_error(ref_auc, int(hold_y.sum()), int(len(hold_y) - hold_y.sum())),
            auc_standard_error(auc, int(y.sum()), int(len(y) - y.sum())),
        )
        drop = ref_auc - auc
        p_value = 0.5 * math.erfc(drop / (se * math.sqrt(2))) if se > 0 else float(drop <= 0)
        result.update(
            roc_auc_reference=finite(ref_auc),
            roc_auc_current=finite(auc),
            auc_drop=finite(drop),
            auc_p_value=finite(p_value),
            auc_level="alert" if drop >= params.max_auc_drop and p_value < params.alpha else "ok",
        )
    return result


def distribution_rows(comparisons: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows for DVC plots: each column's bins, with their share in the reference and in the
    batch, in the monitor's column order."""
    rows = []
    for column, comparison in comparisons.items():
        for sample, shares in (("reference", comparison.reference), ("current", comparison.current)):
            rows += [
                {"column": column, "bin": b, "sample": sample, "share": finite(s)}
                for b, s in zip(comparison.bins, shares, strict=True)
            ]
    return rows


def save_images(comparisons: dict[str, Any], names: list[str], out_dir: Path) -> None:
    """A PNG of reference-vs-batch shares per name, in the project's style."""
    with drawing() as plt:
        for name in names:
            comparison = comparisons[name]
            positions = np.arange(len(comparison.bins))
            fig, ax = plt.subplots(figsize=(6, max(2.5, 0.35 * len(positions) + 1.2)))
            ax.barh(positions - 0.2, comparison.reference, height=0.4, label="reference")
            ax.barh(positions + 0.2, comparison.current, height=0.4, label="batch")
            ax.set_yticks(positions, comparison.bins)
            ax.invert_yaxis()
            ax.set(xlabel="Share of rows", title=f"{name}: PSI {comparison.psi:.3f}")
            ax.legend(loc="lower right")
            save_png(fig, out_dir / f"{name}.png")
