"""Registering packages on an MLflow tracking store as the `package` stage does (the serving and
release suites' registries)."""

from __future__ import annotations

import contextlib
import shutil

NAME = "telco_customer_churn"  # the registered model: dataset.yaml's name


def register(root, uri: str, packages) -> list[str]:
    """Log and register each package as the `package` stage does, from `root` (which holds
    params.yaml and dataset.yaml), on the tracking store at `uri`; their version numbers."""
    import mlflow

    from reprokit.release import tracking

    versions = []
    with contextlib.chdir(root):
        mlflow.set_tracking_uri(uri)
        try:
            for package in packages:
                shutil.copytree(package, root / "models" / "package", dirs_exist_ok=False)
                try:
                    logged = tracking.log_run("params.yaml", "dataset.yaml", {}, [], "models/package", {}, [])
                finally:
                    shutil.rmtree(root / "models" / "package")
                versions.append(logged["version"])
        finally:
            mlflow.set_tracking_uri(None)
    return versions


def nest_schema(package) -> None:
    """Make `package`'s model file one whose schema nests without end (a hostile registry
    version: the trust checks refuse it before anything is built from it)."""
    import io
    import zipfile

    model = package / "model.skops"
    source = zipfile.ZipFile(io.BytesIO(model.read_bytes()))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as target:
        for member in source.namelist():
            deep = b"[" * 100_000 + b"]" * 100_000
            target.writestr(member, deep if member == "schema.json" else source.read(member))
    model.write_bytes(out.getvalue())
