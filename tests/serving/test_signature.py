"""The package's input signature follows the dataset contract, so `pyfunc` takes the data
as clients hold it: the prepared split, a raw CSV row and JSON records."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
import yaml
from synthetic import loan_pipeline, loans_contract, package_loans

from reprokit.core.contract import parse_contract
from reprokit.model.inference import inputs_of
from reprokit.model.scoring import InputError, input_schema, mlflow_type, signature_inputs
from reprokit.model.trust import load_package


def signature_types(package) -> dict[str, str]:
    mlmodel = yaml.safe_load((package / "MLmodel").read_text())
    return {column["name"]: column["type"] for column in json.loads(mlmodel["signature"]["inputs"])}


def test_the_signature_types_follow_the_contract(telco_package, telco_contract):
    types = signature_types(telco_package)
    assert list(types) == telco_contract.feature_names
    assert types["female"] == types["tenure"] == types["paperless_billing"] == "long"  # integers in
    assert types["monthly_charges"] == "double" and types["total_charges"] == "double"
    assert types["contract"] == types["payment_method"] == "string"


def test_a_nullable_integer_is_a_double_and_text_binaries_are_strings():
    spec = loans_contract()
    spec["features"]["age"]["nullable"] = True
    spec["features"]["owns_home"] = {"type": "binary", "values": ["no", "yes"]}
    contract = parse_contract(spec)
    assert mlflow_type(contract.feature("age")) == "double"  # an integer column cannot hold a null
    assert mlflow_type(contract.feature("owns_home")) == "string"
    assert [str(c.type) for c in input_schema(contract).inputs][-1] == "DataType.string"


def test_the_package_carries_its_contract_and_threshold(telco_package, telco_contract):
    meta = yaml.safe_load((telco_package / "MLmodel").read_text())["metadata"]["reprokit"]
    assert meta["threshold"] == 0.5
    assert parse_contract(meta["contract"]).feature("contract") == telco_contract.feature("contract")
    assert sorted(parse_contract(meta["contract"]).feature_names) == sorted(telco_contract.feature_names)


@pytest.fixture(scope="module")
def served(telco_package):
    return load_package(telco_package)


def test_pyfunc_takes_the_prepared_split_as_it_is(served, telco_splits, telco_contract, telco_pipeline):
    _, _, test, _ = telco_splits
    frame = test.drop(columns="churn")  # the README's example: nullable Int64 columns included
    assert str(frame["female"].dtype) == "Int64"
    expected = telco_pipeline.predict_proba(inputs_of(test, telco_contract))[:, 1]
    np.testing.assert_array_equal(np.asarray(served.predict(frame))[:, 1], expected)


def test_pyfunc_takes_a_raw_csv_row_and_json_records(served, telco_splits, telco_contract, telco_pipeline):
    raw, *_ = telco_splits
    rows = raw.head(20)
    table = pd.read_csv(io.StringIO(rows.to_csv(index=False)))  # as a client reads the CSV
    assert str(table["tenure"].dtype) == "int64"
    expected = telco_pipeline.predict_proba(inputs_of(table, telco_contract))[:, 1]
    np.testing.assert_array_equal(np.asarray(served.predict(table.head(1)))[:, 1], expected[:1])
    records = json.loads(table[telco_contract.feature_names].to_json(orient="records"))
    assert isinstance(records[0]["tenure"], int) and isinstance(records[0]["female"], int)
    np.testing.assert_array_equal(np.asarray(served.predict(pd.DataFrame(records)))[:, 1], expected)


def test_pyfunc_takes_records_without_their_optional_columns(served, telco_splits, telco_contract, telco_pipeline):
    _, _, test, _ = telco_splits
    inputs = inputs_of(test, telco_contract)
    expected = telco_pipeline.predict_proba(inputs.assign(total_charges=np.nan))[:, 1]
    absent = test.drop(columns=["churn", "total_charges"])
    np.testing.assert_array_equal(np.asarray(served.predict(absent))[:, 1], expected)
    # A required column stays required: refused by the input policy, before the pipeline sees the rows.
    with pytest.raises(InputError, match=r"^missing required column\(s\): tenure$"):
        served.predict(test.drop(columns=["churn", "tenure"]))


def test_absent_optional_text_and_binary_columns_score_as_nulls(tmp_path):
    spec = loans_contract()
    spec["features"]["region"]["nullable"] = True
    spec["features"]["owns_home"]["nullable"] = True
    pipeline, _, inputs, _ = loan_pipeline(spec=spec)
    package_loans(pipeline, inputs, tmp_path / "package", spec=spec)
    schema = load_package(tmp_path / "package").metadata.get_input_schema()
    assert schema.optional_input_names() == ["income", "region", "owns_home"]
    served = load_package(tmp_path / "package")
    inputs = signature_inputs(inputs, parse_contract(spec))  # `age` as whole numbers, as clients send it
    nulls = inputs.assign(income=np.nan, region=None, owns_home=np.nan)
    expected = pipeline.predict_proba(nulls)[:, 1]
    absent = inputs.drop(columns=["income", "region", "owns_home"])
    np.testing.assert_array_equal(np.asarray(served.predict(absent))[:, 1], expected)
    np.testing.assert_array_equal(np.asarray(served.predict(nulls))[:, 1], expected)
