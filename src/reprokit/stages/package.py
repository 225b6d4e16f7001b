"""Stage `package`: one self-contained, servable MLflow model directory and a model card.

The directory holds the whole inference pipeline (fitted transformer + model), so
serving applies exactly the training transformation. It is saved in MLflow's model
format with skops serialization, an input signature, an input example and pinned
requirements, then made byte-stable: the skops archive is canonicalized, the
creation time is dropped, `model_uuid` becomes a hash of the model's bytes, the
Python version is recorded as major.minor (the patch release of the interpreter
that happened to build it is not part of the model), and the environment files
(`requirements.txt`, `python_env.yaml`, `conda.yaml`) are written from the runtime lock
alone: MLflow writes them from the running environment, whose build tools (pip,
setuptools, wheel) depend on the installer that made it. Before the directory replaces
the old one it is loaded back as MLflow serves it (through `reprokit.model.trust.load_package`)
and must reproduce evaluate's test probabilities exactly; otherwise the old package stays.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import sys
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
import yaml

from reprokit.core.artifacts import (
    canonical_skops_bytes,
    fresh_dir,
    md5_file,
    write_bytes_atomic,
)
from reprokit.core.config import StageParams
from reprokit.core.contract import Contract, load_stage_contract
from reprokit.core.errors import StageError
from reprokit.core.lockfile import RUNTIME_LOCK, locked_versions, normalized, pins
from reprokit.core.running import add_debug_option, run_stage
from reprokit.model.inference import inputs_of, load_pipeline, served_proba
from reprokit.model.scoring import conform, input_schema, signature_inputs

# The keys this stage reads: exactly its params in dvc.yaml (tests/code/test_pipeline_definition.py).
# The model card lists every param that shaped the model, so the stage declares them all.
PARAMS = ("base", "split", "featurize", "train", "evaluate", "package")
CONTRACT = ("name", "source", "target", "features")

REQUIREMENTS = ("mlflow", "scikit-learn", "skops", "numpy", "scipy", "pandas", "pyarrow")
# What MLflow's virtualenv restore installs before the requirements (`_PythonEnv.BUILD_PACKAGES`).
BUILD_TOOLS = ("pip", "setuptools", "wheel")
EXAMPLE_ROWS = 5


def pinned_requirements(versions: dict[str, str], packages: tuple[str, ...] = REQUIREMENTS) -> list[str]:
    """Exact versions of the serving requirements, as the runtime lock pins them."""
    return pins(packages, versions)


def check_installed(versions: dict[str, str], packages: tuple[str, ...] = REQUIREMENTS) -> None:
    """Refuse an environment whose serving packages are not the lock's: MLmodel records the
    installed MLflow and scikit-learn versions, and the model file is written by them."""
    wrong = [
        f"{name} {metadata.version(name)} (the lock pins {versions.get(normalized(name))})"
        for name in packages
        if metadata.version(name) != versions.get(normalized(name))
    ]
    if wrong:
        raise StageError(
            f"the environment is not the runtime lock's: {', '.join(wrong)}; "
            f"install it from {RUNTIME_LOCK} (make setup)"
        )


def python_minor() -> str:
    """The interpreter's major.minor version, e.g. `3.11`."""
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def environment_files(versions: dict[str, str], python: str) -> dict[str, str]:
    """The package's `requirements.txt`, `python_env.yaml` and `conda.yaml`, in MLflow's
    layout, from the runtime lock's `versions` alone: a build tool the lock pins is pinned,
    one it does not pin (uv installs no pip) is named without a version, whatever the
    running environment has."""
    requirements = pinned_requirements(versions)
    locked = {tool: versions.get(tool) for tool in BUILD_TOOLS}
    python_env = {
        "python": python,
        "build_dependencies": [f"{tool}=={v}" if v else tool for tool, v in locked.items()],
        "dependencies": ["-r requirements.txt"],
    }
    # MLflow writes `pip<=version` (conda-forge lags behind PyPI) for the pip it finds.
    conda = {
        "name": "mlflow-env",
        "channels": ["conda-forge"],
        "dependencies": [
            f"python={python}",
            f"pip<={locked['pip']}" if locked["pip"] else "pip",
            {"pip": requirements},
        ],
    }
    return {
        "requirements.txt": "\n".join(requirements),
        "python_env.yaml": yaml.safe_dump(python_env, sort_keys=False, default_flow_style=False),
        "conda.yaml": yaml.safe_dump(conda, default_flow_style=False),
    }


def canonicalize_model_dir(path: Path, versions: dict[str, str]) -> None:
    """Make an MLflow sklearn model directory byte-stable (see module docstring)."""
    written = {p.name for p in path.iterdir()}
    for name, text in environment_files(versions, python_minor()).items():
        if name not in written:
            raise StageError(f"{path}: MLflow wrote no {name} to replace")
        (path / name).write_text(text)
    skops_file = path / "model.skops"
    canonical = canonical_skops_bytes(skops_file.read_bytes())
    skops_file.write_bytes(canonical)
    mlmodel_file = path / "MLmodel"
    mlmodel = yaml.safe_load(mlmodel_file.read_text())
    mlmodel.pop("utc_time_created", None)
    mlmodel["flavors"]["python_function"]["python_version"] = python_minor()
    mlmodel["model_uuid"] = hashlib.md5(canonical).hexdigest()
    mlmodel["model_size_bytes"] = sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and p.name != "MLmodel")
    mlmodel_file.write_text(yaml.safe_dump(mlmodel, sort_keys=True, default_flow_style=False))


