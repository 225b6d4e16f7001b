"""Stage `train`: fit the model chosen in `params.yaml` on the featurized training split.

The fit runs under a fixed OpenMP/BLAS thread limit (`train.n_threads`): gradient
boosting stores the thread count it used, so without the limit the model's bytes
would depend on the machine's core count.
"""

from __future__ import annotations

import argparse

import pandas as pd

from reprokit.artifacts import save_skops
from reprokit.config import TrainParams, load_section
from reprokit.contract import load_contract
from reprokit.stage import StageError, run_stage


def build_model(params: TrainParams, seed: int):
    """An unfitted estimator of the kind and hyperparameters in `params`."""
    hyper = params.hyperparams
    try:
        if params.model == "hist_gradient_boosting":
            from sklearn.ensemble import HistGradientBoostingClassifier

            return HistGradientBoostingClassifier(random_state=seed, **hyper)
        if params.model == "random_forest":
            from sklearn.ensemble import RandomForestClassifier

            return RandomForestClassifier(random_state=seed, n_jobs=params.n_threads, **hyper)
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(random_state=seed, **hyper)
    except TypeError as exc:
        raise StageError(f"params.yaml: train.{params.model} has a bad hyperparameter: {exc}") from None


def fit(features: pd.DataFrame, target: str, params: TrainParams, seed: int):
    """Fit the model on `features` (the target column held out) under a fixed thread limit."""
    from sklearn.utils._param_validation import InvalidParameterError
    from threadpoolctl import threadpool_limits

    model = build_model(params, seed)
    x, y = features.drop(columns=[target]), features[target].to_numpy()
    try:
        with threadpool_limits(limits=params.n_threads):
            model.fit(x, y)
    except InvalidParameterError as exc:
        raise StageError(f"params.yaml: train.{params.model}: {exc}") from None
    return model


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments; `dvc.yaml` passes every path."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--contract", default="dataset.yaml")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--train", required=True)
    parser.add_argument("--model-out", required=True)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)

    def body() -> str:
        contract = load_contract(args.contract)
        params = load_section("train", args.params)
        seed = load_section("base", args.params).seed
        features = pd.read_parquet(args.train)
        model = fit(features, contract.target.column, params, seed)
        save_skops(model, args.model_out)
        return f"{params.model} fitted on {len(features)} rows x {features.shape[1] - 1} features"

    run_stage("train", body)


if __name__ == "__main__":
    main()
