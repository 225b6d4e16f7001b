"""The release gate: may the packaged model (the challenger) replace the champion?

    python -m reprokit.gate [--enforce]

Checks, with thresholds from `params.yaml: gate`:
- `min_test_roc_auc`: the challenger's test ROC AUC is at least this;
- `max_auc_degradation`: the current champion's test AUC minus the challenger's, both
  scored here on the same test split, is at most this (passes when there is no champion);
- `max_subgroup_auc_gap`: the largest AUC gap between subgroups is at most this;
- `max_p95_latency_ms`: the 95th percentile of single-row prediction time of the
  packaged model, as served by `mlflow.pyfunc`, is at most this.

Writes the verdict and every check's figure to `metrics/gate.json` (declared as DVC
metrics in dvc.yaml, kept in git as the record of the last gate run; commit it with a
release) and, when tracking is on, as tags on the challenger's registered
version, which `python -m reprokit.registry promote` requires. With `--enforce` (or
`gate.enforce: true`) a failed gate exits non-zero. It is not a pipeline stage: it
reads the registry, which DVC does not track, and its latency figure varies by run,
so its output could never be byte-reproducible.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from reprokit.artifacts import dvc_md5, write_json
from reprokit.config import GateParams, load_section
from reprokit.contract import load_contract
from reprokit.inference import inputs_of, served_proba, thread_budget
from reprokit.stage import StageError, run_stage
from reprokit.trust import load_package

log = logging.getLogger("reprokit.gate")


def p95_ms(times_ms: list[float]) -> float:
    """95th percentile of the given timings, in milliseconds, rounded to microseconds."""
    if not times_ms:
        raise ValueError("no timings to take a percentile of")
    return round(float(np.percentile(times_ms, 95)), 3)


def single_row_times_ms(model, inputs: pd.DataFrame, samples: int, n_threads: int, warmup: int = 10) -> list[float]:
    """Wall time of each single-row `predict`, in milliseconds, under the thread budget."""
    rows = [inputs.iloc[[i % len(inputs)]] for i in range(samples + warmup)]
    times = []
    with thread_budget(n_threads):
        for row in rows[:warmup]:
            model.predict(row)
        for row in rows[warmup:]:
            started = time.perf_counter()
            model.predict(row)
            times.append((time.perf_counter() - started) * 1000)
    return times


def check(value: float | None, limit: float, kind: str, note: str = "") -> dict[str, Any]:
    """One check's record; `kind` is `min` or `max`. A None value passes (nothing to compare)."""
    passed = True if value is None else (value >= limit if kind == "min" else value <= limit)
    record = {"value": value, "limit": limit, "passed": bool(passed)}
    if note:
        record["note"] = note
    return record


def verdict(
    params: GateParams,
    test_auc: float,
    subgroup_gap: float,
    latency_ms: float,
    champion_auc: float | None,
    challenger_auc: float,
) -> dict[str, Any]:
    """The gate's result from its figures (pure: no I/O)."""
    degradation = None if champion_auc is None else round(champion_auc - challenger_auc, 6)
    checks = {
        "min_test_roc_auc": check(test_auc, params.min_test_roc_auc, "min"),
        "max_auc_degradation": check(
            degradation, params.max_auc_degradation, "max", "no champion yet" if champion_auc is None else ""
        ),
        "max_subgroup_auc_gap": check(subgroup_gap, params.max_subgroup_auc_gap, "max"),
        "max_p95_latency_ms": check(latency_ms, params.max_p95_latency_ms, "max"),
    }
    return {"passed": all(c["passed"] for c in checks.values()), "checks": checks}


def champion_auc(
    tracking_params, inputs: pd.DataFrame, y: np.ndarray, n_threads: int = 1
) -> tuple[float | None, str | None]:
    """Test AUC of the current champion, scored on this test split, and its package md5;
    (None, None) without a champion."""
    from sklearn.metrics import roc_auc_score

    from reprokit import tracking

    mlflow, _ = tracking._open(tracking_params)
    client = mlflow.MlflowClient()
    try:
        aliases = client.get_registered_model(tracking_params.registered_model).aliases
    except Exception:  # no registered model yet
        return None, None
    version = aliases.get(tracking.CHAMPION)
    if version is None:
        return None, None
    package = client.get_model_version(tracking_params.registered_model, str(version)).tags.get(
        tracking.PACKAGE_MD5_TAG
    )
    model = load_package(f"models:/{tracking_params.registered_model}@{tracking.CHAMPION}")
    return round(float(roc_auc_score(y, served_proba(model, inputs, n_threads))), 6), package


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contract", default="dataset.yaml")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--test", default="data/prepared/test.parquet")
    parser.add_argument("--metrics", default="metrics/metrics.json")
    parser.add_argument("--package", default="models/package")
    parser.add_argument("--out", default="metrics/gate.json")
    parser.add_argument("--enforce", action="store_true", help="exit non-zero when the gate fails")
    args = parser.parse_args(argv)

    def body() -> str:
        from sklearn.metrics import roc_auc_score

        from reprokit import tracking

        params = load_section("gate", args.params)
        n_threads = load_section("base", args.params).n_threads
        contract = load_contract(args.contract)
        metrics = json.loads(Path(args.metrics).read_text())
        test = pd.read_parquet(args.test)
        inputs, y = inputs_of(test, contract), test[contract.target.column].to_numpy()
        package = load_package(args.package)
        challenger = round(float(roc_auc_score(y, served_proba(package, inputs, n_threads))), 6)
        tracking_params = tracking.settings(args.params, args.contract)
        champion, champion_package, challenger_version = None, None, None
        if tracking_params.enabled:
            champion, champion_package = champion_auc(tracking_params, inputs, y, n_threads)
        result = verdict(
            params,
            metrics["test"]["roc_auc"],
            metrics["max_subgroup_auc_gap"],
            p95_ms(single_row_times_ms(package, inputs, params.latency_samples, n_threads)),
            champion,
            challenger,
        )
        # Packages by their DVC md5, not registry version numbers: the file means the same in any store.
        result["challenger_package"] = dvc_md5(args.package)
        result["champion_package"] = champion_package
        if tracking_params.enabled:
            challenger_version = tracking.record_gate(tracking_params, result["challenger_package"], result)
        write_json(args.out, result)
        failed = [name for name, c in result["checks"].items() if not c["passed"]]
        summary = "passed" if result["passed"] else f"FAILED: {', '.join(failed)}"
        for name, c in result["checks"].items():
            log.info("  %-22s %-10s limit %-8s %s", name, c["value"], c["limit"], "ok" if c["passed"] else "FAILED")
        if failed and (args.enforce or params.enforce):
            raise StageError(f"release gate {summary} (see {args.out})")
        return f"release gate {summary}; challenger version {challenger_version}"

    run_stage("gate", body)


if __name__ == "__main__":
    main()
