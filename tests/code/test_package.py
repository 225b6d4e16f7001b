from __future__ import annotations

import json
import re
import sys
from importlib import metadata

import numpy as np
import pytest
import yaml
from synthetic import loan_pipeline, package_loans

from reprokit.core.errors import StageError
from reprokit.core.lockfile import RUNTIME_LOCK, locked_versions
from reprokit.stages.package import (
    model_card,
    python_minor,
    served_probabilities,
    synthetic_example,
)


@pytest.fixture(scope="module")
def pipeline_and_inputs():
    pipeline, _, inputs, _ = loan_pipeline()
    return pipeline, inputs


def save(pipeline, inputs, out, expected=None) -> None:
    """Package as the stage does: the served probabilities must equal evaluate's."""
    package_loans(pipeline, inputs, out, expected)


def test_package_is_byte_stable_and_serves_the_pipeline(tmp_path, pipeline_and_inputs):
    pipeline, inputs = pipeline_and_inputs
    save(pipeline, inputs, tmp_path / "a")
    save(pipeline, inputs, tmp_path / "b")
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert files == sorted(p.name for p in (tmp_path / "b").iterdir())
    assert {"MLmodel", "model.skops", "input_example.json", "requirements.txt", "python_env.yaml"} <= set(files)
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    served = served_probabilities(tmp_path / "a", inputs)
    np.testing.assert_array_equal(served, pipeline.predict_proba(inputs)[:, 1])


def test_package_metadata_has_signature_example_and_pins(tmp_path, pipeline_and_inputs):
    pipeline, inputs = pipeline_and_inputs
    save(pipeline, inputs, tmp_path / "m")
    mlmodel = yaml.safe_load((tmp_path / "m" / "MLmodel").read_text())
    assert "utc_time_created" not in mlmodel
    assert mlmodel["flavors"]["sklearn"]["serialization_format"] == "skops"
    assert mlmodel["flavors"]["python_function"]["predict_fn"] == "predict_proba"
    inputs_spec = json.loads(mlmodel["signature"]["inputs"])
    assert [c["name"] for c in inputs_spec] == list(inputs.columns)
    assert {c["name"]: c["type"] for c in inputs_spec}["region"] == "string"
    example = json.loads((tmp_path / "m" / "input_example.json").read_text())
    assert example["columns"] == list(inputs.columns) and len(example["data"]) == 5
    requirements = (tmp_path / "m" / "requirements.txt").read_text().split()
    assert f"scikit-learn=={metadata.version('scikit-learn')}" in requirements
    assert len(requirements) == 7 and all("==" in line for line in requirements)


def pinned_requirements(lock) -> list[str]:
    versions = locked_versions(lock)
    names = ("mlflow", "scikit-learn", "skops", "numpy", "scipy", "pandas", "pyarrow")
    return [f"{name}=={versions[name]}" for name in names]


def test_the_environment_files_come_from_the_lock_not_the_running_environment(tmp_path, repo, pipeline_and_inputs):
    """MLflow lists the running environment's pip, setuptools and wheel (here: no pip, the
    lock's setuptools, no wheel under uv; others under pip). A lock pinning pip 99.1 and
    setuptools 1.2, which no environment has, is what the package lists, in MLflow's layout."""
    pipeline, inputs = pipeline_and_inputs
    text = (repo / RUNTIME_LOCK).read_text()
    assert "\npip==" not in text and "\nsetuptools==" in text
    lock = tmp_path / "requirements-runtime.txt"
    lock.write_text(re.sub(r"(?m)^setuptools==\S+", "setuptools==1.2", text) + "pip==99.1\n")
    package_loans(pipeline, inputs, tmp_path / "m", lock=lock)
    env = yaml.safe_load((tmp_path / "m" / "python_env.yaml").read_text())
    assert env == {
        "python": python_minor(),
        "build_dependencies": ["pip==99.1", "setuptools==1.2", "wheel"],
        "dependencies": ["-r requirements.txt"],
    }
    conda = yaml.safe_load((tmp_path / "m" / "conda.yaml").read_text())
    assert conda["dependencies"] == [f"python={python_minor()}", "pip<=99.1", {"pip": pinned_requirements(lock)}]
    assert (tmp_path / "m" / "requirements.txt").read_text() == "\n".join(pinned_requirements(lock))


def test_the_repositorys_lock_names_pip_and_wheel_without_a_version(tmp_path, repo, pipeline_and_inputs):
    """uv.lock pins setuptools (a runtime dependency of zc-lockfile) but neither pip nor wheel."""
    pipeline, inputs = pipeline_and_inputs
    package_loans(pipeline, inputs, tmp_path / "m", lock=repo / RUNTIME_LOCK)
    env = yaml.safe_load((tmp_path / "m" / "python_env.yaml").read_text())
    setuptools = locked_versions(repo / RUNTIME_LOCK)["setuptools"]
    assert env["build_dependencies"] == ["pip", f"setuptools=={setuptools}", "wheel"]
    conda = yaml.safe_load((tmp_path / "m" / "conda.yaml").read_text())
    assert conda["dependencies"][1] == "pip"


