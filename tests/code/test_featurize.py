from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from synthetic import make_loans

from reprokit.core.config import FeaturizeParams
from reprokit.core.errors import StageError
from reprokit.model.estimators import build_transformer
from reprokit.model.inference import inputs_of
from reprokit.stages.featurize import fit_transform
from reprokit.stages.prepare import split, to_model_table, validate


@pytest.fixture()
def loan_splits(loans_contract_obj):
    table = to_model_table(validate(make_loans(300), loans_contract_obj, "x"), loans_contract_obj)
    return split(table, "defaulted", 0.25, 0)


def test_transformer_is_fitted_on_train_only(loans_contract_obj, loan_splits):
    train, test = loan_splits
    _, train_x, test_x = fit_transform(train, test, loans_contract_obj, FeaturizeParams(True, "median"))
    assert train_x["num__amount"].mean() == pytest.approx(0.0, abs=1e-9)
    assert train_x["num__amount"].std(ddof=0) == pytest.approx(1.0, abs=1e-9)
    expected = (test["amount"] - train["amount"].mean()) / train["amount"].std(ddof=0)
    np.testing.assert_allclose(test_x["num__amount"].to_numpy(), expected.to_numpy(), rtol=1e-9)
    assert not train_x.isna().any().any()  # blank incomes imputed
    assert train_x["defaulted"].tolist() == train["defaulted"].tolist()


def test_categories_come_from_the_contract(loans_contract_obj, loan_splits):
    train, test = loan_splits
    train = train[train["region"] != "west"]  # a category the training rows lack
    transformer, train_x, _ = fit_transform(train, test, loans_contract_obj, FeaturizeParams(False, "mean"))
    assert "cat__region_west" in train_x.columns and train_x["cat__region_west"].sum() == 0
    unseen = inputs_of(test.head(1), loans_contract_obj).assign(region="mars")
    row = transformer.transform(unseen)
    assert row.filter(like="cat__region_").to_numpy().sum() == 0  # unknown value: all zeros
    assert train_x["num__amount"].tolist() == train["amount"].tolist()  # no scaling when off


def test_output_has_one_column_per_number_binary_and_category(telco_contract, telco_splits):
    """Fitted on the real training split: the columns are the contract's, one per category value."""
    _, train, test, _ = telco_splits
    _, train_x, test_x = fit_transform(train, test, telco_contract, FeaturizeParams(True, "median"))
    numeric = telco_contract.names_of("numeric", "integer")
    binary = telco_contract.names_of("binary")
    categories = [
        f"cat__{name}_{value}"
        for name in telco_contract.names_of("categorical")
        for value in telco_contract.feature(name).values
    ]
    expected = [f"num__{n}" for n in numeric] + categories + [f"bin__{n}" for n in binary] + ["churn"]
    assert list(train_x.columns) == list(test_x.columns) == expected
    assert len(expected) - 1 == 40 and len(train_x) == len(train)
    one_hot = train_x[categories].to_numpy()
    assert set(np.unique(one_hot)) == {0.0, 1.0}
    for name in telco_contract.names_of("categorical"):  # exactly one value set per row and column
        assert (train_x.filter(like=f"cat__{name}_").sum(axis=1) == 1).all()


def test_bad_impute_strategy_and_missing_columns_are_named(loans_contract_obj, loan_splits):
    with pytest.raises(StageError, match="featurize.numeric_impute"):
        build_transformer(loans_contract_obj, FeaturizeParams(True, "mode"))
    with pytest.raises(StageError, match=r"lacks the contract's feature column\(s\) \['age'\]"):
        inputs_of(loan_splits[0].drop(columns=["age"]), loans_contract_obj)


def test_string_binary_features_are_encoded(loans_contract_obj):
    from synthetic import loans_contract

    from reprokit.core.contract import parse_contract

    data = loans_contract()
    data["features"]["owns_home"] = {"type": "binary", "values": ["no", "yes"]}
    contract = parse_contract(data)
    frame = pd.DataFrame({name: [1.0, 2.0] for name in contract.names_of("numeric", "integer")})
    frame["region"], frame["purpose"], frame["owns_home"] = ["north", "south"], ["car", "home"], ["no", "yes"]
    out = build_transformer(contract, FeaturizeParams(False, "median")).fit_transform(frame)
    assert out.filter(like="owns_home").to_numpy().ravel().tolist() == [0.0, 1.0]


def test_splits_read_as_categoricals_give_the_same_features_and_transformer(tmp_path, loans_contract_obj, loan_splits):
    """The stage reads string columns as Parquet dictionaries (`read_split`): the features and
    the fitted transformer's bytes are those of plain strings, nulls and unseen values included."""
    from reprokit.core.artifacts import dump_skops, write_parquet
    from reprokit.stages.featurize import read_split

    train, test = loan_splits
    region = train.columns.get_loc("region")
    train.iloc[::7, region] = None  # nulls in a string column
    test.iloc[::5, region] = "mars"  # a value the contract lacks
    for name, frame in (("train", train), ("test", test)):
        write_parquet(frame, tmp_path / f"{name}.parquet")
    plain = [pd.read_parquet(tmp_path / f"{name}.parquet") for name in ("train", "test")]
    read = [read_split(str(tmp_path / f"{name}.parquet"), loans_contract_obj) for name in ("train", "test")]
    assert isinstance(read[0]["region"].dtype, pd.CategoricalDtype)
    values = np.asarray(read[0]["region"])  # what the encoder makes of it: shared strings
    first = next(value for value in values if isinstance(value, str))
    same = [value for value in values if value == first]
    assert len(same) > 1 and all(value is first for value in same)
    assert not isinstance(plain[0]["region"].dtype, pd.CategoricalDtype)
    params = FeaturizeParams(True, "median")
    expected, got = fit_transform(*plain, loans_contract_obj, params), fit_transform(*read, loans_contract_obj, params)
    pd.testing.assert_frame_equal(got[1], expected[1])
    pd.testing.assert_frame_equal(got[2], expected[2])
    assert dump_skops(got[0]) == dump_skops(expected[0])
