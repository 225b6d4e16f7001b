"""Model files from a remote or a registry are untrusted: load only what the pipeline builds.

Anyone who can write to a DVC remote or an MLflow registry can hand the pipeline a
model file, and a skops archive names the types it is rebuilt from: a crafted one can
name `builtins.eval` as a function a transformer calls. So a model file is loaded
only if every type it names (each `__module__`.`__class__` in its schema, which is
where skops reads every type it imports) is in an exact allowlist:

- the types of the estimators this pipeline builds (`reprokit.model.estimators`), derived
  here by building and fitting every model kind and every transformer variant on a
  tiny synthetic table (`derive_placements`). The derivation takes seconds, so its
  result is committed as `reprokit/model/allowlist.py` with the library versions it was derived
  with, and every load reads that (or derives it, with other versions);
  `reprokit allowlist` writes it again after a new model kind or library upgrade,
  and a test fails while the two differ;
- plain data: Python containers and scalars, numpy arrays and their numeric dtypes.

Never a prefix: any other scikit-learn type is refused too. MLflow packages go through
the same check before MLflow opens them (`load_package`), whatever their `MLmodel`
file says is trusted: that file is written by whoever wrote the artifact.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from reprokit.core.errors import StageError

# Python and numpy values that carry data, never behaviour, each with the one way skops may
# rebuild it: none of these calls a constructor that could take attacker-chosen arguments
# (`numpy.ndarray` rebuilt from a list would allocate any shape, uninitialised).
NUMPY_SCALARS = (
    "bool_", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float16", "float32", "float64", "longdouble", "complex64", "complex128", "str_", "object_",
)  # fmt: skip
DATA_PAIRS = frozenset(
    {("builtins.dict", "DictNode"), ("builtins.list", "ListNode"), ("builtins.tuple", "TupleNode")}
    | {("builtins.slice", "SliceNode"), ("numpy.ndarray", "NdArrayNode"), ("numpy.dtype", "DTypeNode")}
    | {(f"builtins.{name}", "JsonNode") for name in ("str", "int", "float", "bool", "NoneType")}
    | {(f"builtins.{name}", "TypeNode") for name in ("str", "int", "float", "bool")}
    | {(f"numpy.{name}", loader) for name in NUMPY_SCALARS for loader in ("NdArrayNode", "TypeNode")}
)
DATA_TYPES = frozenset(name for name, _ in DATA_PAIRS)


class UntrustedFileError(StageError):
    """A model file names a type the pipeline never builds, or is not a model file it writes."""


MiB = 1 << 20


@dataclasses.dataclass(frozen=True)
class Limits:
    """What an untrusted model file or package may hold before anything in it is parsed. The
    defaults leave a wide margin over what the pipeline writes (the default package: a 0.9 MiB
    model file of 659 members inflating to 0.8 MiB, a 0.3 MiB schema 28 levels deep with
    18,000 nodes; a 300-tree random forest stays far below them too). Each is a setting:
    `REPROKIT_TRUST_<NAME>` in the environment (e.g. `REPROKIT_TRUST_ARCHIVE_BYTES`)."""

    file_bytes: int = 512 * MiB  # a model file on disk, and a package directory's files together
    files: int = 64  # files in a package directory
    archive_bytes: int = 1024 * MiB  # a skops archive's members, inflated, together
    member_bytes: int = 512 * MiB  # one member, inflated
    members: int = 200_000
    schema_bytes: int = 64 * MiB  # the archive's schema.json, inflated
    schema_depth: int = 200
    schema_nodes: int = 5_000_000
    metadata_bytes: int = 1 * MiB  # the MLmodel file


@functools.lru_cache(maxsize=1)
def limits() -> Limits:
    """`Limits`, with any `REPROKIT_TRUST_<NAME>` of the environment in place of its default."""
    import os

    values = {}
    for field in dataclasses.fields(Limits):
        variable = f"REPROKIT_TRUST_{field.name.upper()}"
        raw = os.environ.get(variable, "").strip()
        if raw:
            if not raw.isdigit() or int(raw) < 1:
                raise StageError(f"environment variable {variable} must be a positive whole number, got {raw!r}")
            values[field.name] = int(raw)
    return Limits(**values)


def read_bounded(path: Path, limit: int, where: str, what: str) -> bytes:
    """A regular file's bytes, refused (before reading) when larger than `limit` or not a plain file."""
    if path.is_symlink() or not path.is_file():
        raise UntrustedFileError(f"{where}: {what} is not a regular file")
    size = path.stat().st_size
    if size > limit:
        raise UntrustedFileError(f"{where}: {what} is {size:,} bytes, above the limit of {limit:,}")
    with open(path, "rb") as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:  # it grew while being read
        raise UntrustedFileError(f"{where}: {what} is above the limit of {limit:,} bytes")
    return data


