"""The default data and the splits made from it keep the dataset contract."""

from __future__ import annotations

import pandas as pd
import pytest

from reprokit.stages.prepare import DataContractError, validate


def test_source_is_the_documented_table(telco_splits, telco_contract):
    raw, _, _, _ = telco_splits
    assert raw.shape == (7043, 21)
    assert (raw[telco_contract.target.column] == "Yes").mean() == pytest.approx(0.265, abs=0.001)
    assert raw["total_charges"].isna().sum() == 11
    assert (raw.loc[raw["total_charges"].isna(), "tenure"] == 0).all()  # the new customers


def test_the_source_passes_validation_with_every_row_and_value_kept(telco_splits, telco_contract):
    raw, _, _, _ = telco_splits
    source = raw.drop(columns=list(telco_contract.drop_columns))
    validated = validate(source, telco_contract, "telco")
    # Coerced to the contract's nullable dtypes (Int64 for integers), the values as they were.
    pd.testing.assert_frame_equal(validated, source, check_dtype=False)
    assert str(validated["tenure"].dtype) == "Int64"


def test_the_source_with_a_breach_fails_validation_naming_it(telco_splits, telco_contract):
    """The check above passes because the source keeps the contract, not because nothing is checked."""
    raw, _, _, _ = telco_splits
    source = raw.drop(columns=list(telco_contract.drop_columns))
    source.loc[source.index[3], "contract"] = "Three year"
    source.loc[source.index[5], "monthly_charges"] = -1.0
    with pytest.raises(DataContractError) as refused:
        validate(source, telco_contract, "telco")
    head, contract, charges = str(refused.value).splitlines()
    assert head == "telco: the data breaks the dataset contract:"
    assert contract == (
        "  - column 'contract': check isin(['Month-to-month', 'One year', 'Two year']) failed for 1 row(s), "
        "e.g. rows [3] (0-based); failing values: ['Three year']"
    )
    assert charges == (
        "  - column 'monthly_charges': check greater_than_or_equal_to(0) failed for 1 row(s), "
        "e.g. rows [5] (0-based); failing values: ['-1.0']"
    )


def test_splits_have_the_contract_columns_and_types(telco_splits, telco_contract):
    _, train, test, _ = telco_splits
    for split in (train, test):
        assert list(split.columns) == telco_contract.feature_names + ["churn"]
        assert set(split["churn"].unique()) == {0, 1}
        for name in telco_contract.names_of("categorical"):
            assert set(split[name].unique()) <= set(telco_contract.feature(name).values)
        for name in telco_contract.names_of("binary"):
            assert set(split[name].unique()) <= {0, 1}
        assert not split.isna().any().any()  # blank total charges filled, nothing else missing
        assert split["tenure"].between(0, 120).all() and (split["monthly_charges"] > 0).all()


def test_no_row_is_in_both_splits(telco_splits):
    raw, train, test, _ = telco_splits
    assert not set(train.index) & set(test.index)
    assert len(train) + len(test) == len(raw)
    assert train.index.is_unique and test.index.is_unique


def test_split_is_stratified_and_sized_from_params(telco_splits):
    _, train, test, summary = telco_splits
    assert len(test) == pytest.approx(0.2 * 7043, abs=1)
    assert abs(train["churn"].mean() - test["churn"].mean()) < 0.002
    assert summary["rows"] == {"train": len(train), "test": len(test)}


def test_quality_summary_counts_what_cleaning_did(telco_splits):
    _, _, _, summary = telco_splits
    assert summary["rows_in"] == summary["rows_out"] == 7043
    assert summary["filled"] == {"total_charges": 11}
    assert summary["rows_dropped"] == {}
    assert summary["columns_dropped"] == ["rownames"]


def test_new_customers_get_zero_total_charges(telco_splits):
    raw, train, test, _ = telco_splits
    both = pd.concat([train, test])
    blank = raw.index[raw["total_charges"].isna()]
    assert (both.loc[blank, "total_charges"] == 0).all()
