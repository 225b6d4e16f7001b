"""The front door, `reprokit`, run as a user runs it (the venv's console script): every command
listed with one line, each with `--help` and an example, a clear error for a typo, bash
completion, and nothing added to a stage's process."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from reprokit.commands.cli import COMMANDS

REPROKIT = Path(sys.executable).parent / "reprokit"


def run(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(REPROKIT), *args], capture_output=True, text=True, timeout=120, **kwargs)


def test_the_console_script_is_the_front_door(repo):
    scripts = tomllib.loads((repo / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"reprokit": "reprokit.commands.cli:main"}
    assert REPROKIT.exists()


def test_help_lists_every_command_with_one_line_each():
    done = run("--help")
    assert done.returncode == 0 and done.stderr == ""
    listed = [line.split()[0] for line in done.stdout.split("commands:\n")[1].split("\n\n")[0].splitlines()]
    assert listed == [*COMMANDS, "completion"]
    for name, command in COMMANDS.items():
        assert f"  {name}" in done.stdout and command.summary in done.stdout
    assert run().returncode == 2  # no command: the list, and a usage error


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_has_help_with_an_example(name):
    done = run(name, "--help")
    assert done.returncode == 0, done.stderr
    command = COMMANDS[name]  # a shortcut into a subcommand (`promote`) is named as it: `registry promote`
    owner = next(n for n, c in COMMANDS.items() if c.module == command.module and not c.argv)
    usage = f"usage: reprokit {owner} {command.argv[0]}" if command.argv else f"usage: reprokit {name}"
    assert done.stdout.startswith(usage + " "), done.stdout
    example = done.stdout.rstrip().splitlines()[-1].strip()
    assert example == COMMANDS[name].example and example.startswith(f"reprokit {name}")
    assert done.stdout.count("example:") == 1, done.stdout  # shown once


def test_a_typo_gets_one_line_naming_the_closest_command():
    done = run("scroe", "in.csv")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == "reprokit: no command 'scroe'; did you mean `score`? (reprokit --help lists them)\n"


def test_a_command_s_bad_input_is_its_own_one_line_error(tmp_path):
    done = run("score", "missing.csv", "out.parquet", "--model", "no-such-package", cwd=tmp_path)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr == "ERROR reprokit: score failed: no-such-package: no such package directory\n"


def test_bash_completion_completes_command_names():
    script = run("completion", "bash")
    assert script.returncode == 0
    probe = script.stdout + 'COMP_WORDS=(reprokit sc); COMP_CWORD=1; _reprokit; echo "${COMPREPLY[@]}"\n'
    probe += 'COMP_WORDS=(reprokit re); COMP_CWORD=1; _reprokit; echo "${COMPREPLY[@]}"\n'
    done = subprocess.run(["bash", "--norc", "-c", probe], capture_output=True, text=True)
    assert done.stdout.splitlines() == ["score", "retrain registry report remote repro-check"]
    assert run("completion", "zsh").returncode == 2
    shown = run("completion", "--help")
    assert shown.returncode == 0 and shown.stdout.startswith("usage: reprokit completion bash")
    assert shown.stdout.rstrip().endswith("source <(reprokit completion bash)")


@pytest.mark.parametrize(
    "argv, usage",
    [
        (["canary", "--weight", "150", "--reason", "x"], "usage: reprokit registry canary "),
        (["compare", "--window", "-5"], "usage: reprokit rollout compare "),
    ],
)
def test_a_shortcuts_usage_error_shows_its_own_usage(argv, usage):
    """Not the parent's (`{show,promote,rollback,canary}`)."""
    done = run(*argv)
    assert done.returncode == 2 and done.stderr.startswith(usage), done.stderr


def test_the_front_door_imports_nothing_but_the_standard_library():
    """Commands are imported only when they run: `reprokit --help` and every stage process (which
    never import reprokit.commands: tests/code/test_architecture.py) pay nothing for it."""
    code = (
        "import sys; before = set(sys.modules); import reprokit.commands.cli; "
        "print(sorted(m.split('.')[0] for m in set(sys.modules) - before))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    third_party = set(eval(loaded)) - set(sys.stdlib_module_names) - {"reprokit"}
    assert third_party == set()
