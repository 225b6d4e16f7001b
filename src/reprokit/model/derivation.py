"""The trust allowlist: every (place, type, loader) of the model files this pipeline writes.

Derived by building and fitting every model kind and transformer variant on a tiny synthetic
table (`derive_placements`, seconds), committed as `allowlist.py` with the library versions it
was derived with; `reprokit allowlist` writes it again after a new model kind or an upgrade.
"""

from __future__ import annotations

import functools
from pathlib import Path

from reprokit.model.archives import (
    DATA_PAIRS,
    archive_placements,
    is_data,
)


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
    return frozenset(entry for entry in found if not is_data(entry[1], entry[2]))


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
        '"""The trust allowlist: `reprokit.model.derivation.derive_placements()`, written by `reprokit allowlist`.\n\n'
        "Generated, do not edit: tests/code/test_trust.py fails while it differs from the derivation\n"
        "(after a new model kind or a library upgrade, run `reprokit allowlist`). With other\n"
        'library versions than VERSIONS, `reprokit.model.derivation` derives the allowlist itself."""\n\n'
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


if __name__ == "__main__":
    main()
