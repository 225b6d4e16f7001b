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


@pytest.fixture(scope="module")
def logistic_package(tmp_path_factory, repo, telco_splits, telco_contract):
    """The telco package with logistic regression instead of the default model: other scores."""
    from sklearn.pipeline import Pipeline

    from reprokit.core.config import FeaturizeParams, TrainParams, load_section
    from reprokit.core.lockfile import RUNTIME_LOCK
    from reprokit.model.estimators import fit
    from reprokit.model.inference import inputs_of, predict_proba
    from reprokit.stages.featurize import fit_transform
    from reprokit.stages.package import save_package, synthetic_example

    _, train, test, _ = telco_splits
    transformer, train_x, _ = fit_transform(train, test, telco_contract, FeaturizeParams(True, "median"))
    base = load_section("train", repo / "params.yaml")
    params = TrainParams(
        "logistic_regression", base.hist_gradient_boosting, base.random_forest, base.logistic_regression
    )
    other = Pipeline([("features", transformer), ("model", fit(train_x, "churn", params, 0))])
    inputs = inputs_of(test, telco_contract)
    out = tmp_path_factory.mktemp("logistic") / "package"
    example = synthetic_example(telco_contract)
    save_package(
        other, telco_contract, inputs, out, predict_proba(other, inputs, 1), 0.5, 1, example, repo / RUNTIME_LOCK
    )
    return out
