"""MLflow logging and registration: one run per pipeline execution, logged by `package`.

`package` is the one stage that sees everything a run should hold (params, train
and test metrics, subgroup metrics, plots, model card, packaged model) and it
imports MLflow anyway to save the model, so it logs the run. Logging from train
and evaluate as well would open the run in three processes and pay MLflow's
import (about 1.2 s) three times. A stage DVC skips logs nothing. No run id or
time ever enters a DVC-tracked output; MLflow is imported only when enabled.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import subprocess
import warnings
from pathlib import Path
from typing import Any, Iterable, Iterator

from reprokit.core.artifacts import dvc_md5, md5_file
from reprokit.core.config import TrackingParams, flatten, load_section, read_yaml
from reprokit.core.errors import StageError
from reprokit.core.redaction import describe_error, redact

log = logging.getLogger("reprokit.tracking")

DVC_MD5_PREFIX = "dvc.md5."
PACKAGE_MD5_TAG = "package_md5"
# The split identity: which rows a version trained on. The gate compares a challenger with the
# champion only on rows that were in neither one's training data.
TRAIN_INDEX_TAG = "train_index_md5"
TRAIN_INDEX_ARTIFACT = "split/train_index.json"
GATE_CHAMPION_TAG = "gate_champion_version"
CHALLENGER, CHAMPION = "challenger", "champion"


def project_root() -> Path:
    """The repository the run belongs to: `dvc exp run --queue` runs stages in a temporary
    copy, and DVC then points `DVC_ROOT` at the original repository."""
    return Path(os.environ.get("DVC_ROOT") or ".").resolve()


def settings(params_file: str = "params.yaml", contract_file: str = "dataset.yaml") -> TrackingParams:
    """Tracking settings; `MLFLOW_TRACKING_URI` in the environment wins over params.

    A relative SQLite path (the default `sqlite:///mlflow.db`) is taken from the project
    root, so queued experiments log to the same store as the workspace. The experiment
    and the registered model are named after the dataset (the contract's `name`) unless
    params name them: a second dataset never logs into the first one's experiment.
    """
    params = load_section("tracking", params_file)
    uri = os.environ.get("MLFLOW_TRACKING_URI") or params.uri
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = f"sqlite:///{project_root() / uri[len('sqlite:///') :]}"
    names = {}
    if params.experiment is None or params.registered_model is None:
        from reprokit.core.contract import load_contract

        dataset = load_contract(contract_file).name
        names = {key: getattr(params, key) or dataset for key in ("experiment", "registered_model")}
    return dataclasses.replace(params, uri=uri, **names)


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


def sqlite_path(uri: str) -> Path | None:
    """The database file of a `sqlite:///` tracking URI, or None for any other store."""
    return Path(uri[len("sqlite:///") :]) if uri.startswith("sqlite:///") else None


@contextlib.contextmanager
def store_lock(params: TrackingParams, timeout_seconds: float = 600.0) -> Iterator[None]:
    """Serialize writers of a SQLite store across processes.

    Queued experiments (`dvc queue start -j 2`) run `package` in parallel workers. On a
    fresh `mlflow.db` both would create MLflow's tables at once (`table experiments
    already exists`), and SQLite refuses concurrent writers in general. An exclusive
    lock on `<db>.lock` beside the database makes one wait for the other. Server
    stores (HTTP, PostgreSQL) handle concurrency themselves: no lock.
    """
    from filelock import FileLock, Timeout

    db = sqlite_path(params.uri)
    if db is None:
        yield
        return
    db.parent.mkdir(parents=True, exist_ok=True)
    try:
        lock = FileLock(db.with_name(db.name + ".lock"), timeout=timeout_seconds).acquire()
    except Timeout:
        raise StageError(f"MLflow store {db} stayed locked by another process for {timeout_seconds} s") from None
    with lock:
        yield


@contextlib.contextmanager
def store_errors(params: TrackingParams, redo: str) -> Iterator[None]:
    """Turn a store that fails part-way through logging (server gone, timeout, driver error)
    into one clear stage error that says how to finish (`redo`); the outputs stay as they are."""
    try:
        yield
    except StageError:
        raise
    except Exception as exc:  # MlflowException, requests and driver errors alike
        raise StageError(
            f"MLflow tracking store {redact(params.uri)} failed while logging the run "
            f"({type(exc).__name__}: {describe_error(exc)}). "
            f"The run is incomplete; {redo}"
        ) from None


def open_store(params: TrackingParams):
    """Import MLflow with bounded network timeouts, point it at the store, check it answers."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(int(params.timeout_seconds)))
    # One attempt per request: a store that does not answer fails the stage within the timeout.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    import mlflow

    mlflow.set_tracking_uri(params.uri)
    try:
        if params.uri.startswith("sqlite:") and mlflow.get_experiment_by_name(params.experiment) is None:
            # Artifacts next to the SQLite file, not under whichever folder created the experiment.
            mlflow.create_experiment(params.experiment, artifact_location=(project_root() / "mlruns").as_uri())
        experiment = mlflow.set_experiment(params.experiment)
    except Exception as exc:  # MlflowException, connection and driver errors alike
        raise StageError(
            f"MLflow tracking store {redact(params.uri)} is unreachable or misconfigured ({type(exc).__name__}: "
            f"{describe_error(exc)}). Start it, fix MLFLOW_TRACKING_URI, "
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
    metrics: dict[str, float],
    artifacts: Iterable[str],
    package_dir: str,
    datasets: dict[str, tuple[str, Any]],
    outputs: Iterable[str],
) -> dict[str, Any] | None:
    """Log one pipeline execution as one MLflow run and register its model.

    The run holds every param (flattened), the metrics, the evaluation files and model
    card, the datasets as inputs (digest = DVC md5), and the packaged model directory
    as a logged model, byte for byte what DVC stores. Tags: git commit, branch and dirty
    flag, the DVC experiment name, and the md5 of every output in `outputs` as DVC
    records it. The model is registered under `tracking.registered_model` with the
    alias `challenger`, unless a version with the same package digest exists already.
    Returns the run id and version (None when tracking is disabled).
    """
    params = settings(params_file, contract_file)
    if not params.enabled:
        return None
    redo = "run the package stage again (dvc repro -f -s package) once the store answers"
    with store_lock(params), store_errors(params, redo):  # queue workers take turns on a SQLite store
        mlflow, experiment_id = open_store(params)
        from mlflow.entities import LoggedModelOutput

        hashes = {path: dvc_md5(path) for path in outputs}
        package_md5 = dvc_md5(package_dir)
        tags = {**git_state(), **{f"{DVC_MD5_PREFIX}{path}": digest for path, digest in hashes.items()}}
        tags[PACKAGE_MD5_TAG] = package_md5
        listing = None
        if "train" in datasets:
            listing = train_index_listing(datasets["train"][1].index)
            tags[TRAIN_INDEX_TAG] = listing_md5(listing)
        if os.environ.get("DVC_EXP_NAME"):
            tags["dvc_experiment"] = os.environ["DVC_EXP_NAME"]
        client = mlflow.MlflowClient()
        with mlflow.start_run(experiment_id=experiment_id, tags=tags) as run:
            mlflow.log_params(_run_params(params_file, contract_file))
            mlflow.log_metrics(metrics)
            for name, (path, frame) in datasets.items():
                with warnings.catch_warnings():  # schema-inference hints about int columns: not ours to act on
                    warnings.simplefilter("ignore", UserWarning)
                    dataset = mlflow.data.from_pandas(
                        frame, source=path, name=name, digest=hashes.get(path) or md5_file(path)
                    )
                    dataset.schema = dataset_schema(frame)  # a cached property: set, never inferred again
                    mlflow.log_input(dataset, context=name)
            if listing is not None:
                mlflow.log_text(listing, TRAIN_INDEX_ARTIFACT)
            for path in artifacts:
                if Path(path).is_dir():
                    mlflow.log_artifacts(path, artifact_path=Path(path).name)
                else:
                    mlflow.log_artifact(path)
            model = mlflow.initialize_logged_model(
                name="model", source_run_id=run.info.run_id, model_type="sklearn", tags={PACKAGE_MD5_TAG: package_md5}
            )
            client.log_model_artifacts(model.model_id, package_dir)
            mlflow.finalize_logged_model(model.model_id, "READY")
            client.log_outputs(run.info.run_id, [LoggedModelOutput(model.model_id, 0)])
            version = register(client, params.registered_model, model.model_id, run.info.run_id, package_md5, tags)
        log.info(
            "MLflow run %s in experiment %r at %s; %s version %s is the challenger",
            run.info.run_id,
            params.experiment,
            redact(params.uri),
            params.registered_model,
            version,
        )
        return {"run_id": run.info.run_id, "model_id": model.model_id, "version": version}


def schema_sample(frame):
    """A few rows of `frame` from which MLflow infers the schema it infers from all of it:
    the first rows, and for each column its first null and first non-null row (a column is
    `required` only if it has no null; its type comes from its values). MLflow's inference
    looks at every value of a text or nullable column in Python (18 s for 800,000 rows)."""
    import pandas as pd

    head = 100
    rows = [frame.head(head)]
    for column in frame.columns:
        nulls = frame[column].isna().to_numpy()
        for wanted in (nulls, ~nulls):
            if wanted.any() and not wanted[:head].any():
                rows.append(frame.iloc[[int(wanted.argmax())]])
    return pd.concat(rows) if len(rows) > 1 else rows[0]


def dataset_schema(frame):
    """The schema `mlflow.data.from_pandas(frame).schema` infers, from `schema_sample(frame)`
    (None where MLflow's inference fails, as `from_pandas` then gives)."""
    from mlflow.models import infer_signature

    try:
        return infer_signature(schema_sample(frame)).inputs
    except Exception:  # whatever MLflow raises for data it cannot type: no schema, as from_pandas does
        return None


def train_index_listing(index) -> str:
    """The training rows' ids (the split's index), sorted, as JSON: what the split identity hashes."""
    import json

    return json.dumps(sorted(map(str, index)))


def listing_md5(listing: str) -> str:
    """The split identity of a `train_index_listing`."""
    return hashlib.md5(listing.encode()).hexdigest()


def train_index_md5(index) -> str:
    """The split identity: md5 of `train_index_listing`."""
    return listing_md5(train_index_listing(index))


def flat_metrics(metrics: dict[str, Any], subgroups: dict[str, Any]) -> dict[str, float]:
    """Metrics as flat MLflow keys, e.g. `test.roc_auc`, `subgroup.female.1.roc_auc`."""
    import re

    flat: dict[str, float] = {}
    if metrics["max_subgroup_auc_gap"] is not None:
        flat["max_subgroup_auc_gap"] = metrics["max_subgroup_auc_gap"]
    for split in ("test", "train"):
        flat.update({f"{split}.{k}": v for k, v in metrics[split].items() if v is not None})
    for column, groups in subgroups["groups"].items():
        for value, values in groups.items():
            # MLflow names allow letters, digits, `_-. /`: a category such as "a+b (c)" becomes "a_b _c_"
            group = re.sub(r"[^A-Za-z0-9_\-. /]", "_", f"{column}.{value}")
            flat.update({f"subgroup.{group}.{k}": v for k, v in values.items() if v is not None})
    return flat


def unavailable(exc: Exception) -> StageError:
    """A registry that failed to answer, named as such (never "no such model" or "no version")."""
    return StageError(f"the registry did not answer: {describe_error(exc)}")


def name_filter(name: str) -> str:
    """The search filter for the versions of registered model `name`, quoted as MLflow's filter
    grammar allows (it has no escape: a name holding `'` is quoted with `"`)."""
    if "'" not in name:
        return f"name = '{name}'"
    if '"' not in name:
        return f'name = "{name}"'
    raise StageError(
        f"registered model name {name!r} holds both quote characters, which MLflow's search cannot "
        "name: set tracking.registered_model in params.yaml"
    )


def model_versions(client, name: str) -> list:
    """Every version of registered model `name` (none when it is not registered). A registry
    that fails to answer is a `StageError`, never "no version": the gate and `register` would
    otherwise take a failed lookup for a package never registered."""
    from mlflow.exceptions import MlflowException

    try:
        return list(client.search_model_versions(name_filter(name)))
    except MlflowException as exc:
        raise unavailable(exc) from None


def find_version(client, name: str, package_md5: str):
    """The registered version holding this exact package, or None."""
    versions = model_versions(client, name)
    matches = [v for v in versions if v.tags.get(PACKAGE_MD5_TAG) == package_md5]
    return min(matches, key=lambda v: int(v.version)) if matches else None


def register(client, name: str, model_id: str, run_id: str, package_md5: str, tags: dict[str, str]) -> str:
    """Register the logged model (once per distinct package) and point `challenger` at it."""
    from mlflow.exceptions import MlflowException

    existing = find_version(client, name, package_md5)
    if existing is not None:
        version = existing.version
        log.info("%s version %s already holds this package: not registering it again", name, version)
    else:
        try:
            client.get_registered_model(name)
        except MlflowException:
            try:
                client.create_registered_model(
                    name, description="Binary classifier packaged by the reprokit DVC pipeline"
                )
            except MlflowException as exc:  # a parallel worker created it first
                if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
        kept = (PACKAGE_MD5_TAG, TRAIN_INDEX_TAG, "git_commit", "git_dirty", "dvc_experiment")
        keep = {k: v for k, v in tags.items() if k in kept}
        created = client.create_model_version(name, f"models:/{model_id}", run_id=run_id, model_id=model_id, tags=keep)
        version = created.version
    client.set_registered_model_alias(name, CHALLENGER, version)
    return str(version)


def record_gate(params: TrackingParams, package_md5: str, result: dict[str, Any]) -> str | None:
    """Tag the registered version holding this package with the gate's verdict and figures.
    A store that fails part-way is one `StageError`: `promote` then finds no verdict to accept."""
    with store_lock(params):
        try:
            return _record_gate(params, package_md5, result)
        except StageError:
            raise
        except Exception as exc:  # MlflowException, requests and driver errors alike
            raise StageError(
                f"MLflow tracking store {redact(params.uri)} failed while recording the gate's verdict "
                f"({type(exc).__name__}: {describe_error(exc)}); promote accepts no verdict it has not recorded"
            ) from None


def _record_gate(params: TrackingParams, package_md5: str, result: dict[str, Any]) -> str | None:
    mlflow, _ = open_store(params)
    client = mlflow.MlflowClient()
    version = find_version(client, params.registered_model, package_md5)
    if version is None:
        log.warning("no registered version holds this package: run `dvc repro` with tracking on first")
        return None
    name = params.registered_model
    client.set_model_version_tag(name, version.version, "gate_passed", str(result["passed"]).lower())
    for check_name, check in result["checks"].items():
        client.set_model_version_tag(name, version.version, f"gate.{check_name}", str(check["value"]))
    # The champion the verdict was measured against: `promote` refuses the verdict once it moves.
    client.set_model_version_tag(name, version.version, GATE_CHAMPION_TAG, result.get("champion_version") or "none")
    return str(version.version)
