"""Drafting a contract from a table: types, values, ranges, blanks, ids, subgroups."""

from __future__ import annotations

import pandas as pd
import pytest
from synthetic import make_loans

from reprokit.commands.draft import draft_contract, read_yaml_text
from reprokit.core.config import ConfigError
from reprokit.core.contract import parse_contract


def drafted(frame: pd.DataFrame, **kwargs):
    text = draft_contract(frame, "data/raw/table.csv", **kwargs)
    return text, parse_contract(read_yaml_text(text))


def test_the_draft_types_every_column_and_validates_its_own_table():
    from reprokit.stages.prepare import validate

    frame = make_loans(400)
    frame.insert(0, "rownames", range(1, 401))
    frame["note"] = [f"free text {i}" for i in range(400)]
    text, contract = drafted(frame, target="defaulted")
    assert contract.id_column == "loan_id" and set(contract.drop_columns) == {"rownames", "note"}
    kinds = {f.name: f.type for f in contract.features}
    assert kinds == {
        "income": "numeric",
        "amount": "numeric",
        "age": "integer",
        "region": "categorical",
        "purpose": "categorical",
        "owns_home": "binary",
    }
    assert contract.feature("income").nullable and not contract.feature("amount").nullable
    assert contract.feature("age").min == frame["age"].min() and contract.feature("age").max == frame["age"].max()
    assert set(contract.feature("region").values) == set(frame["region"])
    assert contract.target.positive == 1 and contract.target.negative == 0  # the rarer class
    assert 1 <= len(contract.subgroups) <= 2
    assert all(contract.feature(name).type in ("binary", "categorical") for name in contract.subgroups)
    assert "# Drafted by" in text and "blank of 400" in text  # commented
    validate(frame.drop(columns=list(contract.drop_columns)), contract, "table")  # its own table passes


def test_labels_that_yaml_would_turn_into_booleans_stay_strings():
    frame = pd.DataFrame({"answer": ["yes", "no", "on"] * 20, "y": ["Yes", "No"] * 30, "x": range(60)})
    frame["x"] = frame["x"] * 1.5
    text, contract = drafted(frame, target="y", positive="Yes")
    assert (contract.target.positive, contract.target.negative) == ("Yes", "No")
    assert contract.feature("answer").values == ("no", "on", "yes")
    import yaml  # PyYAML reads YAML 1.1, where an unquoted yes/no/on is a boolean: the draft quotes them

    old_rules = yaml.safe_load(text)
    assert old_rules["target"]["positive"] == "Yes" and old_rules["features"]["answer"]["values"] == ["no", "on", "yes"]


def test_the_draft_keeps_the_reading_options_it_needed(tmp_path):
    """A `;`-separated latin-1 file drafted with --delimiter/--encoding: the contract says so."""
    from reprokit.commands.draft import main

    frame = make_loans(100)
    frame["region"] = frame["region"].replace("north", "norté")
    frame.to_csv(tmp_path / "loans.csv", sep=";", encoding="latin-1", index=False)
    out = tmp_path / "dataset.yaml"
    args = [str(tmp_path / "loans.csv"), "--target", "defaulted", "--delimiter", ";", "--encoding", "latin-1"]
    main([*args, "--out", str(out)])
    contract = parse_contract(read_yaml_text(out.read_text()))
    assert (contract.source.delimiter, contract.source.encoding) == (";", "latin-1")
    assert "norté" in contract.feature("region").values


@pytest.mark.parametrize(
    "frame, kwargs, message",
    [
        (pd.DataFrame({"y": [0, 1, 2], "x": [1.0, 2.0, 3.0]}), {"target": "y"}, "has 3 distinct values"),
        (pd.DataFrame({"y": [0, 1], "x": [1.0, 2.0]}), {"target": "z"}, "no column 'z'"),
        (pd.DataFrame({"y": [0, 1], "x": [1.0, 2.0]}), {"target": "y", "positive": "yes"}, "--positive 'yes'"),
        (pd.DataFrame({"y": [0, None], "x": [1.0, 2.0]}), {"target": "y"}, "1 blank value"),
    ],
)
def test_a_table_that_cannot_be_drafted_says_why(frame, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        draft_contract(frame, "t.csv", **kwargs)
