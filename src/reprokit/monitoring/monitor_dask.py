"""The monitor's statistics on a Dask dataframe, for a batch larger than one machine's memory:
`reprokit monitor DIR --engine dask --scheduler ADDRESS`.

DIR is a partitioned Parquet dataset (a directory, local or an fsspec URL such as `s3://`;
its rows are in its files' sorted order). Its partitions become a Dask dataframe, each read
on a worker exactly as `read_batch` reads a single file. Nothing the size of the batch ever
reaches one process. Two passes, each reading every partition once:

1. Every partition is checked against the contract (`reprokit.model.scoring.check_records`, row by
   row, as in memory) and reduced to counts that add up: rows, scorable rows, rejection
   reasons, and per feature its nulls and either `NumberCounts` (sparse: at most one entry
   per distinct reference value) or category counts. The counts are added up in a tree on
   the workers, eight at a time. From them the KS statistic is the same float as from the
   values (`reprokit.core.drift.ks_from_counts`), so every test, PSI and null rate is the
   in-memory one.
2. The scores' seeded sample is drawn from the scorable rows' count exactly as in memory;
   each partition holding sampled rows scores them on its worker (the model loaded once per
   worker process) and returns their labels when the batch has a target column (a partition
   without one gives no labels for its rows, as nulls in one file would).

The figures, plots and images are then those `reprokit monitor FILE` writes for
the same rows in one file, byte for byte (tests/scale/test_dask_monitor.py).
"""

from __future__ import annotations

import collections
from typing import Any

import numpy as np
import pandas as pd

from reprokit.core.errors import StageError

FAN_IN = 8  # partial counts added up per task of the reduction tree


def read_partition(path: str, contract) -> pd.DataFrame:
    """One partition as `reprokit.monitoring.monitor.read_batch` reads a batch (an empty one too)."""
    from reprokit.monitoring.batch_drift import read_batch

    return read_batch(path, contract, allow_empty=True)


def summarize(part: pd.DataFrame, contract, grids: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, Any]:
    """Pass 1 on a worker: one partition's counts (see the module's docstring)."""
    from reprokit.core.drift import NumberCounts, category_counts
    from reprokit.monitoring.batch_drift import checked_records, is_number, numbers

    cur, ok = checked_records(part, contract)
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
        "parts": [(len(part), int(np.count_nonzero(ok)), contract.target.column in part.columns)],
        "reasons": collections.Counter(cur.rejected[~ok].tolist()),
        "columns": columns,
    }


