"""Stage `batches`: demo batches of "new data" for the monitor, one per kind of drift.

Made from the held-out test split, so the model never saw their rows; seeded by
`base.seed`; sizes of the shifts in `params.yaml: batches`. The columns are the contract's
features and target (labels as the source writes them), like a batch from production:

- `no_drift`: the held-out rows as they are;
- `numeric_location`, `numeric_scale`: every numeric and integer column moved by a share
  of the reference's standard deviation, or spread around its mean (kept within the
  contract's range, integers rounded);
- `category_share`: the first categorical column set to its rarest value on a share of rows;
- `new_category`: the first categorical column set to a value nobody has seen on a share of rows
  (these two only when the contract has a categorical feature);
- `more_nulls`: the nullable columns nulled on a share of rows (with none nullable, the
  first numeric column: rows that break the contract);
- `concept_shift`: features untouched, a share of positive labels swapped with as many
  negative ones, so only the label and accuracy checks can see it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from reprokit.core.artifacts import fresh_dir, write_parquet
from reprokit.core.config import StageParams
from reprokit.core.contract import load_stage_contract
from reprokit.core.running import add_debug_option, run_stage

# The keys this stage reads: exactly its params in dvc.yaml (tests/code/test_pipeline_definition.py).
PARAMS = ("base.seed", "batches")
CONTRACT = ("target", "features")

KINDS = (
    "no_drift",
    "numeric_location",
    "numeric_scale",
    "category_share",
    "new_category",
    "more_nulls",
    "concept_shift",
)


def _picked(rng: np.random.Generator, n: int, share: float) -> np.ndarray:
    """A seeded mask of round(share * n) rows."""
    mask = np.zeros(n, dtype=bool)
    mask[rng.choice(n, int(round(share * n)), replace=False)] = True
    return mask


def _bounded(feature, values: pd.Series) -> pd.Series:
    """Values kept within the feature's range, whole for an integer feature."""
    lower = -np.inf if feature.min is None else feature.min
    upper = np.inf if feature.max is None else feature.max
    values = values.astype("float64").clip(lower, upper)
    if feature.type == "integer":
        return values.round().astype("Int64")
    return values


def make_batch(kind: str, held_out: pd.DataFrame, reference: pd.DataFrame, contract, params, seed: int):
    """One demo batch of `kind` (see the module's description)."""
    rng = np.random.default_rng([seed, KINDS.index(kind)])
    batch = held_out[contract.feature_names + [contract.target.column]].reset_index(drop=True).copy()
    n = len(batch)
    numbers = [f for f in contract.features if f.type in ("numeric", "integer")]
    categorical = [f for f in contract.features if f.type == "categorical"]
    if kind == "numeric_location":
        for feature in numbers:
            shift = params.location_shift_sd * float(reference[feature.name].astype("float64").std())
            batch[feature.name] = _bounded(feature, batch[feature.name].astype("float64") + shift)
    elif kind == "numeric_scale":
        for feature in numbers:
            mean = float(reference[feature.name].astype("float64").mean())
            spread = (batch[feature.name].astype("float64") - mean) * params.scale_factor
            batch[feature.name] = _bounded(feature, mean + spread)
    elif kind in ("category_share", "new_category"):
        feature = categorical[0]
        column = batch[feature.name].astype(object)
        if kind == "category_share":
            counts = reference[feature.name].value_counts()
            rarest = min(feature.values, key=lambda v: (counts.get(v, 0), str(v)))
            column[_picked(rng, n, params.category_share)] = rarest
        else:
            text = any(isinstance(v, str) for v in feature.values)
            unseen = f"new {feature.name}" if text else max(feature.values) + 1
            column[_picked(rng, n, params.new_category_share)] = unseen
        batch[feature.name] = column
    elif kind == "more_nulls":
        targets = [f for f in contract.features if f.nullable] or numbers[:1]
        for feature in targets:
            column = batch[feature.name].astype(object)
            column[_picked(rng, n, params.null_share)] = None
            batch[feature.name] = column.astype(batch[feature.name].dtype)
    elif kind == "concept_shift":
        y = batch[contract.target.column].to_numpy().copy()
        positives, negatives = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
        swap = min(int(round(params.label_swap_share * len(positives))), len(negatives))
        y[rng.choice(positives, swap, replace=False)] = 0
        y[rng.choice(negatives, swap, replace=False)] = 1
        batch[contract.target.column] = y
    target = contract.target
    batch[target.column] = np.where(batch[target.column].to_numpy() == 1, target.positive, target.negative)
    return batch


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_debug_option(parser)
    parser.add_argument("--contract", default="dataset.yaml")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--train", default="data/prepared/train.parquet", help="the reference (train split)")
    parser.add_argument("--test", default="data/prepared/test.parquet", help="the held-out rows")
    parser.add_argument("--out-dir", default="data/batches", help="one <kind>.parquet per kind of drift")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)

    def body() -> str:
        contract = load_stage_contract("batches", CONTRACT, args.contract)
        stage_params = StageParams("batches", PARAMS, args.params)
        params, seed = stage_params.section("batches"), stage_params.value("base.seed")
        reference, held_out = pd.read_parquet(args.train), pd.read_parquet(args.test)
        kinds = [k for k in KINDS if k not in ("category_share", "new_category") or contract.names_of("categorical")]
        with fresh_dir(args.out_dir) as out_dir:
            for kind in kinds:
                batch = make_batch(kind, held_out, reference, contract, params, seed)
                write_parquet(batch, Path(out_dir) / f"{kind}.parquet", index=False)
        return f"{len(kinds)} batches of {len(held_out)} rows in {args.out_dir}: {', '.join(kinds)}"

    run_stage("batches", body, debug=args.debug)


if __name__ == "__main__":
    main()
