"""Stage `monitor` and command `python -m reprokit.monitor BATCH`: does a batch of new data
still look like the training data, and did the model's scores (and, when the batch has
labels, its accuracy) move?

Compared with the reference (the prepared train split), column by column
(`reprokit.drift`): numbers by the Kolmogorov-Smirnov test and the PSI on the reference's
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
below that; else `ok`. Rows that break the contract are counted with their reasons and left
out, never a crash; a column missing from the batch, or one the contract does not know,
is an error naming it.

Outputs: the figures as JSON (DVC metrics: `dvc metrics diff` and the pull-request report
show drift), reference-vs-batch shares per column (DVC plots) and a PNG per drifted column
and for the scores, all byte-identical from run to run. `--enforce` (or `monitor.enforce`)
exits non-zero on `alert`. With `REPROKIT_MONITOR_WEBHOOK` set, the verdict is posted there
as JSON (`reprokit.alerts`); a webhook that is down is logged, not fatal, unless
`--webhook-required`.
"""

from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from reprokit.artifacts import fresh_dir, md5_file, write_bytes_atomic, write_json
from reprokit.config import StageParams
from reprokit.contract import load_stage_contract
from reprokit.stage import StageError, add_debug_option, run_stage

log = logging.getLogger("reprokit.monitor")

# The keys this stage reads: exactly its params in dvc.yaml (tests/code/test_pipeline_definition.py).
PARAMS = ("base.seed", "base.n_threads", "monitor")
CONTRACT = ("source", "target", "features")

LEVELS = ("ok", "warn", "alert")
DIGITS = 6


def figure(value: float) -> float:
    """A figure as the monitor's files keep it: six significant decimals, never NaN."""
    value = float(value)
    return round(value, DIGITS) if math.isfinite(value) else 0.0


def read_batch(path: str, contract) -> pd.DataFrame:
    """The batch's columns (CSV or Parquet, a path or an fsspec URL) after checking their
    names: every feature present, nothing the contract does not know."""
    import pyarrow as pa

    from reprokit.score import chunks, column_names
    from reprokit.scoring import is_text

    names = column_names(path, contract.source)
    known = set(contract.feature_names) | {contract.target.column} | set(contract.source.drop_columns)
    if contract.source.id_column:
        known.add(contract.source.id_column)
    missing = [name for name in contract.feature_names if name not in names]
    unknown = [name for name in names if name not in known]
    problems = []
    if missing:
        problems.append(f"missing the contract's feature column(s) {', '.join(missing)}")
    if unknown:
        problems.append(f"column(s) the contract does not know: {', '.join(unknown)}")
    if problems:
        raise StageError(f"{path}: {'; '.join(problems)}")
    wanted = contract.feature_names + [name for name in (contract.target.column,) if name in names]
    numeric = {f.name for f in contract.features if not is_text(f)}
    for careful in (False, True):
        try:
            frames = list(chunks(path, wanted, numeric, 1_000_000, careful, contract.source))
            break
        except pa.ArrowInvalid as exc:
            if careful or "CSV conversion error" not in str(exc):
                raise StageError(f"{path}: cannot read it ({exc})") from None
    if not frames:
        return pd.DataFrame({name: pd.Series(dtype=object) for name in wanted})
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def label_values(values: pd.Series, target) -> tuple[np.ndarray, np.ndarray]:
    """0/1 labels and a mask of the rows that have one (the contract's positive and negative
    labels, or 1/0; anything else is no label)."""
    positive = values.map(lambda v: v == target.positive or (isinstance(v, (int, np.integer)) and v == 1))
    negative = values.map(lambda v: v == target.negative or (isinstance(v, (int, np.integer)) and v == 0))
    has = (positive | negative).to_numpy(dtype=bool) & values.notna().to_numpy()
    return positive.to_numpy(dtype=bool).astype("int8"), has


def auc_standard_error(auc: float, positives: int, negatives: int) -> float:
    """Hanley and McNeil's standard error of a ROC AUC."""
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    variance = (auc * (1 - auc) + (positives - 1) * (q1 - auc * auc) + (negatives - 1) * (q2 - auc * auc)) / max(
        positives * negatives, 1
    )
    return math.sqrt(max(variance, 0.0))


def level_of(psi: float, significant: bool, params) -> str:
    if not significant or psi < params.psi_warn:
        return "ok"
    return "alert" if psi >= params.psi_alert else "warn"