def check_members(archive: zipfile.ZipFile, where: str) -> None:
    """Refuse an archive by its directory alone, before inflating anything: too many members,
    one too large, all too large together. Python's zipfile never inflates a member beyond the
    size its directory declares (a lying entry fails its CRC check), so these bound memory."""
    bounds = limits()
    members = archive.infolist()
    if len(members) > bounds.members:
        raise UntrustedFileError(f"{where}: {len(members):,} members, above the limit of {bounds.members:,}")
    total = 0
    for member in members:
        limit = bounds.schema_bytes if member.filename == "schema.json" else bounds.member_bytes
        if member.file_size > limit:
            raise UntrustedFileError(
                f"{where}: member {member.filename[:80]!r} inflates to {member.file_size:,} bytes, "
                f"above the limit of {limit:,}"
            )
        total += member.file_size
    if total > bounds.archive_bytes:
        raise UntrustedFileError(
            f"{where}: members inflate to {total:,} bytes together, above the limit of {bounds.archive_bytes:,}"
        )


def archive_placements(data: bytes, where: str = "model file") -> set[tuple[str, str, str]]:
    """Every node of a skops archive as (where it sits, `module.class`, `__loader__`). The
    place is its path in the schema with list positions as `*`; the loader decides how skops
    rebuilds the type (set the state, call the constructor, ...). The archive's member sizes
    and the schema's depth and node count are bounded (`limits`) before and while it is read."""
    bounds = limits()
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            check_members(archive, where)
            schema = json.loads(archive.read("schema.json"))
    except RecursionError:
        raise UntrustedFileError(f"{where}: its schema nests too deep to read") from None
    except (zipfile.BadZipFile, KeyError, ValueError, NotImplementedError, EOFError) as exc:
        raise UntrustedFileError(f"{where}: not a skops model file ({exc})") from None
    found: set[tuple[str, str, str]] = set()
    # Depth first, without recursion: (node, its path, list positions kept exactly, depth).
    todo: list[tuple[Any, str, bool, int]] = [(schema, "", False, 1)]
    nodes = 0
    while todo:
        node, path, exact, depth = todo.pop()
        nodes += 1
        if depth > bounds.schema_depth or nodes > bounds.schema_nodes:
            what = (
                f"nests deeper than {bounds.schema_depth} levels"
                if depth > bounds.schema_depth
                else (f"holds more than {bounds.schema_nodes:,} nodes")
            )
            raise UntrustedFileError(f"{where}: its schema {what}: not a model file this pipeline writes")
        if isinstance(node, dict):
            if "__class__" in node or "__module__" in node or "__loader__" in node:
                name = f"{node.get('__module__')}.{node.get('__class__')}"
                found.add((path, name, str(node.get("__loader__"))))
            tuple_node = node.get("__loader__") == "TupleNode"  # a tuple's slots mean different things
            for key, value in node.items():
                todo.append((value, f"{path}/{key}", tuple_node and key == "content", depth + 1))
        elif isinstance(node, list):
            for index, value in enumerate(node):
                todo.append((value, f"{path}/{index if exact else '*'}", False, depth + 1))
    return found


def archive_nodes(data: bytes, where: str = "model file") -> set[tuple[str, str]]:
    """Every (type, loader) pair a skops archive names."""
    return {(name, loader) for _, name, loader in archive_placements(data, where)}


def archive_types(data: bytes, where: str = "model file") -> set[str]:
    """Every type a skops archive names."""
    return {name for name, _ in archive_nodes(data, where)}


