"""pipeline.yaml's report and comment jobs for a pull request, executed step by step from a fresh
clone in a shell like a runner's (only setup-python's interpreter on PATH, nothing activated; see
github.py): the metric report posted through the `cml` stand-in, and none for a fork."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from events import (  # noqa: E402
    BASE,
    PR_NUMBER,
    checkout,
    hand_over_objects,
    head_sha,
    open_pull_request,
    pipeline_contexts,
)
from github import Runner, load_workflow  # noqa: E402

pytestmark = pytest.mark.runner


def test_pipeline_jobs_post_the_metric_report_on_a_bare_runner(repo, tmp_path):
    workspace = checkout(repo, tmp_path)
    open_pull_request(workspace)
    runner = Runner(tmp_path, pipeline_contexts("pull_request", head_sha(workspace)))
    workflow = load_workflow(repo, "pipeline.yaml")
    fetch = hand_over_objects(runner, repo, workspace)
    assert runner.run_job(workflow, "reproducibility", workspace) is None  # a pull request gets the report
    setup, receive, report = runner.run_job(workflow, "report", workspace)
    assert "No usable remote" in fetch and "No usable remote" in receive and "Running stage 'train'" in report
    assert (workspace / "reports" / "report.md").exists() and "pipeline-report" in runner.artifacts

    comment_workspace = tmp_path / "comment-job"  # a new machine: no checkout, only the artifact
    comment_workspace.mkdir()
    runner.run_job(workflow, "comment", comment_workspace)
    args = (runner.cml_log / "args").read_text().splitlines()
    assert args[:2] == ["comment", "update"]
    assert f"--target=pr/{PR_NUMBER}" in args and "--publish=false" in args
    assert "--repo=https://github.com/acme/reprokit" in args
    assert (runner.cml_log / "token").read_text() == "yes\n"
    posted = (runner.cml_log / "posted.md").read_text()
    assert posted == (workspace / "reports" / "report.md").read_text()
    rows = posted.splitlines()
    assert "| `params.yaml:train.hist_gradient_boosting.learning_rate` | `0.05` | `0.1` |" in rows
    # The first test.roc_auc row is metrics/metrics.json's: the base's committed value, the head's reproduced one.
    committed = subprocess.run(
        ["git", "-C", str(workspace), "show", f"origin/{BASE}:metrics/metrics.json"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    base = json.loads(committed)["test"]["roc_auc"]
    head = json.loads((workspace / "metrics" / "metrics.json").read_text())["test"]["roc_auc"]
    assert head != base  # the learning rate changed the model
    mark = "✅" if head > base else "❌"
    roc = next(row for row in rows if row.startswith("| test.roc_auc "))
    assert roc == f"| test.roc_auc ↑ | {base:.4f} | {head:.4f} | {head - base:+.4f} {mark} |"


def test_a_fork_gets_the_report_artifact_and_no_comment_attempt(repo, tmp_path):
    """A fork's pull request is not listed in the event: the comment job is skipped."""
    runner = Runner(tmp_path, pipeline_contexts("pull_request", "0" * 40, head_repo="someone/reprokit"))
    assert runner.run_job(load_workflow(repo, "pipeline.yaml"), "comment", tmp_path) is None
    assert not (runner.cml_log / "args").exists()
