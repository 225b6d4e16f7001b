"""Stage `evaluate`: score the model on the test (and train) split.

Writes the headline metrics (DVC `metrics`: what `dvc metrics show` and `dvc exp show`
list), every figure on test and train, curve data (DVC `plots`), PNG images, the
per-subgroup metrics with the largest AUC gap, and the test-set probabilities
that `package` checks the served model against.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from reprokit.core.artifacts import fresh_dir, write_json, write_parquet
from reprokit.core.config import StageParams
from reprokit.core.contract import Contract, load_stage_contract
from reprokit.core.figures import drawing, save_png
from reprokit.core.metrics import classification_metrics, rounded, subgroup_metrics
from reprokit.core.running import add_debug_option, run_stage
from reprokit.core.threads import thread_budget
from reprokit.model.inference import inputs_of, load_pipeline, predict_proba

# The keys this stage reads: exactly its params in dvc.yaml (tests/code/test_pipeline_definition.py).
PARAMS = ("base.seed", "base.n_threads", "evaluate")
CONTRACT = ("target", "features")

HEADLINE = {
    "test": ("roc_auc", "average_precision", "f1", "log_loss"),
    "train": ("roc_auc",),
}


MAX_CURVE_POINTS = 1000  # a curve's points in the git-kept plot files, whatever the test split's size


def thinned(n: int, max_points: int = MAX_CURVE_POINTS) -> np.ndarray:
    """Positions of at most `max_points` of `n` curve points, evenly spaced, both ends kept."""
    if n <= max_points:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, max_points).round().astype(int))


def curves(y: np.ndarray, proba: np.ndarray, bins: int, threshold: float) -> dict[str, list[dict[str, Any]]]:
    """Rows for DVC plots: ROC, precision-recall (at most `MAX_CURVE_POINTS` each),
    calibration, and the confusion matrix as the count of each (actual, predicted) pair."""
    from sklearn.calibration import calibration_curve
    from sklearn.metrics import precision_recall_curve, roc_curve

    fpr, tpr, roc_thr = roc_curve(y, proba, drop_intermediate=True)
    precision, recall, pr_thr = precision_recall_curve(y, proba, drop_intermediate=True)
    prob_true, prob_pred = calibration_curve(y, proba, n_bins=bins, strategy="uniform")
    counts = np.bincount(2 * np.asarray(y, dtype=int) + (proba >= threshold), minlength=4)
    roc, pr = thinned(len(fpr)), thinned(len(pr_thr))
    return {
        "roc": [
            {"fpr": rounded(f), "tpr": rounded(t), "threshold": rounded(min(h, 1.0))}
            for f, t, h in zip(fpr[roc], tpr[roc], roc_thr[roc], strict=True)
        ],
        "precision_recall": [
            {"recall": rounded(r), "precision": rounded(p), "threshold": rounded(h)}
            for r, p, h in zip(recall[pr], precision[pr], pr_thr[pr], strict=True)
        ],
        "calibration": [
            {"mean_predicted": rounded(p), "fraction_positive": rounded(t)}
            for p, t in zip(prob_pred, prob_true, strict=True)
        ],
        "confusion": [
            {"actual": actual, "predicted": predicted, "count": int(counts[2 * actual + predicted])}
            for actual in (0, 1)
            for predicted in (0, 1)
        ],
    }


def output_groups(transformer, inputs: list[str]) -> dict[str, list[int]]:
    """For each raw input column, the indices of the transformed columns made from it."""
    groups: dict[str, list[int]] = {name: [] for name in inputs}
    for name, step, columns in transformer.transformers_:
        if name == "remainder" or step == "drop":
            continue
        out = transformer.output_indices_[name]
        widths = [1] * len(columns)
        encoder = step.steps[-1][1] if hasattr(step, "steps") else step
        if hasattr(encoder, "categories_"):
            drops = getattr(encoder, "drop_idx_", None)
            widths = [
                len(cats) - (0 if drops is None or drops[i] is None else 1)
                for i, cats in enumerate(encoder.categories_)
            ]
        start = out.start
        for column, width in zip(columns, widths, strict=True):
            groups[column].extend(range(start, start + width))
            start += width
        if start != out.stop:
            raise ValueError(f"cannot map the outputs of transformer {name!r} back to its input columns")
    return groups


def seeded_sample(rows: int, max_rows: int, seed: int) -> np.ndarray:
    """Positions of `max_rows` of `rows` rows, drawn with `seed`, in their original order."""
    return np.sort(np.random.default_rng(seed).choice(rows, size=max_rows, replace=False))


def permutation_importance(
    pipeline, inputs: pd.DataFrame, y: np.ndarray, repeats: int, seed: int, max_rows: int | None = None
) -> dict[str, float]:
    """Mean drop in test ROC AUC when each raw input column is shuffled, on a seeded
    sample of `max_rows` rows when there are more (its cost is repeats x columns
    predictions: bounded whatever the size of the test split).

    Every transformation here works row by row, so shuffling a raw column equals
    shuffling the rows of the transformed columns made from it: the data is
    transformed once and only the model is re-scored.
    """
    from sklearn.metrics import roc_auc_score

    if max_rows is not None and len(inputs) > max_rows:
        sample = seeded_sample(len(inputs), max_rows, seed)
        inputs, y = inputs.iloc[sample], y[sample]
    transformer, model = pipeline.named_steps["features"], pipeline.named_steps["model"]
    features = transformer.transform(inputs)
    columns = list(features.columns)
    matrix = features.to_numpy(copy=True)
    baseline = roc_auc_score(y, model.predict_proba(features)[:, 1])
    rng = np.random.RandomState(seed)
    importance = {}
    for column, indices in output_groups(transformer, list(inputs.columns)).items():
        drops = []
        original = matrix[:, indices].copy()
        for _ in range(repeats):
            matrix[:, indices] = original[rng.permutation(len(matrix))]
            shuffled = pd.DataFrame(matrix, columns=columns, index=features.index)
            drops.append(baseline - roc_auc_score(y, model.predict_proba(shuffled)[:, 1]))
        matrix[:, indices] = original
        importance[column] = rounded(np.mean(drops))
    return importance


def save_images(curve_rows: dict[str, list[dict[str, Any]]], importance: dict[str, float], out_dir: Path) -> list[Path]:
    """PNG images of the curves, confusion matrix and feature importance, in the project's style."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []

    def save(fig, name: str) -> None:
        save_png(fig, out_dir / name)
        paths.append(out_dir / name)

    with drawing() as plt:
        roc = curve_rows["roc"]
        fig, ax = plt.subplots(figsize=(5, 5))
        ax.plot([r["fpr"] for r in roc], [r["tpr"] for r in roc], label="model")
        ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance")
        ax.set(xlabel="False positive rate", ylabel="True positive rate", title="ROC curve (test)")
        ax.legend(loc="lower right")
        save(fig, "roc.png")

        pr = curve_rows["precision_recall"]
        fig, ax = plt.subplots(figsize=(5, 5))
        ax.plot([r["recall"] for r in pr], [r["precision"] for r in pr])
        ax.set(xlabel="Recall", ylabel="Precision", title="Precision-recall curve (test)", xlim=(0, 1), ylim=(0, 1.02))
        save(fig, "precision_recall.png")

        cal = curve_rows["calibration"]
        fig, ax = plt.subplots(figsize=(5, 5))
        ax.plot([r["mean_predicted"] for r in cal], [r["fraction_positive"] for r in cal], marker="o", label="model")
        ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfectly calibrated")
        ax.set(xlabel="Mean predicted probability", ylabel="Fraction of positives", title="Calibration (test)")
        ax.legend(loc="upper left")
        save(fig, "calibration.png")

        matrix = np.zeros((2, 2), dtype=int)
        for row in curve_rows["confusion"]:
            matrix[row["actual"], row["predicted"]] = row["count"]
        fig, ax = plt.subplots(figsize=(4, 4))
        ax.imshow(matrix, cmap="Blues")
        for (i, j), count in np.ndenumerate(matrix):
            ax.text(j, i, str(count), ha="center", va="center", color="black")
        ax.set(xticks=[0, 1], yticks=[0, 1], xlabel="Predicted", ylabel="Actual", title="Confusion matrix (test)")
        save(fig, "confusion_matrix.png")

        ordered = sorted(importance.items(), key=lambda item: item[1])
        fig, ax = plt.subplots(figsize=(6, max(3, 0.3 * len(ordered))))
        ax.barh([name for name, _ in ordered], [value for _, value in ordered])
        ax.set(xlabel="Mean drop in ROC AUC when shuffled", title="Permutation feature importance (test)")
        save(fig, "feature_importance.png")
    return paths