def _synthetic_contract():
    from reprokit.core.contract import Contract, Feature, Source, Target

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


def _is_data(name: str, loader: str) -> bool:
    return (name, loader) in DATA_PAIRS


def derive_placements() -> frozenset[tuple[str, str, str]]:
    """Every (place, type, loader) of an object (not plain data) in a model file the pipeline
    can write, from reference dumps of every model kind and every transformer variant, alone
    and as the package's pipeline."""
    import skops.io as sio
    from sklearn.pipeline import Pipeline

    from reprokit.core.config import MODEL_KINDS, FeaturizeParams, TrainParams
    from reprokit.model.estimators import build_model, build_transformer, served_pipeline

    contract = _synthetic_contract()
    inputs, y = _synthetic_inputs()
    small = {
        "hist_gradient_boosting": {"max_iter": 3, "early_stopping": True, "validation_fraction": 0.25},
        "random_forest": {"n_estimators": 2},
        "logistic_regression": {},
    }
    found: set[tuple[str, str, str]] = set()
    for scale in (True, False):
        transformer = build_transformer(contract, FeaturizeParams(scale, "median"))
        features = transformer.fit_transform(inputs)
        found |= archive_placements(sio.dumps(transformer))
        for kind in MODEL_KINDS:
            model = build_model(TrainParams(kind, **small), seed=0).fit(features, y)
            pipeline = Pipeline([("features", transformer), ("model", model)])  # packages before `inputs`
            found |= archive_placements(sio.dumps(model)) | archive_placements(sio.dumps(pipeline))
            found |= archive_placements(sio.dumps(served_pipeline(transformer, model)))
    return frozenset(entry for entry in found if not _is_data(entry[1], entry[2]))


def library_versions() -> dict[str, str]:
    """The versions the allowlist depends on: the libraries that build and dump the models."""
    from importlib.metadata import version

    return {name: version(name) for name in ("numpy", "scikit-learn", "skops")}


@functools.cache
def trusted_placements() -> frozenset[tuple[str, str, str]]:
    """The exact allowlist: `derive_placements()` as committed in `reprokit/model/allowlist.py`,
    or derived here (seconds) where the libraries differ from those it was derived with."""
    from reprokit.model.allowlist import PLACEMENTS, VERSIONS

    return PLACEMENTS if VERSIONS == library_versions() else derive_placements()


def allowlist_source(placements: frozenset[tuple[str, str, str]], versions: dict[str, str]) -> str:
    """The text of `reprokit/model/allowlist.py` holding `placements`, derived with `versions`."""
    lines = "".join(f"        {entry!r},\n" for entry in sorted(placements))
    return (
        '"""The trust allowlist: `reprokit.model.trust.derive_placements()`, written by `reprokit allowlist`.\n\n'
        "Generated, do not edit: tests/code/test_trust.py fails while it differs from the derivation\n"
        "(after a new model kind or a library upgrade, run `reprokit allowlist`). With other\n"
        'library versions than VERSIONS, `reprokit.model.trust` derives the allowlist itself."""\n\n'
        "# ruff: noqa: E501\n# fmt: off\n"
        f"VERSIONS = {versions!r}\n\n"
        f"PLACEMENTS = frozenset(\n    {{\n{lines}    }}\n)\n"
    )


def trusted_nodes() -> frozenset[tuple[str, str]]:
    """The allowed (type, loader) pairs: objects as the reference dumps hold them, and plain
    data rebuilt without constructors."""
    objects = {(name, loader) for _, name, loader in trusted_placements()}
    return frozenset(objects | DATA_PAIRS)


def trusted_types() -> frozenset[str]:
    """The types of the allowlist: what an `MLmodel` file may list as skops-trusted."""
    return frozenset(name for name, _ in trusted_nodes())


