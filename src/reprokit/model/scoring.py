"""Scoring records against the dataset contract: the one input policy that the package's
signature, the scoring service (`reprokit.serving.serve`) and batch scoring (`reprokit.serving.score`) share.

Column types (the package's MLflow signature says the same): a numeric feature is a
`double`; an integer or binary feature with numeric values is a `long` (integers in,
the way every client sends them), or a `double` when the contract lets it be null (an
integer column cannot hold a null in pandas or MLflow); a categorical feature, or a
binary one with text values, is a `string`.

Every record is checked column by column, and:

- **rejected** (not scored: the service answers 422 naming the field, batch scoring
  writes the row with its reason to the rejects file) when a required column is missing,
  a value has the wrong type (text where a number belongs, a number where text belongs, a
  fraction in an integer column, ±inf, true/false), or is null where the contract
  requires a value;
- **scored with a warning** when a value has the right type but lies outside the
  contract: a category it does not list, a number outside its range. The model encodes
  an unknown category as all zeros and uses an out-of-range number as it is, exactly as
  `mlflow.pyfunc` does with the same record, so the service, batch scoring and `pyfunc`
  give the same probability; the warning says the score is less trustworthy.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Collection, Mapping, Sequence

import numpy as np
import pandas as pd

from reprokit.core.contract import Contract, Feature

# Model input kinds: how a column reaches the fitted pipeline.
NUMBER, TEXT = "number", "text"


def is_text(feature: Feature) -> bool:
    """Whether the feature's values are text (a categorical or binary feature with string values)."""
    return feature.type in ("categorical", "binary") and any(isinstance(v, str) for v in feature.values)


def is_whole(feature: Feature) -> bool:
    """Whether the feature's values must be whole numbers."""
    if is_text(feature):
        return False
    if feature.type in ("integer", "binary"):
        return True
    return feature.type == "categorical" and all(isinstance(v, int) for v in feature.values)


def mlflow_type(feature: Feature) -> str:
    """The feature's column type in the package's MLflow signature."""
    if is_text(feature):
        return "string"
    return "long" if is_whole(feature) and not feature.nullable else "double"


def input_schema(contract: Contract):
    """The package's MLflow input schema: one column per feature, typed as `mlflow_type`;
    a nullable feature is optional (the package's `inputs` step fills it with nulls)."""
    from mlflow.types import ColSpec, Schema

    return Schema([ColSpec(mlflow_type(f), f.name, required=not f.nullable) for f in contract.features])


def signature_inputs(frame: pd.DataFrame, contract: Contract) -> pd.DataFrame:
    """The contract's feature columns of a prepared table in the signature's dtypes (what
    `mlflow.pyfunc` accepts without conversion): `long` columns as int64, `double` columns as
    float64, text as it is."""
    missing = [name for name in contract.feature_names if name not in frame.columns]
    if missing:
        raise KeyError(f"table lacks the contract's feature column(s) {missing}")
    return _cast(frame[contract.feature_names], {f.name: mlflow_type(f) for f in contract.features})


def conform(frame: pd.DataFrame, model) -> pd.DataFrame:
    """`frame`'s columns in the dtypes of a loaded pyfunc model's own signature, whichever
    version of the package wrote it (older packages declared every number a `double`)."""
    schema = model.metadata.get_input_schema()
    return _cast(frame[schema.input_names()], {spec.name: getattr(spec.type, "name", None) for spec in schema.inputs})


def _cast(frame: pd.DataFrame, kinds: dict[str, str | None]) -> pd.DataFrame:
    out = frame.copy()
    for name, kind in kinds.items():
        if kind == "long":
            column = out[name].astype("float64")
            if column.isna().any() or (column != column.round()).any():
                raise ValueError(f"column {name}: the model takes whole numbers without nulls")
            out[name] = column.astype("int64")
        elif kind == "double":
            out[name] = out[name].astype("float64")
    return out


def column_problems(names: Sequence[str], contract: Contract) -> list[tuple[str, str]]:
    """The column rule of the input policy, for a request's fields or a file's columns, as
    (column, problem): a required feature missing, or a column the contract does not know. The
    contract knows its features, its target, its id column and its `drop_columns`; the last
    three are accepted and not used. A missing nullable feature is all null."""
    present = set(names)
    known = set(contract.feature_names) | {contract.target.column} | set(contract.source.drop_columns)
    if contract.source.id_column:
        known.add(contract.source.id_column)
    missing = [(f.name, MISSING_PROBLEM) for f in contract.features if f.name not in present and not f.nullable]
    return missing + [(str(name), UNKNOWN_PROBLEM) for name in names if name not in known]


