"""Typed, frozen views of `params.yaml` sections.

Each stage loads only the sections it reads. Unknown or missing keys fail fast
with the file and key named, so a typo in `params.yaml` never passes silently.
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any, Mapping

import yaml

PARAMS_FILE = "params.yaml"

MODEL_KINDS = ("hist_gradient_boosting", "random_forest", "logistic_regression")


class ConfigError(ValueError):
    """A params or contract file is missing a key, has an unknown one, or a bad value."""


@dataclasses.dataclass(frozen=True)
class BaseParams:
    seed: int


@dataclasses.dataclass(frozen=True)
class SplitParams:
    test_size: float


@dataclasses.dataclass(frozen=True)
class FeaturizeParams:
    scale_numeric: bool
    numeric_impute: str


@dataclasses.dataclass(frozen=True)
class TrainParams:
    model: str
    n_threads: int
    hist_gradient_boosting: dict[str, Any]
    random_forest: dict[str, Any]
    logistic_regression: dict[str, Any]

    def __post_init__(self) -> None:
        if self.model not in MODEL_KINDS:
            raise ConfigError(f"{PARAMS_FILE}: train.model is {self.model!r}; expected one of {', '.join(MODEL_KINDS)}")

    @property
    def hyperparams(self) -> dict[str, Any]:
        """Hyperparameters of the chosen model."""
        return dict(getattr(self, self.model))


@dataclasses.dataclass(frozen=True)
class EvaluateParams:
    threshold: float
    calibration_bins: int
    importance_repeats: int


@dataclasses.dataclass(frozen=True)
class TrackingParams:
    enabled: bool
    uri: str
    experiment: str
    registered_model: str
    timeout_seconds: float


@dataclasses.dataclass(frozen=True)
class GateParams:
    min_test_roc_auc: float
    max_auc_degradation: float
    max_subgroup_auc_gap: float
    max_p95_latency_ms: float
    latency_samples: int
    enforce: bool


def _check_type(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint) or hint
    if origin is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if origin is int and isinstance(value, bool):
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if isinstance(origin, type) and not isinstance(value, origin):
        raise ConfigError(f"{where}: expected {origin.__name__}, got {type(value).__name__} {value!r}")
    return value


def section_from_mapping(cls: type, data: Any, where: str) -> Any:
    """Build the frozen dataclass `cls` from `data`, failing on unknown or missing keys."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    missing = sorted(set(fields) - set(data))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(fields)}")
    if missing:
        raise ConfigError(f"{where}: missing key(s) {', '.join(missing)}")
    hints = typing.get_type_hints(cls)
    values = {name: _check_type(data[name], hints[name], f"{where}.{name}") for name in fields}
    return cls(**values)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, naming the file in every error."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


_SECTIONS: dict[str, type] = {
    "base": BaseParams,
    "split": SplitParams,
    "featurize": FeaturizeParams,
    "train": TrainParams,
    "evaluate": EvaluateParams,
    "tracking": TrackingParams,
    "gate": GateParams,
}


def load_section(name: str, params_file: str | Path = PARAMS_FILE) -> Any:
    """Load one `params.yaml` section into its typed dataclass."""
    data = read_yaml(params_file)
    if name not in data:
        raise ConfigError(f"{params_file}: missing section {name!r}")
    return section_from_mapping(_SECTIONS[name], data[name], f"{params_file}: {name}")


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested mappings into dotted keys, as DVC and MLflow show params."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


__all__ = [
    "BaseParams",
    "ConfigError",
    "EvaluateParams",
    "FeaturizeParams",
    "GateParams",
    "MODEL_KINDS",
    "SplitParams",
    "TrackingParams",
    "TrainParams",
    "flatten",
    "load_section",
    "read_yaml",
    "section_from_mapping",
]
