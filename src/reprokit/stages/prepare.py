"""Stage `prepare`: load the source, validate it against the contract, clean, split.

Writes the train and test splits as Parquet (index = the id column, or the row's
position in the source) with the target mapped to 1 (positive label) and 0, and a
data-quality summary: rows in, rows dropped and why, nulls per column.
"""

from __future__ import annotations

import argparse
import math
from typing import Any

import numpy as np
import pandas as pd

from reprokit.core.artifacts import write_json, write_parquet
from reprokit.core.config import ScaleParams, StageParams
from reprokit.core.contract import Contract, build_schema, load_stage_contract
from reprokit.core.errors import StageError
from reprokit.core.running import add_debug_option, run_stage
from reprokit.core.sources import load_source

# The keys this stage reads: exactly its params in dvc.yaml (tests/code/test_pipeline_definition.py).
PARAMS = ("base.seed", "split.test_size", "scale.rows", "scale.jitter")
CONTRACT = ("name", "source", "target", "features")

MAX_EXAMPLES = 5


class DataContractError(StageError):
    """The source table breaks the dataset contract."""


def format_failures(failure_cases: pd.DataFrame, source: str) -> str:
    """Summarize pandera's failure cases: one line per column and check, with counts and examples."""
    lines = [f"{source}: the data breaks the dataset contract:"]
    for (column, check), group in failure_cases.groupby(["column", "check"], sort=True, dropna=False):
        values = group["failure_case"].astype(str).drop_duplicates()
        if check == "column_in_dataframe":
            lines += [f"  - column {v!r} is required by the contract but missing from the table" for v in values]
            continue
        if check == "column_in_schema":
            lines += [f"  - column {v!r} is not in the contract: add it to features or drop_columns" for v in values]
            continue
        rows = group["index"].dropna()
        examples = values.head(MAX_EXAMPLES).tolist()
        where = f"{len(rows)} row(s), e.g. rows {rows.head(MAX_EXAMPLES).astype(int).tolist()} (0-based)"
        if not len(rows):
            where = "the column as a whole"
        hint = ""
        if any(isinstance(v, str) and v != v.strip() for v in examples):
            hint = " (values with leading or trailing spaces)"
        lines.append(f"  - column {column!r}: check {check} failed for {where}; failing values: {examples}{hint}")
    return "\n".join(lines)


def validate(frame: pd.DataFrame, contract: Contract, source: str) -> pd.DataFrame:
    """Validate lazily (every failing column and check at once); return the coerced table."""
    from pandera.errors import SchemaErrors

    try:
        return build_schema(contract).validate(frame, lazy=True)
    except SchemaErrors as exc:
        raise DataContractError(format_failures(exc.failure_cases, source)) from None


def clean(frame: pd.DataFrame, contract: Contract) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Apply the contract's cleaning rules; return the table and what was done."""
    nulls = {column: int(count) for column, count in frame.isna().sum().items()}
    filled: dict[str, int] = {}
    frame = frame.copy()
    for column, value in contract.fill_missing.items():
        missing = frame[column].isna()
        filled[column] = int(missing.sum())
        frame[column] = frame[column].where(~missing, value)
    dropped: dict[str, int] = {}
    required = [f.name for f in contract.features if not f.nullable] + list(contract.fill_missing)
    still_missing = frame[required].isna().any(axis=1)
    if still_missing.any():
        dropped["missing_required_value"] = int(still_missing.sum())
        frame = frame.loc[~still_missing]
    report = {"nulls_before_cleaning": nulls, "filled": filled, "rows_dropped": dropped}
    return frame, report


def to_model_table(frame: pd.DataFrame, contract: Contract) -> pd.DataFrame:
    """Features in contract order plus the target as 1/0, indexed by id or source row."""
    target = contract.target
    table = frame[contract.feature_names].copy()
    table[target.column] = (frame[target.column] == target.positive).astype("int8")
    if contract.id_column:
        table.index = pd.Index(frame[contract.id_column].astype(str), name=contract.id_column)
    else:
        table.index = pd.Index(frame.index.to_numpy(), name="row")
    return table


