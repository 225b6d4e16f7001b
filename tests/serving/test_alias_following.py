"""A service started on `models:/<name>@champion`: it follows the alias as it moves, without
dropping a request, and scores `@challenger` in its shadow without changing a response.
A real MLflow registry (SQLite store) holds two versions logged as the `package` stage logs them."""

from __future__ import annotations

import contextlib
import json
import shutil
import threading

import httpx
import mlflow
import numpy as np
import pandas as pd
import pytest
from registered import NAME, nest_schema, register
from servers import metric, scoring_service, wait_until

from reprokit.model.trust import load_package
from reprokit.release import tracking


@pytest.fixture(scope="module")
def registry(tmp_path_factory, repo, telco_package, logistic_package):
    """Versions 1 (the default gradient boosting) and 2 (logistic regression) of the telco
    model; champion -> 1, challenger -> 2."""
    root = tmp_path_factory.mktemp("registry")
    shutil.copy(repo / "params.yaml", root / "params.yaml")
    shutil.copy(repo / "dataset.yaml", root / "dataset.yaml")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    assert register(root, uri, [telco_package, logistic_package]) == ["1", "2"]
    client = mlflow.MlflowClient(tracking_uri=uri)
    client.set_registered_model_alias(NAME, "champion", "1")
    assert str(client.get_model_version_by_alias(NAME, "challenger").version) == "2"
    return root, uri


def rows_of(telco_splits, telco_contract, n=20):
    _, _, test, _ = telco_splits
    frame = test[telco_contract.feature_names].head(n)
    frame = frame.astype({c: "int64" for c in telco_contract.names_of("integer", "binary")})
    return json.loads(frame.to_json(orient="records"))


def scores(client, records):
    answer = client.post("/invocations", json={"instances": records})
    assert answer.status_code == 200, answer.text
    return answer.json()["predictions"]


def served_version(answer) -> str:
    """The one model version that answered a request (each request is scored by one version)."""
    (version,) = {p["model_version"] for p in answer.json()["predictions"]}
    return version


