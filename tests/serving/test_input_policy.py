"""One input policy, one behaviour: the same record gets the same verdict, and when scored the
same probability, from the service, batch scoring, the monitor and `pyfunc`.

Each case is one record as a client holds it (typed: JSON for the service, Parquet for batch
scoring and the monitor, a DataFrame for `pyfunc`), with the verdict every reader must give:
scored (with or without a warning), or refused naming the field. Every reader runs its own real
code: the service a real process over HTTP, `score_file` and `read_batch` as the commands run them."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from reprokit.core.errors import StageError
from reprokit.model.scoring import InputError
from reprokit.model.scoring_model import ScoringModel
from reprokit.monitoring.batch_drift import checked_records, read_batch
from reprokit.serving.score import score_file

DROP = object()  # the case removes the field

# name: (changes to a good record, verdict, the field a refusal names)
CASES = {
    "a good record": ({}, "scored", None),
    "a whole number written 12.0": ({"tenure": 12.0}, "scored", None),
    "a category the contract does not list": ({"contract": "Three year"}, "warned", None),
    "a number above the contract's range": ({"tenure": 500}, "warned", None),
    "null where the contract allows it": ({"total_charges": None}, "scored", None),
    "a nullable field left out": ({"total_charges": DROP}, "scored", None),
    "the target, the dropped row number": ({"churn": "Yes", "rownames": 7}, "scored", None),
    "a category sent as a number": ({"contract": 1}, "refused", "contract"),
    "text where a number belongs": ({"tenure": "twelve"}, "refused", "tenure"),
    "a fraction where a whole number belongs": ({"tenure": 12.5}, "refused", "tenure"),
    "true/false where a number belongs": ({"monthly_charges": True}, "refused", "monthly_charges"),
    "null where the contract requires a value": ({"contract": None}, "refused", "contract"),
    "a third value of a binary field": ({"partner": "Maybe"}, "refused", "partner"),
    "a required field left out": ({"tenure": DROP}, "refused", "tenure"),
    "a field the contract does not know": ({"loyalty_points": 3}, "refused", "loyalty_points"),
    "a misspelt field": ({"tenur": 5}, "refused", "tenur"),
}


@pytest.fixture(scope="module")
def good_record(telco_splits, telco_contract) -> dict:
    _, _, test, _ = telco_splits
    frame = test[telco_contract.feature_names].head(1)
    frame = frame.astype({n: "int64" for n in telco_contract.names_of("integer", "binary")})
    (record,) = json.loads(frame.to_json(orient="records"))
    return record


@pytest.fixture(scope="module")
def scorer(telco_package):
    return ScoringModel.load(str(telco_package))


def record_of(good: dict, changes: dict) -> dict:
    record = dict(good)
    for name, value in changes.items():
        if value is DROP:
            del record[name]
        else:
            record[name] = value
    return record


def by_service(service, record):
    answer = service.post("/invocations", json={"dataframe_records": [record]})
    if answer.status_code == 200:
        (prediction,) = answer.json()["predictions"]
        return ("warned" if prediction.get("warnings") else "scored"), prediction["probability"]
    assert answer.status_code == 422, answer.text
    return "refused", {problem["field"] for problem in answer.json()["problems"]}


def by_pyfunc(pyfunc, record, caplog):
    caplog.clear()
    try:
        with caplog.at_level("WARNING", logger="reprokit.pyfunc"):
            probability = float(np.asarray(pyfunc.predict(pd.DataFrame([record])))[0, 1])
    except InputError as exc:
        return "refused", str(exc)
    return ("warned" if "outside the contract" in caplog.text else "scored"), probability


def by_score(scorer, record, tmp_path):
    source, out, rejects = tmp_path / "in.parquet", tmp_path / "out.parquet", tmp_path / "rejects.parquet"
    pd.DataFrame([record]).to_parquet(source, index=False)
    try:
        score_file(scorer, str(source), str(out), str(rejects), 1000)
    except StageError as exc:
        return "refused", str(exc)
    refused = pd.read_parquet(rejects)
    if len(refused):
        return "refused", refused.loc[0, "reason"]
    (row,) = pd.read_parquet(out).to_dict(orient="records")
    return ("warned" if isinstance(row["warnings"], str) else "scored"), row["probability"]


def by_monitor(contract, record, tmp_path):
    source = tmp_path / "batch.parquet"
    pd.DataFrame([record]).to_parquet(source, index=False)
    try:
        checked, ok = checked_records(read_batch(str(source), contract), contract)
    except StageError as exc:
        return "refused", str(exc)
    if not ok[0]:
        return "refused", checked.rejected[0]
    return ("warned" if checked.warnings[0] else "scored"), None


@pytest.mark.parametrize("case", list(CASES))
def test_every_reader_gives_the_same_verdict(
    case, good_record, service, pyfunc, scorer, telco_contract, tmp_path, caplog
):
    changes, verdict, field = CASES[case]
    record = record_of(good_record, changes)
    outcomes = {
        "service": by_service(service, record),
        "pyfunc": by_pyfunc(pyfunc, record, caplog),
        "score": by_score(scorer, record, tmp_path),
        "monitor": by_monitor(telco_contract, record, tmp_path),
    }
    assert {reader: found for reader, (found, _) in outcomes.items()} == dict.fromkeys(outcomes, verdict), outcomes
    if verdict == "refused":
        assert outcomes["service"][1] == {field}, outcomes
        for reader in ("pyfunc", "score", "monitor"):
            assert field in outcomes[reader][1], (reader, outcomes[reader][1])
    else:
        probabilities = [outcomes[reader][1] for reader in ("service", "pyfunc", "score")]
        assert all(math.isclose(p, probabilities[0], rel_tol=0, abs_tol=0) for p in probabilities), probabilities
