"""`python -m reprokit.commands.tune`, run as a user runs it: a tiny grid on the default data gives the
same table with joblib's loky backend and on a real Dask cluster (a `LocalCluster` of two
worker processes on 127.0.0.1, started here), logs one MLflow child run per candidate, and
prints or applies the best candidate."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import yaml
from commands import HANG_S
from dasks import executed

from reprokit.core.artifacts import write_parquet
from reprokit.core.yamledit import edit_yaml

REPO_FILES = ("params.yaml", "dataset.yaml")
GRID = {"max_iter": [20, 40], "max_leaf_nodes": [3, 7], "max_bins": [128]}  # max_bins: a key params.yaml lacks


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, repo, telco_splits):
    """A folder holding the repository's params (with the tiny grid) and contract and the
    prepared train split, as `prepare` writes it."""
    root = tmp_path_factory.mktemp("tune")
    for name in REPO_FILES:
        shutil.copy(repo / name, root / name)
    params = (root / "params.yaml").read_text()
    start = params.index("\n  grid:", params.index("\ntune:")) + 1
    end = params.index("\n\n", start)
    tiny = "  grid:\n" + "".join(f"    {key}: {json.dumps(values)}\n" for key, values in GRID.items())
    params = params[:start] + tiny + params[end + 1 :]
    weak = {("train", "hist_gradient_boosting", "max_iter"): 10}  # so that a grid point wins
    params = edit_yaml(params, weak, "params.yaml")
    (root / "params.yaml").write_text(params.replace("  folds: 5 ", "  folds: 3 "))
    _, train, _, _ = telco_splits
    write_parquet(train, root / "data" / "prepared" / "train.parquet")
    return root


def tune(root, *args: str, store: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "MLFLOW_TRACKING_URI": store or f"sqlite:///{root / 'mlflow.db'}"}
    return subprocess.run(
        [sys.executable, "-m", "reprokit.commands.tune", *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=HANG_S,
    )


@pytest.fixture(scope="module")
def loky_run(workdir):
    done = tune(workdir, "--backend", "loky", "--out", "loky.json", "--plot-out", "loky_cv.json")
    assert done.returncode == 0, done.stderr
    return done


def test_the_grid_is_searched_with_every_fold(workdir, loky_run):
    result = json.loads((workdir / "loky.json").read_text())
    table = json.loads((workdir / "loky_cv.json").read_text())
    assert result["folds"] == 3 and result["candidates"] == len(table) == 5  # the current params, then 4
    params = yaml.safe_load((workdir / "params.yaml").read_text())["train"]["hist_gradient_boosting"]
    assert table[0]["params"] == ", ".join(f"{k}={v}" for k, v in params.items())  # candidate 0: as trained now
    assert all(len(row["fold_roc_auc"]) == 3 for row in table)
    best = min(table, key=lambda row: row["rank"])
    assert best["cv_roc_auc"] == max(row["cv_roc_auc"] for row in table) == result["best"]["cv_roc_auc"]
    assert 0.80 < result["best"]["cv_roc_auc"] < 0.90
    assert result["best"]["params"]["max_iter"] in (20, 40, params["max_iter"])


def test_loky_and_a_dask_cluster_give_the_same_table(workdir, loky_run, cluster):
    before = executed(cluster)
    done = tune(workdir, "--backend", "dask", "--scheduler", cluster.scheduler_address, "--out", "dask.json",
                "--plot-out", "dask_cv.json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (workdir / "dask.json").read_bytes() == (workdir / "loky.json").read_bytes()
    assert (workdir / "dask_cv.json").read_bytes() == (workdir / "loky_cv.json").read_bytes()
    after = executed(cluster)  # the (candidate, fold) tasks ran on the cluster, on both workers
    assert len(after) == 2 and all(after[worker] > before[worker] for worker in after)


def test_every_candidate_is_a_child_run_of_one_parent_run(workdir, loky_run):
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    (experiment,) = [e for e in client.search_experiments() if e.name == "telco_customer_churn"]
    runs = client.search_runs([experiment.experiment_id])
    parents = [run for run in runs if run.data.tags.get("reprokit.kind") == "tune"]
    assert parents  # one per search (the Dask test's search logs to the same store)
    for parent in parents:
        children = [run for run in runs if run.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
        assert len(children) == 5
        assert {run.data.params["max_leaf_nodes"] for run in children} >= {"3", "7"}
        assert all(run.data.metrics["cv_roc_auc"] > 0.8 for run in children)
        assert parent.data.metrics["best_cv_roc_auc"] == max(run.data.metrics["cv_roc_auc"] for run in children)
    assert len(runs) == len(parents) * 6


def test_the_best_candidate_is_printed_as_a_dvc_exp_run_line_and_applied_on_request(workdir, loky_run, tmp_path):
    result = json.loads((workdir / "loky.json").read_text())
    (line,) = [line for line in loky_run.stdout.splitlines() if line.startswith("dvc exp run")]
    assert "-S 'train.model=hist_gradient_boosting'" in line
    params = yaml.safe_load((workdir / "params.yaml").read_text())["train"]["hist_gradient_boosting"]
    for key, value in result["best"]["params"].items():
        assert (f"-S 'train.hist_gradient_boosting.{key}={value}'" in line) == (params.get(key, value) != value)
    # the line as DVC applies `-S` (Hydra overrides, which refuse new keys without `+`)
    import shlex

    from dvc.utils.hydra import apply_overrides

    overridden = tmp_path / "params.yaml"
    shutil.copy(workdir / "params.yaml", overridden)
    words = shlex.split(line)
    apply_overrides(str(overridden), [words[i + 1] for i, word in enumerate(words) if word == "-S"])
    trained = yaml.safe_load(overridden.read_text())["train"]["hist_gradient_boosting"]
    assert {k: trained[k] for k in result["best"]["params"]} == result["best"]["params"]
    copy = tmp_path / "copy"
    shutil.copytree(workdir, copy, ignore=shutil.ignore_patterns("mlflow.db", "mlruns"))
    done = tune(copy, "--apply", "--n-jobs", "1")
    assert done.returncode == 0, done.stderr
    text = (copy / "params.yaml").read_text()
    assert "# thread budget of every fit and of every prediction over a table" in text  # comments kept
    applied = yaml.safe_load(text)["train"]
    assert applied["model"] == "hist_gradient_boosting"
    assert {k: applied["hist_gradient_boosting"][k] for k in result["best"]["params"]} == result["best"]["params"]
    again = tune(copy, "--apply", "--n-jobs", "1")  # params now train the best: nothing to print or write
    assert again.returncode == 0, again.stderr
    assert "dvc exp run" not in again.stdout and "params.yaml already trains it" in again.stderr
    assert (copy / "params.yaml").read_text() == text


def test_no_dvc_exp_run_line_when_params_already_train_the_best():
    from reprokit.commands.tune import exp_run_line

    best = {"max_iter": 300, "max_leaf_nodes": 4}
    assert exp_run_line("hist_gradient_boosting", "hist_gradient_boosting", best, best) is None
    other_kind = exp_run_line("random_forest", "hist_gradient_boosting", best, best)
    assert other_kind == "dvc exp run -S 'train.model=hist_gradient_boosting'"
    assert exp_run_line("hist_gradient_boosting", "hist_gradient_boosting", best, {"max_iter": 300}) == (
        "dvc exp run -S 'train.model=hist_gradient_boosting' -S '+train.hist_gradient_boosting.max_leaf_nodes=4'"
    )


def test_a_bad_grid_value_is_one_error_naming_it(workdir, tmp_path):
    """Named before the tracking store is asked: here no store answers, and the grid is what
    the user is told to fix."""
    from servers import free_port

    copy = tmp_path / "bad"
    shutil.copytree(workdir, copy, ignore=shutil.ignore_patterns("mlflow.db", "mlruns", "*.json"))
    params = (copy / "params.yaml").read_text().replace("max_leaf_nodes: [3, 7]", "max_leaf_nodes: [3, -7]")
    (copy / "params.yaml").write_text(params)
    done = tune(copy, store=f"http://127.0.0.1:{free_port()}")  # nothing listens
    assert done.returncode == 1
    assert "tune.grid gives train.hist_gradient_boosting a bad value" in done.stderr
    assert "max_leaf_nodes" in done.stderr and "Traceback" not in done.stderr
    assert "unreachable" not in done.stderr
    assert not (copy / "metrics" / "tune.json").exists()


@pytest.mark.parametrize("key", ["max_leaf_node", "random_state"])  # misspelt; the project's (base.seed)
def test_a_grid_key_the_model_does_not_take_is_one_error_naming_it(workdir, tmp_path, key):
    copy = tmp_path / "misspelt"
    shutil.copytree(workdir, copy, ignore=shutil.ignore_patterns("mlflow.db", "mlruns", "*.json"))
    params = (copy / "params.yaml").read_text().replace("max_leaf_nodes: [3, 7]", f"{key}: [3, 7]")
    (copy / "params.yaml").write_text(params)
    done = tune(copy)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert f"tune.grid names {key}, which train.hist_gradient_boosting does not take" in done.stderr
    assert not (copy / "metrics" / "tune.json").exists()


def test_the_dask_backend_needs_a_scheduler_address(workdir):
    done = tune(workdir, "--backend", "dask")
    assert done.returncode == 1 and "--scheduler ADDRESS" in done.stderr and "Traceback" not in done.stderr


def test_tuning_on_enlarged_data_is_refused(workdir, tmp_path):
    copy = tmp_path / "scaled"
    shutil.copytree(workdir, copy, ignore=shutil.ignore_patterns("mlflow.db", "mlruns", "*.json"))
    params = (copy / "params.yaml").read_text()
    (copy / "params.yaml").write_text(params.replace("\n  rows: 0 ", "\n  rows: 100000 ", 1))
    done = tune(copy)
    assert done.returncode == 1 and "scale.rows is on" in done.stderr and "Traceback" not in done.stderr


def test_a_store_that_does_not_answer_stops_tune_before_the_search(workdir, tmp_path):
    """The store is checked first: a tracking server that is down costs seconds, not the search
    (a minute on the default grid), and no table is written."""
    from servers import free_port

    store = f"http://127.0.0.1:{free_port()}"  # nothing listens: no other test process is given it
    out, plot = tmp_path / "tune.json", tmp_path / "tune_cv.json"
    done = tune(workdir, "--out", str(out), "--plot-out", str(plot), store=store)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert f"MLflow tracking store {store} is unreachable" in done.stderr
    assert not out.exists() and not plot.exists()  # the search never ran
