"""Typed, frozen views of `params.yaml` sections, and the params a stage may read.

Each stage loads only the sections it reads. Unknown or missing keys fail fast
with the file and key named, so a typo in `params.yaml` never passes silently.
A stage reads its params through `StageParams`, which knows the keys the stage
declares in `dvc.yaml` and refuses any other: a read DVC would not see is a bug.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, Mapping

from reprokit.core.errors import yaml_problem

PARAMS_FILE = "params.yaml"

MODEL_KINDS = ("hist_gradient_boosting", "random_forest", "logistic_regression")


class ConfigError(ValueError):
    """A params or contract file is missing a key, has an unknown one, or a bad value."""


class UndeclaredKeyError(RuntimeError):
    """Stage code read a params or contract key that its `dvc.yaml` entry does not declare.

    A programming error, not bad input: DVC would not re-run the stage when that key
    changes, so it fails loudly (with a traceback) instead of producing stale outputs.
    """


def covers(declared: tuple[str, ...], key: str) -> bool:
    """Whether a declared key (`train`, `base.seed`) includes `key` (`train.model`)."""
    return any(key == entry or key.startswith(entry + ".") for entry in declared)


def require_declared(stage: str, file: str, declared: tuple[str, ...], key: str) -> None:
    """Raise `UndeclaredKeyError` unless `key` is among the keys `stage` declares for `file`."""
    if not covers(declared, key):
        raise UndeclaredKeyError(
            f"stage {stage!r} reads {file}: {key}, which its dvc.yaml entry does not declare "
            f"(declared: {', '.join(declared) or 'nothing'}); add it to the stage's params in dvc.yaml "
            "and to the module's declared keys"
        )


@dataclasses.dataclass(frozen=True)
class BaseParams:
    seed: int
    n_threads: int

    def __post_init__(self) -> None:
        if self.n_threads < 1:
            raise ConfigError(f"{PARAMS_FILE}: base.n_threads must be at least 1, got {self.n_threads}")


@dataclasses.dataclass(frozen=True)
class SplitParams:
    test_size: float


@dataclasses.dataclass(frozen=True)
class ScaleParams:
    rows: int  # 0: off; else the data's rows after enlarging (reprokit.core.scale)
    jitter: float  # numeric copies move by this many column standard deviations (Gaussian)

    def __post_init__(self) -> None:
        if self.rows < 0:
            raise ConfigError(f"{PARAMS_FILE}: scale.rows must be 0 (off) or a number of rows")
        if self.jitter < 0:
            raise ConfigError(f"{PARAMS_FILE}: scale.jitter must be at least 0")


@dataclasses.dataclass(frozen=True)
class FeaturizeParams:
    scale_numeric: bool
    numeric_impute: str


@dataclasses.dataclass(frozen=True)
class TrainParams:
    model: str
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
class TuneParams:
    model: str  # the model kind searched: its train.<model> hyperparameters are the base
    folds: int  # stratified, shuffled with base.seed, on the prepared train split
    backend: str  # loky (processes on this machine) | dask (a cluster: --scheduler ADDRESS)
    n_jobs: int  # parallel (candidate, fold) tasks
    grid: dict[str, list[Any]]  # hyperparameter -> the values tried

    def __post_init__(self) -> None:
        if self.model not in MODEL_KINDS:
            raise ConfigError(f"{PARAMS_FILE}: tune.model is {self.model!r}; expected one of {', '.join(MODEL_KINDS)}")
        if self.folds < 2:
            raise ConfigError(f"{PARAMS_FILE}: tune.folds must be at least 2")
        if self.backend not in ("loky", "dask"):
            raise ConfigError(f"{PARAMS_FILE}: tune.backend must be loky or dask, got {self.backend!r}")
        if self.n_jobs < 1:
            raise ConfigError(f"{PARAMS_FILE}: tune.n_jobs must be at least 1")
        for key, values in self.grid.items():
            if not isinstance(values, list) or not values:
                raise ConfigError(f"{PARAMS_FILE}: tune.grid.{key} must be a non-empty list of values")


@dataclasses.dataclass(frozen=True)
class EvaluateParams:
    threshold: float
    calibration_bins: int
    importance_repeats: int
    importance_max_rows: int  # permutation importance on a seeded sample of at most this many test rows
    train_max_rows: int  # the train split's figures on a seeded sample of at most this many rows
    min_subgroup_size: int  # smaller groups are reported but left out of the AUC gap

    def __post_init__(self) -> None:
        for name in ("importance_max_rows", "train_max_rows"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{PARAMS_FILE}: evaluate.{name} must be a whole number of at least 1, got {value!r}")


@dataclasses.dataclass(frozen=True)
class PackageParams:
    input_example: str  # synthetic (from the contract) | real (the first test rows)

    def __post_init__(self) -> None:
        if self.input_example not in ("synthetic", "real"):
            raise ConfigError(
                f"{PARAMS_FILE}: package.input_example is {self.input_example!r}; expected synthetic or real"
            )


@dataclasses.dataclass(frozen=True)
class TrackingParams:
    enabled: bool
    uri: str
    experiment: str | None  # None: the dataset contract's name
    registered_model: str | None  # None: the dataset contract's name
    timeout_seconds: float


@dataclasses.dataclass(frozen=True)
class GateParams:
    min_test_roc_auc: float
    max_auc_degradation: float
    max_subgroup_auc_gap: float
    max_p95_latency_ms: float
    latency_samples: int
    enforce: bool

    def __post_init__(self) -> None:
        for name in ("min_test_roc_auc", "max_auc_degradation", "max_subgroup_auc_gap", "max_p95_latency_ms"):
            value = getattr(self, name)
            if not math.isfinite(value):  # NaN passes or fails every check alike
                raise ConfigError(f"{PARAMS_FILE}: gate.{name} must be a finite number, got {value!r}")
        if self.latency_samples < 1:
            raise ConfigError(
                f"{PARAMS_FILE}: gate.latency_samples must be at least 1 (the p95 needs samples), "
                f"got {self.latency_samples}"
            )


@dataclasses.dataclass(frozen=True)
class ServeParams:
    n_threads: int  # the scoring service's thread budget per worker process (single-row predictions)

    def __post_init__(self) -> None:
        if self.n_threads < 1:
            raise ConfigError(f"{PARAMS_FILE}: serve.n_threads must be at least 1, got {self.n_threads}")


@dataclasses.dataclass(frozen=True)
class RolloutParams:
    """`reprokit rollout`: the canary's steps and what each window must show (reprokit.release.rollout)."""

    steps: list  # percent of requests the canary answers, step by step, ending at 100
    window_seconds: float  # each step's observation window
    settle_seconds: float  # after a weight change, before the window opens: every instance's poll
    min_requests: int  # canary requests a window needs before any verdict
    max_windows: int  # windows at one step without enough traffic before the rollout holds
    max_error_ratio_increase: float  # canary 5xx share minus the stable model's
    max_p95_latency_ratio: float  # canary p95 latency over the stable model's
    max_score_psi: float  # PSI of canary vs stable scores, a breach when also significant at alpha
    alpha: float
    prometheus_url: str  # REPROKIT_PROMETHEUS_URL or --prometheus wins
    selector: str  # extra PromQL label matchers of the service's series, e.g. job="reprokit-serve"

    def __post_init__(self) -> None:
        where = f"{PARAMS_FILE}: rollout"
        steps = self.steps
        if not steps or not all(isinstance(s, (int, float)) and not isinstance(s, bool) for s in steps):
            raise ConfigError(f"{where}.steps: expected a list of percents, e.g. [5, 25, 50, 100]")
        if any(not 0 < s <= 100 for s in steps) or list(steps) != sorted(set(steps)) or steps[-1] != 100:
            raise ConfigError(f"{where}.steps: percents rising from above 0 to 100, got {steps}")
        if len(steps) < 2:  # the stable model's figures come from a step that still serves it
            raise ConfigError(f"{where}.steps: at least one step below 100 before 100, got {steps}")
        if self.window_seconds <= 0 or self.settle_seconds < 0 or self.min_requests < 1 or self.max_windows < 1:
            raise ConfigError(f"{where}: window_seconds > 0, settle_seconds >= 0, min_requests and max_windows >= 1")
        if not 0 < self.alpha < 1 or self.max_p95_latency_ratio <= 0 or self.max_score_psi <= 0:
            raise ConfigError(f"{where}: alpha between 0 and 1; max_p95_latency_ratio and max_score_psi above 0")
        if not 0 <= self.max_error_ratio_increase <= 1:
            raise ConfigError(f"{where}.max_error_ratio_increase: a share between 0 and 1")


