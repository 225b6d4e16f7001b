"""Stage `package`: one self-contained, servable MLflow model directory and a model card.

The directory holds the whole inference pipeline (fitted transformer + model), so
serving applies exactly the training transformation. It is saved in MLflow's model
format with skops serialization, an input signature, an input example and pinned
requirements, then made byte-stable: the skops archive is canonicalized, the
creation time is dropped and `model_uuid` becomes a hash of the model's bytes.
Before the directory replaces the old one it is loaded back with
`mlflow.pyfunc.load_model` and must reproduce evaluate's test probabilities exactly.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from reprokit.artifacts import canonical_skops_bytes, md5_file, write_bytes_atomic
from reprokit.config import flatten, read_yaml
from reprokit.contract import Contract, load_contract
from reprokit.evaluate import flat_metrics, load_pipeline
from reprokit.featurize import inputs_of
from reprokit.stage import StageError, run_stage

REQUIREMENTS = ("mlflow", "scikit-learn", "skops", "numpy", "scipy", "pandas", "pyarrow")
EXAMPLE_ROWS = 5


def pinned_requirements(packages: tuple[str, ...] = REQUIREMENTS) -> list[str]:
    """Exact versions of the serving requirements, as installed from the lock file."""
    return [f"{name}=={metadata.version(name)}" for name in packages]


def canonicalize_model_dir(path: Path) -> None:
    """Make an MLflow sklearn model directory byte-stable (see module docstring)."""
    skops_file = path / "model.skops"
    canonical = canonical_skops_bytes(skops_file.read_bytes())
    skops_file.write_bytes(canonical)
    mlmodel_file = path / "MLmodel"
    mlmodel = yaml.safe_load(mlmodel_file.read_text())
    mlmodel.pop("utc_time_created", None)
    mlmodel["model_uuid"] = hashlib.md5(canonical).hexdigest()
    mlmodel["model_size_bytes"] = sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and p.name != "MLmodel")
    mlmodel_file.write_text(yaml.safe_dump(mlmodel, sort_keys=True, default_flow_style=False))


def save_package(pipeline, inputs: pd.DataFrame, out_dir: Path) -> None:
    """Save `pipeline` as an MLflow model directory at `out_dir` (replaced only when complete)."""
    import mlflow.sklearn
    import skops.io as sio
    from mlflow.models import infer_signature

    example = inputs.head(EXAMPLE_ROWS)
    signature = infer_signature(inputs, pipeline.predict_proba(inputs.head(50)))
    trusted = sorted(sio.get_untrusted_types(data=sio.dumps(pipeline)))
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}."))
    try:
        staged = staging / "model"
        mlflow.sklearn.save_model(
            pipeline,
            str(staged),
            serialization_format="skops",
            skops_trusted_types=trusted,
            signature=signature,
            input_example=example,
            pip_requirements=pinned_requirements(),
            pyfunc_predict_fn="predict_proba",
        )
        canonicalize_model_dir(staged)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staged.rename(out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def served_probabilities(model_dir: Path, inputs: pd.DataFrame) -> np.ndarray:
    """Positive-class probabilities from the directory, loaded as MLflow serving does."""
    import mlflow.pyfunc

    served = mlflow.pyfunc.load_model(str(model_dir))
    return np.asarray(served.predict(inputs))[:, 1]


def model_card(contract: Contract, params: dict[str, Any], metrics: dict[str, Any], hashes: dict[str, str]) -> str:
    """A markdown model card: data, hashes, params, metrics, intended use."""
    test, train = metrics["test"], metrics["train"]
    rows = ["| metric | test | train |", "| --- | ---: | ---: |"]
    rows += [f"| {name} | {test[name]} | {train[name]} |" for name in sorted(test) if name != "n"]
    param_rows = ["| param | value |", "| --- | --- |"]
    param_rows += [f"| `{k}` | `{v}` |" for k, v in flatten(params).items() if not k.startswith("tracking.")]
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
            "import mlflow.pyfunc",
            "model = mlflow.pyfunc.load_model('models/package')",
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
    parser.add_argument("--contract", default="dataset.yaml")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--train", required=True, help="prepared train split (hashed into the card)")
    parser.add_argument("--test", required=True, help="prepared test split")
    parser.add_argument("--transformer", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--metrics", required=True)
    parser.add_argument("--subgroups", required=True, help="subgroup metrics (logged with the run)")
    parser.add_argument("--plots-dir", required=True, help="curve data (logged with the run)")
    parser.add_argument("--images-dir", required=True, help="PNG images (logged with the run)")
    parser.add_argument("--predictions", required=True, help="evaluate's test probabilities")
    parser.add_argument("--package-out", required=True)
    parser.add_argument("--card-out", required=True)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)

    def body() -> str:
        import json

        contract = load_contract(args.contract)
        params = read_yaml(args.params)
        test = pd.read_parquet(args.test)
        inputs = inputs_of(test, contract)
        expected = pd.read_parquet(args.predictions)
        if not expected.index.equals(test.index):
            raise StageError(f"{args.predictions}: rows do not match {args.test}; re-run evaluate")
        pipeline = load_pipeline(args.transformer, args.model)
        out_dir = Path(args.package_out)
        save_package(pipeline, inputs, out_dir)
        served = served_probabilities(out_dir, inputs)
        if not np.array_equal(served, expected["probability"].to_numpy()):
            worst = float(np.max(np.abs(served - expected["probability"].to_numpy())))
            raise StageError(f"{out_dir}: served probabilities differ from evaluate's (max abs diff {worst})")
        metrics = json.loads(Path(args.metrics).read_text())
        subgroups = json.loads(Path(args.subgroups).read_text())
        hashes = {path: md5_file(path) for path in (args.train, args.test, args.model, args.transformer)}
        card = model_card(contract, params, metrics, hashes)
        write_bytes_atomic(args.card_out, card.encode())
        from reprokit import tracking

        tracking.log_run(
            args.params,
            args.contract,
            flat_metrics(metrics, subgroups),
            [args.metrics, args.subgroups, args.plots_dir, args.images_dir, args.card_out],
            str(out_dir),
            datasets={"train": (args.train, pd.read_parquet(args.train)), "test": (args.test, test)},
            outputs=[args.train, args.test, args.transformer, args.model, str(out_dir), args.card_out],
        )
        return f"{out_dir} serves {len(served)} test rows identically to evaluate"

    run_stage("package", body)


if __name__ == "__main__":
    main()
