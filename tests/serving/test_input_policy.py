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
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)


def alone_and_together(payloads: list[dict], contract) -> tuple[list, list]:
    """Each request's outcome (refused: status, message, problems, total; else warnings and the
    model's input columns) checked alone, and checked with the others in one micro-batch."""
    from reprokit.serving.requests import BadRequest, check_payloads, parse_payload, shape_payload

    def shaped(payload):
        try:
            return shape_payload(*parse_payload(payload, contract), contract, 100)
        except BadRequest:
            return None  # refused by its shape, before any micro-batch

    def outcome(checked, verdict, start, n):
        if verdict is not None:
            return (verdict.status, verdict.message, verdict.problems, verdict.total)
        columns = {k: list(pd.Series(v).iloc[start : start + n].astype(object)) for k, v in checked.columns.items()}
        return list(checked.warnings[start : start + n]), repr(columns)

    batch = [p for p in map(shaped, payloads) if p is not None]
    alone = []
    for payload in [p for p in map(shaped, payloads) if p is not None]:  # fresh: shaping marks missing fields
        checked, (verdict,) = check_payloads([payload], contract)
        alone.append(outcome(checked, verdict, 0, payload.n))
    together = []
    if batch:
        checked, verdicts = check_payloads(batch, contract)
        start = 0
        for payload, verdict in zip(batch, verdicts, strict=True):
            together.append(outcome(checked, verdict, start, payload.n))
            start += payload.n
    return alone, together


@pytest.mark.parametrize("case", list(CASES))
def test_a_request_checked_in_a_micro_batch_gets_its_verdict_alone(case, good_record, telco_contract):
    """The service checks the records of a micro-batch's requests together: each request of
    the corpus, between good ones, is answered as it is alone (a 422 numbers its own records)."""
    record = record_of(good_record, CASES[case][0])
    requests = [
        {"instances": [good_record]},
        {"dataframe_records": [good_record, record, record]},
        {"instances": [record]},
        {"dataframe_split": {"columns": list(record), "data": [list(record.values())]}},
    ]
    alone, together = alone_and_together(requests, telco_contract)
    assert together == alone
    verdicts = ["refused" if isinstance(o[0], int) else "warned" if any(o[0]) else "scored" for o in together]
    assert verdicts[0] == "scored" and set(verdicts[1:]) <= {CASES[case][1]}, verdicts


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzzed_micro_batches_answer_each_request_as_alone(good_record, telco_contract, data):
    """Up to five requests of records that start valid and get fields replaced, dropped or added,
    in each wire format: checked together, every request gets what it gets checked alone."""
    fields = list(good_record)
    requests = []
    for _ in range(data.draw(st.integers(1, 5))):
        records = []
        for _ in range(data.draw(st.integers(1, 3))):
            record = dict(good_record)
            for name in data.draw(st.lists(st.sampled_from(fields), max_size=3)):
                record[name] = data.draw(json_values)
            for name in data.draw(st.lists(st.sampled_from(fields), max_size=2)):
                record.pop(name, None)
            records.append(record)
        kind = data.draw(st.sampled_from(["instances", "dataframe_records", "dataframe_split"]))
        if kind == "dataframe_split":
            columns = data.draw(st.one_of(st.just(fields), st.lists(st.sampled_from(fields), max_size=25, unique=True)))
            requests.append({kind: {"columns": columns, "data": [[r.get(c) for c in columns] for r in records]}})
        else:
            requests.append({kind: records})
    alone, together = alone_and_together(requests, telco_contract)
    assert together == alone