def check_archive(data: bytes, where: str) -> list[str]:
    """The archive's types, sorted, if every node is allowed: plain data anywhere, and each
    object only as a type, loader and place the pipeline's own files hold it. Otherwise
    `UntrustedFileError`: an allowed class where another belongs (a tree as a loss) is refused
    like a foreign one."""
    placements = archive_placements(data, where)
    names = {name for _, name, _ in placements}
    foreign = sorted(names - trusted_types())
    if foreign:
        raise UntrustedFileError(
            f"{where}: refusing to load untrusted types {foreign}: this pipeline never builds them "
            "(a model file from a remote or a registry may have been tampered with)"
        )
    rebuilt = sorted(
        f"{name} by {loader}" for name, loader in {(name, loader) for _, name, loader in placements} - trusted_nodes()
    )
    if rebuilt:
        raise UntrustedFileError(f"{where}: refusing to rebuild {rebuilt}: this pipeline never saves them that way")
    allowed = trusted_placements()
    misplaced = sorted(
        f"{name} at {path or '/'}"
        for path, name, loader in placements
        if not _is_data(name, loader) and (path, name, loader) not in allowed
    )
    if misplaced:
        raise UntrustedFileError(f"{where}: refusing {misplaced[:3]}: this pipeline never puts them there")
    return sorted(names)


def load_skops(path: str | Path, shown: str | None = None) -> Any:
    """Load a skops model file, only if every type and loader it names is in the allowlist
    and the object is shaped as the pipeline shapes it (`check_model`)."""
    import skops.io as sio

    path = Path(path)
    label = shown or str(path)
    data = read_bounded(path, limits().file_bytes, label, "the model file")
    loaded = sio.loads(data, trusted=check_archive(data, label))
    try:
        check_model(loaded, label)
    except (AttributeError, TypeError, ValueError, IndexError, KeyError) as exc:  # attributes missing or odd
        raise UntrustedFileError(f"{label}: not a fitted model this pipeline writes ({exc})") from None
    return loaded


def safe_yaml(text: str, where: str) -> Any:
    """YAML from an untrusted file: plain data only (`yaml.safe_load`), and no aliases, which
    let a few bytes expand to gigabytes (MLflow never writes them)."""
    import yaml

    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.AliasEvent):
            raise UntrustedFileError(f"{where}: YAML aliases are not something MLflow writes")
    return yaml.safe_load(text)


def check_directory(model_dir: Path, where: str) -> None:
    """Refuse a package directory before copying or reading it: only regular files (a link
    could point at /dev/zero or outside), at most `files` of them and `file_bytes` together."""
    bounds = limits()
    total, count = 0, 0
    for root, dirs, files in os.walk(model_dir, followlinks=False):
        for name in dirs + files:
            path = Path(root) / name
            if path.is_symlink() or not (path.is_dir() or path.is_file()):
                raise UntrustedFileError(f"{where}: {path.relative_to(model_dir)} is a link or special file")
        for name in files:
            count += 1
            total += (Path(root) / name).stat().st_size
        if count > bounds.files or total > bounds.file_bytes:
            raise UntrustedFileError(
                f"{where}: more than {bounds.files} files or {bounds.file_bytes:,} bytes: not a package this "
                "pipeline writes"
            )


def _refuse(where: str, what: str) -> None:
    raise UntrustedFileError(f"{where}: {what}: not a model file this pipeline writes")


def _vector(value: Any, length: int) -> bool:
    import numpy as np

    return isinstance(value, np.ndarray) and value.shape == (length,)


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


def _check_encoder(encoder, where: str) -> None:
    """A one-hot encoder's cached layout, recomputed: compiled code sizes its output by it."""
    import numpy as np

    n = encoder.n_features_in_
    if type(n) is not int or encoder._infrequent_enabled or len(encoder.categories_) != n:
        _refuse(where, "an encoder with infrequent categories or the wrong number of category lists")
    if any(not isinstance(c, np.ndarray) or c.ndim != 1 for c in encoder.categories_):
        _refuse(where, "an encoder whose categories are not flat arrays")
    for categories in encoder.categories_:
        # Numeric categories are looked up with a binary search that trusts their order: out of
        # order, a value lands one column past the output (scikit-learn sorts them when fitting).
        if categories.dtype.kind in "biuf" and not bool(np.all(categories[1:] > categories[:-1])):
            _refuse(where, "an encoder whose numeric categories are not in increasing order")
        if categories.dtype.kind not in "biufOU":
            _refuse(where, f"an encoder with categories of dtype {categories.dtype}")
    for drops in (encoder.drop_idx_, encoder._drop_idx_after_grouping):
        if drops is None:
            continue
        if (
            not _vector(drops, n)
            or drops.dtype.kind not in "iuO"
            or any(
                d is not None and (not isinstance(d, (int, np.integer)) or not 0 <= int(d) < len(c))
                for d, c in zip(drops, encoder.categories_, strict=True)
            )
        ):
            _refuse(where, "an encoder that drops categories it does not have")
    widths = encoder._n_features_outs  # transform does list arithmetic on it: a list of ints, exactly
    if type(widths) is not list or any(type(w) is not int for w in widths):
        _refuse(where, "an encoder whose cached output widths are not a list of integers")
    if widths != list(encoder._compute_n_features_outs()):
        _refuse(where, "an encoder whose output width does not follow from its categories")