def monitor(model, reference: pd.DataFrame, holdout: pd.DataFrame | None, batch: pd.DataFrame, params, seed: int):
    """The monitor's figures (a JSON-ready mapping), each column's comparison, and the
    reference's scores.

    `model` is a `ScoringModel`; `reference` and `holdout` are prepared splits (the holdout
    gives the reference AUC when the batch has labels); `batch` holds the feature columns
    and maybe the target. Call under the thread budget."""
    from reprokit.scoring import InputError, check_records

    contract = model.contract
    try:
        ref = check_records({c: reference[c] for c in contract.feature_names}, len(reference), contract)
        cur = check_records({c: batch[c] for c in contract.feature_names}, len(batch), contract)
    except InputError as exc:
        raise StageError(str(exc)) from None
    ok, ref_ok = np.equal(cur.rejected, None), np.equal(ref.rejected, None)
    # Scores: the reference's, and a seeded sample of the batch's scorable rows.
    ref_scores = model.probabilities(ref.inputs[ref_ok].reset_index(drop=True))
    rows = np.flatnonzero(ok)
    if len(rows) > params.max_score_rows:
        rows = np.sort(np.random.default_rng(seed).choice(rows, params.max_score_rows, replace=False))
    cur_scores = model.probabilities(cur.inputs.iloc[rows].reset_index(drop=True))
    figures, comparisons = drift_figures(contract, ref.inputs, ref_ok, cur.inputs, ok, ref_scores, cur_scores, params)
    reasons: dict[str, int] = {}
    for reason in cur.rejected[~ok]:
        reasons[reason] = reasons.get(reason, 0) + 1
    figures["rejected_reasons"] = dict(sorted(reasons.items()))
    target = contract.target
    if target.column in batch.columns:
        labels = label_drift(model, reference, holdout, batch, rows, cur_scores, params)
        if labels is not None:
            comparisons[target.column] = labels.pop("comparison")
            figures["labels"] = labels
    figures.update(verdict_of(figures, params))
    return figures, comparisons, ref_scores


def drift_figures(contract, ref: pd.DataFrame, ref_ok, cur: pd.DataFrame, ok, ref_scores, cur_scores, params):
    """Figures and comparisons of every column, its null rate and the scores: `ref` and
    `cur` are checked model inputs (`reprokit.scoring.check_records`), `ref_ok` and `ok`
    their scorable rows (the others count for null rates only), the scores those of the
    scorable rows (or a sample of them)."""
    from reprokit.drift import adjust, compare_categories, compare_numbers, compare_rates, compare_scores
    from reprokit.scoring import SCORE_BINS, is_text

    comparisons: dict[str, Any] = {}
    p_values, null_p_values, rates = [], [], []
    for feature in contract.features:
        r, c = ref[feature.name][ref_ok], cur[feature.name][ok]
        if feature.type in ("numeric", "integer"):
            comparison = compare_numbers(
                r.to_numpy(dtype="float64", na_value=np.nan), c.to_numpy(dtype="float64", na_value=np.nan), params.bins
            )
        else:
            known = list(feature.values) if is_text(feature) else [float(v) for v in feature.values]
            comparison = compare_categories(r, c, known)
        comparisons[feature.name] = comparison
        p_values.append(comparison.p_value)
        ref_nulls, cur_nulls = int(ref[feature.name].isna().sum()), int(cur[feature.name].isna().sum())
        null_p_values.append(compare_rates(ref_nulls, len(ref), cur_nulls, len(cur)).p_value)
        rates.append((ref_nulls / max(len(ref), 1), cur_nulls / max(len(cur), 1)))
    adjusted = adjust(p_values, params.correction)
    null_adjusted = adjust(null_p_values, params.correction)

    features: dict[str, Any] = {}
    missing: dict[str, Any] = {}
    for i, feature in enumerate(contract.features):
        comparison = comparisons[feature.name]
        features[feature.name] = {
            "test": comparison.test,
            "p_value": figure(comparison.p_value),
            "p_adjusted": figure(adjusted[i]),
            "psi": figure(comparison.psi),
            "level": level_of(comparison.psi, bool(adjusted[i] < params.alpha), params),
        }
        ref_rate, cur_rate = rates[i]
        changed = null_adjusted[i] < params.alpha and abs(cur_rate - ref_rate) >= params.missing_rate_warn
        missing[feature.name] = {
            "reference_rate": figure(ref_rate),
            "current_rate": figure(cur_rate),
            "p_adjusted": figure(null_adjusted[i]),
            "level": "warn" if changed else "ok",
        }
    scores = compare_scores(ref_scores, cur_scores, SCORE_BINS)
    comparisons["prediction"] = scores
    prediction = {
        "test": scores.test,
        "p_value": figure(scores.p_value),
        "psi": figure(scores.psi),
        "mean_reference": figure(ref_scores.mean()) if len(ref_scores) else 0.0,
        "mean_current": figure(cur_scores.mean()) if len(cur_scores) else 0.0,
        "scored_rows": int(len(cur_scores)),
        "level": level_of(scores.psi, scores.p_value < params.alpha, params),
    }
    drifted = [name for name, entry in features.items() if entry["level"] != "ok"]
    figures = {
        "rows": int(len(cur)),
        "rejected_rows": int(len(cur) - np.count_nonzero(ok)),
        "rejected_reasons": {},
        "drifted_columns": drifted,
        "drifted_share": figure(len(drifted) / max(len(features), 1)),
        "missing_changed": [name for name, entry in missing.items() if entry["level"] != "ok"],
        "features": features,
        "missing": missing,
        "prediction": prediction,
        "labels": None,
    }
    return figures, comparisons


