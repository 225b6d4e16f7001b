"""The GitHub workflows, every job, executed step by step from a fresh clone in a shell like a
runner's: only setup-python's interpreter on PATH, nothing activated (see github.py)."""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from github import Runner, base_interpreter, load_workflow  # noqa: E402

pytestmark = pytest.mark.runner

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
    return subprocess.run(["git", "-C", str(workspace), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()


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


# The `tests` job's own steps, run as written on a named subset: the Debian tools (promtool, podman,
# ...) as the unprivileged step finds them, and the container engine as the sudo step runs it.
TESTS_SUBSET = "tests/code/test_debian_tools.py tests/container/test_image.py::test_the_engine_runs_rootful_with_the_project_settings"


def ran_only(count: int, output: str) -> bool:
    """pytest's output says `count` tests were selected (xdist's "[4 items]", or "4 selected" in one
    process, after the others were deselected) and all of them passed."""
    selected = re.search(rf"\[{count} items?\]|\b{count} selected\b", output)
    return bool(selected) and re.search(rf"=+ {count} passed(, \d+ (deselected|warnings?))* in ", output) is not None


@pytest.fixture()
def sudo_user():
    """A non-root user with passwordless sudo, as a GitHub runner's: this test's own user when it
    is not root (it must then have passwordless sudo), else one made for the test and removed after."""
    if os.geteuid() != 0:
        assert subprocess.run(["sudo", "--non-interactive", "true"]).returncode == 0, "no passwordless sudo"
        yield pwd.getpwuid(os.geteuid()).pw_name
        return
    if shutil.which("sudo") is None:  # .ci/packages installs it; this test may run before it did
        subprocess.run(["apt-get", "install", "-y", "-qq", "sudo"], check=True, capture_output=True)
    name = f"reprokit-ci-{os.getpid()}"
    subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", name], check=True)
    sudoers = Path("/etc/sudoers.d") / name
    try:
        sudoers.write_text(f"{name} ALL=(ALL) NOPASSWD:ALL\n")
        sudoers.chmod(0o440)
        yield name
    finally:
        sudoers.unlink(missing_ok=True)
        subprocess.run(["userdel", "--remove", name], check=False, capture_output=True)


def test_ci_tests_job_installs_what_the_suite_needs_as_a_non_root_user_with_sudo(repo, sudo_user):
    """Every step as written, as a non-root user with passwordless sudo; `make test` itself would
    recurse into this suite, so TESTS narrows both make targets to the subset above."""
    root = Path(tempfile.mkdtemp(prefix="reprokit-runner-"))  # outside pytest's root-only folders
    try:
        # As root, Debian's interpreter stands in for setup-python's: the user made here cannot
        # read root's. As the runner's own user, setup-python's interpreter is theirs.
        interpreter = Path("/usr/bin/python3.11") if os.geteuid() == 0 else base_interpreter()
        runner = Runner(root, contexts("push"), user=sudo_user, interpreter=interpreter)
        workspace = checkout(repo, root)
        runner.give_to_user(workspace)
        workflow = load_workflow(repo, "ci.yaml")
        assert "TESTS" not in workflow["jobs"]["tests"].get("env", {})  # the real job runs every test
        workflow["jobs"]["tests"]["env"] = {"TESTS": TESTS_SUBSET}
        packages, unprivileged, container = runner.run_job(workflow, "tests", workspace, timeout=1500)
        assert ran_only(4, unprivileged), unprivileged[-3000:]
        assert ran_only(1, container), container[-3000:]
        assert (workspace / ".venv" / "bin" / "python").exists()
        assert (workspace / ".venv").stat().st_uid == pwd.getpwnam(sudo_user).pw_uid  # set up as the user
    finally:
        shutil.rmtree(root, ignore_errors=True)


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


def test_pipeline_reproducibility_job_reproduces_the_committed_lock_on_a_bare_runner(repo, tmp_path):
    workspace = checkout(repo, tmp_path)
    runner = Runner(tmp_path, pipeline_contexts("push", head_sha(workspace)))
    workflow = load_workflow(repo, "pipeline.yaml")
    fetch = hand_over_objects(runner, repo, workspace)
    assert runner.run_job(workflow, "report", workspace) is None  # a push gets no report
    setup, receive, gate = runner.run_job(workflow, "reproducibility", workspace)
    pull = fetch + receive
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


def test_pipeline_hands_the_objects_fetched_with_credentials_to_the_job_without_them(repo, reproduced, tmp_path):
    """With a usable remote, `fetch` (default-branch code) fetches what the tested dvc.lock names
    and the reproducibility job, holding no credentials, reproduces nothing: every output came
    over. A fork's pull request gets none of them: its code would read them."""
    from dvcclone import copy_clone

    home = tmp_path / "home"  # the committed `local` remote is ~/dvc-storage/reprokit
    home.mkdir()
    # The team's outputs, reproduced in a clone of the tested commit (the session's, conftest's
    # `reproduced`: a fresh checkout's own cache holds none) and pushed to the remote.
    team = copy_clone(reproduced, tmp_path / "team")
    team.env["HOME"] = str(home)
    team.dvc("push", "-r", "local")
    workspace = checkout(repo, tmp_path)
    context = pipeline_contexts("push", head_sha(workspace)) | {"vars": {"DVC_REMOTE": "local"}}
    runner = Runner(tmp_path / "runner", context, home=str(home))
    workflow = load_workflow(repo, "pipeline.yaml")
    fetch = hand_over_objects(runner, repo, workspace)
    assert "No usable remote" not in fetch
    assert (runner.artifacts["dvc-objects"] / "status.txt").read_text() == "fetched from the team remote\n"
    setup, receive, gate = runner.run_job(workflow, "reproducibility", workspace)
    assert "fetched from the team remote" in receive
    assert "reproducibility gate passed" in gate and "Running stage" not in gate

    fork_context = pipeline_contexts("pull_request", head_sha(workspace), head_repo="someone/reprokit")
    fork = Runner(tmp_path / "fork-runner", fork_context | {"vars": {"DVC_REMOTE": "local"}}, home=str(home))
    fetch = hand_over_objects(fork, repo, workspace)
    assert "A fork's pull request: no objects" in fetch
    assert [p.name for p in fork.artifacts["dvc-objects"].iterdir()] == ["status.txt"]
