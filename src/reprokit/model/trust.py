"""Model files from a remote or a registry are untrusted: load only what the pipeline builds.

Anyone who can write to a DVC remote or an MLflow registry can hand the pipeline a
model file, and a skops archive names the types it is rebuilt from: a crafted one can
name `builtins.eval` as a function a transformer calls. So a model file is loaded
only if every type it names (each `__module__`.`__class__` in its schema, which is
where skops reads every type it imports) is in an exact allowlist:

- the types of the estimators this pipeline builds, each at the place and with the loader
  the pipeline's own files hold it (`reprokit.model.derivation`, committed as `allowlist.py`);
- plain data: Python containers and scalars, numpy arrays and their numeric dtypes.

Never a prefix: any other scikit-learn type is refused too. MLflow packages go through
the same check before MLflow opens them (`load_package`), whatever their `MLmodel`
file says is trusted: that file is written by whoever wrote the artifact.

The jobs: sizes are bounded before anything is parsed (`reprokit.model.archives`); the
archive's nodes are compared with the allowlist (`check_archive`); the rebuilt object's
fitted arrays are checked (`reprokit.model.structure`); an MLflow package's files and
`MLmodel` keys are checked (`check_package`) before it is opened (`open_package`, `load_package`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from reprokit.core.errors import StageError, yaml_problem
from reprokit.model.archives import (
    UntrustedFileError,
    archive_placements,
    is_data,
    limits,
    read_bounded,
)
from reprokit.model.derivation import (
    trusted_nodes,
    trusted_placements,
    trusted_types,
)
from reprokit.model.structure import (
    check_model,
)


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
        if not is_data(name, loader) and (path, name, loader) not in allowed
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
        raise UntrustedFileError(f"{label}: not an MLflow scikit-learn model (MLmodel: {yaml_problem(exc)})") from None
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
        names = signature_names(mlmodel)
    except (KeyError, TypeError, ValueError) as exc:
        raise UntrustedFileError(f"{uri}: the MLmodel file has no readable input signature ({exc})") from None
    metadata, uuid = mlmodel.get("metadata") or {}, mlmodel.get("model_uuid")
    if not isinstance(metadata, dict) or not isinstance(uuid, str) or not uuid:
        raise UntrustedFileError(f"{uri}: the MLmodel file's metadata or model_uuid is not what package writes")
    return OpenedPackage(names, metadata, uuid, pipeline)


def signature_names(mlmodel: dict) -> list[str]:
    """The input column names of an `MLmodel` file's signature, in its order (KeyError, TypeError
    or ValueError when it has none that can be read)."""
    return [str(column["name"]) for column in json.loads(mlmodel["signature"]["inputs"])]


def in_signature_order(contract, names: list[str]):
    """`contract` with its features in the order of the signature's `names`, as the model takes
    them; None when the two do not name the same columns."""
    by_name = {f.name: f for f in contract.features}
    if sorted(names) != sorted(by_name):
        return None
    return dataclasses.replace(contract, features=tuple(by_name[name] for name in names))


def package_contract(uri: str | Path):
    """The contract a package directory's `MLmodel` file carries, read (bounded, plain YAML, no
    model loaded) so that a command can check its input before it spends seconds loading the
    model; None for a registry URI or a file that does not say (loading then says what is wrong).
    The model's own load re-reads and checks everything."""
    import yaml

    from reprokit.core.contract import parse_contract

    directory = Path(uri)
    if ":/" in str(uri) or not directory.is_dir():
        return None
    try:
        text = read_bounded(directory / "MLmodel", limits().metadata_bytes, str(uri), "MLmodel").decode("utf-8")
        mlmodel = safe_yaml(text, f"{uri}/MLmodel")
        names = signature_names(mlmodel)
        contract = parse_contract(mlmodel["metadata"]["reprokit"]["contract"], where=f"{uri} (MLmodel metadata)")
    except (OSError, UnicodeDecodeError, yaml.YAMLError, KeyError, TypeError, ValueError, StageError):
        return None
    return in_signature_order(contract, names)  # as ScoringModel.load orders it


def load_package(uri: str | Path, *, check_requirements: bool = True):
    """`mlflow.pyfunc.load_model` for a package directory or a `models:/` URI, after
    `check_package` (a registry model is downloaded first and checked where it lies), with
    `predict` under the input policy (`reprokit.model.pyfunc.CheckedPyFunc`).
    `check_requirements=False` skips MLflow's warnings about installed library and Python
    versions that differ from the package's: for the package stage, which has just written
    them from the running ones (a parse of every requirement, 0.15-0.45 s)."""
    import mlflow.pyfunc

    from reprokit.core.contract import parse_contract
    from reprokit.model.pyfunc import CheckedPyFunc

    with tempfile.TemporaryDirectory(prefix="reprokit-package-") as tmp:
        local = _local_copy(uri, tmp)
        mlmodel, _ = check_package(local, shown=str(uri))
        model = mlflow.pyfunc.load_model(str(local), suppress_warnings=not check_requirements)
    meta = (mlmodel.get("metadata") or {}).get("reprokit")
    if not isinstance(meta, dict) or "contract" not in meta:
        raise UntrustedFileError(f"{uri}: the package does not carry its contract; re-run `dvc repro`")
    return CheckedPyFunc(model, parse_contract(meta["contract"], where=f"{uri} (MLmodel metadata)"))
