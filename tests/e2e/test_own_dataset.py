"""Pointing the repository at another table by editing the dataset contract alone."""

from __future__ import annotations

import json

import pytest
from dvcclone import ran_stages
from synthetic import make_loans

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def loans_clone(make_clone, own_data):
    """The README's own-data example run exactly as written, on the synthetic loans table."""
    clone = make_clone("loans")
    own_data(clone)
    clone.git("add", "-A")  # the small source table in git, beside params, dvc.lock and metrics
    clone.git("commit", "-qm", "Train on the loans table")  # git keeps params, dvc.lock and metrics
    return clone


def test_second_dataset_runs_end_to_end_with_no_code_change(loans_clone):
    clone = loans_clone
    assert clone.git("status", "--porcelain", "--", "src", "dvc.yaml", "params.yaml") == ""
    quality = json.loads((clone.root / "metrics/data_quality.json").read_text())
    assert quality["dataset"] == "loans" and quality["rows_in"] == 600
    assert quality["nulls_before_cleaning"]["income"] == 5
    metrics = json.loads((clone.root / "metrics/evaluation.json").read_text())
    assert metrics["test"]["n"] == 120
    assert metrics["test"]["roc_auc"] > 0.65  # the synthetic risk is learnable
    subgroups = json.loads((clone.root / "metrics/subgroups.json").read_text())
    assert set(subgroups["groups"]) == {"age", "owns_home", "region"}
    assert set(subgroups["groups"]["region"]) == {"north", "south", "east", "west"}
    assert set(subgroups["groups"]["age"]) == {"18_to_30", "30_to_45", "45_to_60", "60_to_120"}
    card = (clone.root / "models/model_card.md").read_text()
    assert card.startswith("# Model card: loans") and "`defaulted` = `1`" in card
    assert "Data and pipelines are up to date" in clone.dvc("status").stdout


def test_editing_the_source_file_reruns_the_pipeline(loans_clone):
    clone = loans_clone
    make_loans(700, seed=8).to_csv(clone.root / "data/raw/loans.csv", index=False)
    assert "data/raw/loans.csv" in clone.dvc("status").stdout
    done = clone.dvc("repro")
    assert ran_stages(done.stdout)[:1] == ["prepare"]
    assert json.loads((clone.root / "metrics/data_quality.json").read_text())["rows_in"] == 700


def test_invalid_data_stops_at_prepare_with_a_clear_error_and_loses_nothing(loans_clone):
    clone = loans_clone
    clone.git("add", "-A")
    clone.git("commit", "-qm", "More loans")  # the last good state
    before = clone.file_hashes(list(clone.locked_outputs()) + ["data/raw/loans.csv", "metrics/data_quality.json"])
    lock_before = (clone.root / "dvc.lock").read_text()
    good = (clone.root / "data/raw/loans.csv").read_text()
    bad = make_loans(700, seed=8)
    bad.loc[[3, 9], "region"] = "atlantis"
    bad.loc[5, "age"] = 150
    bad.to_csv(clone.root / "data/raw/loans.csv", index=False)

    done = clone.dvc("repro", check=False)
    assert done.returncode != 0
    assert "prepare failed: data/raw/loans.csv: the data breaks the dataset contract" in done.stderr
    assert "column 'region': check isin" in done.stderr and "2 row(s)" in done.stderr and "atlantis" in done.stderr
    assert "column 'age': check less_than_or_equal_to(120) failed for 1 row(s)" in done.stderr
    assert ran_stages(done.stdout) == ["prepare"]
    assert (clone.root / "dvc.lock").read_text() == lock_before

    # git keeps the source and the metrics, the cache every other output: the last good state comes back whole.
    clone.git("checkout", "--", "metrics", "data/raw/loans.csv")
    assert (clone.root / "data/raw/loans.csv").read_text() == good
    clone.dvc("checkout")
    assert clone.file_hashes(before) == before
    assert "Data and pipelines are up to date" in clone.dvc("status").stdout
