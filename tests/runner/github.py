"""Execute a GitHub workflow's jobs step by step, in a shell like a runner's.

Only what a runner has: `/usr/bin:/bin` and the interpreter `actions/setup-python` puts
first on `PATH`; no virtual environment activated, nothing of the test run's own.
`run:` steps execute as written (`bash --noprofile --norc -eo pipefail`, as GitHub does);
`uses:` steps are emulated: checkout is the fresh clone (which must not keep a token;
with `ref:` the clone is switched to that commit, or to `origin/<ref>`), setup-python adds the interpreter's
folder to `PATH`, upload-artifact requires its path (a folder or a file) to exist and keeps a
copy, download-artifact restores that copy into its path (the runner's artifacts stand for
those of every run, the `workflow_run` trigger's included). With `user`, every `run:` step runs
as that (non-root) user, as on a GitHub runner; the runner's folders are theirs. The CML install step
puts a recording `cml` stand-in on `PATH` (the npm package cannot be installed here), and
every job has a recording `gh` stand-in (GitHub's CLI, preinstalled on runners). A step's
`$GITHUB_OUTPUT` becomes `steps.<id>.outputs`, a job's `outputs` become `needs.<job>.outputs`.
`${{ }}` expressions are evaluated from the contexts given; an unknown one fails.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

RUNNER_PATH = "/usr/bin:/bin"
EXPRESSION = re.compile(r"\$\{\{(.*?)\}\}")


# The machine's own network settings (CA bundle, proxy, package index), as a runner's
# image configures them: not the test run's environment, which never reaches the steps.
MACHINE_SETTINGS = re.compile(r"(.*_CA_BUNDLE|.*CERT.*|.*_PROXY|PIP_.*|UV_.*)", re.IGNORECASE)


def machine_settings() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if MACHINE_SETTINGS.fullmatch(k) and k != "UV_PROJECT_ENVIRONMENT"}


def without_bytecode(project: Path, into: Path, home: str) -> dict[str, str]:
    """`UV_CONFIG_FILE` for a `uv.toml` in `into` that sets `compile-bytecode = false`, where that
    is all the project's `[tool.uv]` sets besides `compile-bytecode`: a job's `uv sync` then
    installs in 0.5 s instead of 19 s and 36 CPU-seconds (17,066 modules compiled;
    `bench/test_suite_results.json`: `runner_bytecode`), and bytecode is not under test (`make
    setup`, which every test run starts with, compiles the run's own). The file replaces every
    other uv configuration, so where there is any other (a `uv.toml` of the project, of the
    job's `home` or of the machine, `UV_CONFIG_FILE`, `UV_NO_CONFIG`), or no project (a job
    without a checkout), nothing changes."""
    pyproject = project / "pyproject.toml"
    if not pyproject.exists() or any(name in os.environ for name in ("UV_CONFIG_FILE", "UV_NO_CONFIG")):
        return {}
    config_homes = [Path(home) / ".config", Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")]
    config_dirs = [Path(d) for d in os.environ.get("XDG_CONFIG_DIRS", "/etc/xdg").split(":") if d] + [Path("/etc")]
    others = [project / "uv.toml", *(d / "uv" / "uv.toml" for d in config_homes + config_dirs)]
    settings = tomllib.loads(pyproject.read_text()).get("tool", {}).get("uv", {})
    if any(p.exists() for p in others) or set(settings) - {"compile-bytecode"}:
        return {}
    into.mkdir(exist_ok=True)
    config = into / "uv.toml"
    config.write_text("compile-bytecode = false\n")
    config.chmod(0o644)  # a job may run as another user
    return {"UV_CONFIG_FILE": str(config)}


def base_interpreter() -> Path:
    """The CPython the test run's venv was made from: what setup-python provides here."""
    return Path(getattr(sys, "_base_executable", sys.executable)).resolve()


def evaluate(expr: str, contexts: dict[str, Any]) -> str:
    """The few GitHub expression forms the workflows use: `a.b`, `a.b[0].c`, `'literal'`,
    `x || y`, `x && y`, `x == y`, `always()`. Values are strings; false is the empty string."""
    expr = expr.strip()
    if "||" in expr:
        left, right = expr.split("||", 1)
        return evaluate(left, contexts) or evaluate(right, contexts)
    if "&&" in expr:
        left, right = expr.split("&&", 1)
        first = evaluate(left, contexts)
        return evaluate(right, contexts) if first and first != "false" else first
    if "==" in expr:
        left, right = expr.split("==", 1)
        return "true" if evaluate(left, contexts) == evaluate(right, contexts) else "false"
    if expr == "always()":
        return "true"
    if re.fullmatch(r"'[^']*'", expr):
        return expr[1:-1]
    head, *rest = re.split(r"\.|(?=\[)", expr)
    if head not in contexts:
        raise KeyError(f"unknown context in ${{{{ {expr} }}}}")
    node: Any = contexts[head]
    for part in rest:
        if index := re.fullmatch(r"\[(\d+)\]", part):
            node = node[int(index[1])] if isinstance(node, list) and int(index[1]) < len(node) else ""
            continue
        if head == "github" and (not isinstance(node, dict) or part not in node) and node != "":
            raise KeyError(f"the test gives no value for ${{{{ {expr} }}}}")
        node = node.get(part, "") if isinstance(node, dict) else ""  # unset secrets and vars are empty
    return "" if node is None else str(node)


def truthy(value: str) -> bool:
    """An `if:` holds unless its value is false, empty or zero."""
    return value not in ("", "false", "0")


def render(value: Any, contexts: dict[str, Any]) -> str:
    return EXPRESSION.sub(lambda m: evaluate(m.group(1), contexts), str(value))


GH_STAND_IN = """#!/usr/bin/env bash
# Recording stand-in for GitHub's CLI: keeps its arguments, token presence and the body file.
set -euo pipefail
log={log}
printf '%s\\n' "$@" > "$log/args"
[[ -n "${{GH_TOKEN:-}}" ]] && echo yes > "$log/token"
prev=""
for arg in "$@"; do [[ "$prev" == "--body-file" ]] && cp "$arg" "$log/body.md"; prev="$arg"; done
echo "https://github.com/acme/reprokit/pull/8"
"""


CML_STAND_IN = """#!/usr/bin/env bash
# Recording stand-in for the CML command line: keeps its arguments, token presence and posted file.
set -euo pipefail
log={log}
printf '%s\\n' "$@" > "$log/args"
[[ -n "${{REPO_TOKEN:-}}" ]] && echo yes > "$log/token"
for arg in "$@"; do [[ -f "$arg" ]] && cp "$arg" "$log/posted.md"; done
exit 0
"""


@dataclass
class Runner:
    """One runner-like machine: a tool cache, artifacts shared between jobs, a CML log."""

    root: Path
    contexts: dict[str, Any]
    home: str = field(default_factory=lambda: os.environ["HOME"])
    artifacts: dict[str, Path] = field(default_factory=dict)
    user: str | None = None
    interpreter: Path = field(default_factory=base_interpreter)

    def __post_init__(self) -> None:
        if self.user:
            self.home = pwd.getpwnam(self.user).pw_dir
        self.toolcache = self.root / "toolcache" / "bin"
        self.toolcache.mkdir(parents=True)
        for name in ("python", "python3", "python3.11"):
            (self.toolcache / name).symlink_to(self.interpreter)
        self.cml_log = self.root / "cml-log"
        self.cml_log.mkdir()
        self.gh_log = self.root / "gh-log"
        self.gh_log.mkdir()
        self.gh_bin = self.root / "gh-bin"
        self.gh_bin.mkdir()
        (self.gh_bin / "gh").write_text(GH_STAND_IN.format(log=self.gh_log))
        (self.gh_bin / "gh").chmod(0o755)
        (self.root / "runner-temp").mkdir()
        self.contexts.setdefault("runner", {"temp": str(self.root / "runner-temp")})
        self.contexts.setdefault("needs", {})
        self.contexts.setdefault("inputs", {})
        self.give_to_user(self.root)

    @property
    def switches_user(self) -> bool:
        """Steps run as another user only when the test runs as root (else `user` is the test's own)."""
        return bool(self.user) and os.geteuid() == 0

    def give_to_user(self, path: Path) -> None:
        """With `user`, make `path` (and everything under it) theirs, as a runner's folders are."""
        if self.switches_user:
            subprocess.run(["chown", "-R", f"{self.user}:", str(path)], check=True)

    def uv_config(self, workspace: Path) -> dict[str, str]:
        """The `UV_CONFIG_FILE` a job's steps get: the machine's, where it sets one; else one
        without bytecode compilation where the checkout allows it (`without_bytecode`), but not
        for a job run with `user`, whose `sudo` steps would write root's bytecode into the
        user's venv, where the user could not remove it."""
        machine = {k: v for k, v in machine_settings().items() if k == "UV_CONFIG_FILE"}
        if machine or self.user:
            return machine
        return without_bytecode(workspace, self.root / "uv-config", self.home)

    def job_env(self, workspace: Path) -> dict[str, str]:
        github = self.contexts["github"]
        settings = machine_settings() | self.uv_config(workspace)
        return settings | {
            "PATH": f"{self.gh_bin}:{RUNNER_PATH}",
            "HOME": self.home,
            "LANG": "C.UTF-8",
            "CI": "true",
            "GITHUB_ACTIONS": "true",
            "GITHUB_WORKSPACE": str(workspace),
            "GITHUB_SERVER_URL": "https://github.com",
            "GITHUB_REPOSITORY": github["repository"],
            "GITHUB_RUN_ID": "1",
            "GITHUB_EVENT_NAME": github["event_name"],
            "GITHUB_BASE_REF": github.get("base_ref", ""),
            "RUNNER_TEMP": str(self.root / "runner-temp"),
            # This sandbox has no cloud metadata service: botocore must not wait for one.
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def run_job(self, workflow: dict, job_name: str, workspace: Path, timeout: int = 1500) -> list[str] | None:
        """Run every step of `job_name` in `workspace`; return the output of each `run:` step,
        or None when the job's `if:` skips it."""
        job = workflow["jobs"][job_name]
        if "if" in job and not truthy(render("${{ " + job["if"] + " }}", self.contexts)):
            return None
        env = self.job_env(workspace)
        for scope in (workflow.get("env", {}), job.get("env", {})):
            env.update({k: render(v, self.contexts) for k, v in scope.items()})
        outputs = []
        self.contexts["steps"] = {}
        for step in job["steps"]:
            if "if" in step:
                assert truthy(render("${{ " + step["if"] + " }}", self.contexts)), step
            with_ = {k: render(v, self.contexts) for k, v in step.get("with", {}).items()}
            uses = step.get("uses", "").split("@")[0]
            if uses == "actions/checkout":
                assert with_.get("persist-credentials") == "False"
                if ref := with_.get("ref"):  # a commit (40 hex digits) or a branch of `origin`
                    target = ref if re.fullmatch(r"[0-9a-f]{40}", ref) else f"origin/{ref}"
                    subprocess.run(["git", "-C", str(workspace), "checkout", "-q", "--detach", target], check=True)
                env.pop("UV_CONFIG_FILE", None)  # as the commit now checked out allows
                env.update(self.uv_config(workspace))
                config = (workspace / ".git" / "config").read_text()
                assert "extraheader" not in config and "AUTHORIZATION" not in config.upper()
            elif uses == "actions/setup-python":
                assert with_["python-version"] == "3.11"
                env["PATH"] = f"{self.toolcache}:{env['PATH']}"
            elif uses == "actions/upload-artifact":
                source = workspace / with_["path"]
                kept = self.root / "artifacts" / with_["name"]
                if source.is_file():
                    kept.mkdir(parents=True)
                    shutil.copy2(source, kept / source.name)
                else:
                    assert source.exists() and any(source.iterdir()), f"upload-artifact: {source} is missing or empty"
                    shutil.copytree(source, kept)
                self.artifacts[with_["name"]] = kept
            elif uses == "actions/download-artifact":
                shutil.copytree(self.artifacts[with_["name"]], workspace / with_["path"])
                self.give_to_user(workspace / with_["path"])
            elif uses:
                raise AssertionError(f"no emulation for action {uses}")
            elif step.get("id") == "install-cml":
                tools = self.root / "cml-bin"
                tools.mkdir(exist_ok=True)
                stand_in = tools / "cml"
                stand_in.write_text(CML_STAND_IN.format(log=self.cml_log))
                stand_in.chmod(0o755)
                env["PATH"] = f"{tools}:{env['PATH']}"
            else:
                step_env = {**env, **{k: render(v, self.contexts) for k, v in step.get("env", {}).items()}}
                github_output = self.root / "runner-temp" / f"output-{job_name}-{len(outputs)}"
                github_output.write_text("")
                self.give_to_user(github_output)
                step_env["GITHUB_OUTPUT"] = str(github_output)
                as_user = {"user": self.user, "group": self.user, "extra_groups": []} if self.switches_user else {}
                done = subprocess.run(
                    ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]],
                    cwd=workspace,
                    env=step_env,
                    capture_output=True,
                    text=True,
                    timeout=timeout,
                    **as_user,
                )
                output = done.stdout + done.stderr
                assert done.returncode == 0, (
                    f"step {step.get('name', step['run'])!r} failed:\n{done.stdout[-5000:]}\n{done.stderr[-3000:]}"
                )
                outputs.append(output)
                if "id" in step:
                    pairs = [line.split("=", 1) for line in github_output.read_text().splitlines() if "=" in line]
                    self.contexts["steps"][step["id"]] = {"outputs": dict(pairs)}
        job_outputs = {k: render(v, self.contexts) for k, v in job.get("outputs", {}).items()}
        self.contexts["needs"][job_name] = {"outputs": job_outputs}
        return outputs


def load_workflow(repo: Path, name: str) -> dict:
    workflow = yaml.safe_load((repo / ".github" / "workflows" / name).read_text())
    workflow["on"] = workflow.pop(True)  # YAML 1.1 reads the key `on` as True
    return workflow
