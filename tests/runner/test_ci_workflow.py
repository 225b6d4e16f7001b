"""ci.yaml's `tests` job, executed step by step from a fresh clone in a shell like a runner's (only
setup-python's interpreter on PATH, nothing activated; see github.py), as a non-root user with sudo."""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from events import checkout, contexts  # noqa: E402
from github import Runner, base_interpreter, load_workflow  # noqa: E402

pytestmark = pytest.mark.runner

# The `tests` job's own steps, run as written on a named subset: the Debian tools (promtool, podman,
# ...) as the unprivileged step finds them, and the container engine as the sudo step runs it.
TESTS_SUBSET = " ".join(
    (
        "tests/code/test_debian_tools.py",
        "tests/container/test_image.py::test_the_engine_runs_rootful_with_the_project_settings",
    )
)


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
