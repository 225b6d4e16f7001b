"""monitor.yaml, executed step by step from a fresh clone in a shell like a runner's (only
setup-python's interpreter on PATH, nothing activated; see github.py): an alert opens a
retraining pull request, a quiet batch opens none."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from events import contexts, monitor_checkout  # noqa: E402
from github import Runner, load_workflow  # noqa: E402

pytestmark = pytest.mark.runner


def test_monitor_workflow_opens_a_retraining_pull_request_on_an_alert(repo, tmp_path):
    """Scheduled/dispatched: the check job monitors the batch it is given; on an alert the
    write-token job, which runs no repository code, pushes the prepared branch and opens the
    pull request with gh."""
    context = contexts("workflow_dispatch") | {"inputs": {"batch": "data/batches/new_category.parquet"}}
    runner = Runner(tmp_path, context)
    workflow = load_workflow(repo, "monitor.yaml")
    assert set(workflow["on"]) == {"schedule", "workflow_dispatch"}  # never a pull request's code
    workspace = monitor_checkout(repo, tmp_path)
    setup, pull, check = runner.run_job(workflow, "check", workspace)
    assert "No usable remote" in pull and "new_category.parquet: alert" in check
    assert runner.contexts["needs"]["check"]["outputs"] == {"verdict": "alert"}
    prepared = runner.artifacts["monitor-report"] / "retrain"
    assert (prepared / "branch.txt").read_text().startswith("retrain/drift-")
    assert subprocess.run(["git", "status", "--porcelain"], cwd=workspace, capture_output=True, text=True).stdout == ""

    pr_workspace = tmp_path / "pr-job"  # a new machine: a fresh checkout and the artifact
    subprocess.run(["git", "clone", "-q", str(tmp_path / "origin.git"), str(pr_workspace)], check=True)
    commit, push, gh = runner.run_job(workflow, "open-pull-request", pr_workspace)
    branch = (prepared / "branch.txt").read_text().strip()
    pushed = subprocess.run(
        ["git", "-C", str(tmp_path / "origin.git"), "show", f"{branch}:params.yaml"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert yaml.safe_load(pushed)["monitor"]["batch"] == "data/batches/new_category.parquet"
    assert "# the batch the monitor stage checks" in pushed  # comments kept
    args = (runner.gh_log / "args").read_text().splitlines()
    assert args[:2] == ["pr", "create"] and args[args.index("--head") + 1] == branch
    assert (runner.gh_log / "token").read_text() == "yes\n"
    body = (runner.gh_log / "body.md").read_text()
    assert "**alert**" in body and "`multiple_lines` PSI" in body

    # The next scheduled run finds the held-out batch quiet: no pull request job.
    quiet = Runner(tmp_path / "quiet", contexts("schedule"))
    *_, check = quiet.run_job(workflow, "check", workspace)
    assert "no_drift.parquet: ok" in check
    assert quiet.contexts["needs"]["check"]["outputs"] == {"verdict": "ok"}
    assert quiet.run_job(workflow, "open-pull-request", pr_workspace) is None
