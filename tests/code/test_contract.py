from __future__ import annotations

import copy

import numpy as np
import pytest
from synthetic import loans_contract, make_loans

from reprokit.core.config import ConfigError
from reprokit.core.contract import parse_contract
from reprokit.stages.prepare import DataContractError, validate


def test_repository_contract_describes_the_telco_table(telco_contract):
    assert telco_contract.target.column == "churn"
    assert telco_contract.target.positive == "Yes"
    assert len(telco_contract.features) == 19
    assert set(telco_contract.subgroups) == {"female", "senior_citizen"}
    assert telco_contract.names_of("numeric") == ["monthly_charges", "total_charges"]
    assert telco_contract.feature("total_charges").nullable


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: c["features"]["region"].pop("values"), "categorical feature needs its allowed 'values'"),
        (lambda c: c["features"]["age"].update(type="date"), "'date' is not one of"),
        (lambda c: c["features"].update(defaulted={"type": "binary"}), "also listed as a feature"),
        (lambda c: c.update(subgroups=["region"]), "subgroups is now features.<name>.subgroup: true"),
        (lambda c: c.update(id_column="loan_id"), "id_column is now source.id_column"),
        (lambda c: c.update(cleaning={}), "cleaning is now features.<name>.fill_missing"),
        (lambda c: c["features"]["age"].update(subgroup=True), "a integer subgroup needs subgroup_bins"),
        (lambda c: c["features"]["region"].update(subgroup_bins=[0, 1]), "bins apply to numeric and integer"),
        (lambda c: c["features"]["age"].update(subgroup_bins=[40, 18]), "edges must increase"),
        (lambda c: c["features"]["region"].update(subgroup="yes"), "subgroup: expected true or false"),
        (lambda c: c["source"].pop("track"), "source: missing key(s) track"),
        (lambda c: c["source"].update(delimiter=";;"), "source.delimiter must be one character"),
        (lambda c: c["source"].update(encoding="klingon"), "source.encoding 'klingon' is not an encoding"),
        (lambda c: c["source"].update(id_column="age"), "source.id_column 'age' must not be a feature"),
        (lambda c: c.update(colour="red"), "unknown key(s) colour"),
        (lambda c: c["features"]["owns_home"].update(values=[0, 1, 2]), "exactly two values"),
        (lambda c: c["features"]["region"].update(min=1), "min/max apply to numeric"),
        (lambda c: c["source"].update(format="xlsx"), "source.format is 'xlsx'"),
        (lambda c: c.pop("target"), "missing key(s) target"),
    ],
)
def test_contract_mistakes_are_reported_with_the_field(edit, message):
    data = copy.deepcopy(loans_contract())
    edit(data)
    with pytest.raises(ConfigError) as info:
        parse_contract(data, where="dataset.yaml")
    assert message in str(info.value)
    assert str(info.value).startswith("dataset.yaml")


def test_valid_data_passes_and_is_coerced(loans_contract_obj):
    frame = make_loans(50)
    frame["age"] = frame["age"].astype(str)  # as a CSV of mixed types might deliver it
    valid = validate(frame, loans_contract_obj, "loans.csv")
    assert str(valid["age"].dtype) == "Int64"
    assert valid["income"].isna().sum() == frame["income"].isna().sum()


def test_lazy_validation_reports_every_failing_column_with_counts_and_examples(loans_contract_obj):
    frame = make_loans(50)
    frame.loc[[3, 4, 5], "region"] = "atlantis"
    frame.loc[7, "age"] = 7
    frame.loc[8, "amount"] = np.nan
    frame.loc[[1, 2], "defaulted"] = 9
    frame["surprise"] = 1
    frame = frame.drop(columns=["purpose"])
    with pytest.raises(DataContractError) as info:
        validate(frame, loans_contract_obj, "data/raw/loans.csv")
    text = str(info.value)
    assert text.startswith("data/raw/loans.csv: the data breaks the dataset contract")
    assert "column 'region': check isin" in text and "3 row(s)" in text and "atlantis" in text
    assert "column 'age': check greater_than_or_equal_to(18)" in text and "'7'" in text
    assert "column 'amount': check not_nullable failed for 1 row(s)" in text
    assert "column 'defaulted'" in text and "2 row(s)" in text
    assert "column 'surprise' is not in the contract" in text
    assert "column 'purpose' is required by the contract but missing from the table" in text


def test_duplicate_ids_are_rejected(loans_contract_obj):
    frame = make_loans(20)
    frame.loc[1, "loan_id"] = frame.loc[0, "loan_id"]
    with pytest.raises(DataContractError, match="column 'loan_id': check field_uniqueness"):
        validate(frame, loans_contract_obj, "loans.csv")
