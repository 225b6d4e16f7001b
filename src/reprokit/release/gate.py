"""The release gate: may the challenger replace the champion?

    reprokit gate [--version N|ALIAS | --package DIR] [--enforce]

With tracking on, it tests the registered version the `challenger` alias points to (or the
one `--version` names), downloaded from the registry and checked like any untrusted package,
so that `reprokit promote` then accepts exactly the version tested; with
no registry (or no challenger yet), or with `--package`, the package directory
(`models/package`). It says which, and `metrics/gate.json` records the version and the
package's DVC md5.

Every figure is computed here, now, from the package under test scored on the test
split (never read from a metrics file someone could edit). Checks, with thresholds
from `params.yaml: gate`:
- `min_test_roc_auc`: the challenger's test ROC AUC is at least this;
- `max_auc_degradation`: the current champion's AUC minus the challenger's, both scored
  here on the same rows: the test rows that were in neither model's training data (each
  registered version records which rows it trained on); passes when there is no champion,
  fails (with the reason) when the registry cannot be read or the champion cannot score;
- `max_subgroup_auc_gap`: the largest AUC gap between subgroups of the challenger's
  test scores (evaluate's rules: groups below `evaluate.min_subgroup_size` left out);
- `max_p95_latency_ms`: the 95th percentile of single-row prediction time of the
  packaged model, as served by `mlflow.pyfunc` under the service's thread budget
  (`serve.n_threads`), is at most this.
A check whose figure cannot be computed fails, and says why.

Writes the verdict, every check's figure, the champion it was measured against and how
many rows the comparison used to `metrics/gate.json` (kept in git as the record of the
last gate run; commit it with a release) and, when tracking is on, as tags on the
challenger's registered version. `reprokit promote` requires a
passed verdict measured against the current champion. With `--enforce` (or
`gate.enforce: true`) a failed gate exits non-zero. It is not a pipeline stage: it
reads the registry, which DVC does not track, and its latency figure varies by run. On a
terminal, stderr shows the latency samples taken of the total.
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

from reprokit.core.artifacts import dvc_md5, read_split, write_json
from reprokit.core.config import GateParams, load_section
from reprokit.core.contract import load_contract
from reprokit.core.errors import StageError
from reprokit.core.metrics import rounded, subgroup_metrics
from reprokit.core.progress import HELP as PROGRESS_HELP
from reprokit.core.progress import SILENT, Progress, progress
from reprokit.core.redaction import describe_error
from reprokit.core.running import add_debug_option, run_stage
from reprokit.core.threads import thread_budget
from reprokit.model.inference import inputs_of, served_proba
from reprokit.model.scoring import conform
from reprokit.model.scoring_model import thread_budget_setting
from reprokit.model.trust import load_package

log = logging.getLogger("reprokit.gate")

MIN_COMPARISON_ROWS = 30  # fewer rows outside both training sets cannot rank two models


def p95_ms(times_ms: list[float]) -> float:
    """95th percentile of the given timings, in milliseconds, rounded to microseconds."""
    if not times_ms:
        raise ValueError("no timings to take a percentile of")
    return round(float(np.percentile(times_ms, 95)), 3)


def single_row_times_ms(
    model, inputs: pd.DataFrame, samples: int, n_threads: int, warmup: int = 10, done: Progress = SILENT
) -> list[float]:
    """Wall time of each single-row `predict`, in milliseconds, under the thread budget
    (`done` advances by one a timed sample, outside the timed span)."""
    rows = [inputs.iloc[[i % len(inputs)]] for i in range(samples + warmup)]
    times = []
    with thread_budget(n_threads):
        for row in rows[:warmup]:
            model.predict(row)
        for row in done.track(rows[warmup:]):
            started = time.perf_counter()
            model.predict(row)
            times.append((time.perf_counter() - started) * 1000)
    return times


def check(value: float | None, limit: float, kind: str, note: str = "", missing: str = "") -> dict[str, Any]:
    """One check's record; `kind` is `min` or `max`. A missing value fails, with `missing` as the reason."""
    if value is None:
        return {"value": None, "limit": limit, "passed": False, "note": missing or "no value to check"}
    passed = value >= limit if kind == "min" else value <= limit
    record = {"value": value, "limit": limit, "passed": bool(passed)}
    if note:
        record["note"] = note
    return record


