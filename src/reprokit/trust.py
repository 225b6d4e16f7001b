"""Model files from a remote or a registry are untrusted: load only what the pipeline builds.

Anyone who can write to a DVC remote or an MLflow registry can hand the pipeline a
model file, and a skops archive names the types it is rebuilt from: a crafted one can
name `builtins.eval` as a function a transformer calls. So a model file is loaded
only if every type it names (each `__module__`.`__class__` in its schema, which is
where skops reads every type it imports) is in an exact allowlist:

- the types of the estimators this pipeline builds (`reprokit.estimators`), derived
  here by building and fitting every model kind and every transformer variant on a
  tiny synthetic table, so a new model kind or library version updates the list;
- plain data: Python containers and scalars, numpy arrays and their numeric dtypes.

Never a prefix: any other scikit-learn type is refused too. MLflow packages go through
the same check before MLflow opens them (`load_package`), whatever their `MLmodel`
file says is trusted: that file is written by whoever wrote the artifact.
"""

from __future__ import annotations

import functools
import io
import json
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from reprokit.stage import StageError

# Python and numpy values that carry data, never behaviour.
DATA_TYPES = frozenset(
    {f"builtins.{name}" for name in ("dict", "list", "tuple", "str", "int", "float", "bool", "NoneType", "slice")}
    | {"numpy.ndarray", "numpy.dtype"}
    | {
        f"numpy.{name}"
        for name in (
            "bool_", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
            "float16", "float32", "float64", "longdouble", "complex64", "complex128", "str_", "object_",
        )
    }
)  # fmt: skip


class UntrustedFileError(StageError):
    """A model file names a type the pipeline never builds, or is not a model file it writes."""


def archive_types(data: bytes, where: str = "model file") -> set[str]:
    """Every type a skops archive names: `module.class` of each node in its schema."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            schema = json.loads(archive.read("schema.json"))
    except (zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise UntrustedFileError(f"{where}: not a skops model file ({exc})") from None
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "__class__" in node or "__module__" in node:
                found.add(f"{node.get('__module__')}.{node.get('__class__')}")
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return found


def _synthetic_contract():
    from reprokit.contract import Contract, Feature, Source, Target

    features = (
        Feature("amount", "numeric", nullable=True),
        Feature("count", "integer"),
        Feature("flag", "binary", values=(0, 1)),
        Feature("answer", "binary", values=("no", "yes")),
        Feature("kind", "categorical", values=("a", "b", "c")),
    )
    return Contract("allowlist", Source("synthetic.csv", "synthetic.csv"), Target("label", 1, 0), features)


def _synthetic_inputs(rows: int = 60):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    amount = rng.normal(50, 10, rows)
    amount[::7] = np.nan
    frame = pd.DataFrame(
        {
            "amount": amount,
            "count": rng.integers(0, 10, rows).astype("float64"),
            "flag": rng.integers(0, 2, rows).astype("float64"),
            "answer": rng.choice(["no", "yes"], rows),
            "kind": rng.choice(["a", "b", "c"], rows),
        }
    )
    return frame, np.arange(rows) % 2


@functools.cache
def trusted_types() -> frozenset[str]:
    """The exact allowlist: every type in a model file the pipeline can write, plus plain data."""
    import skops.io as sio
    from sklearn.pipeline import Pipeline

    from reprokit.config import MODEL_KINDS, FeaturizeParams, TrainParams
    from reprokit.estimators import build_model, build_transformer

    contract = _synthetic_contract()
    inputs, y = _synthetic_inputs()
    small = {
        "hist_gradient_boosting": {"max_iter": 3, "early_stopping": True, "validation_fraction": 0.25},
        "random_forest": {"n_estimators": 2},
        "logistic_regression": {},
    }
    found = set(DATA_TYPES)
    for scale in (True, False):
        transformer = build_transformer(contract, FeaturizeParams(scale, "median"))
        features = transformer.fit_transform(inputs)
        found |= archive_types(sio.dumps(transformer))
        for kind in MODEL_KINDS:
            model = build_model(TrainParams(kind, **small), seed=0).fit(features, y)
            pipeline = Pipeline([("features", transformer), ("model", model)])
            found |= archive_types(sio.dumps(model)) | archive_types(sio.dumps(pipeline))
    return frozenset(found)


def check_archive(data: bytes, where: str) -> list[str]:
    """The archive's types, sorted, if all are allowed; otherwise `UntrustedFileError`."""
    named = archive_types(data, where)
    foreign = sorted(named - trusted_types())
    if foreign:
        raise UntrustedFileError(
            f"{where}: refusing to load untrusted types {foreign}: this pipeline never builds them "
            "(a model file from a remote or a registry may have been tampered with)"
        )
    return sorted(named)


def load_skops(path: str | Path) -> Any:
    """Load a skops model file, only if every type it names is in the allowlist and every
    tree in it is well formed (`check_trees`)."""
    import skops.io as sio

    path = Path(path)
    data = path.read_bytes()
    loaded = sio.loads(data, trusted=check_archive(data, str(path)))
    check_trees(loaded, str(path))
    return loaded


def _estimators(obj: Any):
    """`obj` and every estimator inside it: pipeline steps and column transformers."""
    yield obj
    for _, step in getattr(obj, "steps", None) or []:
        yield from _estimators(step)
    for _, transformer, _ in getattr(obj, "transformers_", None) or []:
        if not isinstance(transformer, str):
            yield from _estimators(transformer)


def _check_nodes(left, right, feature, is_leaf, n_features: int, where: str) -> None:
    """Children after their parent and inside the array, features inside the input: the
    compiled prediction code follows these indices without bounds checks."""
    import numpy as np

    count = len(left)
    index = np.arange(count)
    inner = ~is_leaf
    bad = (
        (count == 0)
        or np.any(inner & ((left <= index) | (left >= count) | (right <= index) | (right >= count)))
        or np.any(inner & ((feature < 0) | (feature >= n_features)))
    )
    if bad:
        raise UntrustedFileError(f"{where}: a tree in it has node or feature indices out of range")


