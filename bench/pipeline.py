"""Measure the pipeline's wall-clock times and write them to bench/results.json.

Figures (median of --repeats runs, in seconds; the full repros and their floor are timed in
interleaved rounds, and the ratio to the floor is each round's own, then the median):
- full `dvc repro` from scratch in a fresh clone (cache emptied): tracking off, tracking
  on with the local SQLite store, and tracking on with a real `mlflow server`
  (PostgreSQL backend, S3 artifacts on moto), all on 127.0.0.1; the differences are
  what MLflow logging and registration add;
- each stage's command alone;
- no-op `dvc repro` on the real pipeline, and DVC's own floor: the same stage graph
  (same deps, params and outs) whose commands only create their outputs;
- a train param set back to its earlier value: `dvc repro` restores train, evaluate and
  package from DVC's run-cache without running them;
- the full repro's floor (tracking off): every stage's `main()` called in order in one
  Python process (each library imported once, no DVC), plus DVC's own forced run
  (`dvc repro -f`) of the same graph with commands that only create their outputs; and the
  full repro over that floor, round by round;
- each stage's import time, from its command run with `python -X importtime`: the total
  and the top-level packages that cost most (the time spent importing each package's own
  modules, whoever imported them).

Run with `make bench` (or `uv run python bench/pipeline.py`). Timings, never asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from provenance import commit, machine  # noqa: E402
from servers import tracking_server  # noqa: E402

BIN = Path(sys.executable).parent


def environment(root: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "VIRTUAL_ENV": str(BIN.parent),
        "PYTHONPATH": str(root / "src"),
        "DVC_NO_ANALYTICS": "1",
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def timed(args: list[str] | str, cwd: Path, env: dict[str, str], shell: bool = False) -> float:
    started = time.perf_counter()
    subprocess.run(args, cwd=cwd, env=env, check=True, capture_output=True, shell=shell)
    return time.perf_counter() - started


def clone(into: Path) -> Path:
    root = into / "repo"
    subprocess.run(["git", "clone", "-q", str(REPO), str(root)], check=True)
    return root


def stage_commands(root: Path) -> dict[str, str]:
    """Every stage's command as DVC runs it: `${section.key}` filled in from params.yaml."""
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    params = yaml.safe_load((root / "params.yaml").read_text())

    def value(match: re.Match) -> str:
        section, key = match.group(1).split(".")
        return str(params[section][key])

    return {name: re.sub(r"\$\{([\w.]+)\}", value, " ".join(stage["cmd"].split())) for name, stage in stages.items()}


def wipe_outputs(root: Path, env: dict[str, str]) -> None:
    """Remove every output and the cache, so the next repro computes everything."""
    shutil.rmtree(root / ".dvc" / "cache", ignore_errors=True)
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    for stage in lock["stages"].values():
        for out in stage.get("outs", []):
            path = root / out["path"]
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)


def set_tracking(root: Path, enabled: bool) -> None:
    params = root / "params.yaml"
    text = params.read_text()
    params.write_text(text.replace(f"enabled: {str(not enabled).lower()}", f"enabled: {str(enabled).lower()}"))


def floor_repo(root: Path, into: Path) -> Path:
    """A copy of the stage graph whose commands only create their declared outputs (a
    directory output: the files it holds in `root`, reproduced)."""
    floor = into / "floor"
    shutil.copytree(
        root, floor, ignore=shutil.ignore_patterns(".dvc", ".git", "data", "models", "metrics", "mlflow.db")
    )
    pipeline = yaml.safe_load((floor / "dvc.yaml").read_text())
    for stage in pipeline["stages"].values():
        writes = []
        for entry in stage.get("outs", []) + stage.get("metrics", []) + stage.get("plots", []):
            path = next(iter(entry)) if isinstance(entry, dict) else entry
            if Path(path).suffix:
                writes.append(f"mkdir -p {shlex.quote(str(Path(path).parent))} && echo x > {shlex.quote(path)}")
            else:  # the files the real output holds (another stage may depend on one), or one
                names = sorted(f.name for f in (root / path).glob("*") if f.is_file()) or ["x"]
                files = " ".join(shlex.quote(f"{path}/{name}") for name in names)
                writes.append(f"mkdir -p {shlex.quote(path)} && for f in {files}; do echo x > $f; done")
        stage["cmd"] = " && ".join(writes)
    pipeline.pop("plots", None)
    (floor / "dvc.yaml").write_text(yaml.safe_dump(pipeline, sort_keys=False))
    (floor / "dvc.lock").unlink(missing_ok=True)
    for command in (["git", "init", "-q"], [str(BIN / "dvc"), "init", "-q"]):
        subprocess.run(command, cwd=floor, check=True)
    return floor


