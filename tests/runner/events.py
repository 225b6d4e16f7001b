"""What a workflow's jobs are given in these tests: the event contexts GitHub would pass, and the
checkouts actions/checkout would leave (shared by the workflow tests, one file per workflow)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml
from github import Runner, load_workflow

BASE = "pr-base"
PR_NUMBER = "7"


def contexts(event: str, head_repo: str = "acme/reprokit") -> dict:
    """No storage secrets (as for a contributor without them), vars unset, the job's token."""
    github = {"repository": "acme/reprokit", "event_name": event, "ref": "refs/pull/7/merge", "base_ref": ""}
    github["event"] = {"repository": {"default_branch": BASE}}
    if event == "pull_request":
        github["event"]["pull_request"] = {"number": PR_NUMBER, "head": {"repo": {"full_name": head_repo}}}
        github["base_ref"] = BASE
    return {"github": github, "secrets": {"GITHUB_TOKEN": "job-token"}, "vars": {}}


def pipeline_contexts(trigger: str, head_sha: str, head_repo: str = "acme/reprokit") -> dict:
    """pipeline.yaml's `workflow_run` event, after a `lock` run for a push or a pull request. GitHub
    lists the pull request (number, base) only when it comes from this repository, not a fork's."""
    context = contexts("workflow_run")
    github = context["github"] | {"ref": f"refs/heads/{BASE}", "token": "job-token"}
    same_repository = head_repo == github["repository"]
    pull_requests = [{"number": int(PR_NUMBER), "base": {"ref": BASE}}] if same_repository else []
    github["event"]["workflow_run"] = {
        "id": "41",
        "conclusion": "success",
        "event": trigger,
        "head_sha": head_sha,
        "head_branch": "faster-learning",
        "head_repository": {"full_name": head_repo},
        "pull_requests": pull_requests if trigger == "pull_request" else [],
    }
    return context | {"github": github}


def head_sha(workspace: Path) -> str:
    return subprocess.run(
        ["git", "-C", str(workspace), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()


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


def base_checkout(repo: Path, root: Path) -> Path:
    """A fresh clone for a job that checks out the base branch (`ref:` switches it to origin/<base>)."""
    return checkout(repo, root / "base-job")


def hand_over_objects(runner: Runner, repo: Path, workspace: Path) -> str:
    """The `lock` workflow (the tested commit, nothing run), then pipeline.yaml's `fetch` job (the
    default branch's code, the only job given storage credentials): the output of the fetch step."""
    assert runner.run_job(load_workflow(repo, "lock.yaml"), "lock", workspace) == []  # no run: step at all
    assert (runner.artifacts["head-dvc-lock"] / "dvc.lock").read_text() == (workspace / "dvc.lock").read_text()
    base = base_checkout(repo, runner.root)
    setup, fetch = runner.run_job(load_workflow(repo, "pipeline.yaml"), "fetch", base)
    assert (runner.artifacts["dvc-objects"] / "status.txt").exists()
    return fetch


def monitor_checkout(repo: Path, root: Path) -> Path:
    """A checkout whose `origin` is a bare copy of the repository: pushes land there."""
    origin = root / "origin.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(repo), str(origin)], check=True)
    workspace = root / "workspace"
    subprocess.run(["git", "clone", "-q", str(origin), str(workspace)], check=True)
    return workspace
