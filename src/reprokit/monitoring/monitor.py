"""Stage `monitor` and command `reprokit monitor BATCH`: does a batch of new data
still look like the training data, and did the model's scores (and, when the batch has
labels, its accuracy) move?

Compared with the reference (the prepared train split; for the scores, the held-out test
split's, scored by the package like any batch), column by column
(`reprokit.core.drift`): numbers by the Kolmogorov-Smirnov test and the PSI on the reference's
quantile bins; categories and binaries by the chi-square test and the PSI on categories;
every column's null rate by the chi-square test; the packaged model's scores by both, on
the score bins the scoring service's histogram uses. Column p-values are corrected for
testing many columns at once (`monitor.correction`); a column drifts only when its
corrected p-value is below `monitor.alpha` *and* its PSI reaches `monitor.psi_warn` (the
effect-size floor that keeps a large batch with a negligible shift quiet). When the batch
has the target column, the positive rate and the ROC AUC are compared with the held-out
test split's: a change of the label's meaning leaves the features and scores as they were.

Verdict: `alert` when a column or the scores reach `psi_alert`, when the share of drifted
columns reaches `drifted_share_alert`, when the positive rate shifts by `psi_alert`, or when
the AUC falls by `max_auc_drop` or more (significantly); `warn` when anything drifted
below that (a null rate up to `missing_rate_alert`), or when `rejected_share_warn` of the
rows break the contract; else `ok`. Rows that break the contract are counted with their
reasons and left out, never a crash; a column missing from the batch, one the contract
does not know, or a batch of fewer than `min_rows` rows is an error naming it.

Outputs: the figures as JSON (DVC metrics: `dvc metrics diff` and the pull-request report
show drift), reference-vs-batch shares of every column in one file (DVC plots: a row per
column, sample and bin, drawn per column by `.dvc/plots/distribution.json`; one file, not one
per column, so that `git checkout` restores it exactly whatever dataset was there before) and
a PNG per drifted column and for the scores, all byte-identical from run to run.
`--enforce` (or `monitor.enforce`) exits non-zero on `alert`. With `REPROKIT_MONITOR_WEBHOOK` set,
the verdict is posted there as JSON (`reprokit.monitoring.alerts`); a webhook that is down is logged, not fatal, unless
`--webhook-required`.

A batch larger than memory, as a partitioned Parquet dataset: `--engine dask --scheduler
ADDRESS` computes the same figures on a Dask cluster (`reprokit.monitoring.monitor_dask`).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pandas as pd

from reprokit.core.artifacts import fresh_dir, write_bytes_atomic, write_json
from reprokit.core.batchfiles import add_reading_options, reading
from reprokit.core.config import StageParams
from reprokit.core.contract import load_stage_contract
from reprokit.core.errors import StageError
from reprokit.core.running import add_debug_option, run_stage
from reprokit.monitoring.batch_drift import distribution_rows, monitor, read_batch, save_images

log = logging.getLogger("reprokit.monitor")

# The keys this stage reads: exactly its params in dvc.yaml (tests/code/test_pipeline_definition.py).
PARAMS = ("base.seed", "base.n_threads", "monitor")
CONTRACT = ("source", "target", "features")
HOLDOUT = "data/prepared/test.parquet"  # the held-out test split: the batch's AUC is compared with its


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from reprokit.core.cluster import add_engine_options, check_engine_options

    parser = argparse.ArgumentParser(
        prog="reprokit monitor",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_debug_option(parser)
    parser.add_argument(
        "batch",
        nargs="?",
        help="the batch to check: CSV (.csv, .csv.gz) or Parquet, a path or an fsspec URL "
        "(default: the params file's monitor.batch, as the stage checks it)",
    )
    parser.add_argument("--contract", default="dataset.yaml")
    add_reading_options(parser)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--reference", default="data/prepared/train.parquet", help="the reference (train split)")
    parser.add_argument(
        "--holdout", default=None, help=f"the reference for the AUC (default: {HOLDOUT}, when it exists)"
    )
    parser.add_argument("--model", default="models/package", help="package directory or models:/<name>@<alias>")
    parser.add_argument("--metrics-out", default=None, help="figures (default: reports/monitor/<batch>/monitor.json)")
    parser.add_argument(
        "--plots-out",
        default=None,
        help="every column's distribution data, one JSON file (default: beside the figures)",
    )
    parser.add_argument("--images-dir", default=None, help="PNG images (default: beside the figures)")
    parser.add_argument(
        "--rules-out", default=None, help="Prometheus rules for live score drift against this reference (YAML)"
    )
    add_engine_options(
        parser, "BATCH is a partitioned Parquet dataset (a directory), counted on the cluster at --scheduler"
    )
    parser.add_argument("--enforce", action="store_true", help="exit non-zero on an alert (also: monitor.enforce)")
    parser.add_argument("--webhook-required", action="store_true", help="fail when the webhook cannot be reached")
    args = parser.parse_args(argv)
    check_engine_options(parser, args)
    if args.batch is not None:
        default_outputs(args)
    return args


def default_outputs(args: argparse.Namespace) -> None:
    """Outputs not given go to reports/monitor/<the batch's name>/."""
    stem = Path(args.batch.rsplit("?", 1)[0].rstrip("/")).name.split(".")[0] or "batch"
    out = Path("reports/monitor") / stem
    args.metrics_out = args.metrics_out or str(out / "monitor.json")
    args.plots_out = args.plots_out or str(Path(args.metrics_out).parent / "distributions.json")
    args.images_dir = args.images_dir or str(Path(args.metrics_out).parent / "images")


