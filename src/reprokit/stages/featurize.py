"""Stage `featurize`: fit the feature transformation on the training split only.

Categoricals are one-hot encoded with the categories the contract allows (so the
encoding is fixed by the contract, not by what the training rows happen to hold),
binaries pass through, numerics are imputed and, if asked, standardized.
"""

from __future__ import annotations

import argparse

import pandas as pd

from reprokit.core.artifacts import save_skops, write_parquet
from reprokit.core.config import FeaturizeParams, StageParams
from reprokit.core.contract import Contract, load_stage_contract
from reprokit.core.running import add_debug_option, run_stage
from reprokit.model.estimators import build_transformer
from reprokit.model.inference import inputs_of

# The keys this stage reads: exactly its params in dvc.yaml (tests/code/test_pipeline_definition.py).
PARAMS = ("featurize",)
CONTRACT = ("target", "features")


def fit_transform(train: pd.DataFrame, test: pd.DataFrame, contract: Contract, params: FeaturizeParams):
    """Fit on train only; return (fitted transformer, train features, test features), target kept."""
    transformer, train_x = fit_features(train, contract, params)
    return transformer, train_x, features_of(transformer, test, contract)


def fit_features(train: pd.DataFrame, contract: Contract, params: FeaturizeParams):
    """The transformer fitted on the training split, and the split's features (target kept).

    The stage passes the split as it is read, so this holds its only reference: it is freed
    once its model inputs are taken, before the transformer's peak (which holds several copies
    of the features), and the test split is read only after it (at four million rows, together
    0.5 GiB less)."""
    target = contract.target.column
    train_y, inputs = train[target].to_numpy(), inputs_of(train, contract)
    del train
    transformer = build_transformer(contract, params)
    train_x = transformer.fit_transform(inputs)
    train_x[target] = train_y
    return transformer, train_x


def features_of(transformer, split: pd.DataFrame, contract: Contract) -> pd.DataFrame:
    """A split's features by the fitted transformer (target kept)."""
    features = transformer.transform(inputs_of(split, contract))
    features[contract.target.column] = split[contract.target.column].to_numpy()
    return features


def read_split(path: str, contract: Contract) -> pd.DataFrame:
    """A prepared split with its string feature columns read as categoricals (Parquet
    dictionary columns; the index and target as they are) whose categories are Python
    strings (object dtype). The encoders turn each string column into an object array on
    every pass (fitting makes two): from such a categorical that is a few distinct strings
    referenced, where pandas' own `str` categories give a new string object per row (at four
    million rows, 350 MiB per column instead of 32, the stage's peak). The same features and
    transformer bytes (tests/code/test_featurize.py)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    features = set(contract.feature_names)
    strings = [
        field.name
        for field in pq.read_schema(path)
        if field.name in features and (pa.types.is_string(field.type) or pa.types.is_large_string(field.type))
    ]
    frame = pd.read_parquet(path, read_dictionary=strings)
    for name in strings:
        column = frame[name].cat
        frame[name] = column.set_categories(column.categories.astype(object))
    return frame


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
        transformer, train_x = fit_features(read_split(args.train, contract), contract, params)
        test_x = features_of(transformer, read_split(args.test, contract), contract)
        save_skops(transformer, args.transformer_out)
        write_parquet(train_x, args.train_out)
        write_parquet(test_x, args.test_out)
        features = train_x.shape[1] - 1
        return f"{len(contract.feature_names)} columns -> {features} features, {len(train_x)}/{len(test_x)} rows"

    run_stage("featurize", body, debug=args.debug)


if __name__ == "__main__":
    main()
