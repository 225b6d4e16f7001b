"""The monitor's statistics on a Dask dataframe, for a batch larger than one machine's memory:
`python -m reprokit.monitor DIR --engine dask --scheduler ADDRESS`.

DIR is a partitioned Parquet dataset (a directory, local or an fsspec URL such as `s3://`).
Its partitions become a Dask dataframe, each read by the workers exactly as `read_batch`
reads a single file. Two passes:

1. Every partition is checked against the contract (`reprokit.scoring.check_records`, row by
   row, as in memory) and reduced to counts that add up: rows, scorable rows, rejection
   reasons, and per feature its nulls and either `NumberCounts` (numbers counted at the
   reference's distinct values and quantile bins) or category counts. The driver adds them
   up: the KS statistic from counts is the same float as from the values
   (`reprokit.drift.ks_from_counts`), so every test, PSI and null rate is the in-memory one.
2. The scores' seeded sample is drawn from the added-up scorable rows exactly as in memory,
   each partition scores its share on its worker (the model loaded once per worker
   process), with the labels of those rows when the batch has them.

The figures, plots and images are then those `python -m reprokit.monitor FILE` writes for
the same rows in one file, byte for byte (tests/scale/test_dask_monitor.py).
"""

from __future__ import annotations

import collections
from typing import Any

import numpy as np
import pandas as pd

from reprokit.stage import StageError


def read_partition(path: str, contract) -> pd.DataFrame:
    """One partition as `reprokit.monitor.read_batch` reads a batch (an empty one too)."""
    from reprokit.monitor import read_batch

    return read_batch(path, contract, allow_empty=True)


def _checked(part: pd.DataFrame, contract):
    from reprokit.monitor import checked_records

    return checked_records(part, contract)


def summarize(part: pd.DataFrame, contract, grids: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, Any]:
    """Pass 1 on a worker: one partition's counts (see the module's docstring)."""
    from reprokit.drift import NumberCounts, category_counts
    from reprokit.monitor import is_number, numbers

    cur, ok = _checked(part, contract)
    columns: dict[str, Any] = {}
    for feature in contract.features:
        values = cur.inputs[feature.name]
        kept = values[ok]
        if is_number(feature):
            counted = NumberCounts.of(numbers(kept), *grids[feature.name])
        else:
            counted = collections.Counter(category_counts(kept).to_dict())
        columns[feature.name] = (int(values.isna().sum()), counted)
    return {
        "rows": len(part),
        "ok": int(np.count_nonzero(ok)),
        "reasons": collections.Counter(cur.rejected[~ok].tolist()),
        "columns": columns,
        "labelled": contract.target.column in part.columns,
    }


def score_share(part: pd.DataFrame, contract, ordinals: np.ndarray, uri: str, n_threads: int):
    """Pass 2 on a worker: the scores of this partition's sampled scorable rows (`ordinals`
    among them), and those rows' labels when the batch has a target column."""
    from reprokit.inference import thread_budget
    from reprokit.score import worker_model

    cur, ok = _checked(part, contract)
    rows = np.flatnonzero(ok)[ordinals]
    with thread_budget(n_threads):
        model = worker_model(uri)
        scores = model.probabilities(cur.inputs.iloc[rows].reset_index(drop=True))
    target = contract.target.column
    labels = part[target].iloc[rows].reset_index(drop=True) if target in part.columns else None
    return scores, labels, model.version


def batch_dataframe(files: list[str], contract):
    """The partitions as a Dask dataframe, each read by `read_partition` on a worker."""
    import dask.dataframe as dd

    return dd.from_map(read_partition, files, contract=contract, enforce_metadata=False)


def monitor_partitioned(model, uri: str, reference, holdout, files: list[str], params, seed: int, n_threads: int):
    """`reprokit.monitor.monitor` for the partitioned batch `files` on the Dask client in use
    (`model` loaded here for the reference's scores, `uri` loaded by the workers). Returns
    the figures, comparisons and reference scores; the batch's rows are `figures["rows"]`."""
    import dask

    from reprokit.drift import compare_category_counts, compare_numbers_counted, reference_grid
    from reprokit.drift import category_counts
    from reprokit.monitor import (
        add_labels,
        figures_of,
        is_number,
        known_values,
        numbers,
        reference_side,
        sample_rows,
        verdict_of,
    )

    contract = model.contract
    ref, ref_ok, held, ref_scores = reference_side(model, reference, holdout)
    references = {f.name: numbers(ref.inputs[f.name][ref_ok]) for f in contract.features if is_number(f)}
    grids = {name: reference_grid(values, params.bins) for name, values in references.items()}
    parts = batch_dataframe(files, contract).to_delayed()
    summaries = dask.compute(*[dask.delayed(summarize)(part, contract, grids) for part in parts])

    rows, ok_rows = sum(s["rows"] for s in summaries), sum(s["ok"] for s in summaries)
    if rows < params.min_rows:
        raise StageError(f"{rows} rows, fewer than monitor.min_rows ({params.min_rows}): too few to judge")
    if len({s["labelled"] for s in summaries if s["rows"]}) > 1:
        raise StageError(f"some partitions have the target column {contract.target.column!r} and others not")
    comparisons: dict[str, Any] = {}
    nulls: dict[str, tuple[int, int]] = {}
    for feature in contract.features:
        cur_nulls = sum(s["columns"][feature.name][0] for s in summaries)
        counted = [s["columns"][feature.name][1] for s in summaries]
        if is_number(feature):
            total = counted[0]
            for more in counted[1:]:
                total = total + more
            comparisons[feature.name] = compare_numbers_counted(references[feature.name], total, params.bins)
        else:
            added = sum(counted, collections.Counter())
            ref_counts = category_counts(ref.inputs[feature.name][ref_ok])
            cur_counts = pd.Series(dict(added), dtype="int64") if added else pd.Series([], dtype="int64")
            comparisons[feature.name] = compare_category_counts(ref_counts, cur_counts, known_values(feature))
        nulls[feature.name] = (int(ref.inputs[feature.name].isna().sum()), cur_nulls)

    # The scores' sample: the ordinals among all scorable rows the in-memory monitor draws.
    chosen = sample_rows(np.arange(ok_rows), params.max_score_rows, seed)
    starts = np.cumsum([0] + [s["ok"] for s in summaries])
    shares = [chosen[(chosen >= a) & (chosen < b)] - a for a, b in zip(starts[:-1], starts[1:], strict=True)]
    scored = dask.compute(
        *[dask.delayed(score_share)(p, contract, share, uri, n_threads) for p, share in zip(parts, shares, strict=True)]
    )
    versions = {version for _, _, version in scored}
    if versions - {model.version}:
        raise StageError(f"the workers scored with model version(s) {sorted(versions)}, not {model.version}")
    cur_scores = np.concatenate([scores for scores, _, _ in scored])
    figures, comparisons = figures_of(
        contract, comparisons, nulls, (len(ref.inputs), rows, ok_rows), ref_scores, cur_scores, params
    )
    reasons = sum((s["reasons"] for s in summaries), collections.Counter())
    figures["rejected_reasons"] = dict(sorted(reasons.items()))
    if any(s["labelled"] for s in summaries if s["rows"]):
        labels = pd.concat([labels for _, labels, _ in scored if labels is not None], ignore_index=True)
        add_labels(figures, comparisons, contract.target, reference, held, labels, cur_scores, params)
    figures.update(verdict_of(figures, params))
    return figures, comparisons, ref_scores
