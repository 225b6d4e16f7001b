"""MLflow logging: one run per pipeline execution, logged by the last stage.

`package` is the one stage that sees everything a run should hold (params, train
and test metrics, subgroup metrics, plots, model card, packaged model) and it
imports MLflow anyway to save the model, so it logs the run. Logging from train
and evaluate as well would open the run in three processes and pay MLflow's
import (about 1.2 s) three times. A stage DVC skips logs nothing. No run id or
time ever enters a DVC-tracked output; MLflow is imported only when enabled.
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


def project_root() -> Path:
    """The repository the run belongs to: `dvc exp run --queue` runs stages in a temporary
    copy, and DVC then points `DVC_ROOT` at the original repository."""
    return Path(os.environ.get("DVC_ROOT") or ".").resolve()


def settings(params_file: str = "params.yaml") -> TrackingParams:
    """Tracking settings; `MLFLOW_TRACKING_URI` in the environment wins over params.

    A relative SQLite path (the default `sqlite:///mlflow.db`) is taken from the project
    root, so queued experiments log to the same store as the workspace.
    """
    params = load_section("tracking", params_file)
    uri = os.environ.get("MLFLOW_TRACKING_URI") or params.uri
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = f"sqlite:///{project_root() / uri[len('sqlite:///'):]}"
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
        if params.uri.startswith("sqlite:") and mlflow.get_experiment_by_name(params.experiment) is None:
            # Artifacts next to the SQLite file, not under whichever folder created the experiment.
            mlflow.create_experiment(params.experiment, artifact_location=(project_root() / "mlruns").as_uri())
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


def log_run(
    params_file: str,
    contract_file: str,
    model_md5: str,
    metrics: dict[str, float],
    artifacts: Iterable[str],
    package_dir: str,
) -> str | None:
    """Log one pipeline execution as one MLflow run; return its id (None when disabled).

    The run holds every param (flattened), the metrics, the evaluation files, the
    model card and the packaged model directory, tagged with the git state and the
    md5 of the model file so a run leads back to the exact DVC outputs.
    """
    params = settings(params_file)
    if not params.enabled:
        return None
    mlflow, experiment_id = _open(params)
    tags = {MODEL_MD5_TAG: model_md5, **git_state()}
    if os.environ.get("DVC_EXP_NAME"):
        tags["dvc_experiment"] = os.environ["DVC_EXP_NAME"]
    with mlflow.start_run(experiment_id=experiment_id, tags=tags) as run:
        mlflow.log_params(_run_params(params_file, contract_file))
        mlflow.log_metrics(metrics)
        for path in artifacts:
            if Path(path).is_dir():
                mlflow.log_artifacts(path, artifact_path=Path(path).name)
            else:
                mlflow.log_artifact(path)
        mlflow.log_artifacts(package_dir, artifact_path="package")
    log.info("MLflow run %s in experiment %r at %s", run.info.run_id, params.experiment, params.uri)
    return run.info.run_id
