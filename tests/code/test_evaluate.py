from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from synthetic import loan_pipeline

from reprokit.core.contract import Feature
from reprokit.core.metrics import classification_metrics, subgroup_metrics
from reprokit.model.inference import inputs_of
from reprokit.release.tracking import flat_metrics
from reprokit.stages.evaluate import curves, output_groups, permutation_importance, save_images


def test_metrics_match_hand_computed_values():
    y = np.array([0, 0, 1, 1])
    p = np.array([0.1, 0.6, 0.4, 0.9])
    m = classification_metrics(y, p, threshold=0.5)
    # predictions 0,1,0,1: one true positive, one false positive, one false negative
    assert (m["accuracy"], m["precision"], m["recall"], m["f1"]) == (0.5, 0.5, 0.5, 0.5)
    assert m["roc_auc"] == 0.75  # 3 of the 4 positive-negative pairs ranked right
    assert m["brier"] == pytest.approx(np.mean((p - y) ** 2), abs=1e-6)
    assert m["log_loss"] == pytest.approx(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)), abs=1e-6)
    assert m["n"] == 4 and m["positive_rate"] == 0.5 and m["predicted_positive_rate"] == 0.5
    assert classification_metrics(y, p, threshold=0.95)["precision"] == 0.0  # nothing predicted positive


def test_single_class_group_has_no_auc():
    m = classification_metrics(np.array([1, 1]), np.array([0.3, 0.8]), 0.5)
    assert m["roc_auc"] is None and m["recall"] == 0.5


def test_subgroup_gap_is_the_spread_of_group_aucs():
    frame = pd.DataFrame({"g": ["a"] * 4 + ["b"] * 4})
    y = np.array([0, 0, 1, 1, 0, 0, 1, 1])
    p = np.array([0.1, 0.2, 0.8, 0.9, 0.1, 0.6, 0.4, 0.9])  # a: AUC 1.0, b: AUC 0.75
    result = subgroup_metrics(frame, y, p, [Feature("g", "categorical", values=("a", "b"), subgroup=True)], 0.5)
    assert result["groups"]["g"]["a"]["roc_auc"] == 1.0
    assert result["groups"]["g"]["b"]["roc_auc"] == 0.75
    assert result["auc_gap"] == {"g": 0.25} and result["max_auc_gap"] == 0.25
    flat = flat_metrics({"max_subgroup_auc_gap": 0.25, "test": {"roc_auc": 0.8}, "train": {"roc_auc": 0.9}}, result)
    assert flat["subgroup.g.b.roc_auc"] == 0.75 and flat["test.roc_auc"] == 0.8


def test_numeric_subgroups_use_the_contracts_bins_blanks_are_a_group_and_small_groups_stay_out_of_the_gap():
    """An age column with one group per value made gaps of 1.0 from groups of one row."""
    rng = np.random.default_rng(3)
    age = rng.integers(18, 80, 400).astype("float64")
    age[:7] = np.nan
    y = rng.integers(0, 2, 400)
    p = np.clip(0.5 * y + rng.uniform(0, 0.5, 400), 0, 1)
    age[7:10] = 95  # three rows above the last edge
    age[10] = 90  # the last edge belongs to the last bin
    feature = Feature("age", "integer", nullable=True, subgroup=True, subgroup_bins=(18.0, 40.0, 65.0, 90.0))
    result = subgroup_metrics(pd.DataFrame({"age": age}), y, p, [feature], 0.5, min_size=20)
    groups = result["groups"]["age"]
    assert set(groups) == {"18_to_40", "40_to_65", "65_to_90", "above_90", "null"}
    assert groups["null"]["n"] == 7 and groups["above_90"]["n"] == 3
    assert sum(g["n"] for g in groups.values()) == 400  # no row vanishes
    assert result["left_out_of_gap"]["age"] == {"above_90": "3 rows, fewer than 20", "null": "7 rows, fewer than 20"}
    counted = [groups[k]["roc_auc"] for k in ("18_to_40", "40_to_65", "65_to_90")]
    assert result["auc_gap"]["age"] == round(max(counted) - min(counted), 6)