def add_up(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """Several partitions' counts as one (their partitions kept in order)."""
    total = summaries[0]
    for summary in summaries[1:]:
        total = {
            "parts": total["parts"] + summary["parts"],
            "reasons": total["reasons"] + summary["reasons"],
            "columns": {
                name: (nulls + summary["columns"][name][0], counted + summary["columns"][name][1])
                for name, (nulls, counted) in total["columns"].items()
            },
        }
    return total


def score_share(part: pd.DataFrame, contract, ordinals: np.ndarray, uri: str, n_threads: int, labelled: bool):
    """Pass 2 on a worker: the scores of this partition's sampled scorable rows (`ordinals`
    among them), and those rows' labels when the batch has a target column."""
    from reprokit.core.threads import thread_budget
    from reprokit.model.loading import worker_model
    from reprokit.monitoring.batch_drift import checked_records

    cur, ok = checked_records(part, contract)
    rows = np.flatnonzero(ok)[ordinals]
    with thread_budget(n_threads):
        model = worker_model(uri)
        scores = model.probabilities(cur.inputs.iloc[rows].reset_index(drop=True))
    target = contract.target.column
    labels = None
    if labelled:
        present = target in part.columns
        labels = part[target].iloc[rows].reset_index(drop=True) if present else pd.Series([None] * len(rows))
    return scores, labels, model.version


def batch_dataframe(files: list[str], contract):
    """The partitions as a Dask dataframe, each read by `read_partition` on a worker (its
    `meta` from the first file's column names only: the partitions are used as they are read)."""
    import dask.dataframe as dd

    from reprokit.core.batchfiles import column_names

    meta = pd.DataFrame({name: pd.Series(dtype=object) for name in column_names(files[0], contract.source)})
    return dd.from_map(read_partition, files, contract=contract, meta=meta, enforce_metadata=False)


def monitor_partitioned(
    model, uri: str, reference, holdout, files: list[str], contract, params, seed: int, n_threads: int
):
    """`reprokit.monitoring.monitor.monitor` for the partitioned batch `files` on the Dask client in use:
    `contract` (the stage's) names the columns a partition may have, `model` (loaded here,
    its contract checks the rows) scores the reference, `uri` is what the workers load.
    Returns the figures, comparisons and reference scores."""
    import dask

    from reprokit.core.drift import category_counts, compare_category_counts, compare_numbers_counted, reference_grid
    from reprokit.monitoring.batch_drift import (
        add_labels,
        figures_of,
        is_number,
        known_values,
        numbers,
        reference_side,
        sample_rows,
        verdict_of,
    )

    checks = model.contract
    ref, ref_ok, held, ref_scores = reference_side(model, reference, holdout)
    references = {f.name: numbers(ref.inputs[f.name][ref_ok]) for f in checks.features if is_number(f)}
    grids = dask.delayed({name: reference_grid(values, params.bins) for name, values in references.items()}, pure=True)
    parts = batch_dataframe(files, contract).to_delayed()
    partial = [dask.delayed(summarize)(part, checks, grids) for part in parts]
    while len(partial) > 1:
        partial = [dask.delayed(add_up)(partial[i : i + FAN_IN]) for i in range(0, len(partial), FAN_IN)]
    (total,) = dask.compute(partial[0])

    sizes = total["parts"]
    rows, ok_rows = sum(n for n, _, _ in sizes), sum(ok for _, ok, _ in sizes)
    if rows < params.min_rows:
        raise StageError(f"{rows} rows, fewer than monitor.min_rows ({params.min_rows}): too few to judge")
    comparisons: dict[str, Any] = {}
    nulls: dict[str, tuple[int, int]] = {}
    for feature in checks.features:
        cur_nulls, counted = total["columns"][feature.name]
        if is_number(feature):
            comparisons[feature.name] = compare_numbers_counted(references[feature.name], counted, params.bins)
        else:
            ref_counts = category_counts(ref.inputs[feature.name][ref_ok])
            cur_counts = pd.Series(dict(counted), dtype="int64") if counted else pd.Series([], dtype="int64")
            comparisons[feature.name] = compare_category_counts(ref_counts, cur_counts, known_values(feature))
        nulls[feature.name] = (int(ref.inputs[feature.name].isna().sum()), cur_nulls)

    # The scores' sample: the ordinals among all scorable rows the in-memory monitor draws.
    chosen = sample_rows(np.arange(ok_rows), params.max_score_rows, seed)
    starts = np.cumsum([0] + [ok for _, ok, _ in sizes])
    labelled = any(has and n for n, _, has in sizes)
    tasks = []
    for part, first, end in zip(parts, starts[:-1], starts[1:], strict=True):
        share = chosen[(chosen >= first) & (chosen < end)] - first
        if len(share):  # a partition with no sampled row is not read again
            tasks.append(dask.delayed(score_share)(part, checks, share, uri, n_threads, labelled))
    scored = dask.compute(*tasks)
    versions = {version for _, _, version in scored}
    if versions - {model.version}:
        raise StageError(f"the workers scored with model version(s) {sorted(versions)}, not {model.version}")
    cur_scores = np.concatenate([scores for scores, _, _ in scored]) if scored else np.empty(0)
    figures, comparisons = figures_of(
        checks, comparisons, nulls, (len(ref.inputs), rows, ok_rows), ref_scores, cur_scores, params
    )
    figures["rejected_reasons"] = dict(sorted(total["reasons"].items()))
    if labelled:
        labels = (
            pd.concat([labels for _, labels, _ in scored], ignore_index=True) if scored else pd.Series([], dtype=object)
        )
        add_labels(figures, comparisons, checks.target, reference, held, labels, cur_scores, params)
    figures.update(verdict_of(figures, params))
    return figures, comparisons, ref_scores
