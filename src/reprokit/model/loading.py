"""Loading a scoring model, once per process: a package directory or a registry URI, every reason
it can fail as one error line, and the per-process cache a Dask worker keeps."""

from __future__ import annotations

import os
import sys
import threading
from typing import Any

from reprokit.core.errors import StageError

# The models this process has loaded, by identity: a registry version, or a package directory
# with the `model_uuid` its MLmodel file holds now (a rebuilt package is loaded again).
_WORKER_MODELS: dict[tuple[str, str], Any] = {}


WORKER_LOADS = [0]  # models this process has loaded (tests read it on Dask workers)


def _model_identity(uri: str) -> tuple[str, str]:
    if uri.startswith("models:/"):
        return uri, ""
    import yaml

    try:
        with open(os.path.join(uri, "MLmodel"), encoding="utf-8") as handle:
            return uri, str((yaml.safe_load(handle) or {}).get("model_uuid"))
    except (OSError, yaml.YAMLError, AttributeError):
        return uri, ""  # load_model then says what is wrong


_LOADING = threading.Lock()


def worker_model(uri: str):
    """The model at `uri`, loaded once per process (a Dask worker keeps it; its threads take turns)."""
    identity = _model_identity(uri)
    with _LOADING:
        if identity not in _WORKER_MODELS:
            _WORKER_MODELS[identity] = load_model(uri)
            WORKER_LOADS[0] += 1
        return _WORKER_MODELS[identity]


def load_model(uri: str):
    """`ScoringModel.load`, with every reason it can fail as one error line."""
    from reprokit.model.scoring import InputError
    from reprokit.model.scoring_model import ScoringModel

    try:
        return ScoringModel.load(uri)
    except Exception as exc:  # MLflow's errors only if it was needed (a registry URI): never imported for them
        mlflow_errors = sys.modules.get("mlflow.exceptions")
        if not isinstance(exc, (InputError, OSError)) and not (
            mlflow_errors and isinstance(exc, mlflow_errors.MlflowException)
        ):
            raise
        raise StageError(f"{uri}: cannot load the model ({exc})") from None
