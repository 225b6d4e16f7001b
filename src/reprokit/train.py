"""Stage `train`: fit the model chosen in `params.yaml` on the featurized training split.

The fit runs under the project's thread budget (`base.n_threads`): gradient boosting
stores the thread count it used, so without the limit the model's bytes would depend
on the machine's core count. A random forest is fitted with that many jobs and saved
with none, so its predictions are summed in one fixed order.
"""

from __future__ import annotations

import argparse

import pandas as pd

from reprokit.artifacts import save_skops
from reprokit.config import StageParams, TrainParams
from reprokit.contract import load_stage_contract
from reprokit.inference import thread_budget
from reprokit.stage import StageError, run_stage

# The keys this stage reads: exactly its params in dvc.yaml (tests/code/test_pipeline_definition.py).
PARAMS = ("base.seed", "base.n_threads", "train")
CONTRACT = ("target",)


def build_model(params: TrainParams, seed: int, n_threads: int = 1):
    """An unfitted estimator of the kind and hyperparameters in `params`."""
    hyper = params.hyperparams
    try:
        if params.model == "hist_gradient_boosting":
            from sklearn.ensemble import HistGradientBoostingClassifier

            return HistGradientBoostingClassifier(random_state=seed, **hyper)
        if params.model == "random_forest":
            from sklearn.ensemble import RandomForestClassifier

            return RandomForestClassifier(random_state=seed, n_jobs=n_threads, **hyper)
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(random_state=seed, **hyper)
    except TypeError as exc:
        raise StageError(f"params.yaml: train.{params.model} has a bad hyperparameter: {exc}") from None


def fit(features: pd.DataFrame, target: str, params: TrainParams, seed: int, n_threads: int = 1):
    """Fit the model on `features` (the target column held out) under the thread budget.

    The fitted model keeps no parallelism: `n_jobs` is reset, so predicting never
    depends on how many jobs run at once."""
    from sklearn.utils._param_validation import InvalidParameterError

    model = build_model(params, seed, n_threads)
    x, y = features.drop(columns=[target]), features[target].to_numpy()
    try:
        with thread_budget(n_threads):
            model.fit(x, y)
    except InvalidParameterError as exc:
        raise StageError(f"params.yaml: train.{params.model}: {exc}") from None
    if "n_jobs" in model.get_params():
        model.set_params(n_jobs=None)
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
        contract = load_stage_contract("train", CONTRACT, args.contract)
        stage_params = StageParams("train", PARAMS, args.params)
        params = stage_params.section("train")
        seed, n_threads = stage_params.value("base.seed"), stage_params.value("base.n_threads")
        features = pd.read_parquet(args.train)
        model = fit(features, contract.target.column, params, seed, n_threads)
        save_skops(model, args.model_out)
        return f"{params.model} fitted on {len(features)} rows x {features.shape[1] - 1} features"

    run_stage("train", body)


if __name__ == "__main__":
    main()
