"""Release gate and champion/challenger aliases against a real MLflow SQLite store."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import yaml
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import Pipeline
from synthetic import loans_contract, make_loans, package_loans

from reprokit.core.config import FeaturizeParams, GateParams, TrainParams
from reprokit.core.errors import StageError
from reprokit.model.estimators import fit
from reprokit.model.inference import inputs_of
from reprokit.model.scoring import conform
from reprokit.release import registry, tracking
from reprokit.release.gate import p95_ms, single_row_times_ms, verdict
from reprokit.stages.featurize import fit_transform
from reprokit.stages.prepare import split, to_model_table, validate

GATE = GateParams(0.8, 0.01, 0.1, 50.0, 20, False)


def test_verdict_passes_and_fails_on_each_threshold():
    close = {"rows": 100, "champion_auc": 0.851, "challenger_auc": 0.85}
    ok = verdict(GATE, test_auc=0.85, subgroup_gap=0.05, latency_ms=5.0, comparison=close)
    assert ok["passed"] and all(c["passed"] for c in ok["checks"].values())
    assert ok["checks"]["max_auc_degradation"]["value"] == 0.001
    assert ok["checks"]["max_auc_degradation"]["note"] == "on 100 test rows in neither model's training data"
    no_champion = verdict(GATE, 0.85, 0.05, 5.0, None)
    assert no_champion["passed"] and no_champion["checks"]["max_auc_degradation"]["note"] == "no champion yet"
    worse = {"rows": 100, "champion_auc": 0.87, "challenger_auc": 0.85}
    for figures, failing in [
        ((0.79, 0.05, 5.0, None), "min_test_roc_auc"),
        ((0.85, 0.05, 5.0, worse), "max_auc_degradation"),
        ((0.85, 0.15, 5.0, None), "max_subgroup_auc_gap"),
        ((0.85, 0.05, 80.0, None), "max_p95_latency_ms"),
    ]:
        result = verdict(GATE, *figures)
        assert not result["passed"]
        assert [n for n, c in result["checks"].items() if not c["passed"]] == [failing]


def test_a_missing_figure_fails_its_check_and_says_why():
    """A None AUC used to pass ("nothing to compare"): a figure that cannot be computed now fails."""
    result = verdict(GATE, None, 0.05, 5.0, {"rows": 12, "why": "only 12 test rows are outside both training sets"})
    assert not result["passed"]
    assert result["checks"]["min_test_roc_auc"] == {
        "value": None,
        "limit": 0.8,
        "passed": False,
        "note": "the test split has one class",
    }
    degradation = result["checks"]["max_auc_degradation"]
    assert not degradation["passed"] and degradation["note"] == "only 12 test rows are outside both training sets"


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


def loan_split(contract, seed: int, rows: int = 300):
    table = to_model_table(validate(make_loans(rows), contract, "x"), contract)
    train, test = split(table, "defaulted", 0.25, seed)
    transformer, train_x, _ = fit_transform(train, test, contract, FeaturizeParams(True, "median"))
    return transformer, train_x, inputs_of(test, contract), test


@pytest.fixture(scope="module")
def loan_data(loans_contract_obj):
    return loan_split(loans_contract_obj, 0)


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
    package_loans(pipeline, inputs, out)
    train_x.to_parquet(root / f"train-{iterations}.parquet")
    datasets = {"train": (f"train-{iterations}.parquet", train_x)}  # the version's split identity
    return tracking.log_run("params.yaml", "dataset.yaml", {}, [], str(out), datasets, []), pipeline


def run_gate(root, loan_data, package: str, min_auc: float) -> dict:
    """Run the real release gate (`python -m reprokit.release.gate`) on a package; return its verdict.

    Latency, gap and degradation limits no load or model can reach: `min_auc` decides."""
    import json

    import mlflow

    from reprokit.core.config import load_section
    from reprokit.core.metrics import subgroup_metrics
    from reprokit.release.gate import main as gate_main

    *_, inputs, test = loan_data
    params = yaml.safe_load((root / "params.yaml").read_text())
    limits = {"max_auc_degradation": 1.0, "max_p95_latency_ms": 60_000.0, "max_subgroup_auc_gap": 1.0}
    params["gate"].update(min_test_roc_auc=min_auc, **limits)
    params["evaluate"]["min_subgroup_size"] = 5  # a 75-row test split: groups of about 20
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    test.to_parquet(root / "test.parquet")
    train = package.replace("pkg-", "train-") + ".parquet"
    gate_main(["--train", train, "--test", "test.parquet", "--package", package, "--out", "gate.json"])
    result = json.loads((root / "gate.json").read_text())
    # Every figure is the package's own, scored now: nothing is read from a metrics file.
    model = mlflow.pyfunc.load_model(str(root / package))
    proba = np.asarray(model.predict(conform(inputs, model)))[:, 1]
    y = test["defaulted"].to_numpy()
    assert result["checks"]["min_test_roc_auc"]["value"] == round(roc_auc_score(y, proba), 6)
    evaluation = load_section("evaluate", root / "params.yaml")
    from reprokit.core.contract import parse_contract

    features = [parse_contract(loans_contract()).feature(n) for n in ("owns_home", "region")]
    gap = subgroup_metrics(test, y, proba, features, evaluation.threshold, evaluation.min_subgroup_size)["max_auc_gap"]
    assert result["checks"]["max_subgroup_auc_gap"]["value"] == gap
    version = tracking.find_version(mlflow.MlflowClient(), "synthetic_loans", result["challenger_package"])
    assert version.tags["gate_passed"] == str(result["passed"]).lower()
    return result


def gate(root, loan_data, package: str, min_auc: float) -> str:
    return str(run_gate(root, loan_data, package, min_auc)["passed"]).lower()


def test_promote_requires_a_passed_gate_and_rollback_restores_the_previous_champion(store, loan_data):
    root, client = store
    name = "synthetic_loans"
    first, first_pipeline = publish(root, loan_data, 10)
    with pytest.raises(StageError, match=r"its release gate has not been run \(`reprokit gate --version 1` runs it"):
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

    third, _ = publish(root, loan_data, 20)
    assert gate(root, loan_data, "pkg-20", min_auc=0.5) == "true"  # measured against champion 2
    assert registry.rollback(client, name, "cy", "bad in production") == "1"
    with pytest.raises(StageError, match="measured against champion 2, but the champion is now 1: run the gate again"):
        registry.promote(client, name, third["version"], "cy", "stale verdict")
    assert registry.aliases(client, name)["champion"] == "1"
    assert client.get_model_version(name, "2").tags["rolled_back_reason"] == "bad in production"
    assert client.get_model_version(name, "1").tags["restored_by"] == "cy"
    with pytest.raises(StageError, match="replaced no earlier champion"):
        registry.rollback(client, name, "cy", "again")
    assert gate(root, loan_data, "pkg-20", min_auc=0.5) == "true"  # measured again, against champion 1
    assert registry.promote(client, name, third["version"], "cy", "fresh verdict") == third["version"]
    registry.rollback(client, name, "cy", "back to 1")

    import mlflow.pyfunc

    champion = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    inputs = loan_data[2]
    np.testing.assert_array_equal(
        np.asarray(champion.predict(conform(inputs, champion)))[:, 1], first_pipeline.predict_proba(inputs)[:, 1]
    )


def test_registry_commands_without_a_model_or_with_tracking_off(store):
    root, client = store
    with pytest.raises(StageError, match="no registered model 'synthetic_loans'"):
        registry.aliases(client, "synthetic_loans")
    (root / "params.yaml").write_text((root / "params.yaml").read_text().replace("enabled: true", "enabled: false"))
    with pytest.raises(StageError, match="tracking.enabled is false"):
        registry._client("params.yaml", "dataset.yaml")


def test_the_champion_is_compared_only_on_rows_neither_model_trained_on(store, loans_contract_obj):
    """The champion was trained on another split: some of today's test rows were its training
    rows, and scoring it on them would flatter it. The gate leaves them out and says how many it used."""
    root, client = store
    champion_data = loan_split(loans_contract_obj, 0, rows=1200)
    publish(root, champion_data, 10)
    assert gate(root, champion_data, "pkg-10", min_auc=0.5) == "true"
    registry.promote(client, "synthetic_loans", "challenger", "ana", "first")
    challenger_data = loan_split(loans_contract_obj, 1, rows=1200)  # another seed: another split of the same rows
    publish(root, challenger_data, 30)
    result = run_gate(root, challenger_data, "pkg-30", min_auc=0.5)
    test = challenger_data[3]
    unseen = ~test.index.astype(str).isin(champion_data[1].index.astype(str))
    assert 30 <= result["comparison_rows"] == int(unseen.sum()) < len(test)
    assert result["champion_version"] == "1" and result["champion_package"] is not None
    degradation = result["checks"]["max_auc_degradation"]
    assert degradation["note"] == f"on {int(unseen.sum())} test rows in neither model's training data"
    import mlflow

    champion = mlflow.pyfunc.load_model("models:/synthetic_loans/1")
    y, inputs = test["defaulted"].to_numpy(), challenger_data[2]
    champion_auc = roc_auc_score(y[unseen], np.asarray(champion.predict(conform(inputs[unseen], champion)))[:, 1])
    challenger = mlflow.pyfunc.load_model(str(root / "pkg-30"))
    challenger_auc = roc_auc_score(y[unseen], np.asarray(challenger.predict(conform(inputs[unseen], challenger)))[:, 1])
    assert degradation["value"] == round(round(champion_auc, 6) - round(challenger_auc, 6), 6)


def test_a_champion_training_list_that_cannot_be_read_fails_the_comparison_with_the_reason(store, loans_contract_obj):
    """Its run's artifact gone (a run deleted, the artifact store down): a traceback and no
    verdict before; now the comparison fails closed and says why."""
    import urllib.parse
    from pathlib import Path

    root, client = store
    champion_data = loan_split(loans_contract_obj, 0, rows=1200)
    publish(root, champion_data, 10)
    assert gate(root, champion_data, "pkg-10", min_auc=0.5) == "true"
    registry.promote(client, "synthetic_loans", "challenger", "ana", "first")
    run_id = client.get_model_version("synthetic_loans", "1").run_id
    stored = Path(urllib.parse.urlsplit(client.get_run(run_id).info.artifact_uri).path)
    (stored / tracking.TRAIN_INDEX_ARTIFACT).unlink()  # the run's artifact store lost it
    challenger_data = loan_split(loans_contract_obj, 1, rows=1200)
    publish(root, challenger_data, 30)
    result = run_gate(root, challenger_data, "pkg-30", min_auc=0.5)
    degradation = result["checks"]["max_auc_degradation"]
    assert result["passed"] is False and degradation["passed"] is False and degradation["value"] is None
    assert degradation["note"].startswith("champion version 1: its training-row list could not be read (")


def test_a_subgroup_gap_that_cannot_be_measured_fails_and_says_why(store, loan_data):
    """With every group below `evaluate.min_subgroup_size`, the gap used to read 0.0 and pass."""
    import json

    from reprokit.release.gate import main as gate_main

    root, _ = store
    publish(root, loan_data, 10)
    run_gate(root, loan_data, "pkg-10", min_auc=0.5)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["evaluate"]["min_subgroup_size"] = 1000
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    gate_main(["--train", "train-10.parquet", "--test", "test.parquet", "--package", "pkg-10", "--out", "gate.json"])
    gap = json.loads((root / "gate.json").read_text())["checks"]["max_subgroup_auc_gap"]
    assert gap["value"] is None and not gap["passed"]
    assert gap["note"].startswith("owns_home, region: fewer than two groups") and "1000 test rows" in gap["note"]


def test_the_gate_refuses_a_local_split_the_package_was_not_trained_on(store, loans_contract_obj, caplog):
    import logging

    from reprokit.release.gate import main as gate_main

    root, _ = store
    data = loan_split(loans_contract_obj, 0)
    publish(root, data, 10)
    run_gate(root, data, "pkg-10", min_auc=0.5)
    loan_split(loans_contract_obj, 1)[1].to_parquet(root / "other-train.parquet")  # another seed's split
    args = ["--train", "other-train.parquet", "--test", "test.parquet", "--package", "pkg-10", "--out", "g.json"]
    with pytest.raises(SystemExit), caplog.at_level(logging.ERROR, logger="reprokit"):
        gate_main(args)
    assert "other-train.parquet is not the split pkg-10 was trained on" in caplog.text
    assert not (root / "g.json").exists()


def test_a_registry_the_gate_cannot_read_fails_the_gate_with_the_reason(store, loan_data, caplog):
    """Any error looking up the champion used to read as "no champion yet", a pass. A store whose
    alias table is broken (a real SQLite store, damaged) is now a failed comparison, with the reason."""
    import json
    import logging
    import sqlite3

    from reprokit.release.gate import main as gate_main

    root, client = store
    publish(root, loan_data, 10)
    assert gate(root, loan_data, "pkg-10", min_auc=0.5) == "true"
    registry.promote(client, "synthetic_loans", "challenger", "ana", "first")
    publish(root, loan_data, 30)
    with sqlite3.connect(root / "mlflow.db") as db:
        db.execute("ALTER TABLE registered_model_aliases RENAME TO damaged")
    with pytest.raises(SystemExit, match="1"), caplog.at_level(logging.ERROR, logger="reprokit"):
        gate_main(
            ["--train", "train-30.parquet", "--test", "test.parquet", "--package", "pkg-30", "--out", "gate.json"]
        )
    (error,) = [r for r in caplog.records if r.name == "reprokit" and r.levelno >= logging.ERROR]
    assert "failed while recording the gate's verdict" in error.getMessage() and not error.exc_info
    result = json.loads((root / "gate.json").read_text())
    degradation = result["checks"]["max_auc_degradation"]
    assert result["passed"] is False and degradation["passed"] is False and degradation["value"] is None
    assert degradation["note"].startswith("could not look up the champion of synthetic_loans (")
    assert "registered_model_aliases" in degradation["note"]
    assert all(c["passed"] for name, c in result["checks"].items() if name != "max_auc_degradation")


def test_the_gate_tests_the_challenger_version_and_promote_takes_exactly_that(store, loan_data):
    """Observed after the queue flow: the gate tested the workspace package (version 4) while
    `challenger` pointed at version 5, and promote refused 5. The gate now tests the version the
    alias names (or --version), says which, and promote accepts that version."""
    import json

    from reprokit.release.gate import main as gate_main

    root, client = store
    name = "synthetic_loans"
    publish(root, loan_data, 10)
    run_gate(root, loan_data, "pkg-10", min_auc=0.5)  # the workspace package, version 1; writes the limits
    publish(root, loan_data, 30)  # version 2, the challenger; the workspace still has pkg-10 (version 1)
    assert registry.aliases(client, name)["challenger"] == "2"
    args = ["--train", "train-30.parquet", "--test", "test.parquet", "--out", "gate.json"]
    gate_main(args)
    result = json.loads((root / "gate.json").read_text())
    assert result["challenger_version"] == "2" and result["passed"] is True
    assert result["challenger_package"] == client.get_model_version(name, "2").tags["package_md5"]
    assert client.get_model_version(name, "2").tags["gate_passed"] == "true"
    assert registry.promote(client, name, "challenger", "ana", "the version the gate tested") == "2"

    gate_main([*args, "--version", "1"])
    assert json.loads((root / "gate.json").read_text())["challenger_version"] == "1"
    with pytest.raises(SystemExit):
        gate_main([*args, "--version", "7"])


def test_the_gate_refuses_an_out_named_for_another_format_and_a_missing_package(tmp_path, monkeypatch, caplog):
    """`--out README.md` replaced the README with the verdict's JSON; `--package nosuch` was a raw errno."""
    import logging

    from reprokit.release.gate import main as gate_main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "README.md").write_text("mine\n")
    for args, message in (
        (["--out", "README.md"], "output out (README.md) is written as JSON: give it a name ending .json"),
        (["--package", "nosuch"], "--package nosuch: no such package directory"),
    ):
        caplog.clear()
        with pytest.raises(SystemExit, match="1"), caplog.at_level(logging.ERROR, logger="reprokit"):
            gate_main(args)
        assert message in caplog.text and "Traceback" not in caplog.text
    assert (tmp_path / "README.md").read_text() == "mine\n"
