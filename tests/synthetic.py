"""A second, small dataset of our own making: loan defaults.

Different columns, target, labels, id column and subgroups from the default data,
so tests can prove the pipeline follows the dataset contract alone. The default
probability depends on the features through a known logistic model, so a fitted
model has real signal to find.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

REGIONS = ["north", "south", "east", "west"]
PURPOSES = ["car", "home", "education", "business"]


def make_loans(n: int = 600, seed: int = 7) -> pd.DataFrame:
    """A loans table with a `defaulted` target (1 = default) and a few blank incomes."""
    rng = np.random.default_rng(seed)
    income = rng.lognormal(mean=10.5, sigma=0.4, size=n).round(2)
    amount = rng.uniform(1_000, 40_000, size=n).round(2)
    age = rng.integers(21, 70, size=n)
    region = rng.choice(REGIONS, size=n)
    purpose = rng.choice(PURPOSES, size=n)
    owns_home = rng.integers(0, 2, size=n)
    logit = -1.0 + 2.5 * (amount / income) - 0.02 * (age - 40) - 0.8 * owns_home + 0.6 * (purpose == "business")
    defaulted = (rng.uniform(size=n) < 1 / (1 + np.exp(-logit))).astype(int)
    frame = pd.DataFrame(
        {
            "loan_id": [f"L{i:05d}" for i in range(n)],
            "income": income,
            "amount": amount,
            "age": age,
            "region": region,
            "purpose": purpose,
            "owns_home": owns_home,
            "defaulted": defaulted,
        }
    )
    frame.loc[rng.choice(n, size=5, replace=False), "income"] = np.nan
    return frame


def loans_contract(uri: str = "data/raw/loans.csv") -> dict:
    """The dataset contract (as `dataset.yaml` holds it) for `make_loans`."""
    return {
        "name": "synthetic_loans",
        "source": {"uri": uri, "format": "auto", "track": uri, "id_column": "loan_id"},
        "target": {"column": "defaulted", "positive": 1, "negative": 0},
        "features": {
            "income": {"type": "numeric", "min": 0, "nullable": True},
            "amount": {"type": "numeric", "min": 0},
            "age": {"type": "integer", "min": 18, "max": 120},
            "region": {"type": "categorical", "values": REGIONS, "subgroup": True},
            "purpose": {"type": "categorical", "values": PURPOSES},
            "owns_home": {"type": "binary", "subgroup": True},
        },
    }


def loan_pipeline(rows: int = 300, iterations: int = 20, spec: dict | None = None):
    """The real prepare -> featurize -> train functions on `make_loans(rows)` (under the
    contract `spec`, by default `loans_contract()`).

    Returns (pipeline, prepared test split, raw test inputs, featurized train split).
    """
    from sklearn.pipeline import Pipeline

    from reprokit.core.config import FeaturizeParams, TrainParams
    from reprokit.core.contract import parse_contract
    from reprokit.model.estimators import fit
    from reprokit.model.inference import inputs_of
    from reprokit.stages.featurize import fit_transform
    from reprokit.stages.prepare import split, to_model_table, validate

    contract = parse_contract(spec or loans_contract())
    table = to_model_table(validate(make_loans(rows), contract, "loans"), contract)
    train, test = split(table, "defaulted", 0.25, 0)
    transformer, train_x, _ = fit_transform(train, test, contract, FeaturizeParams(True, "median"))
    hyper = {"hist_gradient_boosting": {"max_iter": iterations}, "random_forest": {}, "logistic_regression": {}}
    model = fit(train_x, "defaulted", TrainParams("hist_gradient_boosting", **hyper), seed=0)
    return Pipeline([("features", transformer), ("model", model)]), test, inputs_of(test, contract), train_x


def package_loans(
    pipeline,
    inputs,
    out,
    expected=None,
    example=None,
    threshold: float = 0.5,
    spec: dict | None = None,
    lock: Path | None = None,
) -> None:
    """Package a loans pipeline with the `package` stage's own function (served
    probabilities must equal `expected`, by default the pipeline's own)."""
    from reprokit.core.contract import parse_contract
    from reprokit.core.lockfile import RUNTIME_LOCK
    from reprokit.stages.package import save_package

    expected = pipeline.predict_proba(inputs)[:, 1] if expected is None else expected
    contract = parse_contract(spec or loans_contract())
    lock = Path(__file__).resolve().parents[1] / RUNTIME_LOCK if lock is None else lock
    save_package(pipeline, contract, inputs, out, expected, threshold, example=example, lock=lock)


def markdown_rows(text: str) -> dict[str, list[str]]:
    """A markdown report's table rows: first cell (without direction arrows) -> other cells."""
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("| ") and len(cells) >= 3:
            rows[cells[0].rstrip(" ↑↓").strip("`")] = cells[1:]
    return rows