@dataclasses.dataclass(frozen=True)
class BatchesParams:
    location_shift_sd: float  # numeric columns moved by this many reference standard deviations
    scale_factor: float  # numeric columns' spread around their mean multiplied by this
    category_share: float  # share of rows whose first categorical column becomes its rarest value
    new_category_share: float  # share of rows whose first categorical column gets a value no one has seen
    null_share: float  # share of rows whose nullable columns become null
    label_swap_share: float  # share of positive labels swapped with as many negative ones

    def __post_init__(self) -> None:
        for name in ("category_share", "new_category_share", "null_share", "label_swap_share"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"{PARAMS_FILE}: batches.{name} must be between 0 and 1")


@dataclasses.dataclass(frozen=True)
class MonitorParams:
    batch: str  # the batch the monitor stage checks
    alpha: float  # significance level, after the multiple-testing correction
    correction: str  # benjamini_hochberg | bonferroni
    bins: int  # reference quantile bins of a numeric column
    psi_warn: float  # effect-size floor: a column drifts only at or above this PSI
    psi_alert: float
    missing_rate_warn: float  # a null rate change at least this large (and significant) warns
    missing_rate_alert: float  # ... and one at least this large is an alert
    rejected_share_warn: float  # this share of rows breaking the contract warns
    min_rows: int  # a smaller batch is too small to judge: an error, not a verdict
    drifted_share_alert: float  # share of drifted columns that makes an alert
    max_auc_drop: float  # a significant AUC fall at least this large (batches with labels) alerts
    max_score_rows: int  # the scores' comparison uses a seeded sample of at most this many rows
    enforce: bool  # exit non-zero on an alert
    live_window: str  # the Prometheus rules' window over the service's live scores (e.g. 1h)
    live_min_scores: int  # the rules alert only once the window holds this many scores

    def __post_init__(self) -> None:
        if self.correction not in ("benjamini_hochberg", "bonferroni"):
            raise ConfigError(
                f"{PARAMS_FILE}: monitor.correction is {self.correction!r}; expected benjamini_hochberg or bonferroni"
            )
        if not 0 < self.alpha < 1:
            raise ConfigError(f"{PARAMS_FILE}: monitor.alpha must be between 0 and 1, got {self.alpha}")
        if self.min_rows < 1 or not 0 < self.missing_rate_warn <= self.missing_rate_alert:
            raise ConfigError(
                f"{PARAMS_FILE}: monitor.min_rows must be at least 1, and 0 < missing_rate_warn <= missing_rate_alert"
            )
        if self.bins < 2 or self.max_score_rows < 1:
            raise ConfigError(f"{PARAMS_FILE}: monitor.bins must be at least 2 and monitor.max_score_rows at least 1")
        import re

        if not re.fullmatch(r"[0-9]+[smhd]", self.live_window):
            raise ConfigError(f"{PARAMS_FILE}: monitor.live_window must be a duration like 30m or 1h")
        if not 0 < self.psi_warn <= self.psi_alert:
            raise ConfigError(f"{PARAMS_FILE}: monitor.psi_warn must be above 0 and at most monitor.psi_alert")


