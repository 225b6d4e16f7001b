"""The GitHub workflows: valid, least-privilege, thin callers of scripts that exist."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

WORKFLOWS = ("ci.yaml", "cml.yaml")


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
            assert len(run.splitlines()) <= 4, "workflows stay thin: logic belongs in a script"


def test_ci_runs_tests_and_the_reproducibility_gate(repo):
    workflow = load(repo, "ci.yaml")
    assert set(workflow[True]) == {"push", "pull_request"}  # YAML reads the key `on` as True
    assert workflow["permissions"] == {"contents": "read"}
    runs = [s.get("run", "") for job in workflow["jobs"].values() for s in job["steps"]]
    assert "make test" in runs and ".ci/repro-gate" in runs


def test_cml_is_least_privilege_sticky_and_does_not_upload_images_by_default(repo):
    workflow = load(repo, "cml.yaml")
    assert list(workflow[True]) == ["pull_request"]
    assert workflow["permissions"] == {"contents": "read", "pull-requests": "write"}
    steps = workflow["jobs"]["report"]["steps"]
    checkout = next(s for s in steps if s.get("uses", "").startswith("actions/checkout"))
    assert checkout["with"]["fetch-depth"] == 0
    comment = next(s for s in steps if "cml comment" in s.get("run", ""))
    assert "cml comment update" in comment["run"] and "--target=pr" in comment["run"]
    assert "--publish=${{ vars.CML_PUBLISH_IMAGES == 'true' }}" in comment["run"]
    report = next(s for s in steps if ".ci/pr-report" in s.get("run", ""))
    assert report["env"]["CML_PUBLISH_IMAGES"] == "${{ vars.CML_PUBLISH_IMAGES || 'false' }}"
    assert "origin/${{ github.base_ref }}" in report["run"]


def test_no_workflow_grants_write_all(repo):
    for name in WORKFLOWS:
        text = (repo / ".github" / "workflows" / name).read_text()
        assert "write-all" not in text
        for job in load(repo, name)["jobs"].values():
            assert "permissions" not in job  # job-level grants would widen the workflow's