def evaluate(
    pipeline,
    train: pd.DataFrame,
    test: pd.DataFrame,
    contract: Contract,
    threshold: float,
    bins: int,
    n_threads: int = 1,
    min_subgroup_size: int = 1,
    train_max_rows: int | None = None,
    seed: int = 0,
):
    """Everything evaluate reports, as plain data. The train split's figures (how much the
    model overfits) come from a seeded sample of `train_max_rows` rows when it has more."""
    target = contract.target.column
    if train_max_rows is not None and len(train) > train_max_rows:
        train = train.iloc[seeded_sample(len(train), train_max_rows, seed)]
    test_x, train_x = inputs_of(test, contract), inputs_of(train, contract)
    y_test, y_train = test[target].to_numpy(), train[target].to_numpy()
    p_test, p_train = predict_proba(pipeline, test_x, n_threads), predict_proba(pipeline, train_x, n_threads)
    features = [contract.feature(name) for name in contract.subgroups]
    subgroups = subgroup_metrics(test, y_test, p_test, features, threshold, min_subgroup_size)
    metrics = {
        "threshold": threshold,
        "test": classification_metrics(y_test, p_test, threshold),
        "train": classification_metrics(y_train, p_train, threshold),
        "max_subgroup_auc_gap": subgroups["max_auc_gap"],
    }
    return metrics, subgroups, curves(y_test, p_test, bins, threshold), p_test


