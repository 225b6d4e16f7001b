"""Stage `featurize`: fit the feature transformation on the training split only.

Categoricals are one-hot encoded with the categories the contract allows (so the
encoding is fixed by the contract, not by what the training rows happen to hold),
binaries pass through, numerics are imputed and, if asked, standardized.
"""

from __future__ import annotations

import argparse

import pandas as pd

from reprokit.artifacts import save_skops, write_parquet
from reprokit.config import FeaturizeParams, StageParams
from reprokit.contract import Contract, load_stage_contract
from reprokit.estimators import build_transformer
from reprokit.inference import inputs_of
from reprokit.stage import add_debug_option, run_stage

# The keys this stage reads: exactly its params in dvc.yaml (tests/code/test_pipeline_definition.py).
PARAMS = ("featurize",)
CONTRACT = ("target", "features")


def fit_transform(train: pd.DataFrame, test: pd.DataFrame, contract: Contract, params: FeaturizeParams):
    """Fit on train only; return (fitted transformer, train features, test features), target kept."""
    target = contract.target.column
    transformer = build_transformer(contract, params)
    train_x = transformer.fit_transform(_object_strings(inputs_of(train, contract)))
    test_x = transformer.transform(_object_strings(inputs_of(test, contract)))
    train_x[target] = train[target].to_numpy()
    test_x[target] = test[target].to_numpy()
    return transformer, train_x, test_x


def _object_strings(inputs: pd.DataFrame) -> pd.DataFrame:
    """`inputs` with its string columns as NumPy object columns. The encoders convert an
    Arrow-backed string column to one on every pass, and fitting makes two (fit, then
    transform): converted here once, the same values (the features' bytes are unchanged)."""
    strings = [name for name in inputs.columns if pd.api.types.is_string_dtype(inputs[name])]
    return inputs.astype(dict.fromkeys(strings, object)) if strings else inputs


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments; `dvc.yaml` passes every path."""
    parser = argparse.ArgumentParser(description=__doc__)
    add_debug_option(parser)
    parser.add_argument("--contract", default="dataset.yaml")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--train", required=True)
    parser.add_argument("--test", required=True)
    parser.add_argument("--transformer-out", required=True)
    parser.add_argument("--train-out", required=True)
    parser.add_argument("--test-out", required=True)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)

    def body() -> str:
        contract = load_stage_contract("featurize", CONTRACT, args.contract)
        params = StageParams("featurize", PARAMS, args.params).section("featurize")
        train, test = pd.read_parquet(args.train), pd.read_parquet(args.test)
        transformer, train_x, test_x = fit_transform(train, test, contract, params)
        save_skops(transformer, args.transformer_out)
        write_parquet(train_x, args.train_out)
        write_parquet(test_x, args.test_out)
        return f"{len(contract.feature_names)} columns -> {train_x.shape[1] - 1} features, {len(train_x)}/{len(test_x)} rows"

    run_stage("featurize", body, debug=args.debug)


if __name__ == "__main__":
    main()
