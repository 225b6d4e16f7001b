"""The estimators the pipeline builds: the feature transformer and each model kind.

Stages `featurize` and `train` build them from here, and `reprokit.model.trust` derives from
the same code the exact list of types a model file may contain.
"""

from __future__ import annotations

import pandas as pd

from reprokit.core.config import FeaturizeParams, TrainParams
from reprokit.core.contract import Contract
from reprokit.core.errors import StageError
from reprokit.core.threads import thread_budget


def build_transformer(contract: Contract, params: FeaturizeParams):
    """An unfitted `ColumnTransformer` for the contract's features, pandas in and out."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    if params.numeric_impute not in ("median", "mean"):
        raise StageError(f"params.yaml: featurize.numeric_impute must be median or mean, got {params.numeric_impute!r}")
    numeric = contract.names_of("numeric", "integer")
    categorical = contract.names_of("categorical")
    binary = contract.names_of("binary")
    numeric_steps = [("impute", SimpleImputer(strategy=params.numeric_impute))]
    if params.scale_numeric:
        numeric_steps.append(("scale", StandardScaler()))
    transformers = []
    if numeric:
        transformers.append(("num", Pipeline(numeric_steps), numeric))
    if categorical:
        categories = [list(contract.feature(name).values) for name in categorical]
        encoder = OneHotEncoder(categories=categories, handle_unknown="ignore", sparse_output=False, dtype="float64")
        transformers.append(("cat", encoder, categorical))
    if binary:
        binary_steps = [("impute", SimpleImputer(strategy="most_frequent"))]
        if any(isinstance(v, str) for name in binary for v in contract.feature(name).values):
            categories = [list(contract.feature(name).values) for name in binary]
            binary_steps.append(("encode", OneHotEncoder(categories=categories, drop="first", sparse_output=False)))
        transformers.append(("bin", Pipeline(binary_steps), binary))
    transformer = ColumnTransformer(transformers, remainder="drop", verbose_feature_names_out=True)
    return transformer.set_output(transform="pandas")


def served_pipeline(transformer, model):
    """The package's pipeline: the fitted `transformer` and `model`, after an `inputs` step
    that makes a nullable feature optional. It reindexes the records to the transformer's
    columns, so an absent column arrives as nulls, and makes every column an object column,
    so an absent text column is nulls of text rather than a float column the encoder cannot
    compare with its categories. Values are unchanged (a float64 or int64 value converts back
    to the same number), so the probabilities are those of the plain two-step pipeline.
    Built from scikit-learn and pandas alone: the package needs no reprokit to load."""
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    columns = [str(name) for name in transformer.feature_names_in_]
    inputs = FunctionTransformer(pd.DataFrame, kw_args={"columns": columns, "dtype": object})
    return Pipeline([("inputs", inputs), ("features", transformer), ("model", model)])


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
    """Fit the model on `features` (the target column held out) under the thread budget."""
    return fit_xy(features.drop(columns=[target]), features[target].to_numpy(), params, seed, n_threads)


def fit_xy(x: pd.DataFrame, y, params: TrainParams, seed: int, n_threads: int = 1):
    """Fit the model on features `x` and target `y` under the thread budget.

    The fitted model keeps no parallelism: `n_jobs` is reset, so predicting never
    depends on how many jobs run at once."""
    from sklearn.utils._param_validation import InvalidParameterError

    model = build_model(params, seed, n_threads)
    try:
        with thread_budget(n_threads, exact=True):
            model.fit(x, y)
    except InvalidParameterError as exc:
        raise StageError(f"params.yaml: train.{params.model}: {exc}") from None
    used = getattr(getattr(model, "_bin_mapper", None), "n_threads", n_threads)
    if used != n_threads:  # e.g. a scikit-learn built without OpenMP: its bytes would differ from other machines'
        raise StageError(
            f"params.yaml: base.n_threads is {n_threads}, but this scikit-learn fitted with {used} thread(s); "
            f"set base.n_threads: {used} (the model's bytes record the count)"
        )
    if "n_jobs" in model.get_params():
        model.set_params(n_jobs=None)
    return model