def column_error(problems: list[tuple[str, str]], limit: int = 20) -> str:
    """One line naming the columns `column_problems` found (the first `limit` of each kind)."""
    parts = []
    for problem, label in (
        (MISSING_PROBLEM, "missing required column(s)"),
        (UNKNOWN_PROBLEM, "column(s) the contract does not know"),
    ):
        names = [name[:80] for name, found in problems if found == problem]
        if names:
            more = f" and {len(names) - limit} more" if len(names) > limit else ""
            parts.append(f"{label}: {', '.join(names[:limit])}{more}")
    return "; ".join(parts)


MISSING_PROBLEM = "missing required field"
UNKNOWN_PROBLEM = "not a field of the contract"


class InputError(ValueError):
    """Input that cannot be scored at all (a required column missing, an unknown column):
    the message names the columns."""


@dataclasses.dataclass
class Checked:
    """The outcome of checking `n` records against the contract.

    `inputs` holds every record (rejected ones too, with placeholder values) in the model's
    input columns; `rejected[i]` is the first reason record i cannot be scored (None: it
    can); `warnings[i]` lists what lies outside the contract in a scorable record (None:
    nothing); `reasons` holds every reason, a record's second and third ones too: (field,
    the records it rejects in increasing order, the problem or a problem per record)."""

    columns: dict[str, Any]  # the model's input columns: numpy arrays (or pandas Series of text)
    rejected: np.ndarray  # object: None or the reason
    warnings: np.ndarray  # object: None or a list of messages
    reasons: list[tuple[str, np.ndarray, str | dict[int, str]]] = dataclasses.field(default_factory=list)

    @functools.cached_property
    def inputs(self) -> pd.DataFrame:
        """The records as the model's input frame (built on first use: the service scores a
        micro-batch's joined columns instead, `columns_of`)."""
        return frame_of([self.columns])

    def problems(self, first: int) -> tuple[list[tuple[int, str, str]], int]:
        """The first `first` problems, as (record, field, problem) in record then field order,
        and how many there are in all."""
        return list_problems(self.reasons, first)

    @property
    def ok(self) -> np.ndarray:
        return np.equal(self.rejected, None).astype(bool)


def list_problems(
    reasons: Sequence[tuple[str, np.ndarray, str | dict[int, str]]], first: int
) -> tuple[list[tuple[int, str, str]], int]:
    """The first `first` of `reasons`' problems (as `Checked.reasons` holds them), as (record,
    field, problem) in record then field order, and how many there are in all."""
    total = sum(len(rows) for _, rows, _ in reasons)
    listed = [
        (int(i), field, message[i] if isinstance(message, dict) else message)
        for field, rows, message in reasons
        for i in rows[:first]  # a record among the first `first` is among the first of each field
    ]
    return sorted(listed)[:first], total


def missing_required(names: Collection[str], contract: Contract) -> list[tuple[str, str]]:
    """The required features absent from `names`, each with MISSING_PROBLEM (`column_error`)."""
    return [(f.name, MISSING_PROBLEM) for f in contract.features if f.name not in names and not f.nullable]


def _show(value: Any) -> str:
    """What kind of value an offending one is, for a message: never the value itself, so an
    error never echoes the input back."""
    if isinstance(value, (bool, np.bool_)):
        return "true/false"
    if isinstance(value, str):
        return "text"
    if isinstance(value, (int, float, np.integer, np.floating)):
        return "a number"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _number_column(feature: Feature, values: Any, n: int) -> tuple[np.ndarray, dict[int, str]]:
    """Float64 values of a numeric column (NaN for null) and the type problems by row."""
    if isinstance(values, (np.ndarray, pd.Series)) and values.dtype.kind in "iuf":
        return np.asarray(values, dtype="float64"), {}
    if isinstance(values, pd.Series) and isinstance(values.dtype, pd.api.extensions.ExtensionDtype):
        if pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(values.dtype):
            return values.astype("float64").to_numpy(na_value=np.nan), {}
    out = np.empty(n, dtype="float64")
    problems: dict[int, str] = {}
    for i, value in enumerate(values):
        if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
            out[i] = np.nan
        elif isinstance(value, (bool, np.bool_)):
            out[i] = np.nan
            problems[i] = f"expected a number, got {_show(value)}"
        elif isinstance(value, (int, float, np.integer, np.floating)):
            try:
                out[i] = float(value)
            except OverflowError:  # an integer beyond float64's range
                out[i] = np.inf
        else:
            out[i] = np.nan
            problems[i] = f"expected a number, got {_show(value)}"
    return out, problems