def split(
    table: pd.DataFrame, target: str, test_size: float, seed: int, where: str = "", labels: dict | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Deterministic stratified split; rows keep their index, in original order.

    `labels` maps the 1/0 target back to the labels as written in the data, for errors."""
    if not 0.0 < test_size < 1.0:
        raise StageError(f"params.yaml: split.test_size must be between 0 and 1, got {test_size}")
    prefix = f"{where}: " if where else ""
    if table.empty:
        raise StageError(f"{prefix}no rows to split: the table is empty after validation and cleaning")
    labels = labels or {1: 1, 0: 0}
    counts = {labels[value]: int((table[target] == value).sum()) for value in (1, 0)}
    if min(counts.values()) < 2:
        shown = ", ".join(f"{label!r}: {count}" for label, count in counts.items())
        raise StageError(
            f"{prefix}target {target!r} needs at least two rows of each class to split; the table has {shown}"
        )
    n_test = math.ceil(test_size * len(table))
    if min(n_test, len(table) - n_test) < 2:
        raise StageError(
            f"{prefix}split.test_size {test_size} of {len(table)} rows leaves {n_test} test and "
            f"{len(table) - n_test} train rows; each split needs at least one row of each class"
        )
    in_test = stratified_test_rows(table[target].to_numpy(), n_test, seed)
    return table.loc[~in_test], table.loc[in_test]


def _approximate_mode(class_counts: np.ndarray, n_draws: int, rng: np.random.RandomState) -> np.ndarray:
    """scikit-learn's `sklearn.utils.extmath._approximate_mode`: rows to draw from each class,
    proportional and summing to `n_draws`, remainders' ties broken at random."""
    continuous = class_counts / class_counts.sum() * n_draws
    floored = np.floor(continuous)
    need_to_add = int(n_draws - floored.sum())
    if need_to_add > 0:
        remainder = continuous - floored
        for value in np.sort(np.unique(remainder))[::-1]:
            (inds,) = np.where(remainder == value)
            add_now = min(len(inds), need_to_add)
            floored[rng.choice(inds, size=add_now, replace=False)] += 1
            need_to_add -= add_now
            if need_to_add == 0:
                break
    return floored.astype(int)


def stratified_test_rows(y: np.ndarray, n_test: int, seed: int) -> np.ndarray:
    """Which rows are test rows: exactly those `sklearn.model_selection.train_test_split(...,
    test_size=n_test, stratify=y, random_state=seed)` puts in the test split, drawn by the same
    algorithm from the same random stream (`StratifiedShuffleSplit._iter_indices`). Ported so
    that `prepare` does not import scikit-learn (about 1 s of its start-up); a test checks
    the two agree."""
    n_train = len(y) - n_test
    _, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    class_rows = np.split(np.argsort(inverse, kind="stable"), np.cumsum(counts)[:-1])
    rng = np.random.RandomState(seed)
    n_i = _approximate_mode(counts, n_train, rng)
    t_i = _approximate_mode(counts - n_i, n_test, rng)
    test = np.zeros(len(y), dtype=bool)
    for rows, taken, tested in zip(class_rows, n_i, t_i, strict=True):
        shuffled = rows.take(rng.permutation(len(rows)), mode="clip")
        test[shuffled[taken : taken + tested]] = True
    return test


def prepare(
    raw: pd.DataFrame, contract: Contract, test_size: float, seed: int, source: str, scale: tuple[int, float] = (0, 0.0)
):
    """Validate, clean and split, then enlarge the splits to `scale` = (rows, jitter) when
    rows is not 0 (`reprokit.core.scale`); return (train, test, data-quality summary)."""
    present = [c for c in contract.drop_columns if c in raw.columns]
    frame = raw.drop(columns=present).reset_index(drop=True)
    frame = validate(frame, contract, source)
    frame, report = clean(frame, contract)
    table = to_model_table(frame, contract)
    labels = {1: contract.target.positive, 0: contract.target.negative}
    train, test = split(table, contract.target.column, test_size, seed, where=source, labels=labels)
    rows, jitter = scale
    if rows:
        from reprokit.core.scale import enlarge, grown_sizes

        train_rows, test_rows = grown_sizes(train, test, rows)
        first_test_key = len(raw) + train_rows - len(train)  # copies' row numbers follow the source's
        train = enlarge(train, train_rows, contract, jitter, (seed, 0), first_key=len(raw))
        test = enlarge(test, test_rows, contract, jitter, (seed, 1), first_key=first_test_key)
    target = contract.target.column
    summary = {
        "dataset": contract.name,
        "rows_in": int(len(raw)),
        "rows_out": int(len(table)),
        "columns_dropped": present,
        **report,
        **({"scaled_to": {"rows": rows, "jitter": jitter}} if rows else {}),
        "rows": {"train": int(len(train)), "test": int(len(test))},
        "positive_rate": {
            "all": round(float(table[target].mean()), 6),
            "train": round(float(train[target].mean()), 6),
            "test": round(float(test[target].mean()), 6),
        },
    }
    return train, test, summary


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments; `dvc.yaml` passes every path."""
    parser = argparse.ArgumentParser(description=__doc__)
    add_debug_option(parser)
    parser.add_argument("--contract", default="dataset.yaml")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--train-out", required=True)
    parser.add_argument("--test-out", required=True)
    parser.add_argument("--quality-out", required=True)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)

    def body() -> str:
        contract = load_stage_contract("prepare", CONTRACT, args.contract)
        params = StageParams("prepare", PARAMS, args.params)
        seed, test_size = params.value("base.seed"), params.value("split.test_size")
        scale = ScaleParams(params.value("scale.rows"), params.value("scale.jitter"))  # checks both
        scale = scale.rows, scale.jitter
        raw = load_source(contract.source)
        train, test, summary = prepare(raw, contract, test_size, seed, source=contract.source.uri, scale=scale)
        write_parquet(train, args.train_out)
        write_parquet(test, args.test_out)
        write_json(args.quality_out, summary)
        return f"{summary['rows_in']} rows in, {len(train)} train, {len(test)} test"

    run_stage("prepare", body, debug=args.debug)


if __name__ == "__main__":
    main()
