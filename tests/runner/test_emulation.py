"""The runner emulation's own promises (tests/runner/github.py), where a workflow test would
not notice them broken."""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from github import without_bytecode  # noqa: E402

pytestmark = pytest.mark.runner


@pytest.fixture()
def project(tmp_path, monkeypatch):
    for name in ("UV_CONFIG_FILE", "UV_NO_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "user-config"))
    monkeypatch.setenv("XDG_CONFIG_DIRS", str(tmp_path / "machine-config"))
    root = tmp_path / "repo"
    root.mkdir()
    (root / "pyproject.toml").write_text('[project]\nname = "x"\n\n[tool.uv]\ncompile-bytecode = true\n')
    return root


def test_a_job_syncs_without_bytecode_where_the_project_sets_nothing_else(project, tmp_path):
    settings = without_bytecode(project, tmp_path / "uv-config", str(tmp_path / "home"))
    config = Path(settings["UV_CONFIG_FILE"])
    assert tomllib.loads(config.read_text()) == {"compile-bytecode": False}
    assert config.stat().st_mode & 0o777 == 0o644  # readable by a job run as another user


@pytest.mark.parametrize(
    "other",
    [
        "repo/uv.toml",  # the project's own uv.toml
        "home/.config/uv/uv.toml",  # the job's home
        "user-config/uv/uv.toml",  # the test run's user
        "machine-config/uv/uv.toml",  # the machine's
    ],
)
def test_any_other_uv_configuration_is_left_as_it_is(project, tmp_path, other):
    path = tmp_path / other
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('index-url = "https://mirror.example/simple"\n')
    assert without_bytecode(project, tmp_path / "uv-config", str(tmp_path / "home")) == {}


def test_project_settings_beyond_bytecode_or_a_set_config_leave_uv_alone(project, tmp_path, monkeypatch):
    home = str(tmp_path / "home")
    pyproject = project / "pyproject.toml"
    pyproject.write_text(pyproject.read_text() + 'default-groups = ["dev"]\n')
    assert without_bytecode(project, tmp_path / "uv-config", home) == {}
    pyproject.write_text('[project]\nname = "x"\n')
    assert "UV_CONFIG_FILE" in without_bytecode(project, tmp_path / "uv-config", home)
    monkeypatch.setenv("UV_CONFIG_FILE", str(tmp_path / "theirs.toml"))
    assert without_bytecode(project, tmp_path / "uv-config", home) == {}
    monkeypatch.delenv("UV_CONFIG_FILE")
    pyproject.unlink()  # a job without a checkout
    assert without_bytecode(project, tmp_path / "uv-config", home) == {}
