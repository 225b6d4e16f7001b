"""The GitHub workflows: valid, least-privilege, thin callers of scripts that exist."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

WORKFLOWS = ("ci.yaml", "lock.yaml", "pipeline.yaml", "monitor.yaml")


def load(repo: Path, name: str) -> dict:
    return yaml.safe_load((repo / ".github" / "workflows" / name).read_text())


@pytest.mark.parametrize("name", WORKFLOWS)
def test_workflow_is_valid_against_the_github_schema(repo, name):
    tool = shutil.which("check-jsonschema") or str(Path(sys.executable).parent / "check-jsonschema")
    done = subprocess.run(
        [tool, "--builtin-schema", "vendor.github-workflows", str(repo / ".github" / "workflows" / name)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("name", WORKFLOWS)
def test_steps_call_only_scripts_and_modules_that_exist(repo, name):
    workflow = load(repo, name)
    makefile = (repo / "Makefile").read_text()
    for job in workflow["jobs"].values():
        for step in job["steps"]:
            run = step.get("run", "")
            for script in re.findall(r"\.ci/[\w-]+", run):
                path = repo / script
                assert path.exists() and path.stat().st_mode & 0o111, script
                assert path.read_text().startswith("#!/usr/bin/env bash\n")
                assert "set -euo pipefail" in path.read_text()
            for target in re.findall(r"\bmake (\w[\w-]*)", run):
                assert re.search(rf"^{target}:", makefile, re.M), target
            assert len(run.splitlines()) <= 2, "workflows stay thin: logic belongs in a script"


def steps(workflow: dict):
    """(job name, job, step) for every step."""
    for name, job in workflow["jobs"].items():
        for step in job["steps"]:
            yield name, job, step


def runs_repository_code(job: dict) -> bool:
    """A job whose steps run code from the checkout (make targets, .ci scripts)."""
    return any(re.search(r"\bmake\b|\.ci/", step.get("run", "")) for step in job["steps"])


def write_scopes(workflow: dict, job: dict) -> set[str]:
    permissions = job.get("permissions", workflow.get("permissions"))
    assert permissions is not None, "no permissions block: GitHub would grant the repository default"
    assert isinstance(permissions, dict), permissions
    return {scope for scope, level in permissions.items() if level == "write"}


@pytest.mark.parametrize("name", WORKFLOWS)
def test_every_action_is_pinned_by_commit(repo, name):
    for _, _, step in steps(load(repo, name)):
        if "uses" in step:
            assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", step["uses"]), step["uses"]


@pytest.mark.parametrize("name", WORKFLOWS)
def test_no_expression_is_spliced_into_a_shell_line(repo, name):
    """Event values (branch names, titles) reach scripts through `env:`, never as shell text."""
    for _, _, step in steps(load(repo, name)):
        assert "${{" not in step.get("run", ""), step["run"]


@pytest.mark.parametrize("name", WORKFLOWS)
def test_no_job_running_repository_code_can_write(repo, name):
    workflow = load(repo, name)
    for job_name, job in workflow["jobs"].items():
        if runs_repository_code(job):
            assert write_scopes(workflow, job) == set(), job_name
        for step in job["steps"]:
            if step.get("uses", "").startswith("actions/checkout@"):
                assert step["with"]["persist-credentials"] is False, job_name  # no token left in .git/config


def checkouts(job: dict) -> list[dict]:
    return [step for step in job["steps"] if step.get("uses", "").startswith("actions/checkout@")]


def triggers(workflow: dict) -> set[str]:
    return set(workflow[True])


# A `workflow_run` workflow is the default branch's file and runs in its context: a checkout
# without `ref:` is the default branch's code; this ref is the commit under test.
TESTED_COMMIT = "${{ github.event.workflow_run.head_sha }}"


def handles_code_under_test(workflow: dict, job: dict) -> bool:
    """A job that checks out the commit under test (a pull request's, a pushed branch's), or
    runs code from a checkout other than the default branch's."""
    if triggers(workflow) & {"push", "pull_request"}:
        return bool(checkouts(job)) or runs_repository_code(job)  # GitHub runs the tested copy of the file
    tested = [c for c in checkouts(job) if c.get("with", {}).get("ref") is not None]
    assert all(c["with"]["ref"] == TESTED_COMMIT for c in tested), "check out the default branch or the tested commit"
    return bool(tested) or (runs_repository_code(job) and not checkouts(job))


