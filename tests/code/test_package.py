from __future__ import annotations

import json
from importlib import metadata

import numpy as np
import pytest
import yaml

from reprokit.package import model_card, pinned_requirements, save_package, served_probabilities
from synthetic import loan_pipeline


@pytest.fixture(scope="module")
def pipeline_and_inputs():
    pipeline, _, inputs, _ = loan_pipeline()
    return pipeline, inputs


def test_package_is_byte_stable_and_serves_the_pipeline(tmp_path, pipeline_and_inputs):
    pipeline, inputs = pipeline_and_inputs
    save_package(pipeline, inputs, tmp_path / "a")
    save_package(pipeline, inputs, tmp_path / "b")
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert files == sorted(p.name for p in (tmp_path / "b").iterdir())
    assert {"MLmodel", "model.skops", "input_example.json", "requirements.txt", "python_env.yaml"} <= set(files)
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    served = served_probabilities(tmp_path / "a", inputs)
    np.testing.assert_array_equal(served, pipeline.predict_proba(inputs)[:, 1])


def test_package_metadata_has_signature_example_and_pins(tmp_path, pipeline_and_inputs):
    pipeline, inputs = pipeline_and_inputs
    save_package(pipeline, inputs, tmp_path / "m")
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
    assert all("==" in line for line in pinned_requirements())


def test_replacing_a_package_keeps_the_old_one_until_the_new_one_is_complete(tmp_path, pipeline_and_inputs):
    pipeline, inputs = pipeline_and_inputs
    out = tmp_path / "pkg"
    save_package(pipeline, inputs, out)
    before = (out / "model.skops").read_bytes()
    with pytest.raises(ValueError):
        save_package(pipeline, inputs.iloc[:0], out)  # no rows: signature inference fails
    assert (out / "model.skops").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["pkg"]  # no staging directory left behind


def test_model_card_names_hashes_params_and_metrics(telco_contract):
    metrics = {
        "threshold": 0.5,
        "max_subgroup_auc_gap": 0.04,
        "test": {"roc_auc": 0.84, "f1": 0.6, "n": 100, "positive_rate": 0.26},
        "train": {"roc_auc": 0.9, "f1": 0.7, "n": 400, "positive_rate": 0.26},
    }
    card = model_card(
        telco_contract,
        {"train": {"model": "random_forest"}, "tracking": {"uri": "x"}},
        metrics,
        {"data/t.parquet": "abc123"},
    )
    assert card.startswith("# Model card: telco_customer_churn")
    assert "| `data/t.parquet` | `abc123` |" in card
    assert "| roc_auc | 0.84 | 0.9 |" in card
    assert "| `train.model` | `random_forest` |" in card
    assert "tracking" not in card
    assert "0.04" in card
