"""The serving suites' shared fixtures: the default package as `pyfunc` and as a running service;
a second package (logistic regression)."""

from __future__ import annotations

import httpx
import pytest
from servers import scoring_service

from reprokit.model.trust import load_package


@pytest.fixture(scope="module")
def pyfunc(telco_package):
    """The package as `load_package` gives it (MLflow's pyfunc under the input policy)."""
    return load_package(telco_package)


@pytest.fixture(scope="module")
def service(tmp_path_factory, telco_package):
    """A real `reprokit serve` process on the package, one per test module; an HTTP client to it."""
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with scoring_service([str(telco_package), "--max-body-bytes", "200000"], log) as (url, _):
        with httpx.Client(base_url=url, timeout=60) as client:
            yield client


def train_package(out, repo, telco_splits, telco_contract, model: str = "hist_gradient_boosting", shift: float = 0.0):
    """A telco package written by the `package` stage's own function: `model` fitted on the
    train split, with the label turned positive on a seeded `shift` share of the rows (a
    version trained on shifted data scores every customer higher)."""
    import numpy as np
    from sklearn.pipeline import Pipeline

    from reprokit.core.config import FeaturizeParams, TrainParams, load_section
    from reprokit.core.lockfile import RUNTIME_LOCK
    from reprokit.model.estimators import fit
    from reprokit.model.inference import inputs_of, predict_proba
    from reprokit.stages.featurize import fit_transform
    from reprokit.stages.package import save_package, synthetic_example

    _, train, test, _ = telco_splits
    if shift:
        train = train.copy()
        train.loc[np.random.default_rng(0).random(len(train)) < shift, "churn"] = 1
    transformer, train_x, _ = fit_transform(train, test, telco_contract, FeaturizeParams(True, "median"))
    base = load_section("train", repo / "params.yaml")
    params = TrainParams(model, base.hist_gradient_boosting, base.random_forest, base.logistic_regression)
    pipeline = Pipeline([("features", transformer), ("model", fit(train_x, "churn", params, 0))])
    inputs = inputs_of(test, telco_contract)
    example = synthetic_example(telco_contract)
    expected = predict_proba(pipeline, inputs, 1)
    save_package(pipeline, telco_contract, inputs, out, expected, 0.5, 1, example, repo / RUNTIME_LOCK)
    return out


@pytest.fixture(scope="module")
def logistic_package(tmp_path_factory, repo, telco_splits, telco_contract):
    """The telco package with logistic regression instead of the default model: other scores."""
    out = tmp_path_factory.mktemp("logistic") / "package"
    return train_package(out, repo, telco_splits, telco_contract, "logistic_regression")


@pytest.fixture(scope="module")
def shifted_package(tmp_path_factory, repo, telco_splits, telco_contract):
    """The default model trained with the label turned positive on half of the rows: every
    customer scores higher (a version trained on shifted data)."""
    out = tmp_path_factory.mktemp("shifted") / "package"
    return train_package(out, repo, telco_splits, telco_contract, shift=0.5)