ONE_PROCESS = """
import resource, shlex, sys, time
from importlib import import_module
started = time.perf_counter()
for line in sys.stdin.read().splitlines():
    words = shlex.split(line)
    module = import_module(words[2])  # bin/python -m MODULE ARGS...
    try:
        module.main(words[3:])
    except SystemExit as exc:
        if exc.code:
            raise
print(time.perf_counter() - started, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def one_process(root: Path, env: dict[str, str], commands: dict[str, str]) -> dict[str, float]:
    """Every stage's `main()` in order in one fresh interpreter (outputs wiped first), started
    as the stages are, through `bin/python`: the same Python and the same OpenMP wait policy.
    Its wall seconds and peak RSS (MiB)."""
    for command in commands.values():
        assert shlex.split(command)[:2] == ["bin/python", "-m"], command
    wipe_outputs(root, env)
    done = subprocess.run(
        [str(root / "bin" / "python"), "-c", ONE_PROCESS],
        input="\n".join(commands.values()),
        cwd=root,
        env=env,
        check=False,
        capture_output=True,
        text=True,
    )
    if done.returncode:
        raise RuntimeError(f"one process failed:\n{done.stderr[-3000:]}")
    seconds, kib = done.stdout.split()[-2:]
    return {"s": round(float(seconds), 3), "peak_rss_mib": round(int(kib) / 1024)}


def import_seconds(root: Path, env: dict[str, str], command: str, top: int = 6) -> dict[str, object]:
    """A stage command's imports under `-X importtime`: the total and the `top` packages by
    the time spent in their own modules."""
    words = shlex.split(command)
    done = subprocess.run(
        [sys.executable, "-X", "importtime", *words[1:]], cwd=root, env=env, check=True, capture_output=True, text=True
    )
    packages: dict[str, int] = {}
    for line in done.stderr.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+\d+ \|\s*(\S+)$", line)
        if match:
            package = match.group(2).split(".")[0]
            packages[package] = packages.get(package, 0) + int(match.group(1))
    ranked = sorted(packages.items(), key=lambda item: -item[1])[:top]
    return {
        "total_s": round(sum(packages.values()) / 1e6, 2),
        "top_s": {name: round(us / 1e6, 2) for name, us in ranked},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(REPO / "bench" / "results.json"))
    args = parser.parse_args()
    dvc = str(BIN / "dvc")
    results: dict[str, object] = {
        "machine": machine(),
        "commit": commit(),
        "repeats": args.repeats,
    }
    with tempfile.TemporaryDirectory() as tmp:
        root = clone(Path(tmp))
        env = environment(root)
        commands = stage_commands(root)
        set_tracking(root, True)
        subprocess.run([dvc, "repro"], cwd=root, env=env, check=True, capture_output=True)  # create the store once
        floor = floor_repo(root, Path(tmp))  # after a repro: it lists the files of directory outputs
        subprocess.run([dvc, "repro"], cwd=floor, env=env, check=True, capture_output=True)
        with tracking_server(Path(tmp) / "server") as server:
            server_env = {**env, "MLFLOW_TRACKING_URI": server["MLFLOW_TRACKING_URI"]}
            subprocess.run(
                [dvc, "repro", "-f", "-s", "package"], cwd=root, env=server_env, check=True, capture_output=True
            )
            # Each round times every configuration and the floor one after the other, so a slow
            # phase of the machine (seen to last minutes, by up to 1.7x) weighs on a round's
            # repros and its floor alike: the ratio and the tracking overheads are taken within
            # each round. The order turns by one each round, so no configuration always follows
            # the same one. The tracking server (idle PostgreSQL, MLflow and moto) runs throughout.

            def full(tracking: bool, run_env: dict[str, str]) -> float:
                set_tracking(root, tracking)
                wipe_outputs(root, run_env)
                return timed([dvc, "repro"], root, run_env)

            def one_process_round() -> float:
                set_tracking(root, False)
                return one_process(root, env, commands)["s"]

            measures = {
                "off": lambda: full(False, env),
                "one_process": one_process_round,
                "forced": lambda: timed([dvc, "repro", "-f"], floor, env),
                "local_sqlite": lambda: full(True, env),
                "server": lambda: full(True, server_env),
            }
            rounds: dict[str, list[float]] = {key: [] for key in measures}
            for turn in range(args.repeats):
                keys = list(measures)
                for key in keys[turn % len(keys) :] + keys[: turn % len(keys)]:
                    rounds[key].append(measures[key]())
        for label in ("off", "local_sqlite", "server"):
            runs = rounds[label]
            results[f"full_repro_tracking_{label}"] = {
                "median_s": round(statistics.median(runs), 2),
                "runs_s": [round(r, 2) for r in runs],
            }
        subprocess.run(["git", "checkout", "-q", "params.yaml"], cwd=root, check=True)
        subprocess.run([dvc, "repro"], cwd=root, env=env, check=True, capture_output=True)
        results["stage_seconds"] = {
            name: round(statistics.median(timed(command, root, env, shell=True) for _ in range(args.repeats)), 2)
            for name, command in commands.items()
        }
        noop = [timed([dvc, "repro"], root, env) for _ in range(max(5, args.repeats))]
        params = root / "params.yaml"
        committed = params.read_text()
        restored = []
        for _ in range(args.repeats):
            params.write_text(committed.replace("learning_rate: 0.05", "learning_rate: 0.1"))
            subprocess.run([dvc, "repro"], cwd=root, env=env, check=True, capture_output=True)
            params.write_text(committed)
            restored.append(timed([dvc, "repro"], root, env))
        results["reverted_param_from_run_cache_s"] = round(statistics.median(restored), 2)
        results["stage_imports"] = {name: import_seconds(root, env, command) for name, command in commands.items()}
        floor_noop = [timed([dvc, "repro"], floor, env) for _ in range(max(5, args.repeats))]
        ratios = [
            repro / (single + forced)
            for repro, single, forced in zip(rounds["off"], rounds["one_process"], rounds["forced"])
        ]
        single, forced = statistics.median(rounds["one_process"]), statistics.median(rounds["forced"])
        results["full_repro_floor_s"] = {
            "one_process": round(single, 2),
            "dvc_forced_floor": round(forced, 2),
            "sum": round(single + forced, 2),
            "one_process_runs_s": [round(r, 2) for r in rounds["one_process"]],
            "dvc_forced_floor_runs_s": [round(r, 2) for r in rounds["forced"]],
        }
        results["full_repro_ratio_to_floor"] = round(statistics.median(ratios), 2)
        results["full_repro_ratio_to_floor_rounds"] = [round(r, 2) for r in ratios]
        results["noop_repro_s"] = round(statistics.median(noop), 3)
        results["noop_floor_s"] = round(statistics.median(floor_noop), 3)
        results["noop_ratio_to_floor"] = round(statistics.median(noop) / statistics.median(floor_noop), 3)
        results["tracking_overhead_s"] = {  # the median of each round's difference to tracking off
            name: round(statistics.median(on - off for on, off in zip(rounds[key], rounds["off"])), 2)
            for name, key in (("local_sqlite", "local_sqlite"), ("server_postgres_s3", "server"))
        }
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
