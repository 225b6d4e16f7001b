"""pipeline.yaml's reproducibility job after the `lock` workflow and the `fetch` job, executed step
by step from a fresh clone in a shell like a runner's (only setup-python's interpreter on PATH,
nothing activated; see github.py): from scratch on a bare runner, and with the objects `fetch`
hands over from a usable remote."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from events import checkout, hand_over_objects, head_sha, pipeline_contexts  # noqa: E402
from github import Runner, load_workflow  # noqa: E402

pytestmark = pytest.mark.runner


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
