"""MLflow logging for the stages that train, evaluate and package.

One MLflow run per trained model: `train` opens it and tags it with the md5 of the
model file it wrote; `evaluate` and `package` find that run by the same md5 (the
model is their input) and add metrics, plots and the packaged model to it. No run
id or time ever enters a DVC-tracked output.

Nothing here is imported at module import time by the stages, and MLflow itself is
imported only when tracking is enabled.
"""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path
from typing import Any, Iterable

from reprokit.config import TrackingParams, flatten, load_section, read_yaml
from reprokit.stage import StageError

log = logging.getLogger("reprokit.tracking")

MODEL_MD5_TAG = "reprokit.model_md5"


def settings(params_file: str = "params.yaml") -> TrackingParams:
    """Tracking settings; `MLFLOW_TRACKING_URI` in the environment wins over params."""
    params = load_section("tracking", params_file)
    uri = os.environ.get("MLFLOW_TRACKING_URI") or params.uri
    return TrackingParams(params.enabled, uri, params.experiment, params.timeout_seconds)


def git_state(cwd: str | Path = ".") -> dict[str, str]:
    """Commit, branch and dirty flag of the checkout (dvc.lock and metrics excluded from dirty)."""

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD") or "unknown"
    branch = git("rev-parse", "--abbrev-ref", "HEAD") or "unknown"
    status = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!dvc.lock", ":!metrics")
    dirty = "unknown" if status is None else str(bool(status)).lower()
    return {"git_commit": commit, "git_branch": branch, "git_dirty": dirty}


def _open(params: TrackingParams):
    """Import MLflow with bounded network timeouts, point it at the store, check it answers."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(int(params.timeout_seconds)))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    import mlflow

    mlflow.set_tracking_uri(params.uri)
    try:
        experiment = mlflow.set_experiment(params.experiment)
    except Exception as exc:  # MlflowException, connection and driver errors alike
        raise StageError(
            f"MLflow tracking store {params.uri} is unreachable or misconfigured ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}). Start it, fix MLFLOW_TRACKING_URI, "
            "or set tracking.enabled: false in params.yaml"
        ) from None
    return mlflow, experiment.experiment_id


def _run_params(params_file: str, contract_file: str) -> dict[str, Any]:
    params = flatten(read_yaml(params_file))
    params = {k: v for k, v in params.items() if not k.startswith("tracking.")}
    contract = read_yaml(contract_file)
    params["dataset.name"] = contract.get("name")
    params["dataset.source"] = (contract.get("source") or {}).get("uri")
    params["dataset.target"] = (contract.get("target") or {}).get("column")
    return params


def _start(mlflow, experiment_id: str, model_md5: str, params_file: str, contract_file: str, new: bool):
    if not new:
        runs = mlflow.search_runs(
            experiment_ids=[experiment_id],
            filter_string=f"tags.`{MODEL_MD5_TAG}` = '{model_md5}'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
            output_format="list",
        )
        if runs:
            return mlflow.start_run(run_id=runs[0].info.run_id)
    run = mlflow.start_run(experiment_id=experiment_id, tags={MODEL_MD5_TAG: model_md5, **git_state()})
    mlflow.log_params(_run_params(params_file, contract_file))
    return run


def log_training(params_file: str, contract_file: str, model_md5: str, extra: dict[str, Any]) -> None:
    """Open the run for a freshly trained model: params, git state, training figures."""
    params = settings(params_file)
    if not params.enabled:
        return
    mlflow, experiment_id = _open(params)
    with _start(mlflow, experiment_id, model_md5, params_file, contract_file, new=True) as run:
        mlflow.log_metrics(extra)
        log.info("MLflow run %s in %s", run.info.run_id, params.uri)


def log_evaluation(
    params_file: str, contract_file: str, model_md5: str, metrics: dict[str, float], artifacts: Iterable[str]
) -> None:
    """Add metrics and plot files to the model's run."""
    params = settings(params_file)
    if not params.enabled:
        return
    mlflow, experiment_id = _open(params)
    with _start(mlflow, experiment_id, model_md5, params_file, contract_file, new=False):
        mlflow.log_metrics(metrics)
        for path in artifacts:
            mlflow.log_artifact(path, artifact_path="evaluation")


def log_package(params_file: str, contract_file: str, model_md5: str, package_dir: str, card: str) -> None:
    """Attach the packaged model directory and its model card to the model's run."""
    params = settings(params_file)
    if not params.enabled:
        return
    mlflow, experiment_id = _open(params)
    with _start(mlflow, experiment_id, model_md5, params_file, contract_file, new=False):
        mlflow.log_artifacts(package_dir, artifact_path="package")
        mlflow.log_artifact(card)