def _check_type(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint) or hint
    if origin in (typing.Union, types.UnionType):  # `X | None`: null or an X
        options = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        if value is None and len(options) < len(typing.get_args(hint)):
            return None
        return _check_type(value, options[0], where)
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
    """Read a YAML mapping with the rules DVC reads it by (ruamel.yaml, YAML 1.2: an unquoted
    `yes` is the string "yes", not True), so what a stage reads is what `dvc status` compares.
    Every error names the file."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    path = Path(path)
    try:
        data = YAML(typ="safe").load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: a folder, not a file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {yaml_problem(exc)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


_SECTIONS: dict[str, type] = {
    "base": BaseParams,
    "split": SplitParams,
    "scale": ScaleParams,
    "featurize": FeaturizeParams,
    "train": TrainParams,
    "tune": TuneParams,
    "evaluate": EvaluateParams,
    "package": PackageParams,
    "tracking": TrackingParams,
    "gate": GateParams,
    "serve": ServeParams,
    "rollout": RolloutParams,
    "batches": BatchesParams,
    "monitor": MonitorParams,
}


def load_section(name: str, params_file: str | Path = PARAMS_FILE) -> Any:
    """Load one `params.yaml` section into its typed dataclass."""
    data = read_yaml(params_file)
    if name not in data:
        raise ConfigError(f"{params_file}: missing section {name!r}")
    return section_from_mapping(_SECTIONS[name], data[name], f"{params_file}: {name}")


class StageParams:
    """The `params.yaml` keys one stage declares in `dvc.yaml`, and nothing else.

    `section("train")` needs the whole section declared; `value("base.seed")` needs that
    key (or its section). A test checks that each stage module's declared keys are
    exactly its `dvc.yaml` params.
    """

    def __init__(self, stage: str, declared: tuple[str, ...], params_file: str | Path = PARAMS_FILE):
        self.stage, self.declared, self.file = stage, tuple(declared), str(params_file)
        self._data = read_yaml(params_file)

    def section(self, name: str) -> Any:
        """A whole declared section as its typed dataclass."""
        require_declared(self.stage, self.file, self.declared, name)
        if name not in self._data:
            raise ConfigError(f"{self.file}: missing section {name!r}")
        return section_from_mapping(_SECTIONS[name], self._data[name], f"{self.file}: {name}")

    def value(self, key: str) -> Any:
        """One declared value, type-checked against its section's dataclass."""
        require_declared(self.stage, self.file, self.declared, key)
        section, _, field = key.partition(".")
        data = self._data.get(section)
        if not isinstance(data, Mapping) or field not in data:
            raise ConfigError(f"{self.file}: missing key {key}")
        hints = typing.get_type_hints(_SECTIONS[section])
        return _check_type(data[field], hints[field], f"{self.file}: {key}")

    def values(self) -> dict[str, Any]:
        """Every declared key with its value, flattened (for a model card)."""
        flat = flatten({k: v for k, v in self._data.items() if k in _SECTIONS})
        return {key: value for key, value in flat.items() if covers(self.declared, key)}


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
    "BatchesParams",
    "ConfigError",
    "EvaluateParams",
    "FeaturizeParams",
    "GateParams",
    "MODEL_KINDS",
    "MonitorParams",
    "PackageParams",
    "SplitParams",
    "StageParams",
    "TrackingParams",
    "TrainParams",
    "UndeclaredKeyError",
    "covers",
    "flatten",
    "load_section",
    "read_yaml",
    "require_declared",
    "section_from_mapping",
]
