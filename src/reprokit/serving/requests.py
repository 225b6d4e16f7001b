"""A scoring request: MLflow's wire formats (`dataframe_split`, `dataframe_records`, `instances`)
to columns, checked against the contract by the input policy (`reprokit.model.scoring`); a 4xx
naming every problem of a record (the first MAX_PROBLEMS, and the total); and the OpenAPI schema
of a request, derived from the contract."""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from reprokit.core.contract import Contract
from reprokit.model.scoring import (
    MISSING_PROBLEM,
    UNKNOWN_PROBLEM,
    Checked,
    check_records,
    column_error,
    column_problems,
    is_text,
    is_whole,
    list_problems,
    missing_required,
)
from reprokit.model.scoring_model import ScoringModel

MAX_PROBLEMS = 20  # problems listed in one 422 answer


WIRE_FORMATS = ("dataframe_split", "dataframe_records", "instances")


class BadRequest(Exception):
    """A request the service refuses: HTTP status and a message naming what is wrong."""

    def __init__(self, status: int, message: str, problems: list[dict[str, Any]] | None = None, total: int = 0):
        super().__init__(message)
        self.status, self.message, self.problems = status, message, problems or []
        self.total = max(total, len(self.problems))  # problems in all; the answer lists the first


def parse_payload(payload: Any, contract: Contract) -> tuple[dict[str, list[Any]], int]:
    """Columns (feature name -> values) and the record count of a decoded JSON body; a field
    the contract does not know is a 422 (`column_problems`, the rule every reader follows)."""
    features = contract.feature_names
    if not isinstance(payload, dict):
        raise BadRequest(422, f"expected a JSON object with one of the keys {', '.join(WIRE_FORMATS)}")
    keys = [key for key in WIRE_FORMATS if key in payload]
    if len(keys) != 1 or set(payload) - set(WIRE_FORMATS) - {"params"}:
        raise BadRequest(422, f"expected exactly one of the keys {', '.join(WIRE_FORMATS)}")
    body = payload[keys[0]]
    if keys[0] == "dataframe_split":
        if not isinstance(body, dict) or not isinstance(body.get("columns"), list) or "data" not in body:
            raise BadRequest(422, "dataframe_split: expected an object with 'columns' and 'data'")
        columns, data = body["columns"], body["data"]
        if not all(isinstance(c, str) for c in columns) or len(set(columns)) != len(columns):
            raise BadRequest(422, "dataframe_split.columns: expected distinct column names")
        if not isinstance(data, list) or not all(isinstance(row, list) and len(row) == len(columns) for row in data):
            raise BadRequest(422, f"dataframe_split.data: expected a list of rows of {len(columns)} values each")
        check_names(columns, contract)
        return {name: [row[i] for row in data] for i, name in enumerate(columns)}, len(data)
    if not isinstance(body, list) or not all(isinstance(record, dict) for record in body):
        raise BadRequest(422, f"{keys[0]}: expected a list of records (JSON objects)")
    names: set[str] = set()
    for record in body:
        names.update(record)
    check_names(sorted(names), contract)
    return {name: [record.get(name, _MISSING) for record in body] for name in features}, len(body)


def first_id(payload: Any, contract: Contract) -> str | None:
    """The contract's id field of a request's first record, as text (the routing key of a
    request that sends none), or None: no id column, no such field, or a body `parse_payload`
    will refuse."""
    name = contract.source.id_column
    if not name or not isinstance(payload, dict):
        return None
    body = payload.get("dataframe_split")
    if isinstance(body, dict):
        columns, data = body.get("columns"), body.get("data")
        if isinstance(columns, list) and name in columns and isinstance(data, list) and data:
            row = data[0]
            position = columns.index(name)
            value = row[position] if isinstance(row, list) and position < len(row) else None
        else:
            value = None
    else:
        body = payload.get("dataframe_records", payload.get("instances"))
        value = body[0].get(name) if isinstance(body, list) and body and isinstance(body[0], dict) else None
    return None if value is None or isinstance(value, (dict, list)) else str(value)[:200]


class _Missing:
    """A field absent from a record (told apart from an explicit null)."""


_MISSING = _Missing()


CONTRACT_MISMATCH = "the input does not match the contract"


def _raise(problems: list[dict[str, Any]], total: int):
    raise BadRequest(422, CONTRACT_MISMATCH, problems, total)


def check_names(names: list[str], contract: Contract) -> None:
    """A 422 for fields the contract does not know (a missing field is a problem of each
    record that lacks it: `check_payloads`)."""
    unknown = [(name, problem) for name, problem in column_problems(names, contract) if problem == UNKNOWN_PROBLEM]
    if unknown:
        shown = unknown[:MAX_PROBLEMS]
        _raise([{"field": name[:80], "problem": problem} for name, problem in shown], len(unknown))