def _check_step(step, where: str) -> None:
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    n = step.n_features_in_
    if type(n) is not int:
        _refuse(where, "a feature step whose input width is not an integer")
    if type(step) is SimpleImputer:
        if not _vector(step.statistics_, n):
            _refuse(where, "an imputer with the wrong number of fill values")
        if step.add_indicator or getattr(step, "indicator_", None) is not None:
            _refuse(where, "an imputer with a missing-value indicator, which this pipeline never builds")
    elif type(step) is StandardScaler:
        if any(v is not None and not _vector(v, n) for v in (step.mean_, step.scale_, step.var_)):
            _refuse(where, "a scaler with the wrong number of means or scales")
    elif type(step) is OneHotEncoder:
        _check_encoder(step, where)
    else:
        _refuse(where, f"a {type(step).__name__} among the feature steps")


def check_transformer(transformer, where: str) -> int:
    """A `ColumnTransformer` of the shape `featurize` builds; returns its output width."""
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline

    if type(transformer) is not ColumnTransformer:
        _refuse(where, f"a {type(transformer).__name__} where the feature transformer belongs")
    if transformer.n_jobs not in (None, 1):
        _refuse(where, "a transformer that runs its own parallel jobs")
    for _, part, _ in transformer.transformers_:
        if isinstance(part, str):
            if part != "drop":
                _refuse(where, f"a {part!r} column group")
            continue
        steps = [step for _, step in part.steps] if type(part) is Pipeline else [part]
        for step in steps:
            _check_step(step, where)
    try:
        return len(transformer.get_feature_names_out())
    except Exception as exc:  # an inconsistent state that Python code notices
        raise UntrustedFileError(f"{where}: the feature transformer is inconsistent ({exc})") from None


