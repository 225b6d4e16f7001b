"""The reproducibility gate: does this checkout reproduce its own committed `dvc.lock`?

    reprokit repro-check [--pull auto|always|never] [--remote NAME]

From a clean checkout: fetch outputs from the remote when it is usable (`auto`: when
`reprokit.commands.remote check` passes, so pull requests from forks without secrets still
run), `dvc repro`, then fail if `dvc.lock` or any git-kept output changed or
`dvc status` is not clean, printing every output whose md5 differs. Without a remote
every stage runs from scratch, which checks bit-for-bit reproducibility; with one,
it checks that the committed `dvc.lock` matches the committed code and params.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import subprocess
import sys
from pathlib import Path

log = logging.getLogger("reprokit.repro_check")


def dvc_bin() -> str:
    candidate = Path(sys.executable).parent / "dvc"
    return str(candidate) if candidate.exists() else (shutil.which("dvc") or "dvc")


def run(args: list[str], root: Path) -> subprocess.CompletedProcess:
    log.info("$ %s", " ".join(args))
    return subprocess.run(args, cwd=root, capture_output=True, text=True)


def lock_hashes(text: str | None) -> dict[str, str]:
    """`stage dep|out path` -> md5 for every dep and out of a dvc.lock text."""
    from reprokit.core.dvclock import lock_entries

    return {f"{entry.stage} {entry.kind} {entry.path}": entry.md5 for entry in lock_entries(text)}


def differences(committed: str | None, reproduced: str | None) -> list[str]:
    """Human-readable lines for each dep or out whose md5 differs."""
    old, new = lock_hashes(committed), lock_hashes(reproduced)
    lines = []
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            lines.append(f"  {key}: committed {old.get(key, 'absent')}, reproduced {new.get(key, 'absent')}")
    return lines


def check(root: Path, pull: str, remote: str | None) -> list[str]:
    """Run the gate; return the problems found (empty: reproducible)."""
    dvc = dvc_bin()
    committed = run(["git", "show", "HEAD:dvc.lock"], root)
    committed_lock = committed.stdout if committed.returncode == 0 else None
    if pull != "never":
        remote_args = ["-r", remote] if remote else []
        probe = run([sys.executable, "-m", "reprokit.commands.remote", "check", *remote_args], root)
        if probe.returncode == 0:
            pulled = run([dvc, "pull", *remote_args], root)
            if pulled.returncode != 0:
                log.warning("dvc pull failed, reproducing what is missing:\n%s", pulled.stderr.strip())
        elif pull == "always":
            return [f"remote not usable: {probe.stderr.strip()}"]
        else:
            log.info("remote not usable, reproducing from scratch: %s", probe.stderr.strip())
    repro = run([dvc, "repro"], root)
    sys.stderr.write(repro.stdout[-4000:])
    if repro.returncode != 0:
        return [f"dvc repro failed:\n{repro.stderr.strip()}"]
    problems = []
    reproduced_lock = (root / "dvc.lock").read_text() if (root / "dvc.lock").exists() else None
    if reproduced_lock != committed_lock:
        problems.append("dvc.lock changed: these deps and outputs differ from the commit")
        problems += differences(committed_lock, reproduced_lock) or ["  (only formatting or stage entries differ)"]
    changed = run(["git", "status", "--porcelain", "--untracked-files=no"], root).stdout.strip()
    others = [line for line in changed.splitlines() if not line.endswith("dvc.lock")]
    if others:
        problems.append("git-tracked files changed by dvc repro:\n" + "\n".join(f"  {line}" for line in others))
    status = run([dvc, "status"], root)
    if "Data and pipelines are up to date" not in status.stdout:
        problems.append(f"dvc status is not clean:\n{status.stdout.strip()}")
    return problems


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pull", choices=("auto", "always", "never"), default="auto")
    parser.add_argument("--remote", help="remote to pull from (default: the default remote)")
    parser.add_argument("--root", default=".")
    args = parser.parse_args(argv)
    from reprokit.core.redaction import configure_logging

    configure_logging("%(message)s")
    problems = check(Path(args.root).resolve(), args.pull, args.remote)
    if problems:
        log.error("REPRODUCIBILITY GATE FAILED\n%s", "\n".join(problems))
        raise SystemExit(1)
    log.info("reproducibility gate passed: dvc.lock reproduced exactly and dvc status is clean")


if __name__ == "__main__":
    main()