def check_trees(obj: Any, where: str) -> None:
    """Refuse fitted trees whose node arrays point outside themselves or the input. skops
    itself distrusts these types for that reason; the pipeline builds them, so it checks them."""
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier

    for estimator in _estimators(obj):
        if isinstance(estimator, HistGradientBoostingClassifier) and hasattr(estimator, "_predictors"):
            categorical = getattr(estimator, "is_categorical_", None)
            if categorical is not None and categorical.any():
                raise UntrustedFileError(f"{where}: native categorical splits, which this pipeline never builds")
            for predictors in estimator._predictors:
                for predictor in predictors:
                    nodes = predictor.nodes
                    if nodes["is_categorical"].any():
                        raise UntrustedFileError(f"{where}: a categorical split, which this pipeline never builds")
                    leaf = nodes["is_leaf"].astype(bool)
                    _check_nodes(
                        nodes["left"], nodes["right"], nodes["feature_idx"], leaf, estimator.n_features_in_, where
                    )
        if isinstance(estimator, RandomForestClassifier) and hasattr(estimator, "estimators_"):
            for tree_model in estimator.estimators_:
                tree = tree_model.tree_
                if tree.n_features != estimator.n_features_in_ or tree_model.n_features_in_ != tree.n_features:
                    raise UntrustedFileError(f"{where}: a tree's feature count differs from the forest's")
                leaf = tree.children_left == -1
                if ((tree.children_right == -1) != leaf).any():
                    raise UntrustedFileError(f"{where}: a tree in it has half-leaf nodes")
                _check_nodes(tree.children_left, tree.children_right, tree.feature, leaf, tree.n_features, where)


# The MLmodel file `package` writes, key by key: anything else could make MLflow load other
# files (`data`), trust other types (`skops_trusted_types`) or call other methods.
MLMODEL_KEYS = {
    "flavors",
    "is_signature_from_type_hint",
    "mlflow_version",
    "model_id",
    "model_size_bytes",
    "model_uuid",
    "prompts",
    "saved_input_example_info",
    "signature",
    "type_hint_from_example",
    "run_id",
    "artifact_path",
    "utc_time_created",
}
PYFUNC_KEYS = {"env", "loader_module", "model_path", "predict_fn", "python_version"}
SKLEARN_KEYS = {"code", "pickled_model", "serialization_format", "sklearn_version", "skops_trusted_types"}


def check_package(model_dir: str | Path) -> None:
    """Refuse an MLflow model directory unless it is exactly the kind `package` writes: a
    scikit-learn flavor serialized with skops (pickle runs code on load), no custom code, no
    extra files for MLflow to load, `predict_proba` as the served method, trusted types and
    the skops file's own types all within the allowlist, and well-formed trees."""
    import yaml

    model_dir = Path(model_dir)
    try:
        mlmodel = yaml.safe_load((model_dir / "MLmodel").read_text())
        flavors = mlmodel["flavors"]
        sklearn, pyfunc = flavors["sklearn"], flavors["python_function"]
    except (OSError, yaml.YAMLError, KeyError, TypeError) as exc:
        raise UntrustedFileError(f"{model_dir}: not an MLflow scikit-learn model ({exc})") from None
    problems = []
    for where, found, allowed in (
        ("MLmodel", mlmodel, MLMODEL_KEYS),
        ("python_function flavor", pyfunc, PYFUNC_KEYS),
        ("sklearn flavor", sklearn, SKLEARN_KEYS),
    ):
        if not isinstance(found, dict) or set(found) - allowed:
            problems.append(f"{where} keys {sorted(set(found) - allowed) if isinstance(found, dict) else found}")
    if set(flavors) != {"sklearn", "python_function"}:
        problems.append(f"flavors {sorted(flavors)}")
    if sklearn.get("serialization_format") != "skops":
        problems.append(f"serialization {sklearn.get('serialization_format')!r} instead of skops")
    if pyfunc.get("loader_module") != "mlflow.sklearn":
        problems.append(f"loader {pyfunc.get('loader_module')!r}")
    if pyfunc.get("predict_fn") != "predict_proba":
        problems.append(f"predict_fn {pyfunc.get('predict_fn')!r}")
    if sklearn.get("code") or pyfunc.get("code"):
        problems.append("custom code")
    trusted = sklearn.get("skops_trusted_types") or []
    if not isinstance(trusted, list) or set(map(str, trusted)) - trusted_types():
        problems.append(f"skops_trusted_types beyond the allowlist: {trusted}")
    file = sklearn.get("pickled_model")
    if file != pyfunc.get("model_path") or not isinstance(file, str) or "/" in file or file.startswith("."):
        problems.append(f"model file {file!r}")
    if problems:
        raise UntrustedFileError(f"{model_dir}: not a package this pipeline writes: {'; '.join(problems)}")
    load_skops(model_dir / file)  # the types and the trees, before MLflow opens the file


def load_package(uri: str | Path):
    """`mlflow.pyfunc.load_model` for a package directory or a `models:/` URI, after
    `check_package`: a registry model is downloaded first and checked where it lies."""
    import mlflow.pyfunc

    local = Path(uri)
    if local.is_dir():
        check_package(local)
        return mlflow.pyfunc.load_model(str(local))
    import mlflow.artifacts

    with tempfile.TemporaryDirectory(prefix="reprokit-package-") as tmp:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=str(uri), dst_path=tmp))
        check_package(local)
        return mlflow.pyfunc.load_model(str(local))
