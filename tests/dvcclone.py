"""A temporary clone of this repository, driven with the real `git` and `dvc` CLIs."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml
from commands import HANG_S

BIN = Path(sys.executable).parent


class Clone:
    """A git clone of the repository in a temporary folder, with commands run inside it."""

    def __init__(self, root: Path, env: dict[str, str]):
        self.root = root
        self.env = env

    def run(self, *args: str, check: bool = True, timeout: int = HANG_S) -> subprocess.CompletedProcess:
        done = subprocess.run(args, cwd=self.root, env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(args)} exited {done.returncode}\n{done.stdout}\n{done.stderr}")
        return done

    def dvc(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.run(str(BIN / "dvc"), *args, check=check)

    def git(self, *args: str) -> str:
        return self.run("git", *args).stdout

    def lock(self, rev: str | None = None) -> dict:
        """dvc.lock as in the workspace, or as committed at `rev`."""
        if rev is not None:
            return yaml.safe_load(self.git("show", f"{rev}:dvc.lock"))
        return yaml.safe_load((self.root / "dvc.lock").read_text())

    def locked_outputs(self, rev: str | None = None) -> dict[str, str]:
        """Every output path in dvc.lock (or the one committed at `rev`) with its md5,
        directories expanded through the cache."""
        outs = {}
        for stage in self.lock(rev)["stages"].values():
            for out in stage.get("outs", []):
                if out["md5"].endswith(".dir"):
                    digest = out["md5"][:-4]
                    listing = self.root / ".dvc/cache/files/md5" / digest[:2] / (digest[2:] + ".dir")
                    # A `cache: false` directory: git keeps it (and restores it); DVC lists no files,
                    # except in its run-cache copy, which only the clone that ran the stage has.
                    if not listing.exists() or self.git("ls-files", out["path"]):
                        continue
                    entries = json.loads(listing.read_text())
                    outs.update({f"{out['path']}/{e['relpath']}": e["md5"] for e in entries})
                else:
                    outs[out["path"]] = out["md5"]
        return outs

    def file_hashes(self, paths) -> dict[str, str]:
        return {p: hashlib.md5((self.root / p).read_bytes()).hexdigest() for p in paths}

    def write_params(self, edit) -> None:
        path = self.root / "params.yaml"
        data = yaml.safe_load(path.read_text())
        edit(data)
        path.write_text(yaml.safe_dump(data, sort_keys=False))


def ran_stages(output: str) -> list[str]:
    return [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage '")]


def new_clone(repo: Path, root: Path) -> Clone:
    """`git clone` the repository to `root`, with an environment that runs the clone's own code."""
    subprocess.run(["git", "clone", "-q", str(repo), str(root)], check=True)
    return Clone(root, clone_env(root))


def copy_clone(source: Clone, root: Path) -> Clone:
    """A copy of a clone's folder, cache and outputs included (cheaper than reproducing again)."""
    shutil.copytree(source.root, root, symlinks=True)
    return Clone(root, clone_env(root))


def cache_snapshot(root: Path) -> dict[str, str]:
    """md5 of every file in the DVC cache: to prove a failure left the cache intact."""
    cache = root / ".dvc" / "cache"
    return {
        str(p.relative_to(cache)): hashlib.md5(p.read_bytes()).hexdigest()
        for p in sorted(cache.rglob("*"))
        if p.is_file()
    }


def clone_env(root: Path) -> dict[str, str]:
    """A shell with the test run's environment activated (`source .venv/bin/activate`, as the
    README shows) and the clone's own code first on the import path. Shells where nothing is
    activated are tested in tests/runner."""
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "VIRTUAL_ENV": str(BIN.parent),
        "PYTHONPATH": str(root / "src"),
        "DVC_NO_ANALYTICS": "1",
        "GIT_AUTHOR_NAME": "e2e",
        "GIT_AUTHOR_EMAIL": "e2e@example.invalid",
        "GIT_COMMITTER_NAME": "e2e",
        "GIT_COMMITTER_EMAIL": "e2e@example.invalid",
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", None)  # the commands choose it (a pipe: no bars)
    return env