def auc(y: np.ndarray, proba: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    return rounded(roc_auc_score(y, proba)) if len(np.unique(y)) == 2 else None


def verdict(
    params: GateParams,
    test_auc: float | None,
    subgroup_gap: float | None,
    latency_ms: float | None,
    comparison: dict[str, Any] | None,
    subgroup_note: str = "",
) -> dict[str, Any]:
    """The gate's result from its figures (pure: no I/O). `comparison` is None without a
    champion, else the champion's and challenger's AUC on shared unseen rows (or why not).
    `subgroup_note` explains a missing subgroup gap."""
    if comparison is None:
        degradation = check(0.0, params.max_auc_degradation, "max", note="no champion yet")
    else:
        champion, challenger = comparison.get("champion_auc"), comparison.get("challenger_auc")
        value = None if champion is None or challenger is None else rounded(champion - challenger)
        note = f"on {comparison['rows']} test rows in neither model's training data"
        degradation = check(value, params.max_auc_degradation, "max", note, comparison.get("why", ""))
    checks = {
        "min_test_roc_auc": check(test_auc, params.min_test_roc_auc, "min", missing="the test split has one class"),
        "max_auc_degradation": degradation,
        "max_subgroup_auc_gap": check(subgroup_gap, params.max_subgroup_auc_gap, "max", missing=subgroup_note),
        "max_p95_latency_ms": check(latency_ms, params.max_p95_latency_ms, "max"),
    }
    return {"passed": all(c["passed"] for c in checks.values()), "checks": checks}


def champion_version(tracking_params) -> tuple[Any, Any] | None:
    """(client, version) of the current champion, or None when there is none (no registered
    model, or no champion alias). Any other error looking it up is a `StageError`: the gate
    never takes a registry it could not read for one without a champion."""
    from mlflow.exceptions import MlflowException

    from reprokit.release import tracking

    mlflow, _ = tracking.open_store(tracking_params)
    client = mlflow.MlflowClient()
    name = tracking_params.registered_model
    try:
        try:
            aliases = client.get_registered_model(name).aliases
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise
        number = aliases.get(tracking.CHAMPION)
        if number is None:
            return None
        return client, client.get_model_version(name, str(number))
    except Exception as exc:  # MLflow's, the driver's or the network's: a failed lookup, never "none"
        raise StageError(
            f"could not look up the champion of {name} ({type(exc).__name__}: {describe_error(exc)})"
        ) from None


def champion_train_index(version) -> set[str]:
    """The row ids the champion trained on, from its run, checked against its version's tag."""
    import mlflow.artifacts

    from reprokit.release import tracking

    recorded = version.tags.get(tracking.TRAIN_INDEX_TAG)
    if recorded is None:
        raise StageError(f"champion version {version.version} records no split identity ({tracking.TRAIN_INDEX_TAG})")
    text = mlflow.artifacts.load_text(f"runs:/{version.run_id}/{tracking.TRAIN_INDEX_ARTIFACT}")
    if tracking.listing_md5(text) != recorded:
        raise StageError(f"champion version {version.version}: its training-row list does not match its tag")
    return set(json.loads(text))


def compare_with_champion(
    tracking_params, version, test: pd.DataFrame, inputs: pd.DataFrame, y, challenger_proba, train_index, n_threads
) -> dict[str, Any]:
    """Champion and challenger AUC on the test rows neither trained on."""
    from reprokit.release import tracking

    result: dict[str, Any] = {"rows": 0}
    try:
        seen = set(map(str, train_index))
        if version.tags.get(tracking.TRAIN_INDEX_TAG) != tracking.train_index_md5(train_index):
            seen |= champion_train_index(version)
    except StageError as exc:
        return {**result, "why": str(exc)}
    except Exception as exc:  # the artifact store down, the run deleted: fails closed, with the reason
        why = f"champion version {version.version}: its training-row list could not be read ({describe_error(exc)})"
        return {**result, "why": why}
    unseen = ~test.index.astype(str).isin(list(seen))
    result["rows"] = int(unseen.sum())
    if result["rows"] < MIN_COMPARISON_ROWS:
        return {**result, "why": f"only {result['rows']} test rows are outside both training sets"}
    try:
        model = load_package(f"models:/{tracking_params.registered_model}/{version.version}")
        champion_proba = served_proba(model, conform(inputs.loc[unseen], model), n_threads)
    except Exception as exc:  # a refused package, or one that cannot score today's columns
        return {**result, "why": f"champion version {version.version} could not score the rows: {describe_error(exc)}"}
    result["champion_auc"] = auc(y[unseen], champion_proba)
    result["challenger_auc"] = auc(y[unseen], challenger_proba[unseen])
    if result["champion_auc"] is None:
        result["why"] = "the rows outside both training sets hold one class"
    return result


def check_split(tracking_params, package_md5: str, shown: str, train_file: str, train_index) -> None:
    """Refuse to judge a package on a split it was not trained with: the registered version
    records its training rows, and the local train split must be those rows, or some of the
    test rows scored here were training rows."""
    from reprokit.release import tracking

    mlflow, _ = tracking.open_store(tracking_params)
    version = tracking.find_version(mlflow.MlflowClient(), tracking_params.registered_model, package_md5)
    recorded = version.tags.get(tracking.TRAIN_INDEX_TAG) if version is not None else None
    local = tracking.train_index_md5(train_index)
    if recorded is not None and recorded != local:
        raise StageError(
            f"{train_file} is not the split {shown} was trained on (version {version.version} records "
            f"{tracking.TRAIN_INDEX_TAG} {recorded}, the local split is {local}): "
            "run `dvc checkout` or `dvc repro` so the data and the package match"
        )


def version_under_test(tracking_params, asked: str | None) -> tuple[str, str, str] | None:
    """(version number, package md5, models:/ URI) of the version the gate tests: the one
    `asked` names (a number or an alias), else the `challenger` alias's. None when nothing was
    asked and the registry has no challenger (the workspace package is tested then)."""
    from mlflow.exceptions import MlflowException

    from reprokit.release import tracking

    mlflow, _ = tracking.open_store(tracking_params)
    client = mlflow.MlflowClient()
    name = tracking_params.registered_model
    wanted = asked or tracking.CHALLENGER
    try:
        aliases = client.get_registered_model(name).aliases
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST" and asked is None:
            return None
        raise StageError(f"cannot find version {wanted!r} of {name} ({exc.error_code})") from None
    number = str(aliases.get(wanted, wanted))
    if asked is None and tracking.CHALLENGER not in aliases:
        return None
    try:
        version = client.get_model_version(name, number)
    except MlflowException:
        raise StageError(f"{name} has no version {wanted!r}") from None
    md5 = version.tags.get(tracking.PACKAGE_MD5_TAG)
    if not md5:
        raise StageError(f"{name} version {number} records no package md5 ({tracking.PACKAGE_MD5_TAG})")
    return str(version.version), md5, f"models:/{name}/{version.version}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, epilog=PROGRESS_HELP, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_debug_option(parser)
    parser.add_argument("--contract", default="dataset.yaml")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--train", default="data/prepared/train.parquet", help="the challenger's training rows")
    parser.add_argument("--test", default="data/prepared/test.parquet")
    parser.add_argument(
        "--version",
        default=None,
        help="registered version (number or alias) to test (default: the challenger alias's, when tracking is on)",
    )
    parser.add_argument(
        "--package",
        default=None,
        help="test this package directory instead (default: models/package without a registry)",
    )
    parser.add_argument("--out", default="metrics/gate.json")
    parser.add_argument("--enforce", action="store_true", help="exit non-zero when the gate fails")
    args = parser.parse_args(argv)

    def body() -> str:
        from reprokit.core.paths import check_suffix
        from reprokit.release import tracking

        check_suffix({"out": args.out}, (".json",), "JSON")
        if args.package and not Path(args.package).is_dir():
            raise StageError(f"--package {args.package}: no such package directory (models/package after `dvc repro`)")
        params = load_section("gate", args.params)
        n_threads = load_section("base", args.params).n_threads
        evaluation = load_section("evaluate", args.params)
        contract = load_contract(args.contract)
        test = read_split(args.test, required=(contract.target.column,))
        if test.empty:
            raise StageError(f"{args.test}: the test split has no rows to judge a package on")
        train_index = read_split(args.train, columns=[contract.target.column]).index
        inputs, y = inputs_of(test, contract), test[contract.target.column].to_numpy()
        tracking_params = tracking.settings(args.params, args.contract)
        if args.package and args.version:
            raise StageError("give --version or --package, not both")
        tested = None
        if tracking_params.enabled and not args.package:
            tested = version_under_test(tracking_params, args.version)
        elif args.version:
            raise StageError("--version needs the registry: tracking.enabled is false")
        if tested is not None:
            number, package_md5, source = tested
            shown = f"version {number} ({source})"
            workspace = "models/package"
            if Path(workspace).is_dir() and dvc_md5(workspace) != package_md5:  # e.g. after `dvc exp apply`
                log.warning(
                    "%s is another package than %s: `--package %s` tests it instead (then promote the "
                    "version it is registered as)",
                    workspace,
                    shown,
                    workspace,
                )
        else:
            number, source = None, args.package or "models/package"
            package_md5, shown = dvc_md5(source), source
            if tracking_params.enabled:  # the workspace package may be a registered version too
                mlflow, _ = tracking.open_store(tracking_params)
                found = tracking.find_version(mlflow.MlflowClient(), tracking_params.registered_model, package_md5)
                number = str(found.version) if found is not None else None
        log.info("testing %s", shown)
        package = load_package(source)
        rows = conform(inputs, package)
        proba = served_proba(package, rows, n_threads)
        features = [contract.feature(name) for name in contract.subgroups]
        groups = subgroup_metrics(test, y, proba, features, evaluation.threshold, evaluation.min_subgroup_size)
        gap, gap_note = groups["max_auc_gap"], ""
        if not features:
            gap, gap_note = 0.0, "no subgroup features in the contract"
        elif gap is None:
            short = [name for name, value in groups["auc_gap"].items() if value is None]
            gap_note = (
                f"{', '.join(short)}: fewer than two groups with both classes and at least "
                f"{evaluation.min_subgroup_size} test rows (evaluate.min_subgroup_size)"
            )
        if tracking_params.enabled:
            check_split(tracking_params, package_md5, shown, args.train, train_index)
        champion, comparison = None, None
        if tracking_params.enabled:
            try:
                champion = champion_version(tracking_params)
            except StageError as exc:  # fails closed: the comparison check fails with the reason
                comparison = {"rows": 0, "why": str(exc)}
        if champion is not None:
            comparison = compare_with_champion(
                tracking_params, champion[1], test, inputs, y, proba, train_index, n_threads
            )
        # Single-row predictions as the service makes them, under its budget (serve.n_threads).
        serve_threads = thread_budget_setting(None, args.params, "serve")
        with progress("gate: latency samples", total=params.latency_samples, unit="predictions") as done:
            times = single_row_times_ms(package, rows, params.latency_samples, serve_threads, done=done)
        latency = p95_ms(times)
        result = verdict(params, auc(y, proba), gap, latency, comparison, gap_note)
        if not features:
            result["checks"]["max_subgroup_auc_gap"]["note"] = gap_note
        result["checks"]["max_p95_latency_ms"]["threads"] = serve_threads
        # Packages by their DVC md5, not registry version numbers: the file means the same in any store.
        result["challenger_package"] = package_md5
        result["challenger_version"] = number
        result["champion_package"] = champion[1].tags.get(tracking.PACKAGE_MD5_TAG) if champion else None
        result["champion_version"] = str(champion[1].version) if champion else None
        result["comparison_rows"] = comparison["rows"] if comparison else None
        write_json(args.out, result)  # the verdict first: a store failing now leaves it on record
        challenger_version = None
        if tracking_params.enabled:
            challenger_version = tracking.record_gate(tracking_params, result["challenger_package"], result)
        failed = [name for name, c in result["checks"].items() if not c["passed"]]
        summary = "passed" if result["passed"] else f"FAILED: {', '.join(failed)}"
        for name, c in result["checks"].items():
            state = f"{'ok' if c['passed'] else 'FAILED'} {c.get('note', '')}".rstrip()
            log.info("  %-22s %-10s limit %-8s %s", name, c["value"], c["limit"], state)
        if failed and (args.enforce or params.enforce):
            raise StageError(f"release gate {summary} (see {args.out})")
        return f"release gate {summary} for {shown}" + (
            f", registered as version {challenger_version}" if challenger_version and source == args.package else ""
        )

    run_stage("gate", body, debug=args.debug)


if __name__ == "__main__":
    main()
