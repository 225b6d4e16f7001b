"""Command `tune`: a cross-validated grid search over one model kind's hyperparameters.

    reprokit tune                                   # loky: processes on this machine
    reprokit tune --backend dask --scheduler tcp://10.0.0.5:8786   # a Dask cluster
    reprokit tune --apply                           # and write the best into params.yaml

The grid, the folds and the parallelism come from `params.yaml: tune`. Every candidate is
the current `train.<model>` hyperparameters with the grid's values over them; the current
ones are a candidate too, so the table says what tuning gains. Each (candidate, fold) is one
task: the pipeline's own transformer and model (`reprokit.model.estimators`) fitted on the fold's
rows of the prepared train split under a one-thread budget, scored by ROC AUC on the held
out fold. joblib runs the tasks with the `loky` backend or the `dask` one, and both give the
same table: every task is seeded and single-threaded. The test split is never read.

Writes `metrics/tune.json` (the best candidate and the current one: `dvc metrics show metrics/tune.json`) and
`metrics/tune_cv.json` (the table, one row per candidate: a DVC plot), logs a parent
MLflow run with one child run per candidate when tracking is enabled (the store is checked
to answer before the search starts), and prints the `dvc exp run -S ...` line that trains
the best candidate (nothing when params.yaml does).
On a terminal, stderr shows the (candidate, fold) tasks done of the total, the time spent
and the time left. The prepared data must not be enlarged (`scale.rows: 0`): copies of a
row in both folds would reward memorising it.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
from typing import Any

import numpy as np
import pandas as pd

from reprokit.core.artifacts import write_json
from reprokit.core.config import ConfigError, StageParams, TrackingParams, TrainParams, TuneParams
from reprokit.core.contract import Contract, load_stage_contract
from reprokit.core.errors import StageError
from reprokit.core.progress import HELP as PROGRESS_HELP
from reprokit.core.progress import SILENT, Progress, progress
from reprokit.core.running import add_debug_option, run_stage

PARAMS = ("base.seed", "scale.rows", "featurize", "train", "tune", "tracking")
CONTRACT = ("name", "features", "target")

log = logging.getLogger("reprokit.tune")


def candidates(current: dict[str, Any], grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """The current hyperparameters first, then every grid combination over them (grid
    keys in the order written, values in the order listed), without repeats."""
    found = [dict(current)]
    keys = list(grid)
    for values in itertools.product(*(grid[key] for key in keys)):
        candidate = {**current, **dict(zip(keys, values, strict=True))}
        if candidate not in found:
            found.append(candidate)
    return found


def fold_auc(
    inputs: pd.DataFrame,
    y: np.ndarray,
    fit_rows: np.ndarray,
    score_rows: np.ndarray,
    contract: Contract,
    featurize,
    train,
    seed: int,
) -> float:
    """ROC AUC on `score_rows` of the pipeline fitted on `fit_rows` (one thread)."""
    from sklearn.metrics import roc_auc_score

    from reprokit.core.threads import thread_budget
    from reprokit.model.estimators import build_model, build_transformer

    with thread_budget(1):
        transformer = build_transformer(contract, featurize)
        features = transformer.fit_transform(inputs.iloc[fit_rows])
        model = build_model(train, seed).fit(features, y[fit_rows])
        scores = model.predict_proba(transformer.transform(inputs.iloc[score_rows]))[:, 1]
    return float(roc_auc_score(y[score_rows], scores))


Trials = list[tuple[dict[str, Any], TrainParams]]


def search(
    inputs: pd.DataFrame,
    y: np.ndarray,
    contract: Contract,
    featurize,
    trials: Trials,
    folds: int,
    seed: int,
    backend: str,
    n_jobs: int,
    done: Progress = SILENT,
) -> list[dict[str, Any]]:
    """Every candidate's fold AUCs, mean and standard deviation, best first (ties: grid order).
    `trials` are check_grid's; `done` advances by one as each (candidate, fold) task's result
    arrives, in task order."""
    from joblib import Parallel, delayed, parallel_config
    from sklearn.model_selection import StratifiedKFold

    from reprokit.commands.tune import fold_auc as task  # by reference, also when this module is __main__

    splits = list(StratifiedKFold(folds, shuffle=True, random_state=seed).split(inputs, y))
    with parallel_config(backend=backend, n_jobs=n_jobs):
        tasks = Parallel(return_as="generator")(
            delayed(task)(inputs, y, fit_rows, score_rows, contract, featurize, setting, seed)
            for _, setting in trials
            for fit_rows, score_rows in splits
        )
        aucs = list(done.track(tasks))
    table = []
    for i, (candidate, _) in enumerate(trials):
        scores = aucs[i * len(splits) : (i + 1) * len(splits)]
        table.append(
            {
                "candidate": i,
                "params": candidate,
                "cv_roc_auc": round(float(np.mean(scores)), 6),
                "cv_roc_auc_std": round(float(np.std(scores)), 6),
                "fold_roc_auc": [round(score, 6) for score in scores],
            }
        )
    ranked = sorted(table, key=lambda row: (-row["cv_roc_auc"], row["candidate"]))
    return [{**row, "rank": rank} for rank, row in enumerate(ranked, 1)]


def check_grid(train: TrainParams, tune: TuneParams, seed: int) -> Trials:
    """(candidate, the train settings that fit it) for each candidate of the grid, in grid
    order, each checked to build a valid model: a bad key or value fails here, once and before
    the store check and the search, not in every fold's task."""
    import dataclasses

    from reprokit.model.estimators import build_model

    # A bad key in train itself is train's own error; the seed and the thread budget are the project's.
    takes = set(build_model(train, seed).get_params()) - {"random_state", "n_jobs"}
    unknown = sorted(set(tune.grid) - takes)
    if unknown:
        raise StageError(
            f"params.yaml: tune.grid names {', '.join(unknown)}, which train.{train.model} does not take "
            "(random_state and n_jobs come from base.seed and base.n_threads)"
        )
    trials = [
        (candidate, dataclasses.replace(train, **{train.model: candidate}))
        for candidate in candidates(train.hyperparams, tune.grid)
    ]
    for _, setting in trials:
        try:
            build_model(setting, seed)._validate_params()
        except Exception as exc:  # noqa: BLE001 - scikit-learn's InvalidParameterError and kin
            raise StageError(f"params.yaml: tune.grid gives train.{train.model} a bad value: {exc}") from None
    return trials


