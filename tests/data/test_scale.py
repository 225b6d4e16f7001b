"""The scale option (`params.yaml: scale`): the default data enlarged to many rows keeps its
schema, class balance and split, and is the same at every run."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from synthetic import loans_contract, make_loans

from reprokit.core.contract import parse_contract
from reprokit.core.errors import StageError
from reprokit.stages.prepare import prepare

ROWS = 50_000


@pytest.fixture(scope="module")
def scaled(telco_splits, telco_contract):
    raw, train, test, _ = telco_splits
    big_train, big_test, summary = prepare(raw, telco_contract, 0.2, 42, "telco", scale=(ROWS, 0.05))
    return train, test, big_train, big_test, summary


def test_the_data_grows_to_the_rows_asked_with_each_split_keeping_its_share(scaled):
    train, test, big_train, big_test, summary = scaled
    assert len(big_train) + len(big_test) == ROWS
    assert abs(len(big_test) / ROWS - len(test) / (len(train) + len(test))) < 1 / ROWS
    assert summary["rows"] == {"train": len(big_train), "test": len(big_test)}
    assert summary["scaled_to"] == {"rows": ROWS, "jitter": 0.05}


def test_the_schema_is_kept(scaled, telco_contract):
    train, _, big_train, big_test, _ = scaled
    for big in (big_train, big_test):
        pd.testing.assert_series_equal(big.dtypes, train.dtypes)
        assert big.index.name == train.index.name and big.index.dtype == train.index.dtype
        for feature in telco_contract.features:
            column = big[feature.name].dropna()
            if feature.values is not None:
                assert set(column) <= set(feature.values), feature.name
            if feature.min is not None:
                assert column.min() >= feature.min, feature.name
            if feature.max is not None:
                assert column.max() <= feature.max, feature.name
            if feature.type == "integer":
                assert (column.astype("float64") % 1 == 0).all(), feature.name


def test_the_class_balance_is_kept_to_one_row(scaled):
    train, test, big_train, big_test, _ = scaled
    for small, big in ((train, big_train), (test, big_test)):
        assert abs(big["churn"].sum() - len(big) * small["churn"].mean()) <= 1


def test_originals_are_kept_and_copies_come_from_their_own_split(scaled):
    train, test, big_train, big_test, _ = scaled
    for small, big in ((train, big_train), (test, big_test)):
        pd.testing.assert_frame_equal(big.iloc[: len(small)], small)
    keys = big_train.index.append(big_test.index)
    assert keys.is_unique
    # every test copy's categories and binaries are some test row's: none comes from train only
    fixed = [c for c in test.columns if c not in ("tenure", "monthly_charges", "total_charges")]
    test_rows = set(map(tuple, test[fixed].astype(str).to_numpy()))
    copies = big_test.iloc[len(test) :][fixed].astype(str).to_numpy()
    assert all(tuple(row) in test_rows for row in copies)


def test_numeric_copies_are_jittered_realistically(scaled):
    train, _, big_train, _, _ = scaled
    copies = big_train.iloc[len(train) :]
    for column, decimals in (("monthly_charges", 2), ("total_charges", 2), ("tenure", 0)):
        values = copies[column].astype("float64")
        assert (np.round(values, decimals) == values).all()
        assert values.nunique() > train[column].nunique() / 2
        # the spread grows by about sqrt(1 + jitter^2): the shape is the data's
        assert values.std() == pytest.approx(train[column].astype("float64").std(), rel=0.05)


def test_the_same_rows_at_every_run_and_other_rows_for_another_seed(scaled, telco_splits, telco_contract):
    raw, *_ = telco_splits
    _, _, big_train, big_test, _ = scaled
    again_train, again_test, _ = prepare(raw, telco_contract, 0.2, 42, "telco", scale=(ROWS, 0.05))
    pd.testing.assert_frame_equal(again_train, big_train)
    pd.testing.assert_frame_equal(again_test, big_test)
    from reprokit.core.scale import enlarge

    train = big_train[big_train.index < len(raw)]  # the originals
    one = enlarge(train, 20_000, telco_contract, 0.05, (42, 0), first_key=len(raw))
    pd.testing.assert_frame_equal(one, enlarge(train, 20_000, telco_contract, 0.05, (42, 0), first_key=len(raw)))
    other = enlarge(train, 20_000, telco_contract, 0.05, (7, 0), first_key=len(raw))
    assert not other.iloc[len(train) :].equals(one.iloc[len(train) :])  # another seed, other copies


def test_nulls_stay_null_and_id_keys_get_a_copy_number():
    contract = parse_contract(loans_contract())
    raw = make_loans(400)
    train, test, _ = prepare(raw, contract, 0.25, 0, "loans", scale=(4_000, 0.1))
    assert len(train) + len(test) == 4_000
    copies = train[train.index.str.contains("#")]
    originals = train.loc[copies.index.str.split("#").str[0]]
    assert (copies["income"].isna().to_numpy() == originals["income"].isna().to_numpy()).all()
    assert copies["income"].isna().any()
    assert (copies["region"].to_numpy() == originals["region"].to_numpy()).all()
    assert (copies["age"].between(18, 120)).all()


def test_off_by_default_and_never_smaller(telco_splits, telco_contract):
    raw, train, test, summary = telco_splits
    assert "scaled_to" not in summary
    with pytest.raises(StageError, match=r"scale.rows must be 0 \(off\) or at least the data's 7043 rows, got 5000"):
        prepare(raw, telco_contract, 0.2, 42, "telco", scale=(5_000, 0.05))