def test_curve_rows_are_what_dvc_plots_reads():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    p = np.clip(y * 0.3 + rng.uniform(size=200) * 0.7, 0, 1)
    rows = curves(y, p, bins=5, threshold=0.5)
    roc = rows["roc"]
    assert roc[0]["fpr"] == 0.0 and roc[-1]["fpr"] == 1.0 and roc[-1]["tpr"] == 1.0
    assert all(0 <= r["threshold"] <= 1 for r in roc)  # roc_curve's first threshold is inf: capped for JSON
    assert len(rows["calibration"]) <= 5
    pred = (p >= 0.5).astype(int)
    assert rows["confusion"] == [
        {"actual": a, "predicted": b, "count": int(((y == a) & (pred == b)).sum())} for a in (0, 1) for b in (0, 1)
    ]
    assert all(0 <= r["precision"] <= 1 and 0 <= r["recall"] <= 1 for r in rows["precision_recall"])


def test_curves_of_a_large_test_split_keep_a_bounded_number_of_points():
    """At a million rows the git-kept plot files stay small: each curve is thinned evenly to
    `MAX_CURVE_POINTS`, ends kept; a curve with fewer points is kept whole."""
    from sklearn.metrics import roc_curve

    from reprokit.stages.evaluate import MAX_CURVE_POINTS

    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 200_000)
    p = np.clip(y * 0.2 + rng.uniform(size=len(y)) * 0.8, 0, 1)
    rows = curves(y, p, bins=10, threshold=0.5)
    fpr, tpr, _ = roc_curve(y, p, drop_intermediate=True)
    assert len(fpr) > MAX_CURVE_POINTS and len(rows["roc"]) == MAX_CURVE_POINTS
    assert (rows["roc"][0]["fpr"], rows["roc"][-1]["fpr"], rows["roc"][-1]["tpr"]) == (0.0, 1.0, 1.0)
    assert [r["fpr"] for r in rows["roc"]] == sorted(r["fpr"] for r in rows["roc"])
    assert len(rows["precision_recall"]) == MAX_CURVE_POINTS and len(rows["confusion"]) == 4
    small = curves(y[:300], p[:300], bins=10, threshold=0.5)
    assert len(small["roc"]) == len(roc_curve(y[:300], p[:300], drop_intermediate=True)[0])


@pytest.fixture(scope="module")
def loan_model():
    pipeline, test, _, _ = loan_pipeline(rows=800, iterations=50)
    return pipeline, test


def test_output_groups_map_raw_columns_to_their_encoded_columns(loan_model, loans_contract_obj):
    pipeline, test = loan_model
    transformer = pipeline.named_steps["features"]
    inputs = inputs_of(test, loans_contract_obj)
    groups = output_groups(transformer, list(inputs.columns))
    names = transformer.get_feature_names_out()
    assert [names[i] for i in groups["region"]] == [f"cat__region_{r}" for r in ["north", "south", "east", "west"]]
    assert sorted(i for g in groups.values() for i in g) == list(range(len(names)))
    # Shuffling a raw column equals shuffling the rows of its encoded columns, the shortcut importance takes.
    order = np.random.default_rng(0).permutation(len(inputs))
    for column, indices in groups.items():
        shuffled = inputs.copy()
        shuffled[column] = inputs[column].to_numpy()[order]
        expected = transformer.transform(inputs).to_numpy()
        expected[:, indices] = expected[order][:, indices]
        np.testing.assert_array_equal(transformer.transform(shuffled).to_numpy(), expected)


def test_importance_finds_the_signal(loan_model, loans_contract_obj):
    pipeline, test = loan_model
    inputs = inputs_of(test, loans_contract_obj)
    importance = permutation_importance(pipeline, inputs, test["defaulted"].to_numpy(), repeats=3, seed=0)
    assert set(importance) == set(inputs.columns)
    assert importance["amount"] > 0.05  # the synthetic default risk is driven by amount / income
    assert importance["amount"] > abs(importance["region"])  # region plays no part in it
    assert importance == permutation_importance(pipeline, inputs, test["defaulted"].to_numpy(), repeats=3, seed=0)