def exp_run_line(trained: str, model: str, best: dict[str, Any], current: dict[str, Any]) -> str | None:
    """The `dvc exp run` line that trains `best` (only the values that differ from params), or
    None when params already train it (`trained` is params' train.model, `current` its values).
    DVC applies `-S` as Hydra overrides, which refuse a new key unless it starts with `+`."""
    sets = []
    for key, value in best.items():
        if key not in current:
            sets.append(f"-S '+train.{model}.{key}={json.dumps(value)}'")
        elif current[key] != value:
            sets.append(f"-S 'train.{model}.{key}={json.dumps(value)}'")
    if not sets and trained == model:
        return None
    return "dvc exp run " + " ".join([f"-S 'train.model={model}'", *sets])


def apply_best(params_file: str, model: str, best: dict[str, Any]) -> None:
    """Write `best` into `params_file` as `train.model` and `train.<model>`, comments kept."""
    from reprokit.core.artifacts import write_bytes_atomic
    from reprokit.core.yamledit import edit_yaml

    with open(params_file, encoding="utf-8") as handle:
        text = handle.read()
    changes = {("train", "model"): model} | {("train", model, key): value for key, value in best.items()}
    write_bytes_atomic(params_file, edit_yaml(text, changes, params_file).encode())


def checked_store(params_file: str, contract_file: str) -> TrackingParams:
    """The tracking settings, the store checked to answer when tracking is enabled: before the
    search, so that a store that is down or misconfigured costs seconds, not the search."""
    from reprokit.release import tracking

    settings = tracking.settings(params_file, contract_file)
    if settings.enabled:
        with tracking.store_lock(settings):
            tracking.open_store(settings)
    return settings