@dataclasses.dataclass
class Payload:
    """A request's records, shaped but not yet checked: its columns (feature name -> values,
    an absent field `_MISSING` until `settle`), how many records, and, once settled, the
    records that lack each required field."""

    columns: dict[str, list[Any]]
    n: int
    absent: dict[str, np.ndarray] | None = None

    def settle(self, contract: Contract) -> dict[str, np.ndarray]:
        """Turn absent fields into nulls and note, per required field, the records that lack
        it (a pass over every value: with the micro-batch, never in the request handler)."""
        if self.absent is None:
            absent = {}
            nullable = {f.name for f in contract.features if f.nullable}
            for name, values in self.columns.items():
                rows = [i for i, value in enumerate(values) if value is _MISSING]
                for i in rows:
                    values[i] = None
                if rows and name not in nullable:
                    absent[name] = np.asarray(rows, dtype=np.int64)
            self.absent = absent
        return self.absent


def shape_payload(columns: dict[str, list[Any]], n: int, contract: Contract, max_records: int) -> Payload:
    """A request's records as a `Payload`, or a 4xx for what concerns the request as a whole:
    no records, too many, a required field that no record has."""
    if n == 0:
        raise BadRequest(422, "no records: send at least one")
    if n > max_records:
        raise BadRequest(413, f"{n} records: at most {max_records} per request (--max-records)")
    if missing := missing_required(columns, contract):
        raise BadRequest(422, column_error(missing))
    return Payload(columns, n)


def check_payloads(payloads: Sequence[Payload], contract: Contract) -> tuple[Checked, list[BadRequest | None]]:
    """The records of one or more requests checked together, in order (one pass of the input
    policy, its numpy calls once per field for all of them), and each request's own verdict:
    None, or the 422 listing its first problems (record, field, problem: every problem of a
    record, up to MAX_PROBLEMS in all, records numbered within the request) and how many there
    are in all. A request's verdict is the one it would get checked alone."""
    absences = [payload.settle(contract) for payload in payloads]
    if len(payloads) == 1:
        columns: dict[str, Any] = payloads[0].columns
    else:
        columns = {
            f.name: [v for p in payloads for v in p.columns.get(f.name) or [None] * p.n] for f in contract.features
        }
    checked = check_records(columns, sum(p.n for p in payloads), contract)
    verdicts: list[BadRequest | None] = []
    start = 0
    for payload, absent in zip(payloads, absences):
        stop = start + payload.n
        reasons: list[tuple[str, np.ndarray, str | dict[int, str]]] = []
        for field, rows, message in checked.reasons:
            low, high = np.searchsorted(rows, (start, stop))  # a reason's records are in increasing order
            if low == high:
                continue
            if isinstance(message, dict):
                message = {int(i) - start: message[i] for i in rows[low:high]}
            own = rows[low:high] - start
            # A missing required field is that, not also a null: its records leave the field's reasons.
            if field in absent:
                own = np.setdiff1d(own, absent[field], assume_unique=True)
            reasons.append((field, own, message))
        reasons += [(field, rows, MISSING_PROBLEM) for field, rows in absent.items()]
        listed, total = list_problems(reasons, MAX_PROBLEMS)
        problems = [{"record": i, "field": field, "problem": problem} for i, field, problem in listed]
        verdicts.append(BadRequest(422, CONTRACT_MISMATCH, problems, total) if total else None)
        start = stop
    return checked, verdicts


def record_schema(model: ScoringModel) -> dict[str, Any]:
    """The JSON schema of one record, from the package's contract."""
    properties, required = {}, []
    for feature in model.contract.features:
        if is_text(feature):
            spec: dict[str, Any] = {"type": "string", "examples": list(feature.values)}
        else:
            spec = {"type": "integer" if is_whole(feature) else "number"}
            if feature.min is not None:
                spec["minimum"] = feature.min
            if feature.max is not None:
                spec["maximum"] = feature.max
            if feature.values is not None:
                spec["examples"] = list(feature.values)
        if feature.nullable:
            spec = {"anyOf": [spec, {"type": "null"}]}
        else:
            required.append(feature.name)
        spec["description"] = f"{feature.type} feature of the dataset contract"
        properties[feature.name] = spec
    return {"type": "object", "properties": properties, "required": required, "additionalProperties": False}


def request_schema(model: ScoringModel) -> dict[str, Any]:
    """The `/invocations` request body: MLflow's three wire formats of contract records."""
    record = record_schema(model)
    records = {"type": "array", "items": record, "minItems": 1}
    split = {
        "type": "object",
        "required": ["columns", "data"],
        "properties": {
            "columns": {"type": "array", "items": {"type": "string", "enum": model.contract.feature_names}},
            "data": {"type": "array", "items": {"type": "array"}, "minItems": 1},
        },
    }
    options = [
        {"type": "object", "required": [key], "properties": {key: value}, "additionalProperties": False}
        for key, value in (("dataframe_split", split), ("dataframe_records", records), ("instances", records))
    ]
    return {"required": True, "content": {"application/json": {"schema": {"oneOf": options}}}}