def test_importance_on_a_bounded_seeded_sample(loan_model, loans_contract_obj):
    """With more test rows than `max_rows`, importance is that of a seeded sample of them:
    the same at every run, and equal to importance computed on that sample directly."""
    pipeline, test = loan_model
    inputs, y = inputs_of(test, loans_contract_obj), test["defaulted"].to_numpy()
    sampled = permutation_importance(pipeline, inputs, y, repeats=3, seed=0, max_rows=40)
    assert sampled == permutation_importance(pipeline, inputs, y, repeats=3, seed=0, max_rows=40)
    rows = np.sort(np.random.default_rng(0).choice(len(inputs), size=40, replace=False))
    assert sampled == permutation_importance(pipeline, inputs.iloc[rows], y[rows], repeats=3, seed=0)
    assert sampled != permutation_importance(pipeline, inputs, y, repeats=3, seed=0)
    assert permutation_importance(pipeline, inputs, y, repeats=3, seed=0, max_rows=len(inputs)) == (
        permutation_importance(pipeline, inputs, y, repeats=3, seed=0)
    )


def test_train_figures_on_a_bounded_seeded_sample(loan_model, loans_contract_obj):
    """With more train rows than `train_max_rows`, the train figures are those of a seeded
    sample (bounded cost at millions of rows); the test figures never are."""
    from reprokit.stages.evaluate import evaluate, seeded_sample

    pipeline, test = loan_model
    train = test.iloc[::-1]  # any labelled table stands in for the train split
    args = (pipeline, train, test, loans_contract_obj, 0.5, 5)
    full, _, _, _ = evaluate(*args)
    sampled, _, _, _ = evaluate(*args, train_max_rows=50, seed=3)
    again, _, _, _ = evaluate(*args, train_max_rows=50, seed=3)
    rows = train.iloc[seeded_sample(len(train), 50, 3)]
    direct, _, _, _ = evaluate(pipeline, rows, test, loans_contract_obj, 0.5, 5)
    assert sampled == again and sampled["train"] == direct["train"] and sampled["train"]["n"] == 50
    assert sampled["test"] == full["test"] and sampled["train"] != full["train"]
    assert evaluate(*args, train_max_rows=len(train))[0] == full


def test_images_are_written_and_reproducible(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 100)
    rows = curves(y, np.clip(y * 0.4 + rng.uniform(size=100) * 0.6, 0, 1), 5, 0.5)
    first = save_images(rows, {"a": 0.1, "b": 0.02}, tmp_path / "one")
    second = save_images(rows, {"a": 0.1, "b": 0.02}, tmp_path / "two")
    assert [p.name for p in first] == [
        "roc.png",
        "precision_recall.png",
        "calibration.png",
        "confusion_matrix.png",
        "feature_importance.png",
    ]
    for a, b in zip(first, second, strict=True):
        assert a.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert a.read_bytes() == b.read_bytes()


def test_bin_labels_are_exact_and_every_group_name_is_a_valid_mlflow_metric_name():
    from reprokit.core.metrics import subgroup_labels

    labels = subgroup_labels(pd.Series([0.0, 999_999.0, 1_000_000.0, 1_000_001.0]), (0.0, 1_000_000.0, 1_000_001.0))
    assert labels.tolist() == ["0_to_1000000", "0_to_1000000", "1000000_to_1000001", "1000000_to_1000001"]
    subgroups = {"groups": {"plan": {"a+b (c)": {"roc_auc": 0.7, "n": 3}}}}
    flat = flat_metrics({"max_subgroup_auc_gap": None, "test": {"roc_auc": 0.8}, "train": {"roc_auc": 0.9}}, subgroups)
    assert flat == {
        "test.roc_auc": 0.8,
        "train.roc_auc": 0.9,
        "subgroup.plan.a_b _c_.roc_auc": 0.7,
        "subgroup.plan.a_b _c_.n": 3,
    }
