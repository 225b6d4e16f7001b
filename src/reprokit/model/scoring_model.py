"""A package loaded for scoring: the service's and batch scoring's view of `models/package`
or a registry version, with its contract, threshold and version, the fitted pipeline and
its compiled form (`reprokit.model.compiled`), used only where it gives the same probabilities."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pandas as pd

from reprokit.core.contract import Contract
from reprokit.model.compiled import compile_pipeline, rows_of, verify
from reprokit.model.scoring import InputError, frame_of, probe_records


@dataclasses.dataclass
class ScoringModel:
    """A package ready to score: its contract, threshold and version, the fitted pipeline and
    its compiled form (used only where it was shown to give the same probabilities)."""

    uri: str
    version: str
    contract: Contract
    threshold: float
    pipeline: Any
    compiled: Any

    @classmethod
    def load(cls, uri: str) -> "ScoringModel":
        """Load a package directory or a `models:/name@alias` / `models:/name/version` URI
        (checked by `reprokit.model.trust.open_package`, MLflow imported only for the registry); an
        alias is resolved to its version first."""
        from reprokit.core.contract import parse_contract
        from reprokit.model.trust import in_signature_order, open_package

        target, version = resolve(uri)
        package = open_package(target)
        meta = package.metadata.get("reprokit")
        if not isinstance(meta, dict) or "contract" not in meta or "threshold" not in meta:
            raise InputError(f"{uri}: the package does not carry its contract and threshold; re-run `dvc repro`")
        contract = in_signature_order(
            parse_contract(meta["contract"], where=f"{uri} (MLmodel metadata)"), package.input_names
        )
        if contract is None:
            raise InputError(f"{uri}: the signature's columns differ from the contract's features")
        pipeline = package.pipeline
        compiled = compile_pipeline(pipeline)
        if not verify(compiled, pipeline, probe_records(contract)):
            compiled = None
        version = version or f"package-{package.model_uuid[:12]}"
        return cls(uri, version, contract, float(meta["threshold"]), pipeline, compiled)

    def probabilities(self, inputs: pd.DataFrame) -> np.ndarray:
        """Positive-class probabilities of checked records (call under the thread budget)."""
        if len(inputs) == 0:
            return np.empty(0, dtype="float64")
        return (self.compiled or self.pipeline).predict_proba(inputs)[:, 1]

    def scores_quickly(self, rows: int) -> bool:
        """Whether `rows` records are scored by the compiled trees (well under a millisecond
        for a few records) rather than scikit-learn's model (tens of milliseconds for a forest
        or boosted trees of a few hundred trees, whatever the rows)."""
        return self.compiled is not None and self.compiled.uses_trees(rows)

    def probabilities_of(self, columns: dict[str, Any]) -> np.ndarray:
        """`probabilities` of checked columns (`scoring.columns_of`): the compiled pipeline
        reads them as they are (`verify` showed it on this form too), the scikit-learn one
        gets their frame."""
        if self.compiled is None:
            return self.probabilities(frame_of([columns]))
        if rows_of(columns) == 0:
            return np.empty(0, dtype="float64")
        return self.compiled.predict_proba(columns)[:, 1]


def resolve(uri: str) -> tuple[str, str | None]:
    """The loadable URI and registry version of `uri`: `models:/name@alias` becomes
    `models:/name/<version the alias points to now>`; a directory has no registry version."""
    if not str(uri).startswith("models:/"):
        return str(uri), None
    path = str(uri)[len("models:/") :]
    if "@" in path:
        import mlflow

        name, alias = path.split("@", 1)
        version = mlflow.MlflowClient().get_model_version_by_alias(name, alias).version
        return f"models:/{name}/{version}", str(version)
    name, _, version = path.partition("/")
    return str(uri), version or None


def thread_budget_setting(threads: int | None, params_file: str, section: str = "base") -> int:
    """A scoring command's thread budget: `--threads` if given, else `<section>.n_threads` of
    the params file, else 1 (a package served away from the repository, or a params file
    from before `serve.n_threads`). Batch scoring reads `base`, the service and the gate's
    latency check `serve`."""
    import os

    if threads is not None:
        return threads
    if not os.path.exists(params_file):
        return 1
    from reprokit.core.config import load_section, read_yaml

    if section == "serve" and section not in read_yaml(params_file):
        return 1
    return load_section(section, params_file).n_threads
