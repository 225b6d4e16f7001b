"""Time and bytes moved by push, pull and restore, for a local and an S3 remote.

Two data sizes: the default pipeline outputs alone, and the same plus about 100 MB
of extra tracked data (random, incompressible files under `data/raw/bulk`). The S3
remote is a real moto server on 127.0.0.1. Each figure is the median of --rounds rounds (each
round a new remote, copy and clone; every round's seconds are kept beside it). Writes
bench/remote_results.json.

- push: `dvc push` from a reproduced clone to an empty remote; bytes = what the
  remote holds afterwards.
- pull: `dvc pull` into a fresh `git clone` with an empty cache; bytes = what the
  cache holds afterwards.
- restore: `dvc checkout` of every output after deleting them from the workspace
  (the cache has everything); bytes = size of the restored outputs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from provenance import commit, machine  # noqa: E402
from servers import moto_s3, s3_client  # noqa: E402

BIN = Path(sys.executable).parent
BULK_FILES, BULK_FILE_BYTES = 100, 1_000_000


def env_for(root: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(root / "src"),
        "DVC_NO_ANALYTICS": "1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_EC2_METADATA_DISABLED": "true",
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        "GIT_AUTHOR_NAME": "bench",
        "GIT_AUTHOR_EMAIL": "bench@example.invalid",
        "GIT_COMMITTER_NAME": "bench",
        "GIT_COMMITTER_EMAIL": "bench@example.invalid",
    }


def run(args: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    subprocess.run(args, cwd=cwd, env=env_for(cwd), check=True, capture_output=True)
    return time.perf_counter() - started


def tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def outputs(root: Path) -> list[Path]:
    import yaml

    lock = yaml.safe_load((root / "dvc.lock").read_text())
    tracked = set(subprocess.run(["git", "ls-files"], cwd=root, capture_output=True, text=True).stdout.split())
    paths = [root / o["path"] for s in lock["stages"].values() for o in s.get("outs", []) if o["path"] not in tracked]
    if (root / "data/raw/bulk.dvc").exists():
        paths.append(root / "data/raw/bulk")
    return [p for p in paths if not any(t.startswith(str(p.relative_to(root)) + "/") for t in tracked)]


def configure(root: Path, kind: str, target: str) -> list[str]:
    dvc = str(BIN / "dvc")
    if kind == "local":
        subprocess.run([dvc, "remote", "modify", "--local", "local", "url", target], cwd=root, check=True)
        return []
    endpoint, bucket = target.rsplit("|", 1)
    for key, value in (("url", f"s3://{bucket}/storage"), ("endpointurl", endpoint)):
        subprocess.run([dvc, "remote", "modify", "--local", "s3", key, value], cwd=root, check=True)
    return ["-r", "s3"]


def measure(base: Path, work: Path, kind: str, target: str, remote_bytes) -> dict[str, float]:
    dvc = str(BIN / "dvc")
    origin = work / f"origin-{kind}"
    shutil.copytree(base, origin, symlinks=True)
    flags = configure(origin, kind, target)
    push_s = run([dvc, "push", *flags], origin)
    fresh = work / f"fresh-{kind}"
    subprocess.run(["git", "clone", "-q", str(origin), str(fresh)], check=True)
    configure(fresh, kind, target)
    pull_s = run([dvc, "pull", *flags], fresh)
    restored = outputs(fresh)
    restored_bytes = sum(tree_bytes(p) if p.is_dir() else p.stat().st_size for p in restored)
    for path in restored:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    restore_s = run([dvc, "checkout"], fresh)
    return {
        "push_s": round(push_s, 2),
        "push_bytes": remote_bytes(),
        "pull_s": round(pull_s, 2),
        "pull_bytes": tree_bytes(fresh / ".dvc" / "cache"),
        "restore_s": round(restore_s, 2),
        "restore_bytes": restored_bytes,
    }


def medians(rounds: list[dict[str, float]]) -> dict:
    """Each round's bytes are the same (the same data moved); seconds: the median, and each round's."""
    out: dict = {}
    for key, value in rounds[0].items():
        if key.endswith("_s"):
            out[key] = round(statistics.median(r[key] for r in rounds), 2)
            out[f"{key}_each_round"] = [r[key] for r in rounds]
        else:
            assert all(r[key] == value for r in rounds), f"{key} differs between rounds"
            out[key] = value
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=str(REPO / "bench" / "remote_results.json"))
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    dvc = str(BIN / "dvc")
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp, moto_s3() as endpoint:
        tmp_path = Path(tmp)
        base = tmp_path / "base"
        subprocess.run(["git", "clone", "-q", str(REPO), str(base)], check=True)
        run([dvc, "repro"], base)
        datasets = {"default": base}
        bulk = tmp_path / "bulk"
        shutil.copytree(base, bulk, symlinks=True)
        (bulk / "data/raw/bulk").mkdir(parents=True)
        for i in range(BULK_FILES):
            (bulk / f"data/raw/bulk/{i:03d}.bin").write_bytes(os.urandom(BULK_FILE_BYTES))
        run([dvc, "add", "data/raw/bulk"], bulk)
        run(["git", "add", "data/raw/bulk.dvc", "data/raw/.gitignore"], bulk)
        run(["git", "commit", "-qm", "bulk data"], bulk)
        datasets["default_plus_100MB"] = bulk
        client = s3_client(endpoint)
        rounds: dict[tuple[str, str], list[dict]] = {(n, k): [] for n in datasets for k in ("local", "s3")}
        for round_ in range(args.rounds):  # round by round, so that a slow spell hits every configuration
            for (name, kind), done in rounds.items():
                work = tmp_path / f"{name}-{kind}-{round_}"
                work.mkdir()
                if kind == "local":
                    storage = work / "storage"
                    target, remote_bytes = str(storage), lambda s=storage: tree_bytes(s)
                else:
                    bucket = f"bench-{name.replace('_', '-').lower()}-{round_}"
                    client.create_bucket(Bucket=bucket)
                    target = f"{endpoint}|{bucket}"

                    def remote_bytes(b=bucket) -> int:
                        return sum(o["Size"] for o in objects(client, b))

                done.append(measure(datasets[name], work, kind, target, remote_bytes))
                print(name, kind, round_, done[-1], flush=True)
                shutil.rmtree(work)
                if kind == "s3":  # moto keeps objects in memory
                    for o in objects(client, bucket):
                        client.delete_object(Bucket=bucket, Key=o["Key"])
        for (name, kind), done in rounds.items():
            results.setdefault(name, {})[kind] = medians(done)
    summary = {"machine": machine(), "commit": commit(), "rounds": args.rounds, **results}
    Path(args.out).write_text(json.dumps(summary, indent=2) + "\n")


def objects(client, bucket: str) -> list[dict]:
    """Every object in the bucket (boto3 S3 client), each as list_objects_v2 gives it."""
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return [o for page in pages for o in page.get("Contents", [])]


if __name__ == "__main__":
    main()