def _text_column(feature: Feature, values: Any, n: int) -> tuple[np.ndarray, np.ndarray, dict[int, str]]:
    """Object values of a text column (NaN for null), the null mask and the type problems by row."""
    if isinstance(values, pd.Series) and pd.api.types.is_string_dtype(values.dtype) and values.dtype != object:
        return values.reset_index(drop=True), values.isna().to_numpy(), {}  # text with nulls: as it is
    out = np.empty(n, dtype=object)
    nulls = np.zeros(n, dtype=bool)
    problems: dict[int, str] = {}
    for i, value in enumerate(values):
        if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
            out[i], nulls[i] = np.nan, True
        elif isinstance(value, str):
            out[i] = value
        else:
            out[i] = np.nan
            problems[i] = f"expected text, got {_show(value)}"
    return out, nulls, problems


@dataclasses.dataclass(frozen=True)
class _Rule:
    """What `check_records` asks of one feature, worked out once per contract."""

    feature: Feature
    text: bool
    whole: bool
    allowed: frozenset  # the listed values (as floats for a number): a set lookup per record


_RULES: dict[int, tuple[Contract, list[_Rule]]] = {}


def _rules(contract: Contract) -> list[_Rule]:
    """The contract's rules, kept by identity for the few contracts a process holds (a
    service's stable, canary and shadow models): a request pays no per-feature setup."""
    kept = _RULES.get(id(contract))
    if kept is None or kept[0] is not contract:
        rules = [
            _Rule(
                f,
                is_text(f),
                is_whole(f),
                frozenset(() if f.values is None else f.values if is_text(f) else (float(v) for v in f.values)),
            )
            for f in contract.features
        ]
        if len(_RULES) >= 16:
            _RULES.clear()
        kept = _RULES[id(contract)] = (contract, rules)
    return kept[1]


def check_records(columns: Mapping[str, Sequence[Any] | np.ndarray | pd.Series], n: int, contract: Contract) -> Checked:
    """Check `n` records, given column by column (`columns[name]` holds n values), against
    the contract. Columns that are not features are ignored; a missing nullable feature is
    all null; a missing required feature raises `InputError`."""
    missing = missing_required(columns, contract)
    if missing:
        raise InputError(column_error(missing))
    rejected = np.full(n, None, dtype=object)
    warnings = np.full(n, None, dtype=object)
    reasons: list[tuple[str, np.ndarray, str | dict[int, str]]] = []
    data: dict[str, Any] = {}

    def reject(rows, message: str | dict[int, str], name: str) -> None:
        if len(rows):
            reasons.append((name, np.sort(np.asarray(rows, dtype=np.int64)), message))
        for i in rows:
            if rejected[i] is None:
                rejected[i] = f"{name}: {message[i] if isinstance(message, dict) else message}"

    def warn(rows, message: str) -> None:
        for i in rows:
            if warnings[i] is None:
                warnings[i] = []
            warnings[i].append(message)

    # Each mask is tested before its rows are listed: most records break nothing, and a
    # single-record request pays for every numpy call it makes (the service's common case;
    # `np.count_nonzero` tests a mask several times faster than its `any()`).
    with np.errstate(invalid="ignore"):
        for rule in _rules(contract):
            feature = rule.feature
            name = feature.name
            values = columns.get(name)
            if values is None:
                values = [None] * n
            if rule.text:
                column, nulls, problems = _text_column(feature, values, n)
                if n < 1000:
                    allowed = rule.allowed
                    known = np.fromiter((v in allowed for v in column), dtype=bool, count=n)
                else:
                    known = pd.Series(column, copy=False).isin(list(feature.values)).to_numpy()
                if np.count_nonzero(known) != n:
                    outside = np.flatnonzero(~nulls & ~known)
                    outside = [i for i in outside if i not in problems] if problems else outside
                    if feature.type == "binary":  # the pipeline's binary encoder refuses a third value
                        reject(outside, f"not one of the contract's two values {list(feature.values)}", name)
                    warn(outside, f"{name}: a category the contract does not list")
            else:
                column, problems = _number_column(feature, values, n)
                nulls = np.isnan(column)
                infinite = np.isinf(column)
                if np.count_nonzero(infinite):
                    reject(np.flatnonzero(infinite), "not a finite number", name)
                finite = ~nulls & ~infinite
                if rule.whole:
                    fraction = finite & (column != np.floor(column))
                    if np.count_nonzero(fraction):
                        reject(np.flatnonzero(fraction), "expected a whole number", name)
                if feature.values is not None:
                    if n < 64:  # float equality either way: a set of the values is cheaper than np.isin
                        allowed = rule.allowed
                        listed = np.fromiter((v in allowed for v in column), dtype=bool, count=n)
                    else:
                        listed = np.isin(column, np.asarray(feature.values, dtype="float64"))
                    outside = finite & ~listed
                    label = "not one of the contract's values"
                else:
                    outside = np.zeros(n, dtype=bool)
                    if feature.min is not None:
                        outside |= finite & (column < feature.min)
                    if feature.max is not None:
                        outside |= finite & (column > feature.max)
                    label = f"outside the contract's range [{feature.min}, {feature.max}]"
                if np.count_nonzero(outside):
                    warn(np.flatnonzero(outside), f"{name}: {label}")
            if problems:
                reject(sorted(problems), problems, name)
            if not feature.nullable and np.count_nonzero(nulls):
                nulls_at = np.flatnonzero(nulls)
                reject([i for i in nulls_at if i not in problems] if problems else nulls_at, NULL_PROBLEM, name)
            data[name] = column
    if reasons:  # a rejected record is not scored: it has no warnings
        warnings[rejected != None] = None  # noqa: E711 - elementwise
    return Checked(columns=data, rejected=rejected, warnings=warnings, reasons=reasons)