def test_workflows_run_for_a_push_or_pull_request_hold_no_secret(repo):
    """GitHub runs a pull request's (or a pushed branch's) own copy of these files: whoever can
    push may edit them, so they reference no secret at all, not even the job token."""
    for name in WORKFLOWS:
        workflow = load(repo, name)
        if triggers(workflow) & {"push", "pull_request", "pull_request_target"}:
            assert "secrets." not in yaml.safe_dump(workflow), name
            assert "environment" not in yaml.safe_dump(workflow["jobs"]), name


def test_the_privileged_pipeline_workflow_follows_the_lock_workflow_and_runs_nothing_before_it(repo):
    pipeline, lock = load(repo, "pipeline.yaml"), load(repo, "lock.yaml")
    assert pipeline[True] == {"workflow_run": {"workflows": [lock["name"]], "types": ["completed"]}}
    assert triggers(lock) == {"push", "pull_request"}
    assert [step for step in steps(lock) if "run" in step[2]] == []  # the lock job runs nothing


@pytest.mark.parametrize("name", ("pipeline.yaml", "monitor.yaml"))
def test_no_job_that_handles_code_under_test_holds_a_secret(repo, name):
    """Anyone who can open a pull request controls its code: a job that checks it out or runs it
    has no secret anywhere, the job token excepted only where no code runs (the CML comment)."""
    workflow = load(repo, name)
    for job_name, job in workflow["jobs"].items():
        text = yaml.safe_dump(job)
        if handles_code_under_test(workflow, job):
            assert "secrets." not in text and "environment" not in job, job_name
            assert write_scopes(workflow, job) == set(), job_name
        elif "secrets." in text and "secrets.GITHUB_TOKEN" not in text or "secrets.RETRAIN_PR_TOKEN" in text:
            # A credentialed job: the default branch's code only, anything else handed over as
            # data into the runner's temporary folder; its secrets live in an environment that
            # admits only the default branch (a dispatch on another branch gets none).
            assert job.get("environment") == "default-branch", job_name
            assert checkouts(job) and all("ref" not in c["with"] for c in checkouts(job)), job_name
            for step in job["steps"]:
                if step.get("uses", "").startswith("actions/download-artifact@"):
                    assert step["with"]["path"].startswith("${{ runner.temp }}/"), job_name
    if name == "pipeline.yaml":
        credentialed = [n for n, j in workflow["jobs"].items() if "secrets.DVC_READ" in yaml.safe_dump(j)]
        assert credentialed == ["fetch"], credentialed
        assert write_scopes(workflow, workflow["jobs"]["fetch"]) == set()


def test_no_workflow_uses_a_cache_the_tested_code_could_have_written(repo):
    """pipeline.yaml runs the tested commit's code in the default branch's context, where a cache
    it wrote would be restored by the default branch's own runs: no workflow restores one."""
    for name in WORKFLOWS:
        for _, _, step in steps(load(repo, name)):
            assert not step.get("uses", "").startswith("actions/cache"), name
            assert "cache" not in step.get("with", {}), (name, step)


def test_no_workflow_runs_pull_request_code_with_the_base_repository_s_privileges(repo):
    for name in WORKFLOWS:
        assert "pull_request_target" not in load(repo, name)[True], name


