"""Fixtures for the container suite: a real package of the default data, built in-process by the
pipeline's own functions (prepare, featurize, train, package), as tests/serving/conftest.py builds
it, so that the image test needs no `dvc repro` (a fresh clone has no models/)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def telco_pipeline(repo, telco_splits, telco_contract):
    """The fitted inference pipeline on the real data, with the repository's params."""
    from sklearn.pipeline import Pipeline

    from reprokit.config import load_section
    from reprokit.estimators import fit
    from reprokit.featurize import fit_transform

    params = repo / "params.yaml"
    _, train, test, _ = telco_splits
    transformer, train_x, _ = fit_transform(train, test, telco_contract, load_section("featurize", params))
    model = fit(train_x, "churn", load_section("train", params), load_section("base", params).seed)
    return Pipeline([("features", transformer), ("model", model)])


@pytest.fixture(scope="session")
def telco_package(tmp_path_factory, telco_pipeline, telco_splits, telco_contract):
    """A package directory written by the `package` stage's own function (threshold 0.5)."""
    from reprokit.inference import inputs_of, predict_proba
    from reprokit.package import save_package, synthetic_example

    _, _, test, _ = telco_splits
    inputs = inputs_of(test, telco_contract)
    out = tmp_path_factory.mktemp("telco") / "package"
    expected = predict_proba(telco_pipeline, inputs, 1)
    save_package(telco_pipeline, telco_contract, inputs, out, expected, 0.5, example=synthetic_example(telco_contract))
    return out
