"""The dataset contract: everything dataset-specific, read from `dataset.yaml`.

The contract names the source, the target and its positive label, the id column,
every feature with its type, allowed values or range and nullability, the cleaning
rules and the subgroup columns. Validation (prepare), encoding (featurize) and
fairness metrics (evaluate) all read it, so pointing the repository at another
table means editing this one file.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal

from reprokit.config import ConfigError, read_yaml, require_declared

CONTRACT_FILE = "dataset.yaml"

FeatureType = Literal["numeric", "integer", "binary", "categorical"]
FEATURE_TYPES: tuple[str, ...] = ("numeric", "integer", "binary", "categorical")


@dataclasses.dataclass(frozen=True)
class Feature:
    name: str
    type: FeatureType
    nullable: bool = False
    values: tuple[Any, ...] | None = None
    min: float | None = None
    max: float | None = None


@dataclasses.dataclass(frozen=True)
class Target:
    column: str
    positive: Any
    negative: Any


@dataclasses.dataclass(frozen=True)
class Source:
    uri: str
    format: str = "auto"
    track: str | None = None


@dataclasses.dataclass(frozen=True)
class Contract:
    name: str
    source: Source
    target: Target
    features: tuple[Feature, ...]
    id_column: str | None = None
    drop_columns: tuple[str, ...] = ()
    fill_missing: dict[str, Any] = dataclasses.field(default_factory=dict)
    subgroups: tuple[str, ...] = ()

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    def names_of(self, *types: str) -> list[str]:
        """Feature names of the given types, in contract order."""
        return [f.name for f in self.features if f.type in types]

    def feature(self, name: str) -> Feature:
        for feature in self.features:
            if feature.name == name:
                return feature
        raise KeyError(name)


def _take(data: dict[str, Any], allowed: set[str], required: set[str], where: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    unknown = sorted(set(data) - allowed)
    missing = sorted(required - set(data))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")
    if missing:
        raise ConfigError(f"{where}: missing key(s) {', '.join(missing)}")
    return data


def _parse_feature(name: str, spec: Any, where: str) -> Feature:
    spec = _take(spec, {"type", "nullable", "values", "min", "max"}, {"type"}, f"{where}.{name}")
    kind = spec["type"]
    if kind not in FEATURE_TYPES:
        raise ConfigError(f"{where}.{name}.type: {kind!r} is not one of {', '.join(FEATURE_TYPES)}")
    values = spec.get("values")
    if kind == "categorical" and not values:
        raise ConfigError(f"{where}.{name}: a categorical feature needs its allowed 'values'")
    if kind == "binary":
        values = values or [0, 1]
        if len(values) != 2:
            raise ConfigError(f"{where}.{name}: a binary feature has exactly two values, got {values}")
    if values is not None and (not isinstance(values, list) or len(set(map(str, values))) != len(values)):
        raise ConfigError(f"{where}.{name}.values: expected a list of distinct values")
    if kind in ("categorical", "binary") and ("min" in spec or "max" in spec):
        raise ConfigError(f"{where}.{name}: min/max apply to numeric and integer features only")
    return Feature(
        name=name,
        type=kind,
        nullable=bool(spec.get("nullable", False)),
        values=tuple(values) if values is not None else None,
        min=spec.get("min"),
        max=spec.get("max"),
    )


def parse_contract(data: dict[str, Any], where: str = CONTRACT_FILE) -> Contract:
    """Validate the contract mapping and build a `Contract`."""
    data = _take(
        data,
        {"name", "source", "target", "id_column", "drop_columns", "features", "cleaning", "subgroups"},
        {"name", "source", "target", "features"},
        where,
    )
    source = Source(**_take(data["source"], {"uri", "format", "track"}, {"uri"}, f"{where}: source"))
    if source.format not in ("auto", "csv", "parquet"):
        raise ConfigError(f"{where}: source.format is {source.format!r}; expected auto, csv or parquet")
    target = Target(
        **_take(
            data["target"], {"column", "positive", "negative"}, {"column", "positive", "negative"}, f"{where}: target"
        )
    )
    raw_features = data["features"]
    if not isinstance(raw_features, dict) or not raw_features:
        raise ConfigError(f"{where}: features must be a non-empty mapping of column name to spec")
    features = tuple(_parse_feature(name, spec, f"{where}: features") for name, spec in raw_features.items())
    names = {f.name for f in features}
    if target.column in names:
        raise ConfigError(f"{where}: target column {target.column!r} is also listed as a feature")
    cleaning = _take(data.get("cleaning") or {}, {"fill_missing"}, set(), f"{where}: cleaning")
    fill_missing = dict(cleaning.get("fill_missing") or {})
    for column in fill_missing:
        if column not in names:
            raise ConfigError(f"{where}: cleaning.fill_missing names {column!r}, which is not a feature")
    subgroups = tuple(data.get("subgroups") or ())
    for column in subgroups:
        if column not in names:
            raise ConfigError(f"{where}: subgroups names {column!r}, which is not a feature")
    id_column = data.get("id_column")
    if id_column is not None and id_column in names | {target.column}:
        raise ConfigError(f"{where}: id_column {id_column!r} must not be a feature or the target")
    return Contract(
        name=str(data["name"]),
        source=source,
        target=target,
        features=features,
        id_column=id_column,
        drop_columns=tuple(data.get("drop_columns") or ()),
        fill_missing=fill_missing,
        subgroups=subgroups,
    )


def load_contract(path: str | Path = CONTRACT_FILE) -> Contract:
    """Read and validate the dataset contract file."""
    return parse_contract(read_yaml(path), where=str(path))


# The top-level contract key each attribute of `Contract` is read from.
_ATTRIBUTE_KEYS = {
    "name": "name",
    "source": "source",
    "target": "target",
    "features": "features",
    "feature_names": "features",
    "names_of": "features",
    "feature": "features",
    "id_column": "id_column",
    "drop_columns": "drop_columns",
    "fill_missing": "cleaning",
    "subgroups": "subgroups",
}


class DeclaredContract:
    """A `Contract` that lets a stage read only the contract keys it declares in `dvc.yaml`.

    Reading any other key raises `UndeclaredKeyError`: DVC would not re-run the stage
    when that key changes.
    """

    def __init__(self, contract: Contract, stage: str, declared: tuple[str, ...], where: str = CONTRACT_FILE):
        self._contract, self._stage, self._declared, self._where = contract, stage, tuple(declared), where

    def __getattr__(self, attr: str) -> Any:
        key = _ATTRIBUTE_KEYS.get(attr)
        if key is None:
            raise AttributeError(attr)
        require_declared(self._stage, self._where, self._declared, key)
        return getattr(self._contract, attr)


def load_stage_contract(stage: str, declared: tuple[str, ...], path: str | Path = CONTRACT_FILE) -> DeclaredContract:
    """The contract as stage `stage` may read it: only the keys it declares."""
    return DeclaredContract(load_contract(path), stage, declared, str(path))


def build_schema(contract: Contract):
    """A pandera schema checking a raw source table against the contract.

    Columns are coerced to the contract's types first, so a value that cannot be
    converted is reported as a failing row like any other check.
    """
    import pandera.pandas as pa

    columns: dict[str, pa.Column] = {}
    for feature in contract.features:
        checks = []
        if feature.values is not None:
            checks.append(pa.Check.isin(list(feature.values)))
        if feature.min is not None:
            checks.append(pa.Check.ge(feature.min))
        if feature.max is not None:
            checks.append(pa.Check.le(feature.max))
        dtype = {"numeric": "float64", "integer": "Int64", "binary": "Int64", "categorical": "str"}[feature.type]
        if feature.type == "binary" and any(isinstance(v, str) for v in feature.values or ()):
            dtype = "str"
        columns[feature.name] = pa.Column(dtype, checks=checks, nullable=feature.nullable, coerce=True)
    target = contract.target
    columns[target.column] = pa.Column(checks=[pa.Check.isin([target.positive, target.negative])], nullable=False)
    if contract.id_column:
        columns[contract.id_column] = pa.Column(nullable=False, unique=True)
    return pa.DataFrameSchema(columns, strict=True, name=contract.name)
