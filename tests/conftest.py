"""Shared fixtures: the repository's own files and small tables made for tests."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Tests talk to servers on 127.0.0.1 only: never let botocore probe the cloud metadata address.
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
sys.path.insert(0, str(Path(__file__).resolve().parent))

from synthetic import loans_contract, make_loans  # noqa: E402

from reprokit.core.contract import Contract, load_contract, parse_contract  # noqa: E402
from reprokit.core.lockfile import RUNTIME_LOCK  # noqa: E402


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def telco_contract() -> Contract:
    return load_contract(REPO / "dataset.yaml")


@pytest.fixture(scope="session")
def loans_contract_obj() -> Contract:
    return parse_contract(loans_contract())


@pytest.fixture()
def loans():
    return make_loans()


@pytest.fixture(scope="session")
def telco_splits(telco_contract):
    """The real default data, prepared in-process exactly as the `prepare` stage does."""
    from reprokit.core.config import load_section
    from reprokit.core.sources import load_source
    from reprokit.stages.prepare import prepare

    params = REPO / "params.yaml"
    raw = load_source(telco_contract.source)
    train, test, summary = prepare(
        raw, telco_contract, load_section("split", params).test_size, load_section("base", params).seed, "telco"
    )
    return raw, train, test, summary


# The default data's fitted pipeline and package, built in-process by the pipeline's own
# functions (the serving and container suites: a fresh clone has no models/ before `dvc repro`).
@pytest.fixture(scope="session")
def telco_pipeline(repo, telco_splits, telco_contract):
    """The fitted inference pipeline on the real data, with the repository's params."""
    from sklearn.pipeline import Pipeline

    from reprokit.core.config import load_section
    from reprokit.model.estimators import fit
    from reprokit.stages.featurize import fit_transform

    params = repo / "params.yaml"
    _, train, test, _ = telco_splits
    transformer, train_x, _ = fit_transform(train, test, telco_contract, load_section("featurize", params))
    base = load_section("base", params)
    model = fit(train_x, "churn", load_section("train", params), base.seed, base.n_threads)
    return Pipeline([("features", transformer), ("model", model)])


@pytest.fixture(scope="session")
def telco_package(tmp_path_factory, telco_pipeline, telco_splits, telco_contract):
    """A package directory written by the `package` stage's own function (threshold 0.5)."""
    from reprokit.model.inference import inputs_of, predict_proba
    from reprokit.stages.package import save_package, synthetic_example

    _, _, test, _ = telco_splits
    inputs = inputs_of(test, telco_contract)
    out = tmp_path_factory.mktemp("telco") / "package"
    expected = predict_proba(telco_pipeline, inputs, 1)
    example = synthetic_example(telco_contract)
    save_package(telco_pipeline, telco_contract, inputs, out, expected, 0.5, example=example, lock=REPO / RUNTIME_LOCK)
    return out


@pytest.fixture(scope="session")
def reproduced(tmp_path_factory, worker_id, repo):
    """A fresh clone after a full `dvc repro`, one for the whole run (parallel workers share it):
    copy it (`dvcclone.copy_clone`, the end-to-end suite's `copy_of`) instead of reproducing
    again, never change it."""
    from dvcclone import Clone, clone_env, new_clone
    from shared import built_once

    def reproduce(folder):
        done = new_clone(repo, folder / "repo").dvc("repro")
        (folder / "repro.out").write_text(done.stdout)  # what it ran: `reproduced_output`

    root = built_once(tmp_path_factory, worker_id, "reproduced", reproduce) / "repo"
    return Clone(root, clone_env(root))


@pytest.fixture(scope="session")
def reproduced_output(reproduced) -> str:
    """What the full `dvc repro` of `reproduced` printed."""
    return (reproduced.root.parent / "repro.out").read_text()
