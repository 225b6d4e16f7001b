"""DVC experiments: set params from the command line, queue a grid, compare, keep the best."""

from __future__ import annotations

import json
import sqlite3
import time

import pytest
import yaml

from dvcclone import ran_stages

pytestmark = pytest.mark.e2e

RATES = ("0.02", "0.1", "0.2")


@pytest.fixture(scope="module")
def grid(tmp_path_factory, reproduced):
    """A queued grid of three experiments run two at a time."""
    from dvcclone import copy_clone

    clone = copy_clone(reproduced, tmp_path_factory.mktemp("grid") / "repo")
    clone.dvc("exp", "run", "--queue", "-S", f"train.hist_gradient_boosting.learning_rate={','.join(RATES)}")
    assert clone.dvc("queue", "status").stdout.count("Queued") == 3
    clone.dvc("queue", "start", "-j", "2")
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline:
            status = clone.dvc("queue", "status").stdout
            if "Queued" not in status and "Running" not in status:
                break
            time.sleep(2)
    finally:
        clone.dvc("queue", "stop", "--kill", check=False)
    assert status.count("Success") == 3, status
    return clone


def experiments(clone) -> dict[str, dict]:
    """name -> {params, metrics} from `dvc exp show --json`."""
    data = json.loads(clone.dvc("exp", "show", "--json").stdout)
    found = {}
    for baseline in data:
        for exp in baseline.get("experiments") or []:
            rev = exp["revs"][0]
            body = rev["data"]
            found[rev.get("name") or exp.get("name")] = {
                "params": body["params"]["params.yaml"]["data"],
                "metrics": body["metrics"]["metrics/metrics.json"]["data"],
            }
    return found


def test_every_tunable_param_can_be_set_from_the_command_line(copy_of):
    clone = copy_of("exp-set")
    done = clone.dvc(
        "exp",
        "run",
        "-S",
        "train.model=logistic_regression",
        "-S",
        "train.logistic_regression.C=0.3",
        "-S",
        "evaluate.threshold=0.4",
        "-S",
        "featurize.scale_numeric=false",
    )
    assert ran_stages(done.stdout) == ["featurize", "train", "evaluate", "package"]
    params = yaml.safe_load((clone.root / "params.yaml").read_text())
    assert params["train"]["model"] == "logistic_regression" and params["train"]["logistic_regression"]["C"] == 0.3
    assert json.loads((clone.root / "metrics/metrics.json").read_text())["threshold"] == 0.4


def test_queued_grid_runs_with_the_right_params(grid):
    found = experiments(grid)
    assert sorted(
        str(e["params"]["train"]["hist_gradient_boosting"]["learning_rate"]) for e in found.values()
    ) == sorted(RATES)
    aucs = {e["metrics"]["test"]["roc_auc"] for e in found.values()}
    assert len(aucs) == 3  # three different models


def test_queued_experiments_log_to_the_project_store_with_their_names(grid):
    db = sqlite3.connect(grid.root / "mlflow.db")
    rows = db.execute(
        "select t.value, p.value from tags t join params p on p.run_uuid = t.run_uuid "
        "where t.key = 'dvc_experiment' and p.key = 'train.hist_gradient_boosting.learning_rate'"
    ).fetchall()
    assert sorted(rate for _, rate in rows) == sorted(RATES)
    assert {name for name, _ in rows} == set(experiments(grid))


def test_diff_apply_and_branch_keep_the_best(grid):
    found = experiments(grid)
    best = max(found, key=lambda name: found[name]["metrics"]["test"]["roc_auc"])
    diff = json.loads(grid.dvc("exp", "diff", best, "--json").stdout)
    assert "metrics/metrics.json" in diff["metrics"] and "params.yaml" in diff["params"]
    grid.dvc("exp", "apply", best)
    applied = yaml.safe_load((grid.root / "params.yaml").read_text())
    assert applied == found[best]["params"]
    assert json.loads((grid.root / "metrics/metrics.json").read_text())["test"] == found[best]["metrics"]["test"]
    assert "Data and pipelines are up to date" in grid.dvc("status").stdout
    grid.dvc("exp", "branch", best, "best-lr")
    assert yaml.safe_load(grid.git("show", "best-lr:params.yaml")) == found[best]["params"]
