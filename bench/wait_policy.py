"""Train's fit on a busy machine, with OpenMP's waiting threads spinning or sleeping, into
bench/wait_policy_results.json.

The train stage's own fit (`fit_xy` on `data/features/train.parquet`, `base.n_threads`
threads), each in a fresh process: OpenMP reads `OMP_WAIT_POLICY` once, when it loads.
Measured alone, two at once (two queued experiments' train stages on the same cores), and
beside BUSY processes that each spin on a core, in rounds that alternate the policies: the
library's default (threads spin a while before they sleep) and `PASSIVE` (what every stage
process gets from `bin/python`), and one thread for comparison (a one-thread
fit stores other bytes: only a reference). Run after `dvc repro`:
`.venv/bin/python bench/wait_policy.py`. Timings, never asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from provenance import commit, machine

REPO = Path(__file__).resolve().parent.parent
FIT = """
import sys, time
from reprokit.core.artifacts import read_features
from reprokit.core.config import StageParams
from reprokit.core.contract import load_stage_contract
from reprokit.model.estimators import fit_xy

contract = load_stage_contract("train", ("target",), "dataset.yaml")
params = StageParams("train", ("base.seed", "base.n_threads", "train"), "params.yaml")
x, y = read_features("data/features/train.parquet", contract.target.column)
threads = int(sys.argv[1]) or params.value("base.n_threads")
started = time.perf_counter()
fit_xy(x, y, params.section("train"), params.value("base.seed"), threads)
print(time.perf_counter() - started)
"""
POLICIES = {"default": {}, "passive": {"OMP_WAIT_POLICY": "PASSIVE"}}


def fit_seconds(policy: dict[str, str], threads: int = 0, at_once: int = 1) -> list[float]:
    """Each fit's seconds, `at_once` fits started together (as `dvc queue start -j 2` runs
    two experiments' train stages side by side)."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"} | policy
    fits = [
        subprocess.Popen(
            [sys.executable, "-c", FIT, str(threads)], cwd=REPO, env=env, stdout=subprocess.PIPE, text=True
        )
        for _ in range(at_once)
    ]
    return [round(float(fit.communicate()[0].strip()), 2) for fit in fits]


def measure(rounds: int, at_once: int = 1, one_thread: bool = True) -> dict:
    runs: dict[str, list[float]] = {name: [] for name in POLICIES}
    if one_thread:
        runs["one_thread"] = []
    for _ in range(rounds):
        for name, policy in POLICIES.items():
            runs[name] += fit_seconds(policy, at_once=at_once)
        if one_thread:
            runs["one_thread"] += fit_seconds({}, threads=1, at_once=at_once)
    return {name: {"median_s": statistics.median(times), "runs_s": times} for name, times in runs.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--busy", type=int, default=4, help="processes that each spin on a core")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=str(REPO / "bench" / "wait_policy_results.json"))
    args = parser.parse_args()
    results = {
        "machine": machine(),
        "commit": commit(),
        "quiet": measure(args.rounds),
        "two_fits_at_once": measure(args.rounds * 2, at_once=2, one_thread=False),
    }
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
    try:
        results[f"beside_{args.busy}_busy_processes"] = measure(args.rounds)
    finally:
        for spinner in spinners:  # by their own process ids
            spinner.kill()
            spinner.wait()
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
