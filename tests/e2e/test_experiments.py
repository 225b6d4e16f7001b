"""DVC experiments: set params from the command line, queue a grid, compare, keep the best."""

from __future__ import annotations

import json
import math
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from commands import HANG_S
from dvcclone import BIN, ran_stages

pytestmark = pytest.mark.e2e

RATES = ("0.02", "0.1", "0.2")


@pytest.fixture(scope="module")
def grid(tmp_path_factory, reproduced):
    """The README's experiment flow in order, on a fresh MLflow store: one experiment that
    switches the model kind (`--temp`: the workspace keeps its params), then a queued grid
    of three run by two parallel workers, which both create the store's tables at once."""
    import shutil

    from dvcclone import copy_clone

    clone = copy_clone(reproduced, tmp_path_factory.mktemp("grid") / "repo")
    (clone.root / "mlflow.db").unlink()
    shutil.rmtree(clone.root / "mlruns")
    clone.dvc("exp", "run", "--temp", "-S", "train.model=random_forest", "-S", "train.random_forest.max_depth=10")
    assert clone.git("status", "--porcelain") == ""  # the workspace is as it was
    clone.dvc("exp", "run", "--queue", "-S", f"train.hist_gradient_boosting.learning_rate={','.join(RATES)}")
    assert clone.dvc("queue", "status").stdout.count("Queued") == 3
    start_queue(clone, workers=2)
    try:
        status = wait_for_queue(clone)
    finally:
        clone.dvc("queue", "stop", "--kill", check=False)
        stop_workers(clone)
    assert status.count("Success") == 3, f"{status}\n{worker_logs(clone)}"
    return clone


def wait_for_queue(clone) -> str:
    """`dvc queue status` once nothing is queued or running. The grid takes about 330 s alone
    and over 900 s beside a second test run, so the whole has no deadline: the wait fails only
    when no task's status and no worker's or experiment's log has changed for HANG_S, a queue
    that is stuck, however busy the machine. The status is asked every 10 s (each ask is a DVC
    process and a round of celery's inspection), the logs every 2 s."""
    seen, still_since, asked = None, time.monotonic(), -math.inf
    while True:
        if time.monotonic() - asked >= 10:
            status, asked = clone.dvc("queue", "status").stdout, time.monotonic()
            if "Queued" not in status and "Running" not in status:
                return status
        progress = (task_rows(status), log_sizes(clone))
        if progress != seen:
            seen, still_since = progress, time.monotonic()
        elif time.monotonic() - still_since > HANG_S:
            raise AssertionError(f"the queue made no progress for {HANG_S} s\n{status}\n{worker_logs(clone)}")
        time.sleep(2)


def task_rows(status: str) -> list[str]:
    """The task table of `dvc queue status`, without its "Worker status" line (celery's count of
    active workers, which a late reply under load changes without any task advancing)."""
    return [line for line in status.splitlines() if not line.startswith("Worker status")]


def log_sizes(clone) -> list[int]:
    """The size of each worker's and experiment's log; -1 for one DVC removed once listed."""
    return [size(path) for path in worker_files(clone, ".out")]


def size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return -1


def start_queue(clone, workers: int) -> None:
    """`dvc queue start -j N`, as the README runs it. Its output goes to a file, not a pipe:
    DVC forks the workers' launcher with the caller's stdout, so a captured pipe stays open
    until every worker has exited and `queue start` would seem to hang for the whole grid."""
    with open(clone.root.parent / "queue-start.log", "w") as log:
        subprocess.run(
            [str(BIN / "dvc"), "queue", "start", "-j", str(workers)],
            cwd=clone.root,
            env=clone.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            check=True,
            timeout=120,
        )


def worker_files(clone, suffix: str) -> list[Path]:
    """The queue workers' files (`.dvc/tmp/exps/celery`) and each experiment's (`run/REV/`).
    DVC cleans these folders up as experiments end: a listing that meets a vanished one is
    taken again."""
    exps = clone.root / ".dvc/tmp/exps"
    while True:
        try:
            return sorted((exps / "celery").glob(f"*{suffix}")) + sorted((exps / "run").glob(f"*/*{suffix}"))
        except FileNotFoundError:
            continue


def worker_logs(clone) -> str:
    """The queue workers' and experiments' own logs, to tell a slow grid from a stuck one."""
    return "\n".join(f"--- {p.name}\n{tail(p)}" for p in worker_files(clone, ".out"))


def tail(path: Path) -> str:
    try:
        return path.read_text(errors="replace")[-3000:]
    except FileNotFoundError:
        return "(removed by DVC)"


def stop_workers(clone) -> None:
    """Stop any worker or experiment process `queue stop --kill` left, by the pid DVC recorded,
    and only if that process still works in this clone."""
    for pidfile in worker_files(clone, ".pid"):
        try:
            pid = int(pidfile.read_text().strip())
            if not Path(f"/proc/{pid}/cwd").resolve().is_relative_to(clone.root.resolve()):
                continue
            os.kill(pid, signal.SIGKILL)
        except (ValueError, OSError):
            continue


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
    assert ran_stages(done.stdout) == ["featurize", "train", "evaluate", "package", "monitor"]
    params = yaml.safe_load((clone.root / "params.yaml").read_text())
    assert params["train"]["model"] == "logistic_regression" and params["train"]["logistic_regression"]["C"] == 0.3
    assert json.loads((clone.root / "metrics/evaluation.json").read_text())["threshold"] == 0.4


def test_queued_grid_runs_with_the_right_params(grid):
    found = {n: e for n, e in experiments(grid).items() if e["params"]["train"]["model"] == "hist_gradient_boosting"}
    assert sorted(
        str(e["params"]["train"]["hist_gradient_boosting"]["learning_rate"]) for e in found.values()
    ) == sorted(RATES)  # the grid did not inherit the random forest of the experiment before it
    aucs = {e["metrics"]["test"]["roc_auc"] for e in found.values()}
    assert len(aucs) == 3  # three different models


def test_each_experiment_logs_exactly_one_run_to_the_project_store(grid):
    db = sqlite3.connect(grid.root / "mlflow.db")
    runs = db.execute(
        "select t.value, m.value, r.value from tags t "
        "join params m on m.run_uuid = t.run_uuid and m.key = 'train.model' "
        "join params r on r.run_uuid = t.run_uuid and r.key = 'train.hist_gradient_boosting.learning_rate' "
        "where t.key = 'dvc_experiment'"
    ).fetchall()
    assert db.execute("select count(*) from runs").fetchone()[0] == len(runs) == 4
    configs = sorted((model, rate) for _, model, rate in runs)
    assert configs == sorted([("random_forest", "0.05")] + [("hist_gradient_boosting", r) for r in RATES])
    assert {name for name, _, _ in runs} == set(experiments(grid))


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