def check_estimator(model, where: str, n_features: int | None = None) -> None:
    """One of the model kinds `train` builds, with arrays shaped as fitting shapes them and
    trees whose indices stay in range."""
    import numpy as np
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.ensemble._hist_gradient_boosting.common import PREDICTOR_RECORD_DTYPE
    from sklearn.linear_model import LogisticRegression
    from sklearn.tree import DecisionTreeClassifier

    n = model.n_features_in_ if hasattr(model, "n_features_in_") else None
    if type(n) is not int:
        _refuse(where, "a model whose input width is not an integer")
    if n_features is not None and n != n_features:
        _refuse(where, f"a model expecting {n} features after a transformer making {n_features}")
    if len(getattr(model, "classes_", ())) != 2:
        _refuse(where, "a model that is not a fitted binary classifier")
    if type(model) is LogisticRegression:
        if model.coef_.shape != (1, n) or model.intercept_.shape != (1,):
            _refuse(where, "a logistic regression with coefficients of the wrong shape")
    elif type(model) is HistGradientBoostingClassifier:
        from sklearn._loss._loss import CyHalfBinomialLoss
        from sklearn._loss.link import LogitLink
        from sklearn._loss.loss import HalfBinomialLoss

        loss = model._loss
        if type(loss) is not HalfBinomialLoss or type(loss.closs) is not CyHalfBinomialLoss:
            _refuse(where, "gradient boosting with a loss other than the binomial one it is fitted with")
        if type(loss.link) is not LogitLink:
            _refuse(where, "gradient boosting with a link other than the logit")
        categorical = model.is_categorical_
        if model._preprocessor is not None or (categorical is not None and categorical.any()):
            _refuse(where, "native categorical features, which this pipeline never builds")
        if model.n_trees_per_iteration_ != 1 or np.shape(model._baseline_prediction) != (1, 1):
            _refuse(where, "gradient boosting shaped for more than two classes")
        for predictors in model._predictors:
            if len(predictors) != 1:
                _refuse(where, "gradient boosting with several trees per iteration")
            nodes = predictors[0].nodes
            if not isinstance(nodes, np.ndarray) or nodes.ndim != 1 or nodes.dtype != PREDICTOR_RECORD_DTYPE:
                _refuse(where, "a gradient-boosting tree whose node records are not laid out as scikit-learn's")
            if nodes["is_categorical"].any():
                _refuse(where, "a categorical split, which this pipeline never builds")
            _check_nodes(nodes["left"], nodes["right"], nodes["feature_idx"], nodes["is_leaf"] != 0, n, where)
    elif type(model) is RandomForestClassifier:
        if model.n_jobs not in (None, 1):
            _refuse(where, "a forest that runs its own parallel jobs (train saves it with none)")
        if model.n_outputs_ != 1:
            _refuse(where, "a forest with several outputs")
        for tree_model in model.estimators_:
            if type(tree_model) is not DecisionTreeClassifier or tree_model.n_features_in_ != n:
                _refuse(where, "a forest member that is not a tree over the same features")
            tree = tree_model.tree_
            shaped = tree.n_outputs == 1 and tree.max_n_classes == 2 and list(tree.n_classes) == [2]
            if not shaped or tree.n_features != n or tree.value.shape != (tree.node_count, 1, 2):
                _refuse(where, "a tree whose shape differs from its forest's")
            leaf = tree.children_left == -1
            if ((tree.children_right == -1) != leaf).any():
                raise UntrustedFileError(f"{where}: a tree in it has half-leaf nodes")
            _check_nodes(tree.children_left, tree.children_right, tree.feature, leaf, n, where)
    else:
        _refuse(where, f"a {type(model).__name__} as the model")


def check_inputs_step(step, transformer, where: str) -> None:
    """The package's `inputs` step exactly as `reprokit.model.estimators.served_pipeline` builds it:
    `pandas.DataFrame` called with the transformer's own columns and the object dtype."""
    import pandas as pd
    from sklearn.preprocessing import FunctionTransformer

    expected = FunctionTransformer(
        pd.DataFrame, kw_args={"columns": [str(name) for name in transformer.feature_names_in_], "dtype": object}
    ).get_params()
    if type(step) is not FunctionTransformer or step.get_params() != expected:
        _refuse(where, "an inputs step other than the one the package builds")


def check_model(obj: Any, where: str) -> None:
    """The loaded object is one of the three things this pipeline saves (a feature
    transformer, a model, or the package's pipeline of both), with every fitted array that
    compiled code indexes checked against the rest. skops guards against code named in the
    file; this guards against numbers that make compiled code read or write out of bounds."""
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline

    if type(obj) is Pipeline:
        names = [name for name, _ in obj.steps]
        if names not in (["inputs", "features", "model"], ["features", "model"]):
            _refuse(where, "a pipeline whose steps are not (inputs,) features then model")
        width = check_transformer(obj.named_steps["features"], where)
        if names[0] == "inputs":
            check_inputs_step(obj.named_steps["inputs"], obj.named_steps["features"], where)
        check_estimator(obj.named_steps["model"], where, width)
    elif type(obj) is ColumnTransformer:
        check_transformer(obj, where)
    else:
        check_estimator(obj, where)


