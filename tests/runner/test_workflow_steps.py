"""Both GitHub workflows, every job, executed step by step from a fresh clone in a shell like a
runner's: only setup-python's interpreter on PATH, nothing activated (see github.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from github import Runner, load_workflow  # noqa: E402

pytestmark = pytest.mark.runner

BASE = "pr-base"
PR_NUMBER = "7"


def contexts(event: str, head_repo: str = "acme/reprokit") -> dict:
    """No storage secrets (as for a contributor without them), vars unset, the job's token."""
    github = {"repository": "acme/reprokit", "event_name": event, "ref": "refs/pull/7/merge"}
    if event == "pull_request":
        pull_request = {"number": PR_NUMBER, "head": {"repo": {"full_name": head_repo}}}
        github |= {"base_ref": BASE, "event": {"pull_request": pull_request}}
    return {"github": github, "secrets": {"GITHUB_TOKEN": "job-token"}, "vars": {}}


def checkout(repo: Path, root: Path) -> Path:
    """What actions/checkout leaves: the commit, full history, `origin/<base>`, no token."""
    workspace = root / "workspace"
    subprocess.run(["git", "clone", "-q", str(repo), str(workspace)], check=True)
    git = ["git", "-C", str(workspace)]
    subprocess.run([*git, "update-ref", f"refs/remotes/origin/{BASE}", "HEAD"], check=True)
    return workspace


def open_pull_request(workspace: Path) -> None:
    """The pull request's head: a commit that raises the learning rate (dvc.lock not updated)."""
    params = workspace / "params.yaml"
    data = yaml.safe_load(params.read_text())
    data["train"]["hist_gradient_boosting"]["learning_rate"] = 0.1
    params.write_text(yaml.safe_dump(data, sort_keys=False))
    identity = ["-c", "user.name=pr", "-c", "user.email=pr@example.invalid"]
    subprocess.run(["git", "-C", str(workspace), *identity, "commit", "-qam", "Faster learning"], check=True)


def test_ci_tests_job_runs_make_test_on_a_bare_runner(repo, tmp_path, monkeypatch):
    runner = Runner(tmp_path, contexts("push"))
    workspace = checkout(repo, tmp_path)
    # `make test` itself would recurse into this suite: the step runs as written, on one test file.
    runner_env_extra = {"PYTEST_ADDOPTS": "-q -p no:cacheprovider tests/code/test_config.py"}
    workflow = load_workflow(repo, "ci.yaml")
    workflow["jobs"]["tests"].setdefault("env", {}).update(runner_env_extra)
    (output,) = runner.run_job(workflow, "tests", workspace)
    assert " passed" in output and "failed" not in output
    assert (workspace / ".venv" / "bin" / "python").exists()


def test_ci_reproducibility_job_reproduces_the_committed_lock_on_a_bare_runner(repo, tmp_path):
    runner = Runner(tmp_path, contexts("push"))
    workspace = checkout(repo, tmp_path)
    setup, pull, gate = runner.run_job(load_workflow(repo, "ci.yaml"), "reproducibility", workspace)
    assert "No usable remote" in pull
    assert "reproducibility gate passed" in gate
    for stage in ("prepare", "featurize", "train", "evaluate", "package"):
        assert f"Running stage '{stage}'" in gate  # reproduced from scratch, not pulled
    # The venv's own dvc, nothing activated: the stage commands still find the project's Python.
    env = runner.job_env(workspace) | {"PATH": f"{runner.toolcache}:/usr/bin:/bin"}
    done = subprocess.run(
        [".venv/bin/dvc", "repro", "-f", "-s", "train"], cwd=workspace, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert subprocess.run(["git", "status", "--porcelain"], cwd=workspace, capture_output=True, text=True).stdout == ""


def test_cml_jobs_post_the_metric_report_on_a_bare_runner(repo, tmp_path):
    runner = Runner(tmp_path, contexts("pull_request"))
    workflow = load_workflow(repo, "cml.yaml")
    workspace = checkout(repo, tmp_path)
    open_pull_request(workspace)
    setup, pull, report = runner.run_job(workflow, "report", workspace)
    assert "No usable remote" in pull and "Running stage 'train'" in report
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
    """A fork's token is read-only: the comment job is skipped instead of failing with 403."""
    runner = Runner(tmp_path, contexts("pull_request", head_repo="someone/reprokit"))
    assert runner.run_job(load_workflow(repo, "cml.yaml"), "comment", tmp_path) is None
    assert not (runner.cml_log / "args").exists()


def monitor_checkout(repo: Path, root: Path) -> Path:
    """A checkout whose `origin` is a bare copy of the repository: pushes land there."""
    origin = root / "origin.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(repo), str(origin)], check=True)
    workspace = root / "workspace"
    subprocess.run(["git", "clone", "-q", str(origin), str(workspace)], check=True)
    return workspace


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