def verdict_of(figures: dict[str, Any], params) -> dict[str, Any]:
    """The overall verdict: the worst level of any column, null rate, the scores and the
    labels, raised to `alert` when the share of drifted columns reaches its threshold."""
    components = [entry["level"] for entry in figures["features"].values()]
    components += [entry["level"] for entry in figures["missing"].values()] + [figures["prediction"]["level"]]
    labels = figures["labels"]
    components += [labels["label_level"], labels["auc_level"]] if labels else []
    verdict = max(components, key=LEVELS.index, default="ok")
    if figures["drifted_share"] >= params.drifted_share_alert:
        verdict = "alert"
    return {"verdict": verdict, "level": LEVELS.index(verdict)}


def label_drift(model, reference, holdout, batch, rows, scores, params) -> dict[str, Any] | None:
    """The positive rate against the reference's, and the ROC AUC against the held-out test
    split's (significant by Hanley and McNeil's standard errors), on the batch's labelled
    scored rows; None when no scored row has a label."""
    from sklearn.metrics import roc_auc_score

    from reprokit.drift import compare_rates
    from reprokit.scoring import check_records

    target = model.contract.target
    y, has = label_values(batch[target.column].iloc[rows].reset_index(drop=True), target)
    if not has.any():
        return None
    y, scores = y[has], scores[has]
    ref_y = reference[target.column].to_numpy()
    rate = compare_rates(int(ref_y.sum()), len(ref_y), int(y.sum()), len(y))
    result: dict[str, Any] = {
        "labelled_rows": int(has.sum()),
        "positive_rate_reference": figure(ref_y.mean()),
        "positive_rate_current": figure(y.mean()),
        "p_value": figure(rate.p_value),
        "psi": figure(rate.psi),
        "label_level": level_of(rate.psi, rate.p_value < params.alpha, params),
        "auc_level": "ok",
        "comparison": rate,
    }
    if holdout is not None and 0 < y.sum() < len(y):
        checked = check_records({c: holdout[c] for c in model.contract.feature_names}, len(holdout), model.contract)
        kept = np.equal(checked.rejected, None)
        hold_y = holdout[target.column].to_numpy()[kept]
        hold_scores = model.probabilities(checked.inputs[kept].reset_index(drop=True))
        ref_auc, auc = roc_auc_score(hold_y, hold_scores), roc_auc_score(y, scores)
        se = math.hypot(
            auc_standard_error(ref_auc, int(hold_y.sum()), int(len(hold_y) - hold_y.sum())),
            auc_standard_error(auc, int(y.sum()), int(len(y) - y.sum())),
        )
        drop = ref_auc - auc
        p_value = 0.5 * math.erfc(drop / (se * math.sqrt(2))) if se > 0 else float(drop <= 0)
        result.update(
            roc_auc_reference=figure(ref_auc),
            roc_auc_current=figure(auc),
            auc_drop=figure(drop),
            auc_p_value=figure(p_value),
            auc_level="alert" if drop >= params.max_auc_drop and p_value < params.alpha else "ok",
        )
    return result


def distribution_rows(comparison) -> list[dict[str, Any]]:
    """Rows for DVC plots: each bin's share in the reference and in the batch."""
    rows = []
    for sample, shares in (("reference", comparison.reference), ("current", comparison.current)):
        rows += [{"bin": b, "sample": sample, "share": figure(s)} for b, s in zip(comparison.bins, shares, strict=True)]
    return rows