def log_search(
    settings: TrackingParams, model: str, folds: int, table: list[dict[str, Any]], written: tuple[str, ...]
) -> None:
    """A parent MLflow run `tune` with one child run per candidate (tracking enabled only)."""
    from reprokit.release import tracking

    if not settings.enabled:
        return
    redo = f"only {' and '.join(written)} are written: run tune again once the store answers (the search runs again)"
    with tracking.store_lock(settings), tracking.store_errors(settings, redo):
        mlflow, experiment_id = tracking.open_store(settings)
        best = table[0]
        with mlflow.start_run(experiment_id=experiment_id, run_name=f"tune {model}"):
            mlflow.set_tags({"reprokit.kind": "tune", **tracking.git_state()})
            mlflow.log_params({"model": model, "folds": folds, "candidates": len(table)})
            mlflow.log_params({f"best.{key}": value for key, value in best["params"].items()})
            mlflow.log_metrics({"best_cv_roc_auc": best["cv_roc_auc"]})
            for row in sorted(table, key=lambda r: r["candidate"]):
                with mlflow.start_run(
                    experiment_id=experiment_id, run_name=f"candidate {row['candidate']}", nested=True
                ):
                    mlflow.log_params(row["params"])
                    metrics = {"cv_roc_auc": row["cv_roc_auc"], "cv_roc_auc_std": row["cv_roc_auc_std"]}
                    metrics.update({f"fold_{i}_roc_auc": v for i, v in enumerate(row["fold_roc_auc"])})
                    mlflow.log_metrics(metrics)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, epilog=PROGRESS_HELP, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_debug_option(parser)
    parser.add_argument("--contract", default="dataset.yaml")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--train", default="data/prepared/train.parquet", help="the prepared train split")
    parser.add_argument("--backend", choices=("loky", "dask"), help="default: params.yaml tune.backend")
    parser.add_argument("--scheduler", help="the Dask scheduler's address (backend dask), e.g. tcp://10.0.0.5:8786")
    parser.add_argument("--n-jobs", type=int, help="parallel tasks (default: params.yaml tune.n_jobs)")
    parser.add_argument("--out", default="metrics/tune.json")
    parser.add_argument("--plot-out", default="metrics/tune_cv.json")
    parser.add_argument("--apply", action="store_true", help="write the best candidate into the params file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)

    def body() -> str:
        contract = load_stage_contract("tune", CONTRACT, args.contract)
        params = StageParams("tune", PARAMS, args.params)
        seed = params.value("base.seed")
        featurize, train, tune = params.section("featurize"), params.section("train"), params.section("tune")
        backend = args.backend or tune.backend
        n_jobs = tune.n_jobs if args.n_jobs is None else args.n_jobs
        if n_jobs < 1:
            raise ConfigError("--n-jobs must be at least 1")
        if params.value("scale.rows"):
            raise ConfigError(
                f"{args.params}: scale.rows is on; its copies of a row would sit in both a fit fold and a scored "
                "fold, so cross-validation would reward memorising them: tune with scale.rows: 0"
            )
        trained, train = train.model, _with_model(train, tune.model)
        split = pd.read_parquet(args.train)
        from reprokit.model.inference import inputs_of

        inputs, y = inputs_of(split, contract), split[contract.target.column].to_numpy()
        if backend == "dask" and not args.scheduler:
            raise ConfigError("--backend dask needs --scheduler ADDRESS (a running Dask scheduler)")
        trials = check_grid(train, tune, seed)
        settings = checked_store(args.params, args.contract)
        client = None
        if backend == "dask":
            from distributed import Client

            try:
                client = Client(args.scheduler, timeout="30s")
            except OSError as exc:
                raise StageError(f"Dask scheduler {args.scheduler}: cannot connect ({exc})") from None
        try:
            with progress("tune: candidates x folds", total=len(trials) * tune.folds, unit="fits") as done:
                table = search(inputs, y, contract, featurize, trials, tune.folds, seed, backend, n_jobs, done)
        finally:
            if client is not None:
                client.close()
        best, current = table[0], next(row for row in table if row["candidate"] == 0)
        result = {
            "model": tune.model,
            "folds": tune.folds,
            "candidates": len(table),
            "best": {"cv_roc_auc": best["cv_roc_auc"], "params": best["params"]},
            "current": {"cv_roc_auc": current["cv_roc_auc"], "params": current["params"]},
        }
        write_json(args.out, result)
        write_json(args.plot_out, [_plot_row(row) for row in sorted(table, key=lambda r: r["candidate"])])
        log_search(settings, tune.model, tune.folds, table, (args.out, args.plot_out))
        line = exp_run_line(trained, tune.model, best["params"], train.hyperparams)
        outcome = f"; {args.params} already trains it" if line is None else ""
        if line is not None:
            print(line)
        if args.apply and line is not None:
            apply_best(args.params, tune.model, best["params"])
        return (
            f"{len(table)} candidates x {tune.folds} folds on {len(split)} rows ({backend}): best CV ROC AUC "
            f"{best['cv_roc_auc']:.4f} (current {current['cv_roc_auc']:.4f})"
            + (outcome or (f"; written to {args.params}" if args.apply else ""))
        )

    run_stage("tune", body, debug=args.debug)


def _with_model(train, model: str):
    """`train` with `model` as its kind (the grid's model may differ from the trained one)."""
    import dataclasses

    return dataclasses.replace(train, model=model)


def _plot_row(row: dict[str, Any]) -> dict[str, Any]:
    label = ", ".join(f"{key}={value}" for key, value in row["params"].items())
    return {**row, "params": label, "rank": row["rank"]}


if __name__ == "__main__":
    main()