@pytest.mark.parametrize("name", WORKFLOWS)
def test_secrets_reach_only_the_steps_that_need_them(repo, name):
    workflow = load(repo, name)
    for job_name, job, step in steps(workflow):
        secrets = {k for k, v in step.get("env", {}).items() if "secrets." in str(v)}
        assert "secrets." not in yaml.safe_dump({k: v for k, v in step.items() if k != "env"}), step
        if not secrets:
            continue
        if step.get("run") == ".ci/pull" or step.get("run", "").startswith(".ci/fetch-objects "):
            # storage credentials: read-only, only to the pull (default-branch code) or the fetch
            assert secrets == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
            assert "GITHUB_TOKEN" not in str(step["env"])
            assert triggers(workflow) <= {"workflow_run", "schedule", "workflow_dispatch"}, name
        elif step.get("run", "").startswith(".ci/monitor "):
            # The monitor reads the batch (read-only storage) and posts to the webhook; it runs
            # only the default branch's code (schedule, dispatch), never a pull request's.
            assert secrets == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "REPROKIT_MONITOR_WEBHOOK"}
            assert triggers(workflow) <= {"schedule", "workflow_dispatch"}, name
            assert "GITHUB_TOKEN" not in str(step["env"])
        else:  # the token, only where no repository code runs
            ((variable, value),) = ((k, v) for k, v in step["env"].items() if k in secrets)
            tokens = ("${{ secrets.GITHUB_TOKEN }}", "${{ secrets.RETRAIN_PR_TOKEN || secrets.GITHUB_TOKEN }}")
            assert variable in ("REPO_TOKEN", "GH_TOKEN") and value in tokens
            assert not runs_repository_code(job), job_name
    for scope in ("env",):
        assert "secrets." not in yaml.safe_dump(workflow.get(scope, {}))
        for job in workflow["jobs"].values():
            assert "secrets." not in yaml.safe_dump(job.get(scope, {}))


@pytest.mark.parametrize("name", WORKFLOWS)
def test_workflows_use_the_python_minor_version_the_project_pins(repo, name):
    import tomllib

    pinned = tomllib.loads((repo / "pyproject.toml").read_text())["project"]["requires-python"]
    assert pinned == "==3.11.*" and (repo / ".python-version").read_text().strip() == "3.11"
    versions = {
        step["with"]["python-version"]
        for _, _, step in steps(load(repo, name))
        if step.get("uses", "").startswith("actions/setup-python@")
    }
    assert versions <= {"3.11"} and (versions or name == "lock.yaml")  # the lock job runs no Python


def test_the_comment_cannot_lose_the_report_artifact(repo):
    """The report is uploaded (even when a step failed) in a job that ends before the
    comment job starts, so a failing comment never loses it."""
    workflow = load(repo, "pipeline.yaml")

    def is_report_upload(step: dict) -> bool:
        return step.get("uses", "").startswith("actions/upload-artifact@") and step["with"]["name"] == "pipeline-report"

    uploads = {n for n, _, s in steps(workflow) if is_report_upload(s)}
    comments = {n for n, _, s in steps(workflow) if "cml comment" in s.get("run", "")}
    assert len(uploads) == 1 and len(comments) == 1 and uploads != comments
    (upload_job,), (comment_job,) = uploads, comments
    upload = next(s for _, _, s in steps(workflow) if is_report_upload(s))
    assert upload["if"] == "always()" and upload["with"]["if-no-files-found"] == "error"
    assert workflow["jobs"][comment_job]["needs"] == upload_job
    assert write_scopes(workflow, workflow["jobs"][comment_job]) == {"pull-requests"}


def test_the_cml_version_is_pinned(repo):
    install = next(s for _, _, s in steps(load(repo, "pipeline.yaml")) if s.get("id") == "install-cml")
    assert re.fullmatch(r"\d+\.\d+\.\d+", str(install["env"]["CML_VERSION"]))
    assert '"@dvcorg/cml@$CML_VERSION"' in install["run"]
