"""Release gate and champion/challenger aliases against a real MLflow SQLite store."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import yaml
from sklearn.pipeline import Pipeline

from reprokit import registry, tracking
from reprokit.config import FeaturizeParams, GateParams, TrainParams
from reprokit.estimators import fit
from reprokit.featurize import fit_transform
from reprokit.gate import p95_ms, single_row_times_ms, verdict
from reprokit.inference import inputs_of
from reprokit.package import save_package
from reprokit.prepare import split, to_model_table, validate
from reprokit.stage import StageError
from synthetic import loans_contract, make_loans

GATE = GateParams(0.8, 0.01, 0.1, 50.0, 20, False)


def test_verdict_passes_and_fails_on_each_threshold():
    ok = verdict(GATE, test_auc=0.85, subgroup_gap=0.05, latency_ms=5.0, champion_auc=0.851, challenger_auc=0.85)
    assert ok["passed"] and all(c["passed"] for c in ok["checks"].values())
    assert ok["checks"]["max_auc_degradation"]["value"] == 0.001
    no_champion = verdict(GATE, 0.85, 0.05, 5.0, None, 0.85)
    assert no_champion["passed"] and no_champion["checks"]["max_auc_degradation"]["note"] == "no champion yet"
    for figures, failing in [
        ((0.79, 0.05, 5.0, None, 0.79), "min_test_roc_auc"),
        ((0.85, 0.05, 5.0, 0.87, 0.85), "max_auc_degradation"),
        ((0.85, 0.15, 5.0, None, 0.85), "max_subgroup_auc_gap"),
        ((0.85, 0.05, 80.0, None, 0.85), "max_p95_latency_ms"),
    ]:
        result = verdict(GATE, *figures)
        assert not result["passed"]
        assert [n for n, c in result["checks"].items() if not c["passed"]] == [failing]


def test_p95_is_the_95th_percentile_of_given_timings():
    assert p95_ms([float(i) for i in range(1, 101)]) == 95.05
    assert p95_ms([3.0] * 19 + [400.0]) == 22.85  # linear interpolation between the 19th and 20th
    assert p95_ms([0.0123456]) == 0.012
    with pytest.raises(ValueError, match="no timings"):
        p95_ms([])


def test_latency_is_measured_per_row_after_warm_up():
    import time

    import pandas as pd

    calls = []

    class Slow:
        def predict(self, frame):
            calls.append(len(frame))
            time.sleep(0.002)

    times = single_row_times_ms(Slow(), pd.DataFrame({"x": [1.0, 2.0]}), samples=20, n_threads=1, warmup=2)
    assert calls == [1] * 22 and len(times) == 20
    assert min(times) >= 2.0  # wall time of each call, which sleeping 2 ms bounds from below


@pytest.fixture()
def store(tmp_path, repo, monkeypatch):
    shutil.copy(repo / "params.yaml", tmp_path / "params.yaml")
    (tmp_path / "dataset.yaml").write_text(yaml.safe_dump(loans_contract()))  # names the registered model
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    return tmp_path, mlflow.MlflowClient()


@pytest.fixture(scope="module")
def loan_data(loans_contract_obj):
    table = to_model_table(validate(make_loans(300), loans_contract_obj, "x"), loans_contract_obj)
    train, test = split(table, "defaulted", 0.25, 0)
    transformer, train_x, _ = fit_transform(train, test, loans_contract_obj, FeaturizeParams(True, "median"))
    return transformer, train_x, inputs_of(test, loans_contract_obj), test


def publish(root, loan_data, iterations: int) -> tuple[dict, Pipeline]:
    """Package a model and log/register it as the package stage does."""
    transformer, train_x, inputs, _ = loan_data
    hyper = {"hist_gradient_boosting": {"max_iter": iterations}, "random_forest": {}, "logistic_regression": {}}
    pipeline = Pipeline(
        [
            ("features", transformer),
            ("model", fit(train_x, "defaulted", TrainParams("hist_gradient_boosting", **hyper), 0)),
        ]
    )
    out = root / f"pkg-{iterations}"
    save_package(pipeline, inputs, out, pipeline.predict_proba(inputs)[:, 1])
    return tracking.log_run("params.yaml", "dataset.yaml", {}, [], str(out), {}, []), pipeline


def gate(root, loan_data, package: str, min_auc: float) -> str:
    """Run the real release gate (`python -m reprokit.gate`) on a package; return its verdict tag.

    Latency and degradation limits no load or model can reach: `min_auc` decides the verdict."""
    import json

    from sklearn.metrics import roc_auc_score

    from reprokit.gate import main as gate_main
    from reprokit.inference import served_proba

    *_, inputs, test = loan_data
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["gate"].update(min_test_roc_auc=min_auc, max_auc_degradation=1.0, max_p95_latency_ms=60_000.0)
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    test.to_parquet(root / "test.parquet")
    import mlflow
    import mlflow.pyfunc

    auc = roc_auc_score(test["defaulted"], served_proba(mlflow.pyfunc.load_model(str(root / package)), inputs, 1))
    (root / "metrics.json").write_text(json.dumps({"test": {"roc_auc": round(auc, 6)}, "max_subgroup_auc_gap": 0.0}))
    args = ["--test", "test.parquet", "--metrics", "metrics.json", "--package", package, "--out", "gate.json"]
    gate_main(args)
    result = json.loads((root / "gate.json").read_text())
    assert result["checks"]["min_test_roc_auc"]["value"] == round(auc, 6)
    version = tracking.find_version(mlflow.MlflowClient(), "synthetic_loans", result["challenger_package"])
    assert version.tags["gate_passed"] == str(result["passed"]).lower()
    return version.tags["gate_passed"]


def test_promote_requires_a_passed_gate_and_rollback_restores_the_previous_champion(store, loan_data):
    root, client = store
    name = "synthetic_loans"
    first, first_pipeline = publish(root, loan_data, 10)
    with pytest.raises(StageError, match="its release gate has not been run"):
        registry.promote(client, name, "challenger", "ana", "first release")
    assert first["version"] == "1"
    assert gate(root, loan_data, "pkg-10", min_auc=0.5) == "true"
    assert registry.promote(client, name, "challenger", "ana", "first release") == "1"
    assert registry.aliases(client, name) == {"challenger": "1", "champion": "1"}
    tags = client.get_model_version(name, "1").tags
    assert tags["promoted_by"] == "ana" and tags["promoted_reason"] == "first release"
    assert tags["previous_champion"] == "none" and tags["promoted_at"].endswith("+00:00")

    second, _ = publish(root, loan_data, 30)
    assert second["version"] == "2"
    assert gate(root, loan_data, "pkg-30", min_auc=0.999) == "false"
    with pytest.raises(StageError, match="refusing to promote synthetic_loans version 2: its release gate failed"):
        registry.promote(client, name, "challenger", "bo", "try it")
    assert registry.aliases(client, name)["champion"] == "1"

    assert gate(root, loan_data, "pkg-30", min_auc=0.5) == "true"
    registry.promote(client, name, "2", "bo", "better model")
    assert registry.aliases(client, name) == {"challenger": "2", "champion": "2"}
    with pytest.raises(StageError, match="already the champion"):
        registry.promote(client, name, "champion", "bo", "again")

    assert registry.rollback(client, name, "cy", "bad in production") == "1"
    assert registry.aliases(client, name)["champion"] == "1"
    assert client.get_model_version(name, "2").tags["rolled_back_reason"] == "bad in production"
    assert client.get_model_version(name, "1").tags["restored_by"] == "cy"
    with pytest.raises(StageError, match="replaced no earlier champion"):
        registry.rollback(client, name, "cy", "again")

    import mlflow.pyfunc

    champion = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    inputs = loan_data[2]
    np.testing.assert_array_equal(
        np.asarray(champion.predict(inputs))[:, 1], first_pipeline.predict_proba(inputs)[:, 1]
    )


def test_registry_commands_without_a_model_or_with_tracking_off(store):
    root, client = store
    with pytest.raises(StageError, match="no registered model 'synthetic_loans'"):
        registry.aliases(client, "synthetic_loans")
    (root / "params.yaml").write_text((root / "params.yaml").read_text().replace("enabled: true", "enabled: false"))
    with pytest.raises(StageError, match="tracking.enabled is false"):
        registry._client("params.yaml", "dataset.yaml")