@contextlib.contextmanager
def quiet_schema_hints() -> Iterator[None]:
    """Silence MLflow's hint that integer columns cannot hold nulls: the contract decides that."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer", category=UserWarning)
        yield


def typical_value(feature):
    """A value the contract allows and that no one's record holds: the middle of a numeric
    range (or its one bound, or 0), the first allowed value of a category."""
    if feature.values is not None:
        return feature.values[0]
    bounds = [b for b in (feature.min, feature.max) if b is not None]
    value = float(sum(bounds) / len(bounds)) if bounds else 0.0
    return float(round(value)) if feature.type == "integer" else value


def synthetic_example(contract: Contract, rows: int = EXAMPLE_ROWS) -> pd.DataFrame:
    """An input example made from the contract alone, in the model's input dtypes: each row
    takes typical values, and row i the i-th allowed value of each categorical column."""
    columns = {}
    for feature in contract.features:
        if feature.type == "categorical":
            columns[feature.name] = [feature.values[i % len(feature.values)] for i in range(rows)]
        else:
            columns[feature.name] = [typical_value(feature)] * rows
    frame = pd.DataFrame(columns)
    for feature in contract.features:
        if feature.type in ("numeric", "integer") or not isinstance(feature.values[0], str):
            frame[feature.name] = frame[feature.name].astype("float64")
    return frame


def save_package(
    pipeline,
    contract: Contract,
    inputs: pd.DataFrame,
    out_dir: Path,
    expected: np.ndarray,
    threshold: float,
    n_threads: int = 1,
    example=None,
    lock: str | Path = RUNTIME_LOCK,
) -> None:
    """Save `pipeline` (fitted transformer then model) as an MLflow model directory at
    `out_dir`, behind the `inputs` step that makes nullable features optional
    (`reprokit.model.estimators.served_pipeline`).

    The input signature follows the contract (`reprokit.model.scoring.input_schema`), and the
    contract and decision `threshold` travel in the model's metadata, so a service or batch
    scorer holding only the package checks records and labels them as the pipeline does.
    `example` is the input example stored in the package (default: the first rows of
    `inputs`; the stage passes a synthetic one unless `package.input_example: real`).
    `lock` is the runtime lock whose versions the environment files list; the running
    environment must have them.
    The directory is built and canonicalized beside `out_dir`, loaded back as MLflow
    serves it, and must give exactly `expected` (evaluate's probabilities for `inputs`);
    only then does it replace `out_dir`. On any failure the old package stays."""
    import mlflow.sklearn
    import skops.io as sio
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    from reprokit.model.estimators import served_pipeline

    versions = locked_versions(lock)
    check_installed(versions)
    pipeline = served_pipeline(pipeline.named_steps["features"], pipeline.named_steps["model"])
    example = signature_inputs(inputs.head(EXAMPLE_ROWS) if example is None else example, contract)
    signature = ModelSignature(
        inputs=input_schema(contract), outputs=Schema([TensorSpec(np.dtype("float64"), (-1, 2))])
    )
    trusted = sorted(sio.get_untrusted_types(data=sio.dumps(pipeline)))
    with fresh_dir(out_dir) as staged, quiet_schema_hints():
        mlflow.sklearn.save_model(
            pipeline,
            str(staged),
            serialization_format="skops",
            skops_trusted_types=trusted,
            signature=signature,
            input_example=example,
            pip_requirements=pinned_requirements(versions),
            pyfunc_predict_fn="predict_proba",
            metadata={"reprokit": {"contract": contract.to_mapping(), "threshold": threshold}},
        )
        canonicalize_model_dir(staged, versions)
        check_served(staged, inputs, expected, n_threads)


def served_probabilities(model_dir: Path, inputs: pd.DataFrame, n_threads: int = 1) -> np.ndarray:
    """Positive-class probabilities from the directory, loaded as MLflow serving does."""
    from reprokit.model.trust import load_package

    model = load_package(model_dir, check_requirements=False)  # written from the installed versions
    return served_proba(model, conform(inputs, model), n_threads)


def check_served(model_dir: Path, inputs: pd.DataFrame, expected: np.ndarray, n_threads: int = 1) -> None:
    """Fail unless the model directory, as MLflow serves it, returns exactly `expected`."""
    served = served_probabilities(model_dir, inputs, n_threads)
    if served.shape != expected.shape or not np.array_equal(served, expected):
        worst = float(np.max(np.abs(served - expected))) if served.shape == expected.shape else float("nan")
        raise StageError(
            f"the packaged model's probabilities differ from evaluate's (max abs diff {worst}): "
            "the previous package is kept; re-run evaluate"
        )


def model_card(contract: Contract, params: dict[str, Any], metrics: dict[str, Any], hashes: dict[str, str]) -> str:
    """A markdown model card: data, hashes, params (flattened keys), metrics, intended use."""
    test, train = metrics["test"], metrics["train"]
    rows = ["| metric | test | train |", "| --- | ---: | ---: |"]
    rows += [f"| {name} | {test[name]} | {train[name]} |" for name in sorted(test) if name != "n"]
    param_rows = ["| param | value |", "| --- | --- |"]
    param_rows += [f"| `{k}` | `{v}` |" for k, v in params.items()]
    hash_rows = ["| file | md5 |", "| --- | --- |"] + [f"| `{k}` | `{v}` |" for k, v in hashes.items()]
    return "\n".join(
        [
            f"# Model card: {contract.name}",
            "",
            f"Binary classifier predicting `{contract.target.column}` = `{contract.target.positive}` "
            f"from {len(contract.features)} features of `{contract.source.uri}`.",
            "",
            "## Usage",
            "",
            "```python",
            "from reprokit.model.trust import load_package  # checks the package, then opens it with mlflow.pyfunc",
            "model = load_package('models/package')",
            f"probabilities = model.predict(frame)[:, 1]  # P({contract.target.column} = {contract.target.positive})",
            "```",
            "",
            f"Input: the {len(contract.features)} feature columns of the dataset contract, unencoded "
            "(the package applies the training transformation itself). "
            f"Decision threshold used in evaluation: {metrics['threshold']}.",
            "",
            "## Data",
            "",
            *hash_rows,
            "",
            f"Rows: {train['n']} train, {test['n']} test; positive rate {test['positive_rate']} (test).",
            "",
            "## Metrics",
            "",
            *rows,
            "",
            f"Largest subgroup ROC AUC gap ({', '.join(contract.subgroups) or 'no subgroups'}): "
            f"{metrics['max_subgroup_auc_gap']}.",
            "",
            "## Parameters",
            "",
            *param_rows,
            "",
        ]
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments; `dvc.yaml` passes every path."""
    parser = argparse.ArgumentParser(description=__doc__)
    add_debug_option(parser)
    parser.add_argument("--contract", default="dataset.yaml")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--train", required=True, help="prepared train split (hashed into the card)")
    parser.add_argument("--test", required=True, help="prepared test split")
    parser.add_argument("--transformer", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--metrics", required=True, help="headline metrics (logged with the run)")
    parser.add_argument("--evaluation", required=True, help="every evaluation figure (card and run)")
    parser.add_argument("--subgroups", required=True, help="subgroup metrics (logged with the run)")
    parser.add_argument("--plots-dir", required=True, help="curve data (logged with the run)")
    parser.add_argument("--images-dir", required=True, help="PNG images (logged with the run)")
    parser.add_argument("--predictions", required=True, help="evaluate's test probabilities")
    parser.add_argument(
        "--runtime-lock", default=RUNTIME_LOCK, help="the exported lock whose versions the environment files list"
    )
    parser.add_argument("--package-out", required=True)
    parser.add_argument("--card-out", required=True)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)

    def body() -> str:
        import json

        contract = load_stage_contract("package", CONTRACT, args.contract)
        params = StageParams("package", PARAMS, args.params)
        n_threads = params.value("base.n_threads")
        test = pd.read_parquet(args.test)
        inputs = inputs_of(test, contract)
        expected = pd.read_parquet(args.predictions)
        if not expected.index.equals(test.index):
            raise StageError(f"{args.predictions}: rows do not match {args.test}; re-run evaluate")
        pipeline = load_pipeline(args.transformer, args.model)
        out_dir = Path(args.package_out)
        real_rows = params.value("package.input_example") == "real"
        example = inputs.head(EXAMPLE_ROWS) if real_rows else synthetic_example(contract)
        threshold = params.value("evaluate.threshold")
        proba = expected["probability"].to_numpy()
        save_package(pipeline, contract, inputs, out_dir, proba, threshold, n_threads, example, args.runtime_lock)
        metrics = json.loads(Path(args.evaluation).read_text())
        subgroups = json.loads(Path(args.subgroups).read_text())
        hashes = {path: md5_file(path) for path in (args.train, args.test, args.model, args.transformer)}
        card = model_card(contract, params.values(), metrics, hashes)
        write_bytes_atomic(args.card_out, card.encode())
        from reprokit.release import tracking

        tracking.log_run(
            args.params,
            args.contract,
            tracking.flat_metrics(metrics, subgroups),
            [args.metrics, args.evaluation, args.subgroups, args.plots_dir, args.images_dir, args.card_out],
            str(out_dir),
            datasets={"train": (args.train, pd.read_parquet(args.train)), "test": (args.test, test)},
            outputs=[args.train, args.test, args.transformer, args.model, str(out_dir), args.card_out],
        )
        return f"{out_dir} serves {len(inputs)} test rows identically to evaluate"

    run_stage("package", body, debug=args.debug)


if __name__ == "__main__":
    main()