def columns_of(parts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The checked columns of one or more `Checked` joined (their records in order), each
    column as the check gave it: a numpy array, or a pandas Series of text."""
    if len(parts) == 1:
        return dict(parts[0])
    return {
        name: pd.concat([pd.Series(p[name]) for p in parts], ignore_index=True)
        if any(isinstance(p[name], pd.Series) for p in parts)
        else np.concatenate([p[name] for p in parts])
        for name in parts[0]
    }


def frame_of(parts: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """One model input frame of the checked columns of one or more `Checked` (their records
    in order), each column with the dtype the check gave it."""
    data = columns_of(parts)
    names = list(data)
    index = pd.RangeIndex(len(data[names[0]]) if names else 0)
    # Explicit dtypes: pandas would otherwise re-infer each text column (costly for one record).
    return pd.DataFrame(
        {
            name: column
            if isinstance(column, pd.Series)
            else pd.Series(column, index=index, dtype=column.dtype, copy=False)
            for name, column in data.items()
        },
        index=index,
        copy=False,
    )


NULL_PROBLEM = "null where the contract requires a value"


def labels(probabilities: np.ndarray, threshold: float, contract: Contract) -> list[Any]:
    """The predicted label of each probability: the target's positive label at or above `threshold`."""
    positive, negative = contract.target.positive, contract.target.negative
    return [positive if p >= threshold else negative for p in probabilities]


# The predicted-score bins every score histogram uses: the service's `/metrics` and the
# drift monitor's reference, so an alert on live scores compares like with like.
SCORE_BINS: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(1, 21))


def probe_records(contract: Contract) -> pd.DataFrame:
    """Records that exercise every branch of the feature transformation: each allowed value
    of every feature, nulls, a category the contract does not list, numbers at and beyond
    each bound. Model inputs as `check_records` makes them."""
    rows = 2 + max((len(f.values) for f in contract.features if f.values is not None), default=0) + 4
    data: dict[str, Any] = {}
    for feature in contract.features:
        if is_text(feature):
            values: list[Any] = list(feature.values)
            if feature.type == "categorical":
                values.append("a category no contract lists")
            values.append(np.nan)
        else:
            low = 0.0 if feature.min is None else float(feature.min)
            high = low + 100.0 if feature.max is None else float(feature.max)
            values = [float(v) for v in feature.values or ()] + [low, high, low - 7.0, high + 13.0, (low + high) / 2]
            values.append(np.nan)
        data[feature.name] = [values[i % len(values)] for i in range(rows)]
    frame = pd.DataFrame(data, columns=contract.feature_names)
    for feature in contract.features:
        frame[feature.name] = frame[feature.name].astype(object if is_text(feature) else "float64")
    return frame