# The MLmodel file `package` writes, key by key: anything else could make MLflow load other
# files (`data`), trust other types (`skops_trusted_types`) or call other methods.
MLMODEL_KEYS = {
    "flavors",
    "is_signature_from_type_hint",
    "metadata",
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


def check_package(model_dir: str | Path, shown: str | None = None) -> tuple[dict, Any]:
    """Refuse an MLflow model directory unless it is exactly the kind `package` writes: a
    scikit-learn flavor serialized with skops (pickle runs code on load), no custom code, no
    extra files for MLflow to load, `predict_proba` as the served method, trusted types and
    the skops file's own types all within the allowlist, and well-formed trees. Returns the
    `MLmodel` file's content and the pipeline, loaded through the same checks."""
    import yaml

    model_dir = Path(model_dir)
    label = shown or str(model_dir)
    try:
        text = read_bounded(model_dir / "MLmodel", limits().metadata_bytes, label, "MLmodel").decode("utf-8")
        mlmodel = safe_yaml(text, f"{label}/MLmodel")
        flavors = mlmodel["flavors"]
        sklearn, pyfunc = flavors["sklearn"], flavors["python_function"]
    except (OSError, UnicodeDecodeError, yaml.YAMLError, KeyError, TypeError) as exc:
        raise UntrustedFileError(f"{label}: not an MLflow scikit-learn model ({exc})") from None
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
        raise UntrustedFileError(f"{label}: not a package this pipeline writes: {'; '.join(problems)}")
    return mlmodel, load_skops(model_dir / file, shown=f"{label}/{file}")  # before MLflow opens it


def main(argv: list[str] | None = None) -> None:
    """`reprokit allowlist [--check]`: write the derived allowlist to
    `reprokit/model/allowlist.py`, or exit 1 if the committed one differs."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 if the file differs")
    args = parser.parse_args(argv)
    path = Path(__file__).with_name("allowlist.py")
    placements = derive_placements()
    text = allowlist_source(placements, library_versions())
    current = path.read_text() if path.exists() else ""
    if args.check:
        sys.exit(0 if current == text else f"{path}: differs from the derived allowlist; run reprokit allowlist")
    if current != text:
        path.write_text(text)
    print(f"{path}: {len(placements)} entries")


@dataclasses.dataclass(frozen=True)
class OpenedPackage:
    """A checked package without MLflow: what scoring needs from its `MLmodel` file (read
    as MLflow writes it) and the fitted pipeline that `pyfunc` would wrap."""

    input_names: list[str]
    metadata: dict
    model_uuid: str
    pipeline: Any


def _local_copy(uri: str | Path, into: str) -> Path:
    """A private copy of a package directory (what is checked is what is then read), or a
    `models:/` (or other MLflow artifact) URI downloaded from the registry."""
    import shutil

    if Path(uri).is_dir():
        check_directory(Path(uri), str(uri))
        return Path(shutil.copytree(uri, Path(into) / "package", symlinks=True))
    if ":/" not in str(uri):  # a local path, not a URI MLflow could download
        raise StageError(f"{uri}: no such package directory")
    import mlflow.artifacts

    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=str(uri), dst_path=into))
    check_directory(local, str(uri))
    return local


def open_package(uri: str | Path) -> OpenedPackage:
    """`check_package` for a package directory or a `models:/` URI, and its pipeline as
    `mlflow.pyfunc.load_model(...).get_raw_model()` gives it, without importing MLflow for a
    directory (scoring processes then start seconds sooner)."""
    with tempfile.TemporaryDirectory(prefix="reprokit-package-") as tmp:
        mlmodel, pipeline = check_package(_local_copy(uri, tmp), shown=str(uri))
    try:
        inputs = json.loads(mlmodel["signature"]["inputs"])
        names = [str(column["name"]) for column in inputs]
    except (KeyError, TypeError, ValueError) as exc:
        raise UntrustedFileError(f"{uri}: the MLmodel file has no readable input signature ({exc})") from None
    metadata, uuid = mlmodel.get("metadata") or {}, mlmodel.get("model_uuid")
    if not isinstance(metadata, dict) or not isinstance(uuid, str) or not uuid:
        raise UntrustedFileError(f"{uri}: the MLmodel file's metadata or model_uuid is not what package writes")
    return OpenedPackage(names, metadata, uuid, pipeline)


def load_package(uri: str | Path):
    """`mlflow.pyfunc.load_model` for a package directory or a `models:/` URI, after
    `check_package`: a registry model is downloaded first and checked where it lies."""
    import mlflow.pyfunc

    with tempfile.TemporaryDirectory(prefix="reprokit-package-") as tmp:
        local = _local_copy(uri, tmp)
        check_package(local, shown=str(uri))
        return mlflow.pyfunc.load_model(str(local))


if __name__ == "__main__":
    main()