def headline(metrics: dict[str, Any]) -> dict[str, Any]:
    """The few figures that fit one line of `dvc metrics show`."""
    picked: dict[str, Any] = {split: {k: metrics[split][k] for k in keys} for split, keys in HEADLINE.items()}
    picked["max_subgroup_auc_gap"] = metrics["max_subgroup_auc_gap"]
    return picked


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments; `dvc.yaml` passes every path."""
    parser = argparse.ArgumentParser(description=__doc__)
    add_debug_option(parser)
    parser.add_argument("--contract", default="dataset.yaml")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--train", required=True, help="prepared train split")
    parser.add_argument("--test", required=True, help="prepared test split")
    parser.add_argument("--transformer", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--metrics-out", required=True, help="headline metrics (DVC metrics)")
    parser.add_argument("--evaluation-out", required=True, help="every figure on test and train")
    parser.add_argument("--subgroups-out", required=True)
    parser.add_argument("--plots-dir", required=True, help="curve data for DVC plots")
    parser.add_argument("--images-dir", required=True, help="PNG images")
    parser.add_argument("--predictions-out", required=True)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)

    def body() -> str:
        contract = load_stage_contract("evaluate", CONTRACT, args.contract)
        stage_params = StageParams("evaluate", PARAMS, args.params)
        params = stage_params.section("evaluate")
        seed, n_threads = stage_params.value("base.seed"), stage_params.value("base.n_threads")
        train, test = pd.read_parquet(args.train), pd.read_parquet(args.test)
        pipeline = load_pipeline(args.transformer, args.model)
        metrics, subgroups, curve_rows, p_test = evaluate(
            pipeline,
            train,
            test,
            contract,
            params.threshold,
            params.calibration_bins,
            n_threads,
            params.min_subgroup_size,
            params.train_max_rows,
            seed,
        )
        target = contract.target.column
        with thread_budget(n_threads):
            importance = permutation_importance(
                pipeline,
                inputs_of(test, contract),
                test[target].to_numpy(),
                params.importance_repeats,
                seed,
                params.importance_max_rows,
            )
        write_json(args.metrics_out, headline(metrics))
        write_json(args.evaluation_out, metrics)
        write_json(args.subgroups_out, subgroups)
        with fresh_dir(args.plots_dir) as plots_dir:
            for name, rows in curve_rows.items():
                write_json(plots_dir / f"{name}.json", rows)
            write_json(
                plots_dir / "feature_importance.json", [{"feature": k, "importance": v} for k, v in importance.items()]
            )
        with fresh_dir(args.images_dir) as images_dir:
            save_images(curve_rows, importance, images_dir)
        write_parquet(pd.DataFrame({"probability": p_test}, index=test.index), args.predictions_out)
        return f"test roc_auc {metrics['test']['roc_auc']}, f1 {metrics['test']['f1']}, max subgroup AUC gap {subgroups['max_auc_gap']}"

    run_stage("evaluate", body, debug=args.debug)


if __name__ == "__main__":
    main()