def reference_splits(args: argparse.Namespace) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """The reference (the train split) and the holdout the batch's AUC is compared with
    (the test split; None when there is none)."""
    from reprokit.core.artifacts import read_split

    if args.holdout is None:  # the default: a batch checked without a test split has no AUC check
        holdout = read_split(HOLDOUT) if Path(HOLDOUT).is_file() else None
    else:  # one asked for must be there: a mistyped path would change the method silently
        holdout = read_split(args.holdout)
    return read_split(args.reference), holdout


def on_dask(args: argparse.Namespace, contract, params, seed: int, n_threads: int):
    """The figures, comparisons and reference scores of the partitioned batch `args.batch`,
    counted on the Dask cluster at `args.scheduler` (`reprokit.monitoring.monitor_dask`); and the model."""
    from reprokit.core.batchfiles import absolute, partition_names
    from reprokit.core.cluster import dask_client
    from reprokit.core.redaction import redact
    from reprokit.core.threads import thread_budget
    from reprokit.model.loading import load_model
    from reprokit.model.scoring_model import resolve
    from reprokit.monitoring.monitor_dask import monitor_partitioned

    shown = redact(args.batch)
    files = [f"{absolute(args.batch).rstrip('/')}/{name}" for name in partition_names(args.batch)]
    if args.model.startswith("models:/"):  # an alias is resolved once: the workers load that version
        from mlflow.exceptions import MlflowException

        try:
            target, _ = resolve(args.model)
        except MlflowException as exc:
            raise StageError(f"{args.model}: cannot load the model ({exc})") from None
    else:
        target = absolute(args.model)
    reference, holdout = reference_splits(args)
    with dask_client(args.scheduler), thread_budget(n_threads):
        model = load_model(target)
        try:
            result = monitor_partitioned(model, target, reference, holdout, files, contract, params, seed, n_threads)
        except StageError as exc:
            raise StageError(f"{shown}: {exc}") from None
    return (*result, model)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)

    def body() -> str:
        from reprokit.core.paths import check_arguments, check_no_credentials, check_suffix
        from reprokit.core.redaction import redact
        from reprokit.core.threads import thread_budget
        from reprokit.model.loading import load_model
        from reprokit.monitoring.alerts import post_verdict

        contract = load_stage_contract("monitor", CONTRACT, args.contract)
        stage_params = StageParams("monitor", PARAMS, args.params)
        params = stage_params.section("monitor")
        if args.batch is None:  # the stage's batch: a value from a committed file, never a shell's
            from reprokit.core.paths import batch_location

            args.batch = batch_location(params.batch, f"{args.params}: monitor.batch")
            default_outputs(args)
        check_no_credentials({"batch": args.batch})
        check_arguments(args, ("metrics_out", "plots_out", "images_dir", "rules_out"), ("images_dir",))
        check_suffix({"metrics-out": args.metrics_out, "plots-out": args.plots_out}, (".json",), "JSON")
        check_suffix({"rules-out": args.rules_out}, (".yml", ".yaml"), "YAML")
        seed, n_threads = stage_params.value("base.seed"), stage_params.value("base.n_threads")
        if args.engine == "dask":
            figures, comparisons, reference_scores, model = on_dask(args, contract, params, seed, n_threads)
        else:
            batch = read_batch(args.batch, contract, read_as=reading(contract.source, args))
            if len(batch) < params.min_rows:
                raise StageError(
                    f"{redact(args.batch)}: {len(batch)} rows, fewer than monitor.min_rows "
                    f"({params.min_rows}): too few to judge"
                )
            reference, holdout = reference_splits(args)
            with thread_budget(n_threads):
                model = load_model(args.model)
                figures, comparisons, reference_scores = monitor(model, reference, holdout, batch, params, seed)
        figures["model_version"] = model.version
        figures["batch"] = redact(args.batch)
        write_json(args.metrics_out, figures)
        write_json(args.plots_out, distribution_rows(comparisons))
        with fresh_dir(args.images_dir) as images_dir:
            save_images(comparisons, ["prediction"] + figures["drifted_columns"], images_dir)
        if args.rules_out:
            from reprokit.monitoring.alerts import prometheus_rules

            rules = prometheus_rules(reference_scores, params, model.version)
            write_bytes_atomic(args.rules_out, rules.encode())
        summary = (
            f"{redact(args.batch)}: {figures['verdict']}; {figures['rows']} rows ({figures['rejected_rows']} break the "
            f"contract); drifted: {', '.join(figures['drifted_columns']) or 'none'}; "
            f"scores PSI {figures['prediction']['psi']}"
        )
        post_verdict(figures, model.contract.name, args.batch, required=args.webhook_required)
        if figures["verdict"] == "alert" and (args.enforce or params.enforce):
            raise StageError(f"{summary} (enforced: an alert fails the check; see {args.metrics_out})")
        return summary

    run_stage("monitor", body, debug=args.debug)


if __name__ == "__main__":
    main()