def test_an_environment_that_is_not_the_locks_is_refused_and_the_old_package_stays(tmp_path, repo, pipeline_and_inputs):
    pipeline, inputs = pipeline_and_inputs
    out = tmp_path / "pkg"
    package_loans(pipeline, inputs, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    lock = tmp_path / "requirements-runtime.txt"
    lock.write_text(re.sub(r"(?m)^scikit-learn==\S+", "scikit-learn==1.0.0", (repo / RUNTIME_LOCK).read_text()))
    installed = metadata.version("scikit-learn")
    with pytest.raises(StageError, match=rf"scikit-learn {re.escape(installed)} \(the lock pins 1\.0\.0\)"):
        package_loans(pipeline, inputs, out, lock=lock)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_the_python_version_is_recorded_as_major_minor_only(tmp_path, pipeline_and_inputs):
    """A build on CPython 3.11.2 and one on 3.11.7 give the same bytes."""
    pipeline, inputs = pipeline_and_inputs
    save(pipeline, inputs, tmp_path / "m")
    minor = python_minor()
    assert minor.count(".") == 1
    mlmodel = yaml.safe_load((tmp_path / "m" / "MLmodel").read_text())
    assert mlmodel["flavors"]["python_function"]["python_version"] == minor
    assert yaml.safe_load((tmp_path / "m" / "python_env.yaml").read_text())["python"] == minor
    assert f"python={minor}" in yaml.safe_load((tmp_path / "m" / "conda.yaml").read_text())["dependencies"]
    patch = ".".join(map(str, sys.version_info[:3]))
    for path in (tmp_path / "m").iterdir():
        assert patch.encode() not in path.read_bytes(), path.name


def test_a_package_that_serves_other_probabilities_never_replaces_the_old_one(tmp_path, pipeline_and_inputs):
    """The served-vs-evaluated check runs on the staged directory, before the replace."""
    pipeline, inputs = pipeline_and_inputs
    out = tmp_path / "pkg"
    save(pipeline, inputs, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    wrong = pipeline.predict_proba(inputs)[:, 1].copy()
    wrong[0] += 1e-9  # evaluate's figures and the new package disagree on one row
    with pytest.raises(StageError, match="differ from evaluate's"):
        save(pipeline, inputs, out, expected=wrong)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["pkg"]  # no staging directory left behind


def test_model_card_names_hashes_params_and_metrics(telco_contract):
    metrics = {
        "threshold": 0.5,
        "max_subgroup_auc_gap": 0.04,
        "test": {"roc_auc": 0.84, "f1": 0.6, "n": 100, "positive_rate": 0.26},
        "train": {"roc_auc": 0.9, "f1": 0.7, "n": 400, "positive_rate": 0.26},
    }
    card = model_card(telco_contract, {"train.model": "random_forest"}, metrics, {"data/t.parquet": "abc123"})
    assert card.startswith("# Model card: telco_customer_churn")
    assert "| `data/t.parquet` | `abc123` |" in card
    assert "| roc_auc | 0.84 | 0.9 |" in card
    assert "| `train.model` | `random_forest` |" in card
    assert "0.04" in card


def test_the_synthetic_input_example_follows_the_contract_and_holds_no_real_row(tmp_path, pipeline_and_inputs):
    from synthetic import loans_contract, make_loans

    from reprokit.core.contract import parse_contract

    contract = parse_contract(loans_contract())
    example = synthetic_example(contract)
    assert list(example.columns) == contract.feature_names and len(example) == 5
    assert set(example["region"]) == {"north", "south", "east", "west"}  # every category shown
    assert example["age"].between(18, 120).all() and (example["income"] >= 0).all()
    real = make_loans()[contract.feature_names].astype({"age": "float64", "owns_home": "float64"})
    assert example.merge(real, how="inner").empty
    pipeline, inputs = pipeline_and_inputs
    package_loans(pipeline, inputs, tmp_path / "p", example=example)
    stored = json.loads((tmp_path / "p" / "input_example.json").read_text())
    assert stored["data"] == example.to_numpy().tolist()
    assert served_probabilities(tmp_path / "p", example).shape == (5,)


def test_the_stage_skips_mlflow_s_version_warnings_that_others_get(tmp_path, pipeline_and_inputs, monkeypatch):
    """The package stage checks the package it has just pinned from the installed versions
    without MLflow's requirement comparison; every other loader keeps it."""
    import mlflow.pyfunc

    from reprokit.model.trust import load_package

    pipeline, inputs = pipeline_and_inputs
    save(pipeline, inputs, tmp_path / "p")
    compared = []
    monkeypatch.setattr(mlflow.pyfunc, "warn_dependency_requirement_mismatches", compared.append)
    served_probabilities(tmp_path / "p", inputs)
    assert compared == []
    load_package(tmp_path / "p")
    assert len(compared) == 1
