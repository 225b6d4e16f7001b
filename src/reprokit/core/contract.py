"""The dataset contract: everything dataset-specific, read from `dataset.yaml`.

The contract names the source (with its id column and the columns to drop), the
target and its positive label, and every feature with its type, allowed values or
range, nullability, the value that fills its blanks and whether it defines subgroups.
Validation (prepare), encoding (featurize) and fairness metrics (evaluate) all read
it, so pointing the repository at another table means editing this one file.

Four top-level keys, all required: `name`, `source`, `target`, `features`. Everything
optional lives inside one of them, because `dvc.yaml` declares the keys each stage
reads and DVC refuses a declared key that is missing from the file.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal

from reprokit.core.config import ConfigError, read_yaml, require_declared

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
    fill_missing: Any = None  # the value blanks become in prepare (None: blanks stay, if nullable)
    subgroup: bool = False  # evaluate reports metrics per group of this column
    subgroup_bins: tuple[float, ...] | None = None  # a numeric subgroup's bin edges


@dataclasses.dataclass(frozen=True)
class Target:
    column: str
    positive: Any
    negative: Any


@dataclasses.dataclass(frozen=True)
class Source:
    uri: str
    track: str | None = None  # required in dataset.yaml: dvc.yaml's deps name it
    format: str = "auto"
    id_column: str | None = None
    drop_columns: tuple[str, ...] = ()
    delimiter: str = ","
    encoding: str = "utf-8"


@dataclasses.dataclass(frozen=True)
class Contract:
    name: str
    source: Source
    target: Target
    features: tuple[Feature, ...]

    @property
    def id_column(self) -> str | None:
        return self.source.id_column

    @property
    def drop_columns(self) -> tuple[str, ...]:
        return self.source.drop_columns

    @property
    def fill_missing(self) -> dict[str, Any]:
        return {f.name: f.fill_missing for f in self.features if f.fill_missing is not None}

    @property
    def subgroups(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features if f.subgroup)

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

    def to_mapping(self) -> dict[str, Any]:
        """The contract as `dataset.yaml` would hold it (`parse_contract` reads it back),
        leaving out optional keys at their defaults."""

        def spec(feature: Feature) -> dict[str, Any]:
            defaults = Feature(name=feature.name, type=feature.type)
            if feature.type == "binary":
                defaults = dataclasses.replace(defaults, values=(0, 1))
            out: dict[str, Any] = {"type": feature.type}
            for field in ("nullable", "values", "min", "max", "fill_missing", "subgroup", "subgroup_bins"):
                value = getattr(feature, field)
                if value != getattr(defaults, field) and not (field == "subgroup" and feature.subgroup_bins):
                    out[field] = list(value) if isinstance(value, tuple) else value
            return out

        source_defaults = Source(uri=self.source.uri)
        source = {
            field.name: list(value) if isinstance(value, tuple) else value
            for field in dataclasses.fields(Source)
            if (value := getattr(self.source, field.name)) != getattr(source_defaults, field.name)
            or field.name == "uri"
        }
        return {
            "name": self.name,
            "source": source,
            "target": dataclasses.asdict(self.target),
            "features": {feature.name: spec(feature) for feature in self.features},
        }


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
    keys = {"type", "nullable", "values", "min", "max", "fill_missing", "subgroup", "subgroup_bins"}
    spec = _take(spec, keys, {"type"}, f"{where}.{name}")
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
    subgroup, bins = spec.get("subgroup", False), spec.get("subgroup_bins")
    if not isinstance(subgroup, bool):
        raise ConfigError(f"{where}.{name}.subgroup: expected true or false, got {subgroup!r}")
    if bins is not None:
        if kind not in ("numeric", "integer"):
            raise ConfigError(f"{where}.{name}.subgroup_bins: bins apply to numeric and integer features only")
        if not isinstance(bins, list) or len(bins) < 2 or any(not isinstance(b, (int, float)) for b in bins):
            raise ConfigError(f"{where}.{name}.subgroup_bins: expected a list of at least two numbers (bin edges)")
        if sorted(set(bins)) != bins:
            raise ConfigError(f"{where}.{name}.subgroup_bins: edges must increase, got {bins}")
        subgroup = True
    elif subgroup and kind in ("numeric", "integer"):
        raise ConfigError(
            f"{where}.{name}: a {kind} subgroup needs subgroup_bins (bin edges): one group per value "
            "would make groups of a row or two"
        )
    return Feature(
        name=name,
        type=kind,
        nullable=bool(spec.get("nullable", False)),
        values=tuple(values) if values is not None else None,
        min=spec.get("min"),
        max=spec.get("max"),
        fill_missing=spec.get("fill_missing"),
        subgroup=subgroup,
        subgroup_bins=tuple(float(b) for b in bins) if bins is not None else None,
    )


# Keys that earlier versions of the contract kept at the top level, and where they live now.
_MOVED = {
    "id_column": "source.id_column",
    "drop_columns": "source.drop_columns",
    "cleaning": "features.<name>.fill_missing",
    "subgroups": "features.<name>.subgroup: true",
}


def parse_contract(data: dict[str, Any], where: str = CONTRACT_FILE) -> Contract:
    """Validate the contract mapping and build a `Contract`."""
    moved = [f"{key} is now {_MOVED[key]}" for key in _MOVED if key in data]
    if moved:
        raise ConfigError(f"{where}: {'; '.join(moved)}")
    data = _take(data, {"name", "source", "target", "features"}, {"name", "source", "target", "features"}, where)
    source_keys = {"uri", "format", "track", "id_column", "drop_columns", "delimiter", "encoding"}
    raw_source = _take(data["source"], source_keys, {"uri", "track"}, f"{where}: source")
    source = Source(
        **{**raw_source, "drop_columns": tuple(raw_source.get("drop_columns") or ())},
    )
    if source.format not in ("auto", "csv", "parquet"):
        raise ConfigError(f"{where}: source.format is {source.format!r}; expected auto, csv or parquet")
    if not isinstance(source.delimiter, str) or len(source.delimiter) != 1:
        raise ConfigError(f"{where}: source.delimiter must be one character, got {source.delimiter!r}")
    import codecs

    try:
        codecs.lookup(str(source.encoding))
    except LookupError:
        raise ConfigError(f"{where}: source.encoding {source.encoding!r} is not an encoding Python knows") from None
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
    if source.id_column is not None and source.id_column in names | {target.column}:
        raise ConfigError(f"{where}: source.id_column {source.id_column!r} must not be a feature or the target")
    return Contract(name=str(data["name"]), source=source, target=target, features=features)


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
    "id_column": "source",
    "drop_columns": "source",
    "fill_missing": "features",
    "subgroups": "features",
}


class DeclaredContract:
    """A `Contract` that lets a stage read only the contract keys it declares in `dvc.yaml`.

    Reading any other key raises `UndeclaredKeyError`: DVC would not re-run the stage
    when that key changes.
    """

    def __init__(self, contract: Contract, stage: str, declared: tuple[str, ...], where: str = CONTRACT_FILE):
        self._contract, self._stage, self._declared, self._where = contract, stage, tuple(declared), where

    def to_mapping(self) -> dict[str, Any]:
        """The whole contract (`Contract.to_mapping`): the stage must declare every key."""
        for key in ("name", "source", "target", "features"):
            require_declared(self._stage, self._where, self._declared, key)
        return self._contract.to_mapping()

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
        if feature.type == "numeric":  # pandas reads "inf" as a number: no model can use it
            checks.append(pa.Check(lambda s: ~s.isin([float("inf"), float("-inf")]), name="finite"))
        dtype = {"numeric": "float64", "integer": "Int64", "binary": "Int64", "categorical": "str"}[feature.type]
        if feature.type == "binary" and any(isinstance(v, str) for v in feature.values or ()):
            dtype = "str"
        columns[feature.name] = pa.Column(dtype, checks=checks, nullable=feature.nullable, coerce=True)
    target = contract.target
    columns[target.column] = pa.Column(checks=[pa.Check.isin([target.positive, target.negative])], nullable=False)
    if contract.id_column:
        columns[contract.id_column] = pa.Column(nullable=False, unique=True)
    return pa.DataFrameSchema(columns, strict=True, name=contract.name)
