"""The three promises, with the real `dvc` CLI in a fresh clone: reproduce exactly,
re-run only what changed, and restore an old state byte for byte."""

from __future__ import annotations

import json
import re
import sqlite3

import pytest
from commands import uv
from dvcclone import ran_stages

from reprokit.core.lockfile import RUNTIME_LOCK

pytestmark = pytest.mark.e2e

STAGES = ["prepare", "featurize", "train", "evaluate", "package", "batches", "monitor"]


@pytest.fixture(scope="module")
def clone(tmp_path_factory, reproduced):
    """A copy of the session's fresh clone after its full `dvc repro` (conftest's `reproduced`)."""
    from dvcclone import copy_clone

    return copy_clone(reproduced, tmp_path_factory.mktemp("reproduce") / "repo")


@pytest.fixture(scope="module")
def first_state(clone, reproduced_output):
    """The full `dvc repro` in the fresh clone ran every stage; the md5 of every output it made."""
    assert ran_stages(reproduced_output) == STAGES
    locked = clone.locked_outputs()
    return locked, clone.file_hashes(list(locked) + ["metrics/metrics.json", "metrics/subgroups.json"])


def test_fresh_clone_reproduces_the_committed_lock_exactly(clone, first_state):
    _, actual = first_state
    committed = clone.locked_outputs(rev="HEAD")  # what the repository promises, not what this run wrote
    assert {path: actual[path] for path in committed} == committed
    assert clone.git("status", "--porcelain") == ""  # dvc.lock and git-kept metrics unchanged
    assert "Data and pipelines are up to date" in clone.dvc("status").stdout
    locked = committed
    assert any(p.startswith("models/package/") for p in locked) and "models/model.skops" in locked


def test_the_run_was_logged_to_the_default_local_store(clone, first_state):
    db = sqlite3.connect(clone.root / "mlflow.db")
    runs = db.execute("select run_uuid from runs").fetchall()
    keys = {k for (k,) in db.execute("select distinct key from metrics")}
    params = dict(db.execute("select key, value from params"))
    assert len(runs) == 1
    assert {"test.roc_auc", "train.roc_auc", "max_subgroup_auc_gap", "subgroup.female.1.roc_auc"} <= keys
    assert params["train.model"] == "hist_gradient_boosting"


def test_the_package_ships_no_real_row_of_the_data(clone, first_state):
    """The input example inside the package (and every registry version) is made from the
    contract: none of its rows is a row of the source table."""
    import json

    import pandas as pd

    example = json.loads((clone.root / "models/package/input_example.json").read_text())
    rows = pd.DataFrame(example["data"], columns=example["columns"])
    data = pd.concat([pd.read_parquet(clone.root / f"data/prepared/{split}.parquet") for split in ("train", "test")])
    data = data[rows.columns].astype({c: "float64" for c in rows.columns if rows[c].dtype == "float64"})
    assert len(rows) and rows.merge(data, how="inner").empty


def test_noop_repro_runs_nothing(clone, first_state):
    assert ran_stages(clone.dvc("repro").stdout) == []


def test_a_dev_tool_bump_reruns_nothing_and_a_runtime_bump_reruns_every_stage(repo, clone, first_state):
    """Stages depend on the exported runtime lock, not on uv.lock: a new pytest in uv.lock (dev
    group) leaves the export, and so every stage, unchanged; a new pyarrow in the export re-runs
    every stage."""
    lock = clone.root / "uv.lock"
    text = lock.read_text()
    entry = re.search(r'\[\[package\]\]\nname = "pytest"\nversion = "([^"]+)"\n.*?\n\n', text, re.DOTALL)
    bumped = entry[0].replace(f'"{entry[1]}"', f'"{entry[1]}.post1"').replace(f"-{entry[1]}", f"-{entry[1]}.post1")
    lock.write_text(text.replace(entry[0], bumped))  # its version and its files' names
    args = ("export", "--frozen", "--no-dev", "--no-hashes", "--no-emit-project", "--quiet")
    assert clone.run(uv(repo), *args).stdout.replace("--frozen", "--locked") == (clone.root / RUNTIME_LOCK).read_text()
    assert clone.git("status", "--porcelain") == " M uv.lock\n"
    assert "Data and pipelines are up to date" in clone.dvc("status").stdout
    runtime = clone.root / RUNTIME_LOCK
    runtime.write_text(re.sub(r"(?m)^pyarrow==(\S+)", r"pyarrow==\1.post1", runtime.read_text()))
    assert set(json.loads(clone.dvc("status", "--json").stdout)) == set(STAGES)
    clone.git("checkout", "--", "uv.lock", RUNTIME_LOCK)
    assert "Data and pipelines are up to date" in clone.dvc("status").stdout


def test_changing_a_train_param_reruns_only_train_evaluate_package_monitor(clone, first_state):
    locked, before = first_state
    clone.write_params(lambda p: p["train"]["hist_gradient_boosting"].update(learning_rate=0.1))
    done = clone.dvc("repro")
    assert ran_stages(done.stdout) == ["train", "evaluate", "package", "monitor"]
    assert "Stage 'prepare' didn't change, skipping" in done.stdout
    assert "Stage 'featurize' didn't change, skipping" in done.stdout
    after = clone.file_hashes(clone.locked_outputs())
    for path in ("data/prepared/train.parquet", "data/features/test.parquet", "models/transformer.skops"):
        assert after[path] == before[path]
    assert after["models/model.skops"] != before["models/model.skops"]
    assert "Data and pipelines are up to date" in clone.dvc("status").stdout


def test_checkout_of_the_previous_commit_restores_it_byte_for_byte(clone, first_state):
    locked, before = first_state
    clone.git("commit", "-qam", "Faster learning rate")
    changed = clone.file_hashes(clone.locked_outputs())
    clone.git("checkout", "-q", "HEAD~1")
    clone.dvc("checkout")
    assert clone.file_hashes(before) == before
    assert "Data and pipelines are up to date" in clone.dvc("status").stdout
    clone.git("checkout", "-q", "-")
    clone.dvc("checkout")
    assert clone.file_hashes(changed) == changed