def test_alias_moves_are_followed_without_a_lost_request_and_shadow_changes_nothing(
    registry, tmp_path, telco_splits, telco_contract
):
    root, uri = registry
    env = {"MLFLOW_TRACKING_URI": uri}
    records = rows_of(telco_splits, telco_contract)
    with contextlib.chdir(root):
        mlflow.set_tracking_uri(uri)
        try:
            expected = {
                v: np.asarray(load_package(f"models:/{NAME}/{v}").predict(pd.DataFrame(records)))[:, 1] for v in "12"
            }
        finally:
            mlflow.set_tracking_uri(None)
    assert not np.array_equal(expected["1"], expected["2"])
    args = [f"models:/{NAME}@champion", "--poll-seconds", "0.3", "--shadow", "challenger"]
    with scoring_service(args, tmp_path / "serve.log", env=env, cwd=root) as (url, _):
        with httpx.Client(base_url=url, timeout=60) as client:
            wait_until(lambda: client.get("/version").json().get("shadow_version") == "2", "the shadow never loaded")
            assert client.get("/version").json()["model_version"] == "1"
            # Shadow scoring leaves every response as the served version alone would give it.
            first = scores(client, records)
            assert {p["model_version"] for p in first} == {"1"}
            np.testing.assert_array_equal([p["probability"] for p in first], expected["1"])
            # Load while the alias moves: every request answered, each by one version, exactly.
            answers, stop = [], threading.Event()

            def load():
                with httpx.Client(base_url=url, timeout=60) as own:
                    while not stop.is_set():
                        answer = own.post("/invocations", json={"instances": records})
                        answers.append(answer)

            def answered_by(version: str) -> int:
                return sum(served_version(a) == version for a in list(answers))

            workers = [threading.Thread(target=load) for _ in range(3)]
            for worker in workers:
                worker.start()
            wait_until(lambda: answered_by("1") >= 5, "no request was answered before the alias moved")
            mlflow.MlflowClient(tracking_uri=uri).set_registered_model_alias(NAME, "champion", "2")
            wait_until(
                lambda: client.get("/version").json()["model_version"] == "2", "the alias move was never followed"
            )
            wait_until(lambda: answered_by("2") >= 5, "no request was answered by the new version")
            stop.set()
            for worker in workers:
                worker.join(60)
            # Every scored request is compared once the prediction thread is done with the last one.
            requests = 1 + len(answers)
            wait_until(
                lambda: metric(client.get("/metrics").text, "reprokit_shadow_records_total") == requests * len(records),
                "the shadow did not compare every request",
            )
            text = client.get("/metrics").text
    assert answers and all(a.status_code == 200 for a in answers)
    by_version = {"1": 1, "2": 0}  # `first`, above, was answered by version 1
    for answer in answers:
        version = served_version(answer)
        np.testing.assert_array_equal([p["probability"] for p in answer.json()["predictions"]], expected[version])
        by_version[version] += 1
    assert by_version["1"] > 1 and by_version["2"] > 0
    assert metric(text, "reprokit_model_swaps_total") == 1
    assert (
        'reprokit_model_info{model_version="2",role="stable"} 1.0' in text
        and 'model_version="1",role="stable"} 1.0' not in text
    )
    # The shadow (version 2) against version 1 agrees on these records' labels (threshold 0.5 for
    # both) where the expected probabilities say so, and against itself, after the move, on all.
    agree_with_1 = int(np.sum((expected["2"] >= 0.5) == (expected["1"] >= 0.5)))
    assert 0 < agree_with_1 < len(records)  # the two versions disagree on some records: the ratio can tell
    agreements = by_version["1"] * agree_with_1 + by_version["2"] * len(records)
    assert metric(text, "reprokit_shadow_label_agreements_total") == agreements
    assert metric(text, "reprokit_shadow_label_agreement_ratio") == agreements / (requests * len(records))
    assert metric(text, "reprokit_shadow_score_difference_count") == requests * len(records)


def test_a_refused_new_version_leaves_the_served_one_in_place(registry, tmp_path):
    """A registry version is an untrusted file: one whose schema nests without end (or
    inflates) is refused, and the service keeps serving the version it has."""
    root, uri = registry
    client = mlflow.MlflowClient(tracking_uri=uri)
    served = str(client.get_registered_model(NAME).aliases["champion"])
    crafted = root / "models" / "package"
    shutil.copytree(downloaded_package(root, uri, served), crafted)
    nest_schema(crafted)
    with contextlib.chdir(root):
        mlflow.set_tracking_uri(uri)
        try:
            logged = tracking.log_run("params.yaml", "dataset.yaml", {}, [], "models/package", {}, [])
        finally:
            mlflow.set_tracking_uri(None)
            shutil.rmtree(crafted)
    args = [f"models:/{NAME}@champion", "--poll-seconds", "0.3"]
    log = tmp_path / "serve.log"
    try:
        with scoring_service(args, log, env={"MLFLOW_TRACKING_URI": uri}, cwd=root) as (url, _):
            with httpx.Client(base_url=url, timeout=60) as http:
                assert http.get("/version").json()["model_version"] == served
                client.set_registered_model_alias(NAME, "champion", logged["version"])
                wait_until(lambda: "keeping version" in log.read_text(), "the refused version was never tried")
                assert http.get("/version").json()["model_version"] == served
                assert http.get("/health/ready").status_code == 200
    finally:
        client.set_registered_model_alias(NAME, "champion", served)
    shown = log.read_text()
    assert f"keeping version {served}" in shown and "schema nests" in shown and "Traceback" not in shown


def downloaded_package(root, uri: str, version: str):
    """The registered version's package directory, downloaded into `root`."""
    import mlflow.artifacts

    with contextlib.chdir(root):
        mlflow.set_tracking_uri(uri)
        try:
            return mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{NAME}/{version}", dst_path=str(root / f"download-{version}")
            )
        finally:
            mlflow.set_tracking_uri(None)
