"""The Debian tools the unprivileged suites need outside Python (`.ci/packages` installs them, as
root or with sudo): found on a user's PATH and working. The container suite's own tools (podman,
runc, debootstrap: /usr/sbin, root's PATH) are checked by its `tools` fixture, as root. The runner
test runs this file in ci.yaml's `tests` job."""

from __future__ import annotations

import glob
import shutil
import subprocess
from pathlib import Path

import pytest


def test_promtool_is_on_path():
    assert shutil.which("promtool"), "promtool is missing: .ci/packages installs it"


def test_postgresql_server_binaries_are_installed():
    assert shutil.which("initdb") or glob.glob("/usr/lib/postgresql/*/bin/initdb"), "initdb is missing"


def test_the_distribution_s_python_is_installed_where_it_has_one():
    """Debian 12 packages python3.11; Ubuntu 24.04 (a GitHub runner's image) has none to install."""
    offered = subprocess.run(["apt-cache", "show", "python3.11"], capture_output=True).returncode == 0
    if not offered:
        pytest.skip("this distribution has no python3.11 package")
    assert Path("/usr/bin/python3.11").is_file()


def test_promtool_checks_a_rules_file(tmp_path):
    """promtool runs, and tells a valid rule from an invalid one."""
    rules = tmp_path / "rules.yml"
    rules.write_text("groups:\n  - name: g\n    rules:\n      - record: job:up:sum\n        expr: sum(up)\n")
    done = subprocess.run(["promtool", "check", "rules", str(rules)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    rules.write_text("groups:\n  - name: g\n    rules:\n      - record: job:up:sum\n        expr: sum(up\n")
    done = subprocess.run(["promtool", "check", "rules", str(rules)], capture_output=True, text=True)
    assert done.returncode == 1 and "parse error" in (done.stdout + done.stderr).lower()