def save_images(comparisons: dict[str, Any], names: list[str], out_dir: Path) -> None:
    """A PNG of reference-vs-batch shares per name (byte-stable: no software or date stamp)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for name in names:
        comparison = comparisons[name]
        positions = np.arange(len(comparison.bins))
        fig, ax = plt.subplots(figsize=(6, max(2.5, 0.35 * len(positions) + 1.2)))
        ax.barh(positions - 0.2, comparison.reference, height=0.4, label="reference")
        ax.barh(positions + 0.2, comparison.current, height=0.4, label="batch")
        ax.set_yticks(positions, comparison.bins)
        ax.invert_yaxis()
        ax.set(xlabel="Share of rows", title=f"{name}: PSI {comparison.psi:.3f}")
        ax.legend(loc="lower right")
        fig.tight_layout()
        fig.savefig(out_dir / f"{name}.png", dpi=100, metadata={"Software": None})
        plt.close(fig)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m reprokit.monitor", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_debug_option(parser)
    parser.add_argument("batch", help="the batch to check: CSV (.csv, .csv.gz) or Parquet, a path or an fsspec URL")
    parser.add_argument("--contract", default="dataset.yaml")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--reference", default="data/prepared/train.parquet", help="the reference (train split)")
    parser.add_argument("--holdout", default="data/prepared/test.parquet", help="the reference for the AUC")
    parser.add_argument("--model", default="models/package", help="package directory or models:/<name>@<alias>")
    parser.add_argument("--metrics-out", default=None, help="figures (default: reports/monitor/<batch>/monitor.json)")
    parser.add_argument("--plots-dir", default=None, help="distribution data (default: beside the figures)")
    parser.add_argument("--images-dir", default=None, help="PNG images (default: beside the figures)")
    parser.add_argument(
        "--rules-out", default=None, help="Prometheus rules for live score drift against this reference (YAML)"
    )
    parser.add_argument("--enforce", action="store_true", help="exit non-zero on an alert (also: monitor.enforce)")
    parser.add_argument("--webhook-required", action="store_true", help="fail when the webhook cannot be reached")
    args = parser.parse_args(argv)
    stem = Path(args.batch.rsplit("?", 1)[0]).name.split(".")[0] or "batch"
    out = Path("reports/monitor") / stem
    args.metrics_out = args.metrics_out or str(out / "monitor.json")
    args.plots_dir = args.plots_dir or str(Path(args.metrics_out).parent / "distributions")
    args.images_dir = args.images_dir or str(Path(args.metrics_out).parent / "images")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)

    def body() -> str:
        from reprokit.alerts import post_verdict
        from reprokit.inference import thread_budget
        from reprokit.score import load_model

        contract = load_stage_contract("monitor", CONTRACT, args.contract)
        stage_params = StageParams("monitor", PARAMS, args.params)
        params = stage_params.section("monitor")
        seed, n_threads = stage_params.value("base.seed"), stage_params.value("base.n_threads")
        batch = read_batch(args.batch, contract)
        reference = pd.read_parquet(args.reference)
        holdout = pd.read_parquet(args.holdout) if args.holdout and Path(args.holdout).exists() else None
        with thread_budget(n_threads):
            model = load_model(args.model)
            figures, comparisons, reference_scores = monitor(model, reference, holdout, batch, params, seed)
        figures["model_version"] = model.version
        figures["batch"] = args.batch
        write_json(args.metrics_out, figures)
        with fresh_dir(args.plots_dir) as plots_dir:
            for name, comparison in comparisons.items():
                write_json(plots_dir / f"{name}.json", distribution_rows(comparison))
        with fresh_dir(args.images_dir) as images_dir:
            save_images(comparisons, ["prediction"] + figures["drifted_columns"], images_dir)
        if args.rules_out:
            from reprokit.alerts import prometheus_rules

            rules = prometheus_rules(reference_scores, params, model.version)
            write_bytes_atomic(args.rules_out, rules.encode())
        summary = (
            f"{args.batch}: {figures['verdict']}; {figures['rows']} rows ({figures['rejected_rows']} break the "
            f"contract); drifted: {', '.join(figures['drifted_columns']) or 'none'}; "
            f"scores PSI {figures['prediction']['psi']}"
        )
        dataset = {"name": model.contract.name, "batch": args.batch}
        if Path(args.batch).is_file():
            dataset["batch_md5"] = md5_file(args.batch)
        post_verdict(figures, dataset, required=args.webhook_required)
        if figures["verdict"] == "alert" and (args.enforce or params.enforce):
            raise StageError(f"{summary} (enforced: an alert fails the check; see {args.metrics_out})")
        return summary

    run_stage("monitor", body, debug=args.debug)


if __name__ == "__main__":
    main()
